"""Benchmark: evaluation time for 1000 queries over 100k vectors (FAISS search at k=1000 + metrics).

    .venv/bin/python bench/bench_eval.py                        # -> bench/out/bench_eval.json
    .venv/bin/python bench/bench_eval.py --n 20000 --out /tmp/e.json

Data: `n` random unit document vectors (dim 384); each of `nq` queries has 1-5 relevant documents
(graded 1-3) and is a noisy mix of them, so the metrics are neither 0 nor 1. The candidate is the
evaluate stage's path: `DocIndex` flat search at k=1000 -> run dict -> `compute_metrics` (pytrec_eval,
MRR@10 with the top-10 truncation, NDCG@10, R@100, R@1000), plus writing and re-reading the TREC run.
The baseline is the same pipeline with NumPy brute-force search in place of FAISS; the ratio is
baseline / candidate for the search and for the whole evaluation (metrics are computed once per path
and must agree). Bounded to well under 60 s on 2 cores at the defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _common import faiss_env, numpy_topk, with_thread_limit  # noqa: E402

from resume.evaluate import compute_metrics, read_trec_run, write_trec_run  # noqa: E402
from resume.index import DocIndex  # noqa: E402
from resume.io import atomic_write_json  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--nq", type=int, default=1000)
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--noise", type=float, default=3.0, help="norm of the noise added to the unit signal")
    p.add_argument("--threads", type=int, default=None,
                   help="limit BLAS/OpenMP threads of both sides (threadpoolctl); default: library defaults")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).parent / "out" / "bench_eval.json"))
    args = p.parse_args(argv)
    return with_thread_limit(args.threads, lambda: _run(args))


def _run(args: argparse.Namespace) -> dict:

    import pytrec_eval  # noqa: F401  (import time not counted)

    rng = np.random.default_rng(args.seed)
    docs = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    doc_ids = [f"D{i}" for i in range(args.n)]
    qrels: dict[str, dict[str, int]] = {}
    queries = np.empty((args.nq, args.dim), np.float32)
    for qi in range(args.nq):
        rel = rng.choice(args.n, size=int(rng.integers(1, 6)), replace=False)
        grades = rng.integers(1, 4, size=len(rel))
        qrels[f"Q{qi}"] = {doc_ids[j]: int(g) for j, g in zip(rel, grades)}
        signal = (grades[:, None] * docs[rel]).sum(0)
        noise = rng.standard_normal(args.dim)
        v = signal / np.linalg.norm(signal) + args.noise * noise / np.linalg.norm(noise)
        queries[qi] = v / np.linalg.norm(v)
    qids = list(qrels)

    def run_from(scores: np.ndarray, idx: np.ndarray) -> dict[str, dict[str, float]]:
        return {q: {doc_ids[j]: s for s, j in zip(srow, irow) if j >= 0}
                for q, srow, irow in zip(qids, scores.tolist(), idx.tolist())}

    timings: dict[str, float] = {}
    t = time.perf_counter()
    index = DocIndex.build(doc_ids, docs, "flat", gpu=False)
    timings["index_build_s"] = time.perf_counter() - t
    t = time.perf_counter()
    f_scores, f_idx = index.search_arrays(queries, args.k)
    timings["search_s"] = time.perf_counter() - t
    t = time.perf_counter()
    run = run_from(f_scores, f_idx)
    timings["run_dict_s"] = time.perf_counter() - t
    t = time.perf_counter()
    metrics = compute_metrics(qrels, run)
    timings["metrics_s"] = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_trec_run(Path(tmp) / "run.trec", run)
        timings["write_run_s"] = time.perf_counter() - t
        t = time.perf_counter()
        back = read_trec_run(Path(tmp) / "run.trec")
        timings["read_run_s"] = time.perf_counter() - t
    assert back == run
    candidate_total = sum(timings.values())

    t = time.perf_counter()
    n_scores, n_idx = numpy_topk(docs, queries, args.k, chunk=100)
    base_search = time.perf_counter() - t
    t = time.perf_counter()
    base_metrics = compute_metrics(qrels, run_from(n_scores, n_idx))
    base_rest = time.perf_counter() - t
    baseline_total = base_search + base_rest + timings["write_run_s"] + timings["read_run_s"]

    result = {
        "name": "bench_eval",
        "what": f"evaluate {args.nq} queries over {args.n} x {args.dim} random vectors: search k={args.k} + "
                "run dict + pytrec_eval metrics + TREC run write/read",
        "candidate": "resume.index.DocIndex flat (faiss IndexFlatIP, CPU) + resume.evaluate.compute_metrics",
        "baseline": "numpy brute-force top-k (chunked matmul + argpartition) + the same metrics code",
        "candidate_total_s": candidate_total,
        "baseline_total_s": baseline_total,
        "ratio_total_baseline_over_candidate": baseline_total / candidate_total,
        "candidate_search_s": timings["search_s"],
        "baseline_search_s": base_search,
        "ratio_search_baseline_over_candidate": base_search / timings["search_s"],
        "candidate_breakdown_s": timings,
        "queries_per_s": args.nq / candidate_total,
        "metrics": metrics,
        "metrics_agree_with_baseline": all(abs(metrics[m] - base_metrics[m]) < 1e-9 for m in metrics),
        "params": vars(args),
        "env": faiss_env(),
    }
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
