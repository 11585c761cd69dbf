"""Measure summary formats before adopting one: f_0's summaries of held-out training documents, scored by g_0.

    .venv/bin/python bench/summary_format.py                                   # all variants, 64 documents
    .venv/bin/python bench/summary_format.py --variants skip,lead --n-docs 64  # some of them

For each variant (a set of `summarizer.*` overrides on top of --config) the base summarizer f_0 writes
greedy summaries of the same --n-docs training documents (the fixed judge's held-out set,
`resume.grpo.judge_doc_ids`, so they are never GRPO prompts), and the report gives the separator,
placeholder, boilerplate, truncation and copy rates, distinct-2, mean length (retriever tokens), and the
reward's mean Delta = RetScore(summary) - RetScore(document) and total reward under g_0
(`resume.quality.fixed_judge`). Two references without an LLM: `lead` (title + first sentence) and
`document` (the document itself, Delta = 0 by definition). Summaries are cached under
bench/out/summary_format/<variant>/ (a rerun only scores). Writes bench/summary_format.json.
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

OLD_PROMPT = ("Write a retrieval-oriented summary of the document below ({min_tokens} to {max_tokens} tokens, "
              "dense with its key terms).\nReply in this format:\n<think>\n[key terms and search questions]\n"
              "{separator}\n[summary]\n\nDocument:\n{document}")

# name -> (overrides, what it is). Every variant starts from RESET, so the --config's own summarizer
# settings (prompt, reasoning, lengths, n-gram ban) never leak into a variant.
RESET = ["summarizer.prompt=''", "summarizer.no_repeat_ngram_size=0", "summarizer.prefill_think=true"]
SKIP = ["summarizer.reasoning=skip", "summarizer.max_doc_tokens=512", "summarizer.max_new_tokens=160"]
VARIANTS: dict[str, tuple[list[str], str]] = {
    "old": ([f"summarizer.prompt={json.dumps(OLD_PROMPT)}", "summarizer.reasoning=think",
             "summarizer.max_doc_tokens=192", "summarizer.max_new_tokens=96"],
            "the format until now: bracketed placeholders, think, doc cut at 192 tokens, 96 new tokens"),
    "think": (["summarizer.reasoning=think", "summarizer.max_doc_tokens=512", "summarizer.max_new_tokens=256"],
              "the default think prompt (no placeholders), whole document, 256 new tokens"),
    "skip_words": ([*SKIP, "summarizer.prompt=" + json.dumps(
        "Summarize the document below in {min_words} to {max_words} words for a search engine. Keep its key "
        "technical terms and say what it studies, how, and what it finds.\n\nDocument:\n{document}")],
                   "empty reasoning prefilled, instruction first with a word range, whole document, 160 new tokens"),
    "skip_abstract": ([*SKIP, "summarizer.prompt=" + json.dumps(
        "Summarize this scientific abstract in three sentences. Keep its technical terms.\n\n{document}")],
                      "empty reasoning, 'summarize this scientific abstract in three sentences' first"),
    "skip": (SKIP, "empty reasoning, the default skip prompt: document first, then 'summarize the text above "
                   "in three sentences, using its technical terms'"),
    "skip_nr5": ([*SKIP, "summarizer.no_repeat_ngram_size=5"], "skip, no 5-gram of the summary repeated"),
    "skip_nr3": ([*SKIP, "summarizer.no_repeat_ngram_size=3"], "skip, no 3-gram of the summary repeated"),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "cranfield.yaml"))
    ap.add_argument("--data", default=str(ROOT / "data" / "cranfield"))
    ap.add_argument("--variants", default="old,think,skip_words,skip,skip_nr5,skip_nr3,lead,document")
    ap.add_argument("--n-docs", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "bench" / "summary_format.json"))
    ap.add_argument("--set", action="append", default=[], help="extra config override for every variant")
    args = ap.parse_args(argv)

    from resume.config import load_config
    from resume.data import load_beir
    from resume.grpo import judge_doc_ids
    from resume.io import atomic_write_json
    from resume.loop import run_env
    from resume.quality import quality_signals
    from resume.retriever import Encoder
    from resume.summarizer import summarize_corpus

    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS and n not in ("lead", "document")]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; known: {', '.join([*VARIANTS, 'lead', 'document'])}")
    base = load_config(args.config, [*args.set, f"grpo.judge_docs={args.n_docs}"])
    ds = load_beir(args.data)
    ids = judge_doc_ids(base, ds)
    judge = Encoder(base.retriever.model, base.retriever, device="cpu")
    out_dir = ROOT / "bench" / "out" / "summary_format"
    results: dict[str, object] = {}
    for name in names:
        t0 = time.perf_counter()
        path = out_dir / name / "summaries.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        if name == "document":
            from resume.data import doc_text
            from resume.io import write_jsonl

            texts = [doc_text(ds.corpus[d]) for d in ids]
            write_jsonl(path, [{"_id": d, "summary": t, "completion": "", "n_tokens": n, "has_separator": True,
                                "truncated": False} for d, t, n in zip(ids, texts, judge.count_tokens(texts))])
            cfg, what, stats = base, "the document itself (Delta = 0 by definition)", {}
        elif name == "lead":
            from resume.io import iter_jsonl, write_jsonl
            from resume.lead import write_lead_summaries

            write_lead_summaries(args.data, path, retriever_tokenizer=base.retriever.model)
            keep = set(ids)
            write_jsonl(path, [r for r in iter_jsonl(path) if r["_id"] in keep])
            cfg, what, stats = base, "title + first sentence, no LLM", {}
        else:
            overrides, what = VARIANTS[name]
            cfg = load_config(args.config, [*args.set, f"grpo.judge_docs={args.n_docs}", *RESET, *overrides])
            stats = summarize_corpus(cfg, data_dir=args.data, model=cfg.summarizer.model,
                                     retriever=cfg.retriever.model, out_path=path, doc_ids=ids)
        signals = quality_signals(cfg, data_dir=args.data, summaries=path, judge=cfg.retriever.model, doc_ids=ids,
                                  encoder=judge)
        q, judge_res = signals["text"], signals["fixed_judge"]
        results[name] = {"what": what, "quality": q, "fixed_judge": judge_res,
                         "generation": {k: stats.get(k) for k in ("tokens_per_s", "generated_tokens", "dtype",
                                                                    "generation_time_s")} if stats else None,
                         "seconds": round(time.perf_counter() - t0, 1)}
        print(f"{name:12s} sep {q['separator_rate']:.2f} placeholder {q['placeholder_rate']:.2f} "
              f"boiler {q['boilerplate_rate']:.2f} trunc {q['truncation_rate']:.2f} copy {q['copy_rate']:.2f} "
              f"d2 {q['distinct_2']:.2f} len {q['mean_tokens']:.0f} | delta {judge_res['delta_mean']:+.3f} "
              f"reward {judge_res['reward_mean']:+.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    doc = {"n_docs": len(ids), "data": args.data, "config": args.config, "judge": base.retriever.model,
           "summarizer": base.summarizer.model, "dtype": base.summarizer.dtype, "env": run_env(base),
           "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "variants": results}
    atomic_write_json(Path(args.out), doc)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
