"""Benchmark (issue #12): corpus summarisation at `summarizer.batch_size` 16 (the configs' default) vs 32 and 64.

    .venv/bin/python bench/bench_batch_size.py                  # -> bench/batch_size.json (~13 min on 2 cores)
    .venv/bin/python bench/bench_batch_size.py --batch-sizes 16,32 --repeats 2 --out bench/batch_size_abba.json

The same 64 Cranfield documents (a seeded sample of the whole corpus, so long and short ones mix as in a
corpus pass), `configs/cranfield.yaml`'s prompt and lengths (up to 512 document tokens, 160 new tokens,
no-repeat 3-grams), greedy, one loaded model, through the product's `summarize_corpus` (length-sorted
batches, left padding, KV cache; a fresh cache per arm, so every document is generated). Baseline: batch 16,
in the same run; `--repeats R` runs every arm R times, every other pass in reverse order (16 32 32 16 …),
and averages. Reports time, generated tokens per second, the speed ratio over the baseline and the share
of summaries identical to the baseline's (greedy text can change in rare tokens between batch shapes: the
padded matmuls sum in another order). `--dtype` defaults to float32 (CPUs without native bf16).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (see resume.summarizer)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "cranfield.yaml"))
    ap.add_argument("--data", default=str(ROOT / "data" / "cranfield"))
    ap.add_argument("--n-docs", type=int, default=64)
    ap.add_argument("--batch-sizes", default="16,32,64", help="the first is the baseline")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1,
                    help="passes over the arms, every other one in reverse order (ABBA), against drift in the machine")
    ap.add_argument("--out", default=str(ROOT / "bench" / "batch_size.json"))
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.batch_sizes.split(",")]

    from _common import rel, write_result

    from resume.config import load_config
    from resume.data.load import load_beir
    from resume.loop import run_env
    from resume.models import load_causal_lm
    from resume.run_dir import read_summaries
    from resume.summarizer import set_cpu_threads, summarize_corpus

    cfg = load_config(args.config, [f"summarizer.dtype={args.dtype}", "device=cpu"])
    ids = sorted(load_beir(args.data).corpus)
    ids = random.Random(args.seed).sample(ids, min(args.n_docs, len(ids)))
    set_cpu_threads()
    loaded = load_causal_lm(cfg.summarizer.model, dtype=args.dtype, device="cpu")
    loaded[0].eval()
    arms: dict[str, dict] = {}
    texts: dict[int, dict[str, str]] = {}
    order = [bs for r in range(args.repeats) for bs in (sizes if r % 2 == 0 else sizes[::-1])]
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        for n, bs in enumerate(order):
            c = load_config(args.config, [f"summarizer.dtype={args.dtype}", "device=cpu",
                                          f"summarizer.batch_size={bs}"])
            out = Path(tmp) / f"b{bs}-{n}" / "summaries.jsonl"  # a fresh cache: every document generated
            t0 = time.perf_counter()
            st = summarize_corpus(c, data_dir=args.data, model=c.summarizer.model, retriever=c.retriever.model,
                                  out_path=out, doc_ids=ids, loaded=loaded, progress=False)
            wall = time.perf_counter() - t0
            got = read_summaries(out)
            a = arms.setdefault(str(bs), {"generation_s_runs": [], "seconds_runs": [],
                                          "generated_tokens": st["generated_tokens"],
                                          "truncated_share": st["truncated_share"],
                                          "mean_n_tokens": round(st["mean_n_tokens"], 1), "same_text_every_run": True})
            a["generation_s_runs"].append(st["generation_time_s"])
            a["seconds_runs"].append(round(wall, 1))
            a["same_text_every_run"] &= bs not in texts or got == texts[bs]
            texts.setdefault(bs, got)
            print(f"batch {bs}: {wall:.1f} s, {st['tokens_per_s']:.1f} tok/s", flush=True)
    for a in arms.values():
        a["generation_s"] = round(sum(a["generation_s_runs"]) / len(a["generation_s_runs"]), 3)
        a["seconds"] = round(sum(a["seconds_runs"]) / len(a["seconds_runs"]), 1)
        a["tokens_per_s"] = round(a["generated_tokens"] / a["generation_s"], 2)
        a["docs_per_s"] = round(len(ids) / a["generation_s"], 4)
    base = sizes[0]
    for bs in sizes:
        a = arms[str(bs)]
        a["speed_vs_baseline"] = round(arms[str(base)]["generation_s"] / a["generation_s"], 3)
        a["identical_to_baseline"] = round(sum(texts[bs][d] == texts[base][d] for d in ids) / len(ids), 4)
    doc = {"config": rel(args.config), "n_docs": len(ids), "seed": args.seed, "baseline": f"batch {base}",
           "repeats": args.repeats, "order": order, "dtype": args.dtype, "max_doc_tokens": cfg.summarizer.max_doc_tokens,
           "max_new_tokens": cfg.summarizer.max_new_tokens, "env": run_env(cfg),
           "loadavg_1m_at_end": os.getloadavg()[0], "arms": arms}
    print(json.dumps(arms, indent=1))
    write_result(args.out, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
