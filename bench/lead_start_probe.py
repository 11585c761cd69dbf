"""Probe (issue #11, a lever beyond the paper): the summary STARTS with the document's lead, the LLM writes the rest.

    .venv/bin/python bench/lead_start_probe.py             # both variants -> bench/lead_start_probe.json

The lead (title + first sentence, `resume.lead.lead_text`) beats every f_0 summary under the fixed judge g_0
(docs/LEVERS.md row 17). Here the lead is prefilled after the separator and f_0 (greedy, the config's
decoding settings) continues it, so the summary is lead + continuation:

- `continue`: the continuation is free text (`--max-new` 96 new tokens);
- `terms`: the prefill ends with "Key terms:" and the model lists terms (48 new tokens). Its placeholder rate
  is 1.0 by construction: "key terms" is prompt wording that `resume.quality.has_placeholder` flags.

Both are scored like bench/grpo_probe.py (`resume.quality.quality_signals`: the same 64 held-out training
documents, g_0, per-document Delta) and compared, paired per document, with f_0's own summaries and with the
lead alone from bench/grpo_probe.json, which must come from the same machine (this script checks the CPU).
This is a measurement script, not a product path: adopting the lever would need the per-document prefix in
the prompt, the GRPO reward and serving.
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
sys.path.insert(0, str(ROOT / "bench"))

VARIANTS = {"continue": ("", 96), "terms": (" Key terms:", 48)}


def run_variant(cfg, ds, ids, model, tok, rtok, data: str, name: str, out: Path) -> dict:
    from resume.data import doc_text
    from resume.io import write_jsonl
    from resume.lead import lead_text
    from resume.quality import quality_signals
    from resume.summarizer import build_prompt, generate_prompts

    tail, max_new = VARIANTS[name]
    starts = {d: lead_text(ds.corpus[d]) + tail for d in ids}
    prompts = [build_prompt(tok, doc_text(ds.corpus[d]), cfg) + starts[d] + " " for d in ids]
    t0, completions, finished = time.perf_counter(), [], []
    bs = cfg.summarizer.batch_size
    for i in range(0, len(prompts), bs):
        texts, _, fins = generate_prompts(model, tok, prompts[i:i + bs], max_new, cfg.summarizer.separator,
                                          return_finished=True,
                                          no_repeat_ngram_size=cfg.summarizer.no_repeat_ngram_size)
        completions += texts
        finished += fins
    gen_s = time.perf_counter() - t0
    rows = []
    for d, c, fin in zip(ids, completions, finished):
        s = " ".join(f"{starts[d]} {c}".split())
        rows.append({"_id": d, "summary": s, "completion": c, "has_separator": True, "truncated": not fin,
                     "n_tokens": len(rtok(s, add_special_tokens=False)["input_ids"])})
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "summaries.jsonl", rows)
    q = quality_signals(cfg, data_dir=data, summaries=out / "summaries.jsonl", judge=cfg.retriever.model,
                        doc_ids=ids, per_doc=True)
    return {"prefill_tail": tail, "max_new_tokens": max_new, "generation_s": round(gen_s, 1),
            "quality": q["text"], "fixed_judge": q["fixed_judge"],
            "examples": [r["summary"] for r in rows[:3]]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "cranfield.yaml"))
    ap.add_argument("--data", default=str(ROOT / "data" / "cranfield"))
    ap.add_argument("--reference", default=str(ROOT / "bench" / "grpo_probe.json"),
                    help="bench/grpo_probe.json of the same machine: f_0's and the lead's per-document Delta")
    ap.add_argument("--variants", default="continue,terms")
    ap.add_argument("--out", default=str(ROOT / "bench" / "lead_start_probe.json"))
    args = ap.parse_args(argv)

    from _common import rel
    from grpo_probe import paired

    from resume.config import load_config
    from resume.data import load_beir
    from resume.grpo import judge_doc_ids
    from resume.io import atomic_write_json
    from resume.loop import run_env
    from resume.models import load_causal_lm, load_tokenizer
    from resume.summarizer import set_cpu_threads

    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        ap.error(f"--variants: unknown {unknown}; expected some of {sorted(VARIANTS)}")
    ref = json.loads(Path(args.reference).read_text(encoding="utf-8"))
    cfg = load_config(args.config, [])
    env = run_env(cfg)
    if ref["env"].get("cpu") != env.get("cpu"):
        sys.exit(f"{args.reference} was measured on {ref['env'].get('cpu')!r}, this machine is {env.get('cpu')!r}: "
                 "greedy bf16 summaries differ between CPUs; rerun bench/grpo_probe.py --measure-only --lead here first")
    ds = load_beir(args.data)
    ids = judge_doc_ids(cfg, ds)
    set_cpu_threads()
    model, tok = load_causal_lm(cfg.summarizer.model, dtype=cfg.summarizer.dtype, device="cpu")
    model.eval()
    rtok = load_tokenizer(cfg.retriever.model)
    variants = {}
    for name in names:
        r = run_variant(cfg, ds, ids, model, tok, rtok, args.data, name, ROOT / "bench" / "out" / "lead_start" / name)
        r["vs_f0"], r["vs_lead"] = paired(ref["before"], r), paired(ref["lead"], r)
        variants[name] = r
        print(f"{name}: delta {r['fixed_judge']['delta_mean']:+.4f}; vs f_0 {r['vs_f0']['gain']:+.4f} "
              f"(p {r['vs_f0']['t_p']:.3f}); vs lead {r['vs_lead']['gain']:+.4f} (p {r['vs_lead']['t_p']:.3f})",
              flush=True)
    doc = {"config": rel(args.config), "n_judge_docs": len(ids), "env": env, "reference": rel(args.reference),
           "f0_delta": ref["before"]["fixed_judge"]["delta_mean"], "lead_delta": ref["lead"]["fixed_judge"]["delta_mean"],
           "variants": variants, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_json(Path(args.out), doc)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
