"""Query encoding for serving, fp32 vs bf16: speed at batch 1 vs micro-batches, and retrieval quality.

    .venv/bin/python bench/bench_query_dtype.py            # -> bench/out/query_dtype.json (about 2 min on 2 cores)

What the retriever service does per micro-batch, without the HTTP server around it: `Encoder.encode_queries`
on one torch thread (the server's default on 2 cores), for Cranfield queries either one per call (batch 1,
the unbatched service) or in micro-batches of 16 (the batched service with 16 clients; length-sorted
passes of 8, as the server runs them on CPU). Best of 2 passes each, after a warm-up. The ratio
batch-1 / micro-batch time per query is the ceiling of the service's batching gain on this machine.

Quality: all 1400 Cranfield documents encoded once in fp32 (the index stays fp32, as in a bundle); the
queries of the dev and test splits encoded in fp32 and in bf16; MRR@10 / NDCG@10 / R@100 with
pytrec_eval, and the top-10 overlap of bf16 with fp32 per query. bf16 pays only on CPUs with native
bf16 matmuls (AMX / AVX512-BF16; `amx_bf16` in /proc/cpuinfo); elsewhere it is emulated and slower.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from _common import top10_overlap

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "cranfield"


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return sorted(f for f in flags if f in ("amx_bf16", "avx512_bf16", "amx_tile", "avx512f"))


def per_query_ms(enc, queries: list[str], micro: int, passes: int = 2) -> float:
    batches = [queries[i:i + micro] for i in range(0, len(queries), micro)]
    enc.encode_queries(batches[0], batch_size=min(micro, 8))  # warm-up
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        for b in batches:
            enc.encode_queries(b, batch_size=min(micro, 8))
        best = min(best, time.perf_counter() - t0)
    return best / len(queries) * 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="all-minilm-l6-v2")
    ap.add_argument("--n-queries", type=int, default=160, help="queries in the speed measurement")
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "query_dtype.json"))
    args = ap.parse_args(argv)

    import torch

    from resume.config import RetrieverConfig
    from resume.data import doc_text, read_corpus, read_qrels, read_queries
    from resume.evaluate import compute_metrics
    from resume.index import build_index, search
    from resume.io import atomic_write_json
    from resume.retriever import Encoder

    queries = read_queries(DATA / "queries.jsonl")
    speed_qs = list(queries.values())[:args.n_queries]
    cfg = RetrieverConfig()
    dtypes = ("float32", "bfloat16")
    encoders = {dt: Encoder(args.model, cfg, device="cpu", dtype=dt) for dt in dtypes}

    torch.set_num_threads(1)
    speed = {}
    for dt, enc in encoders.items():
        b1 = per_query_ms(enc, speed_qs, 1)
        mb = per_query_ms(enc, speed_qs, args.micro_batch)
        speed[dt] = {"batch1_ms_per_query": round(b1, 3), f"micro{args.micro_batch}_ms_per_query": round(mb, 3),
                     "batching_gain": round(b1 / mb, 2)}
        print(dt, speed[dt], flush=True)

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    docs = list(read_corpus(DATA / "corpus.jsonl"))
    ids = [d["_id"] for d in docs]
    t0 = time.perf_counter()
    index = build_index(encoders["float32"].encode_docs([doc_text(d) for d in docs]))
    doc_s = time.perf_counter() - t0
    quality = {}
    for split in ("dev", "test"):
        qrels = read_qrels(DATA / "qrels" / f"{split}.tsv")
        qids = sorted(qrels)
        ranked = {}
        for dt, enc in encoders.items():
            scores, idx = search(index, enc.encode_queries([queries[q] for q in qids]), 100)
            run = {q: {ids[j]: float(s) for s, j in zip(scores[i], idx[i]) if j >= 0} for i, q in enumerate(qids)}
            metrics = compute_metrics(qrels, run)  # the run holds the top 100: recall@1000 would repeat recall@100
            quality.setdefault(split, {})[dt] = {k: round(v, 4) for k, v in metrics.items() if k != "recall@1000"}
            ranked[dt] = idx
        quality[split]["n_queries"] = len(qids)
        quality[split]["bf16_top10_overlap_with_fp32"] = top10_overlap(ranked["float32"], ranked["bfloat16"])
        print(split, quality[split], flush=True)

    result = {
        "bench": "query_dtype",
        "model": args.model,
        "candidate": "bf16 query encoder", "baseline": "fp32 query encoder (the CPU default), same run",
        "speed": {"threads": 1, "n_queries": len(speed_qs), "micro_batch": args.micro_batch, **speed,
                  "bf16_vs_fp32_micro_batch": round(speed["float32"][f"micro{args.micro_batch}_ms_per_query"]
                                                    / speed["bfloat16"][f"micro{args.micro_batch}_ms_per_query"], 2)},
        "quality": {"index": f"{len(ids)} Cranfield documents, fp32, exact inner product", "doc_encode_s":
                    round(doc_s, 1), **quality},
        "machine": {"cpus": os.cpu_count(), "cpu_flags": cpu_flags(), "platform": platform.platform(),
                    "python": sys.version.split()[0], "torch": torch.__version__,
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
