"""Pieces shared by the benchmarks: for the FAISS ones (bench_index.py, bench_eval.py) the NumPy baseline,
the thread limit and the environment block of their JSON; for the serving ones (bench_serving.py,
bench_serving_peer.py, bench_query_dtype.py) the top-10 agreement of two rankings and the closed-loop load
generator (`RawClient`, `drive`, `summarize`); for the probes and the GRPO step, `write_result` and `rel`."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


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


# ------------------------------------------------------------------------------------ load generation


class RawClient:
    """A minimal HTTP/1.1 keep-alive client over asyncio streams: far less CPU per request than httpx,
    so on a small machine the load generator takes little from the server it measures."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:] if ":" in x)}
        data = await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def drive(url: str, path: str, bodies: Sequence[bytes], ok: Callable[[Any], bool], *, clients: int,
                duration: float, max_requests: int) -> dict[str, Any]:
    """`clients` closed-loop keep-alive clients POSTing `bodies` round-robin to `url + path` for `duration`
    seconds or `max_requests` requests in all, whichever comes first. A request counts as good when it gets
    200 and `ok(parsed JSON answer)` is true; anything else (status, bad JSON, a broken connection) is an
    error. Returns {"lat": [seconds of each good request], "errors": [reprs], "wall": seconds}."""
    lat: list[float] = []
    errors: list[str] = []
    counter = {"next": 0}
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stop_at = time.perf_counter() + duration

    async def worker():
        c = RawClient(host, int(port))
        try:
            while time.perf_counter() < stop_at and counter["next"] < max_requests:
                i = counter["next"]
                counter["next"] += 1
                t0 = time.perf_counter()
                try:
                    status, data = await c.post(path, bodies[i % len(bodies)])
                    good = status == 200 and bool(ok(json.loads(data)))
                except (OSError, asyncio.IncompleteReadError, ValueError, KeyError, IndexError, TypeError) as e:
                    errors.append(repr(e))
                    await c.close()
                    continue
                if not good:
                    errors.append(f"{status} {data[:200]!r}")
                    continue
                lat.append(time.perf_counter() - t0)
        finally:
            await c.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return {"lat": lat, "errors": errors, "wall": time.perf_counter() - t0}


