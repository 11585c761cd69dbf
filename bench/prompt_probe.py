"""Probe (issue #11): which INSTRUCTION makes f_0 write text the fixed judge g_0 ranks above the document's lead?

    .venv/bin/python bench/prompt_probe.py                       # every variant -> bench/prompt_probe.json
    .venv/bin/python bench/prompt_probe.py --variants questions  # some of them

Every variant is `summarizer.prompt` for `reasoning: skip` (the document first, then the instruction),
with the config's other decoding settings (greedy, bf16 where configured, `no_repeat_ngram_size`). The
texts are scored like bench/grpo_probe.py (`resume.quality.quality_signals`: the 64 training documents
held out of every GRPO round, g_0, per-document Delta) and compared, paired per document, with the
default prompt's summaries and with the lead (title + first sentence, no LLM) on the same documents.

Why questions: the reward's RetScore is the cosine of the text to the document's TRAINING QUERIES (against
sampled negative queries), and Cranfield's queries are questions. doc2query (Nogueira et al., 2019) indexes
the queries a model predicts for a document; a text in the queries' own form may sit closer to them
than any summary. Summaries are cached per variant under bench/out/prompt_probe/<variant>/ (a rerun skips them).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(ROOT / "bench"))

TAIL = "\n\n"
VARIANTS = {
    "default": "",  # DEFAULT_PROMPTS["skip"]: "Summarize the text above in three sentences, using its technical terms."
    "questions": "{document}" + TAIL + "Write three questions that the text above answers, using its technical terms.",
    "queries": "{document}" + TAIL + "Write three search queries that a researcher would type to find the text "
               "above, using its technical terms.",
    "title_questions": "{document}" + TAIL + "Write a title for the text above, then two questions that it answers, "
                       "using its technical terms.",
    "keywords": "{document}" + TAIL + "List the ten most important technical terms of the text above.",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "cranfield.yaml"))
    ap.add_argument("--data", default=str(ROOT / "data" / "cranfield"))
    ap.add_argument("--set", action="append", default=[], help="config override for every variant")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    ap.add_argument("--out", default=str(ROOT / "bench" / "prompt_probe.json"))
    args = ap.parse_args(argv)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"--variants: unknown {unknown}; expected some of {list(VARIANTS)}")

    from _common import write_result
    from grpo_probe import measure, measure_lead, paired

    from resume.config import load_config
    from resume.data import load_beir
    from resume.grpo import judge_doc_ids
    from resume.loop import run_env

    base = load_config(args.config, args.set)
    if base.summarizer.reasoning != "skip":
        ap.error(f"{args.config}: the variants are prompts for summarizer.reasoning 'skip'")
    ds = load_beir(args.data)
    ids = judge_doc_ids(base, ds)
    out_root = ROOT / "bench" / "out" / "prompt_probe"
    t0 = time.perf_counter()
    lead = measure_lead(base, args.data, out_root / "lead", ids)
    print(f"lead: delta {lead['fixed_judge']['delta_mean']:+.4f}", flush=True)
    results = {}
    for name in ["default", *[n for n in names if n != "default"]]:
        cfg = dataclasses.replace(base, summarizer=dataclasses.replace(base.summarizer, prompt=VARIANTS[name]))
        r = measure(cfg, args.data, cfg.summarizer.model, out_root / name, ids)
        r["prompt"] = VARIANTS[name] or "(default)"
        if name != "default":
            r["vs_default"] = paired(results["default"], r)
        r["vs_lead"] = paired(lead, r)
        results[name] = r
        fj, q = r["fixed_judge"], r["quality"]
        print(f"{name}: delta {fj['delta_mean']:+.4f} reward {fj['reward_mean']:+.3f} len {q.get('mean_tokens'):.0f} "
              f"trunc {q.get('truncation_rate'):.2f} copy {q.get('copy_rate'):.2f} | vs lead {r['vs_lead']} "
              f"| gen {r['generation_s']:.0f} s", flush=True)
    doc = {"config": args.config, "overrides": args.set, "n_judge_docs": len(ids), "env": run_env(base),
           "summarizer": base.to_dict()["summarizer"], "lead": lead, "variants": results,
           "seconds": round(time.perf_counter() - t0, 1)}
    write_result(args.out, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
