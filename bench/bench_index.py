"""Benchmark: FAISS exact inner-product search (IndexFlatIP) vs NumPy brute force on the same data.

    .venv/bin/python bench/bench_index.py                       # -> bench/out/bench_index.json
    .venv/bin/python bench/bench_index.py --n 20000 --out /tmp/b.json

Data: `n` random unit vectors (dim 384, all-MiniLM size), `nq` random unit queries, top-k by inner
product. Baseline: NumPy `queries @ docs.T` in query chunks + `argpartition` + sort of the top k
(what a hand-written retriever does). Both are timed `repeats` times after a warm-up on 50 queries; the median is
reported, with the ratio baseline / faiss and the overlap of the two top-k lists (1.0 = identical
hits). Optionally (`--ivf`) an IVF index too (build time, search time, recall@k against exact).
Bounded to well under 60 s on 2 cores at the defaults.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _common import faiss_env, numpy_topk, with_thread_limit  # noqa: E402

from resume.index import build_index, search  # noqa: E402
from resume.io import atomic_write_json  # noqa: E402


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(y) for x, y in zip(a, b)]))


def timed(fn, repeats: int, warmup=None) -> tuple[float, list[float], object]:
    (warmup or fn)()  # warm-up (BLAS / OpenMP thread pools, page faults)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--nq", type=int, default=1000)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ivf", action="store_true", help="also time an IVF index (nlist 256, nprobe 16)")
    p.add_argument("--threads", type=int, default=None,
                   help="limit BLAS/OpenMP threads of both sides (threadpoolctl); default: library defaults")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).parent / "out" / "bench_index.json"))
    args = p.parse_args(argv)
    return with_thread_limit(args.threads, lambda: _run(args))


def _run(args: argparse.Namespace) -> dict:


    rng = np.random.default_rng(args.seed)
    docs = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = rng.standard_normal((args.nq, args.dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    t = time.perf_counter()
    index = build_index(docs, "flat", gpu=False)
    build_s = time.perf_counter() - t
    few = queries[:50]
    faiss_s, faiss_runs, (f_scores, f_idx) = timed(lambda: search(index, queries, args.k), args.repeats,
                                                   lambda: search(index, few, args.k))
    numpy_s, numpy_runs, (n_scores, n_idx) = timed(lambda: numpy_topk(docs, queries, args.k), args.repeats,
                                                   lambda: numpy_topk(docs, few, args.k))

    result = {
        "name": "bench_index",
        "what": f"exact top-{args.k} inner-product search, {args.nq} queries over {args.n} x {args.dim} float32",
        "candidate": "faiss IndexFlatIP (resume.index.build_index kind=flat, CPU)",
        "baseline": "numpy brute force: chunked queries @ docs.T + argpartition + argsort",
        "candidate_s": faiss_s,
        "baseline_s": numpy_s,
        "ratio_baseline_over_candidate": numpy_s / faiss_s,
        "candidate_runs_s": faiss_runs,
        "baseline_runs_s": numpy_runs,
        "candidate_qps": args.nq / faiss_s,
        "baseline_qps": args.nq / numpy_s,
        "flat_build_s": build_s,
        "topk_overlap": overlap(f_idx, n_idx),
        "max_abs_score_diff": float(np.max(np.abs(f_scores - n_scores))),
        "params": vars(args),
        "env": faiss_env(),
    }
    if args.ivf:
        t = time.perf_counter()
        ivf = build_index(docs, "ivf", nlist=256, nprobe=16, gpu=False)
        ivf_build = time.perf_counter() - t
        ivf_s, _, (_, i_idx) = timed(lambda: search(ivf, queries, args.k), args.repeats,
                                     lambda: search(ivf, few, args.k))
        result["ivf"] = {"nlist": 256, "nprobe": 16, "build_s": ivf_build, "search_s": ivf_s,
                         "speedup_vs_flat": faiss_s / ivf_s, f"recall@{args.k}_vs_exact": overlap(i_idx, f_idx)}
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