def summarize(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One server's load phases (`drive` results) pooled: requests, errors, QPS, p50/p99/mean latency."""
    lat = [x for p in parts for x in p["lat"]]
    errors = [e for p in parts for e in p["errors"]]
    wall = sum(p["wall"] for p in parts)
    ms = np.array(lat) * 1000
    return {"requests": len(lat) + len(errors), "ok": len(lat), "errors": len(errors), "error_samples": errors[:3],
            "wall_s": round(wall, 2), "qps": round(len(lat) / wall, 1) if wall else 0.0,
            "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
            "mean_ms": round(float(ms.mean()), 2) if len(ms) else None,
            "qps_per_round": [round(len(p["lat"]) / p["wall"], 1) if p["wall"] else 0.0 for p in parts]}


def write_result(path: str | os.PathLike, doc: dict[str, Any]) -> None:
    """Stamp `doc` with the UTC time it finished, write it atomically to `path` (JSON) and say so."""
    from resume.io import atomic_write_json

    doc["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic_write_json(path, doc)
    print(f"wrote {path}")


def rel(path: str | os.PathLike) -> str:
    """A path inside the repository relative to it (JSON written here must not name this machine's paths);
    any other path as given."""
    p = Path(path)
    return str(p.resolve().relative_to(ROOT)) if p.is_absolute() and p.resolve().is_relative_to(ROOT) else str(path)


# ------------------------------------------------------------- retrieval probes (views_probe, title_probe)

METRICS_COMPARED = ("mrr@10", "ndcg@10")


def dev_test_index(cfg: Any, out_dir: Path, *, data: str | os.PathLike, retriever: str | os.PathLike,
                   texts: Path | None, fused: bool = False, summary_title: bool = False) -> dict[str, Any]:
    """Dev and test metrics (and per-query values) of one index under one retriever, cached in
    `out_dir/result.json`; `fused`: the document + `texts` views with the document weight chosen on dev."""
    from resume.evaluate import choose_fusion_weight, evaluate_retrieval
    from resume.io import atomic_write_json

    done = out_dir / "result.json"
    if done.exists():
        return json.loads(done.read_text(encoding="utf-8"))
    weight, curve = None, None
    if fused:
        choice = choose_fusion_weight(cfg, data_dir=data, split="dev", retriever=str(retriever), texts=texts,
                                      summary_title=summary_title)
        weight, curve = choice["weight"], choice["curve"]
    res: dict[str, Any] = {"retriever": rel(retriever), "texts": None if texts is None else rel(texts),
                           "summary_title": summary_title, "mode": "fused" if fused else "summary",
                           "fusion_weight": weight, "dev_curve_mrr@10": curve}
    for split in ("dev", "test"):
        res[split] = evaluate_retrieval(cfg, data_dir=data, split=split, retriever=str(retriever), texts=texts,
                                        out_dir=out_dir / split, mode=res["mode"], fusion_weight=weight,
                                        summary_title=summary_title)
        res[f"{split}_per_query"] = json.loads((out_dir / split / "per_query.json").read_text(encoding="utf-8"))
    atomic_write_json(done, res)
    return res


def cpu_env() -> dict[str, Any]:
    """The CPU a measurement ran on: model name, core count and the bf16 flags (`resume.loop.run_env`)."""
    from resume.config import ResumeConfig
    from resume.loop import run_env

    return {k: v for k, v in run_env(ResumeConfig()).items() if k in ("cpu", "amx_bf16", "avx512_bf16", "cpus")}


def finished_run(ap: Any, run_dir: Path, *extra: Path) -> tuple[Any, Path, Path, Path]:
    """(config, working set, S_1, g_1) of a finished one-round `resume run` directory; `ap.error` (exit 2,
    naming the path) when any of them, or of `extra` (paths inside the run), is missing."""
    from resume.config import load_config

    data, s1, g1 = run_dir / "data", run_dir / "iter_01" / "summaries.jsonl", run_dir / "iter_01" / "retriever" / "model"
    for p in (run_dir / "config.yaml", data, s1, g1, *extra):
        if not p.exists():
            ap.error(f"{p}: not found; --run-dir must be a finished `resume run` directory with one round")
    return load_config(run_dir / "config.yaml"), data, s1, g1


def paired_comparisons(results: dict[str, dict], pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """"a vs b" -> split -> metric -> `resume.evaluate.paired_test` (b the reference) for the pairs present."""
    from resume.evaluate import paired_test

    return {f"{a} vs {b}": {split: {m: paired_test(results[b][f"{split}_per_query"], results[a][f"{split}_per_query"],
                                                   metric=m) for m in METRICS_COMPARED} for split in ("dev", "test")}
            for a, b in pairs if a in results and b in results}


def write_probe_result(path: str | os.PathLike, head: dict[str, Any], cfg: Any, results: dict[str, dict],
                       pairs: Sequence[tuple[str, str]], times: dict[str, float], t_start: float) -> None:
    """Print each row and write a retrieval probe's JSON: `head` (what it ran on), the environment, the
    fine-tuning settings, the results (per-query values stay in the cache) and the paired comparisons."""
    from resume.loop import run_env

    for k, v in results.items():
        print(f"{k:22s} dev {v['dev']['mrr@10']:.3f}/{v['dev']['ndcg@10']:.3f}  test {v['test']['mrr@10']:.3f}/"
              f"{v['test']['ndcg@10']:.3f}  w={v['fusion_weight']}")
    write_result(path, {**head, "env": run_env(cfg), "finetune": cfg.to_dict()["finetune"], "times_s": times,
                        "results": {k: {kk: vv for kk, vv in v.items() if not kk.endswith("_per_query")}
                                    for k, v in results.items()},
                        "comparisons": paired_comparisons(results, pairs),
                        "seconds": round(time.perf_counter() - t_start, 1)})
