"""Probe (issue #11): the retriever's fine-tuning settings, swept on dev.

    .venv/bin/python bench/finetune_probe.py --variant lr5e-5=finetune.learning_rate=5.0e-5 \
        --variant lr1e-4=finetune.learning_rate=1.0e-4            # -> bench/finetune_probe.json

`finetune.*` (learning rate 2e-5, 2 epochs, batch 16, temperature 0.05, no hard negatives in
`configs/cranfield.yaml`) was set once and never swept, and on the 2026-12-07 whole-collection run g_1 adds
almost nothing over g_0 on the same summaries (Iterative 0.712 against Non-iterative 0.708 test MRR@10). On a
finished whole-collection run directory (default `runs/cranfield`: its working set, its S_1 =
`iter_01/summaries.jsonl`, its g_1 and its full-document control), each variant (config overrides on top of
the run's config) fine-tunes g_0 once, as the loop's first round does,

- on (query, S_1) pairs, searched over S_1 (the paper's Iterative index) and over title + S_1 (the served
  default, `evaluate.summary_title`);
- with `--full-doc`, also on (query, document) pairs, searched over the documents (the full-document control,
  which must get the same settings as the system it is compared with);

next to the run's own g_1 and full-document control (`reference`: the run's settings) and g_0 itself over
S_1 (`g0`: no fine-tuning, the Non-iterative system's retriever). `--fused NAME` adds
the document + summary index of that variant (document weight chosen on dev). Settings are chosen on DEV;
test is written beside, for the record. Cached under bench/out/finetune_probe/ (a rerun resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "cranfield"))
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME=KEY=VALUE[,KEY=VALUE...]: finetune overrides of one variant (repeatable)")
    ap.add_argument("--full-doc", action="store_true", help="also fine-tune each variant on full documents")
    ap.add_argument("--fused", action="append", default=[], help="variant (or 'reference') to evaluate fused too")
    ap.add_argument("--out", default=str(ROOT / "bench" / "finetune_probe.json"))
    ap.add_argument("--work", default=str(ROOT / "bench" / "out" / "finetune_probe"), help="cache directory")
    args = ap.parse_args(argv)

    from _common import dev_test_index, finished_run, rel, write_probe_result

    from resume.config import ResumeConfig, load_config
    from resume.io import atomic_write_json
    from resume.retriever import finetune_retriever

    run_dir, root = Path(args.run_dir).resolve(), Path(args.work).resolve()
    control = run_dir / "full_doc_control" / "round_01" / "retriever" / "model"
    cfg, data, s1, g1 = finished_run(ap, run_dir, control)
    variants: dict[str, list[str]] = {}
    for v in args.variant:
        name, sep, overrides = v.partition("=")
        if not sep or not overrides or name == "reference":
            ap.error(f"--variant {v!r}: expected NAME=KEY=VALUE[,KEY=VALUE...], NAME not 'reference'")
        bad = [o for o in overrides.split(",") if not o.startswith("finetune.")]
        if bad:
            ap.error(f"--variant {v!r}: only finetune.* settings change here, got {bad}")
        variants[name] = overrides.split(",")
    for name in args.fused:
        if name != "reference" and name not in variants:
            ap.error(f"--fused {name!r}: not a variant")
    t_start = time.perf_counter()
    times: dict[str, float] = {}
    results: dict[str, dict] = {}
    settings: dict[str, dict] = {"reference": cfg.to_dict()["finetune"]}

    def evaluate(tag: str, retriever: Path, texts: Path | None, title: bool = False, fused: bool = False) -> None:
        results[tag] = dev_test_index(cfg, root / "eval" / tag.replace("/", "-"), data=data, retriever=retriever,
                                      texts=texts, fused=fused, summary_title=title)

    def trained(name: str, vcfg: ResumeConfig, texts: Path | None) -> Path:
        # finetune_retriever resumes from its own checkpoints; a finished model is not trained again
        out = root / "models" / name
        timing = out / "probe_seconds.json"  # the fine-tuning's time, kept for reruns that reuse the model
        if (out / "model" / "config.json").exists() and timing.exists():
            times[f"finetune_{name}"] = json.loads(timing.read_text(encoding="utf-8"))["seconds"]
            return out / "model"
        t0 = time.perf_counter()
        model = Path(finetune_retriever(vcfg, data_dir=data, split=vcfg.data.train_split,
                                        init_model=vcfg.retriever.model, texts=None if texts is None else str(texts),
                                        out_dir=out))
        times[f"finetune_{name}"] = round(time.perf_counter() - t0, 1)
        atomic_write_json(timing, {"seconds": times[f"finetune_{name}"]})
        return model

    summary_models = {"reference": g1}
    evaluate("g0/summary", Path(cfg.retriever.model), s1)  # no fine-tuning at all: the sweep's other end
    evaluate("g0/titled", Path(cfg.retriever.model), s1, title=True)
    evaluate("reference/summary", g1, s1)
    evaluate("reference/titled", g1, s1, title=True)
    if args.full_doc:
        evaluate("reference/documents", control, None)
    for name, overrides in variants.items():
        vcfg = load_config(run_dir / "config.yaml", overrides)
        settings[name] = vcfg.to_dict()["finetune"]
        g = trained(f"{name}-summary", vcfg, s1)
        evaluate(f"{name}/summary", g, s1)
        evaluate(f"{name}/titled", g, s1, title=True)
        summary_models[name] = g
        if args.full_doc:
            evaluate(f"{name}/documents", trained(f"{name}-documents", vcfg, None), None)
    for name in args.fused:
        evaluate(f"{name}/fused", summary_models[name], s1, fused=True)

    pairs = [(f"{n}/{view}", f"reference/{view}") for n in variants for view in ("summary", "titled", "documents")]
    pairs += [(f"reference/{view}", f"g0/{view}") for view in ("summary", "titled")]
    pairs += [(f"{n}/fused", "reference/fused") for n in args.fused if n != "reference"]
    write_probe_result(args.out, {"run_dir": rel(run_dir), "variants": variants, "settings": settings}, cfg,
                       results, pairs, times, t_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
