"""Pieces shared by the benchmarks: for the FAISS ones (bench_index.py, bench_eval.py) the NumPy baseline,
the thread limit and the environment block of their JSON; for the serving ones (bench_serving.py,
bench_query_dtype.py) the top-10 agreement of two rankings."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from typing import Any

import numpy as np


def numpy_topk(docs: np.ndarray, queries: np.ndarray, k: int, chunk: int = 250) -> tuple[np.ndarray, np.ndarray]:
    """The baseline: exact top-k inner product by chunked matmul + argpartition + sort of the top k."""
    out_s = np.empty((len(queries), k), np.float32)
    out_i = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), chunk):
        s = queries[start:start + chunk] @ docs.T                                    # (chunk, n)
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]                             # unordered top k
        ps = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-ps, axis=1, kind="stable")
        out_i[start:start + chunk] = np.take_along_axis(part, order, axis=1)
        out_s[start:start + chunk] = np.take_along_axis(ps, order, axis=1)
    return out_s, out_i


def top10_overlap(a, b) -> float:
    """Mean share of the first ranking's top 10 that the second one's top 10 also holds (per query, then
    averaged); rankings are sequences of document ids or index rows, best first."""
    return round(float(np.mean([len(set(x[:10]) & set(y[:10])) / max(len(x[:10]), 1) for x, y in zip(a, b)])), 4)


def with_thread_limit(threads: int | None, fn: Callable[[], Any]) -> Any:
    """Run `fn` with BLAS/OpenMP (and FAISS) limited to `threads` on both sides; None = library defaults."""
    if threads is None:
        return fn()
    import faiss
    from threadpoolctl import threadpool_limits

    faiss.omp_set_num_threads(threads)
    with threadpool_limits(limits=threads):
        return fn()


def faiss_env() -> dict[str, Any]:
    import faiss

    return {"python": platform.python_version(), "numpy": np.__version__, "faiss": faiss.__version__,
            "faiss_threads": faiss.omp_get_max_threads(), "cpus": os.cpu_count(),
            "machine": platform.machine(), "loadavg_1m_at_end": os.getloadavg()[0]}
