"""How search cost grows: flat (exact, the baseline) vs IVF vs HNSW over 10k, 100k and 1M vectors.

    .venv/bin/python bench/bench_scaling.py                       # -> bench/scaling.json (28 min loaded, 3.4 GiB)
    .venv/bin/python bench/bench_scaling.py --markdown bench/scaling.json   # the README section, no rerun
    .venv/bin/python bench/bench_scaling.py --sizes 10000,100000 --out bench/out/scaling.json   # a few minutes

Vectors: real all-MiniLM-L6-v2 embeddings (`resume.retriever.Encoder`, fp32) of the 1400 Cranfield
documents (data/cranfield/corpus.jsonl), tiled to N rows: rows 0-1399 are the real embeddings, row i >= 1400
is a noisy copy of document i mod 1400, normalize(d + s * z) with z ~ N(0, C) and C the covariance of the
real document embeddings (noise shaped like the corpus itself, so the copies stay where MiniLM puts
documents instead of spreading into directions no real document uses). The scale s is calibrated (bisection,
fixed samples) so that two copies of one document are, at the median, exactly as similar as a real Cranfield
document is to its nearest real neighbour: copies are new documents on the same topic, not near-duplicates.
The corpora are nested (the 10k corpus is the first 10k rows of the 100k one). Queries: the 225 real
Cranfield query embeddings. The document and query embeddings are cached in bench/out/ (keyed by the model
fingerprint and the data files' hashes; `--no-cache` recomputes them).

For each size, in one process and one run: flat (`resume.index.build_index` kind flat: exact, and the
ground truth), IVF and HNSW at the project defaults (`EvalConfig`), plus a sweep of nprobe / efSearch.
Each index: build time, index bytes (the size `faiss.write_index` writes), RSS growth of the process
while building, batch search of all queries (k=100; median of up to 3 passes after a warm-up; wall and
process CPU time) and one-query-at-a-time latency, recall@100 (and @10) against the exact top 100.
FAISS runs on `--threads` OpenMP threads (default 1: on a shared 2-core machine more threads spin-wait).
QPS is reported two ways: by wall time and per CPU-second (process CPU time; on one thread, the work a
query costs, independent of how much of a core the machine's other jobs left us). Ratios vs flat are
taken in the same run. The JSON records the CPU model, threads, dtype and the load average.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from resume.config import EvalConfig  # noqa: E402
from resume.index import build_index, choose_kind, ivf_nlist, search  # noqa: E402
from resume.io import atomic_write_json  # noqa: E402

MODEL = "all-minilm-l6-v2"
CORPUS = ROOT / "data" / "cranfield" / "corpus.jsonl"
QUERIES = ROOT / "data" / "cranfield" / "queries.jsonl"


# ---------------------------------------------------------------------------------------------- data


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def cranfield_embeddings(cache: Path | None, threads: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(docs (1400, 384), queries (225, 384), info): from the cache when its key matches, else encoded."""
    from resume.models import model_fingerprint

    key = {"model": MODEL, "fingerprint": model_fingerprint(MODEL), "corpus": _sha(CORPUS),
           "queries": _sha(QUERIES)}
    if cache is not None and cache.is_file():
        z = np.load(cache)
        if json.loads(str(z["key"])) == key:
            return z["docs"], z["queries"], {**key, "source": f"cache {cache.relative_to(ROOT)}",
                                             "encode_s": float(z["encode_s"])}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from resume.config import RetrieverConfig
    from resume.data import doc_text, read_corpus, read_queries
    from resume.retriever import Encoder

    torch.set_num_threads(threads)
    t = time.perf_counter()
    enc = Encoder(MODEL, RetrieverConfig(model=MODEL), device="cpu")
    docs = enc.encode_docs([doc_text(d) for d in read_corpus(CORPUS)])
    queries = enc.encode_queries(list(read_queries(QUERIES).values()))
    encode_s = time.perf_counter() - t
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, docs=docs, queries=queries, key=json.dumps(key), encode_s=encode_s)
        os.replace(tmp, cache)
    return docs, queries, {**key, "source": f"encoded now (torch threads {threads}, fp32, "
                                            f"max_length {enc.max_length})", "encode_s": round(encode_s, 1)}


def noise_factor(docs: np.ndarray) -> np.ndarray:
    """(d, d) F with g @ F ~ N(0, C) for g ~ N(0, I), C the covariance of `docs`."""
    w, v = np.linalg.eigh(np.cov((docs - docs.mean(0)).T))
    return (v * np.sqrt(np.clip(w, 0, None))).T.astype(np.float32)


def noisy_copies(docs: np.ndarray, rows: np.ndarray, scale: float, factor: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    x = docs[rows] + np.float32(scale) * (rng.standard_normal((len(rows), docs.shape[1]), dtype=np.float32) @ factor)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def calibrate_noise(docs: np.ndarray, factor: np.ndarray, seed: int, pairs: int = 4000) -> dict[str, float]:
    """The noise scale at which two copies of a document have the median cosine of a real document to its
    nearest real neighbour (bisection on fixed samples)."""
    s = docs @ docs.T
    np.fill_diagonal(s, -np.inf)
    target = float(np.median(s.max(1)))
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(docs), pairs)
    ga, gb = (rng.standard_normal((pairs, docs.shape[1]), dtype=np.float32) @ factor for _ in range(2))

    def sibling_cos(scale: float) -> float:
        a, b = docs[rows] + scale * ga, docs[rows] + scale * gb
        return float(np.median((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))

    lo, hi = 0.0, 4.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sibling_cos(mid) > target else (lo, mid)
    scale = (lo + hi) / 2
    a = docs[rows] + scale * ga
    return {"scale": round(scale, 4), "target_median_nn_cos_real_docs": round(target, 4),
            "median_sibling_cos": round(sibling_cos(scale), 4),
            "median_cos_copy_to_its_document": round(float(np.median(
                (a * docs[rows]).sum(1) / np.linalg.norm(a, axis=1))), 4)}


def tiled_corpus(docs: np.ndarray, n: int, scale: float, factor: np.ndarray, seed: int) -> np.ndarray:
    out = np.empty((n, docs.shape[1]), np.float32)
    m = min(n, len(docs))
    out[:m] = docs[:m]
    rng = np.random.default_rng(seed)
    for start in range(m, n, 65536):
        rows = np.arange(start, min(n, start + 65536)) % len(docs)
        out[start:start + len(rows)] = noisy_copies(docs, rows, scale, factor, rng)
    return out


# ------------------------------------------------------------------------------------------- measuring


def _status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS: resident now, VmHWM: the peak), in bytes (0 if absent)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def rss_bytes() -> int:
    return _status_bytes("VmRSS")


def index_bytes(index) -> int:
    """What `faiss.write_index` writes (streamed to a temporary file: no in-memory copy)."""
    import faiss

    fd, path = tempfile.mkstemp(prefix="bench_scaling.", suffix=".faiss")
    os.close(fd)
    try:
        faiss.write_index(index, path)
        return os.path.getsize(path)
    finally:
        os.unlink(path)


def timed_build(fn) -> tuple[Any, dict[str, Any]]:
    r0, t, c = rss_bytes(), time.perf_counter(), time.process_time()
    index = fn()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    return index, {"build_s": round(wall, 3), "build_cpu_s": round(cpu, 3), "rss_delta_bytes": rss_bytes() - r0,
                   "index_bytes": index_bytes(index)}


def recall(approx: np.ndarray, exact: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(a[:k]) & set(e[:k])) / k for a, e in zip(approx, exact)]))


def time_search(index, queries: np.ndarray, k: int, *, passes: int, min_s: float = 2.0,
                single: int = 0, single_budget_s: float = 10.0) -> tuple[np.ndarray, dict[str, Any]]:
    """Batch search of all queries (warm-up on 16, then 1..`passes` passes, stopping after `min_s` of wall
    time), and `single` one-query searches (stopping after `single_budget_s`)."""
    search(index, queries[:16], k)  # warm-up: thread pools, page faults, caches
    walls, cpus = [], []
    idx = None
    while len(walls) < passes and (not walls or sum(walls) < min_s):
        t, c = time.perf_counter(), time.process_time()
        _, idx = search(index, queries, k)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    out = {"passes": len(walls), "batch_wall_s": round(wall, 4), "batch_cpu_s": round(cpu, 4),
           "qps_wall": round(len(queries) / wall, 1), "qps_per_cpu_s": round(len(queries) / max(cpu, 1e-9), 1)}
    if single:
        lat, cpu1, t0 = [], [], time.perf_counter()
        for q in queries[:single]:
            t, c = time.perf_counter(), time.process_time()
            search(index, q[None], k)
            lat.append(time.perf_counter() - t)
            cpu1.append(time.process_time() - c)
            if time.perf_counter() - t0 > single_budget_s:
                break
        out.update({"single_n": len(lat), "single_ms_median": round(1000 * statistics.median(lat), 3),
                    "single_cpu_ms_median": round(1000 * statistics.median(cpu1), 3)})
    return idx, out


# ------------------------------------------------------------------------------------------------- run


def machine(threads: int) -> dict[str, Any]:
    import faiss

    info = {"python": platform.python_version(), "numpy": np.__version__, "faiss": faiss.__version__,
            "faiss_threads": threads, "cpus": os.cpu_count(), "dtype": "float32"}
    try:
        text = Path("/proc/cpuinfo").read_text()
        info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in text.splitlines()
                                 if line.startswith("model name"))
        flags = next(line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags"))
        info["cpu_flags"] = sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))
    except (OSError, StopIteration):
        pass
    try:
        info["mem_total_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return info


def run_size(x: np.ndarray, queries: np.ndarray, base: np.ndarray, args, cfg: EvalConfig, deadline: float
             ) -> dict[str, Any]:
    n, k = len(x), args.k
    out: dict[str, Any] = {"n": n, "loadavg_1m_at_start": round(os.getloadavg()[0], 2)}

    # flat: the baseline and the ground truth
    index, flat = timed_build(lambda: build_index(x, "flat", gpu=False))
    exact, s = time_search(index, queries, k, passes=3, single=args.single)
    flat.update(s, recall_at_100=1.0, recall_at_10=1.0)
    scores, _ = search(index, queries[:1], 1)
    del index
    hits = base[exact]
    out["neighbourhoods"] = {
        "mean_distinct_documents_in_exact_top100": round(float(np.mean([len(set(h)) for h in hits])), 2),
        "mean_copies_of_query_top1_document_in_top100": round(float(np.mean(
            [np.sum(h == h[0]) for h in hits])), 2)}
    out["flat"] = flat

    def approx(kind: str, build, knob: str, grid: list[int], default: int, set_knob) -> dict[str, Any]:
        index, res = timed_build(build)
        res["sweep"] = []
        for v in sorted(set(grid) | {default}):
            if time.perf_counter() > deadline and v != default:
                res.setdefault("sweep_skipped_over_budget", []).append(v)
                continue
            set_knob(index, v)
            is_default = v == default
            idx, s = time_search(index, queries, k, passes=3 if is_default else 1, min_s=2.0 if is_default else 0,
                                 single=args.single if is_default else 0)
            row = {knob: v, "recall_at_100": round(recall(idx, exact, k), 4),
                   "recall_at_10": round(recall(idx, exact, 10), 4), **s,
                   "qps_ratio_vs_flat_wall": round(s["qps_wall"] / flat["qps_wall"], 2),
                   "qps_ratio_vs_flat_cpu": round(s["qps_per_cpu_s"] / flat["qps_per_cpu_s"], 2)}
            res["sweep"].append(row)
            if is_default:
                res.update({knob: v, **{key: val for key, val in row.items() if key != knob}})
        del index
        return res

    nlist = ivf_nlist(n, cfg.nlist)
    out["ivf"] = {"nlist": nlist, **approx(
        "ivf", lambda: build_index(x, "ivf", nlist=cfg.nlist, nprobe=cfg.nprobe, gpu=False), "nprobe",
        [p for p in args.nprobe_grid if p <= nlist], min(cfg.nprobe, nlist),
        lambda ix, v: setattr(ix, "nprobe", v))}
    if n > args.hnsw_max_n:
        out["hnsw"] = {"skipped": f"n > --hnsw-max-n {args.hnsw_max_n}"}
    else:
        out["hnsw"] = {"M": cfg.hnsw_m, "ef_construction": cfg.ef_construction, **approx(
            "hnsw", lambda: build_index(x, "hnsw", hnsw_m=cfg.hnsw_m, ef_search=cfg.ef_search,
                                        ef_construction=cfg.ef_construction, gpu=False), "ef_search",
            args.ef_grid, cfg.ef_search, lambda ix, v: setattr(ix.hnsw, "efSearch", v))}
    out["auto_kind"] = choose_kind("auto", n, cfg.auto_min_docs)
    out["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    out["top1_score_first_query"] = round(float(scores[0, 0]), 4)
    return out


def table(sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in sizes:
        for kind in ("flat", "ivf", "hnsw"):
            m = r.get(kind, {})
            if "qps_wall" not in m:
                continue
            rows.append({"n": r["n"], "kind": kind,
                         "params": {"flat": "exact", "ivf": f"nlist {m.get('nlist')}, nprobe {m.get('nprobe')}",
                                    "hnsw": f"M {m.get('M')}, efSearch {m.get('ef_search')}"}[kind],
                         "build_s": m["build_s"], "index_mib": round(m["index_bytes"] / 2**20, 1),
                         "rss_delta_mib": round(m["rss_delta_bytes"] / 2**20, 1),
                         "qps_wall": m["qps_wall"], "qps_per_cpu_s": m["qps_per_cpu_s"],
                         "x_flat_cpu": m.get("qps_ratio_vs_flat_cpu", 1.0),
                         "x_flat_wall": m.get("qps_ratio_vs_flat_wall", 1.0),
                         "single_ms": m.get("single_ms_median"), "recall_at_100": m["recall_at_100"]})
    return rows


def growth(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    """Per kind, the exponent b of search CPU time ~ n^b between consecutive sizes (b < 1: sub-linear)."""
    out: dict[str, Any] = {}
    for kind in ("flat", "ivf", "hnsw"):
        pts = [(r["n"], r[kind]["batch_cpu_s"]) for r in sizes if "batch_cpu_s" in r.get(kind, {})]
        out[kind] = [{"from": a[0], "to": b[0], "time_ratio": round(b[1] / a[1], 2),
                      "exponent": round(math.log(b[1] / a[1]) / math.log(b[0] / a[0]), 3)}
                     for a, b in zip(pts, pts[1:])]
    return out


def _exponents(result: dict[str, Any], kind: str) -> list[float]:
    return [g["exponent"] for g in result.get("growth", {}).get(kind, [])]


def markdown(result: dict[str, Any]) -> str:
    """The README's scale section body for a result: conditions, the table, growth, recall verdict and the
    auto choice (`--markdown bench/scaling.json` prints it without running anything)."""
    m, d = result["machine"], result["defaults"]
    load = [v for v in (result.get("loadavg_at_start", [None])[0], result.get("loadavg_at_end", [None])[0],
                        *(r.get(key) for r in result["sizes"] for key in ("loadavg_1m_at_start", "loadavg_1m_at_end")))
            if v is not None]
    threads = m.get("faiss_threads", "?")
    when = f" ({result['time'][:10]})" if result.get("time") else ""
    lines = [
        f"One run of `bench/bench_scaling.py`{when}: {m.get('cpu_model', '?')}, {m.get('cpus', '?')} cores "
        f"({', '.join(m.get('cpu_flags', []))}), {m.get('dtype', 'float32')} vectors, FAISS {m.get('faiss', '?')} "
        f"on {threads} thread{'' if threads == 1 else 's'}, 1-minute load average "
        f"{f'{min(load):.1f}-{max(load):.1f}' if load else '?'} over the run (a shared machine: the QPS-per-CPU-second column, process CPU "
        f"time, is the steadier one). {result['what'][:1].upper() + result['what'][1:]}; recall@100 against flat (exact) search in the same run. "
        "Memory: the index as `faiss.write_index` writes it (what it holds in RAM).",
        "",
        "| vectors | index (defaults) | build s | memory MiB | QPS (wall) | QPS per CPU-s | x flat (CPU-s) "
        "| one query, ms | recall@100 |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["table"]:
        lines.append(f"| {r['n']:,} | {r['kind']} ({r['params']}) | {r['build_s']:.1f} | {r['index_mib']:,.0f} | "
                     f"{r['qps_wall']:,.0f} | {r['qps_per_cpu_s']:,.0f} | {r['x_flat_cpu']:.1f} | "
                     f"{r['single_ms']:.1f} | {r['recall_at_100']:.4f} |")
    sizes = [r["n"] for r in result["sizes"]]
    steps = ", ".join(f"{a:,} to {b:,}" for a, b in zip(sizes, sizes[1:]))
    grow = "; ".join(f"{k} {', '.join(f'{e:.2f}' for e in _exponents(result, k))}" for k in ("flat", "ivf", "hnsw")
                     if _exponents(result, k))
    sub = {k: bool(_exponents(result, k)) and all(e < 1 for e in _exponents(result, k)) for k in ("ivf", "hnsw")}
    lows = [(r[k]["recall_at_100"], k, r["n"]) for r in result["sizes"] for k in ("ivf", "hnsw")
            if "recall_at_100" in r.get(k, {})]
    low = min(lows) if lows else None
    auto = d.get("auto_kind_above", "?")
    lines += [
        "",
        f"Growth of search time (exponent b in CPU time ~ n^b, {steps}): {grow}. "
        f"Sub-linear (b < 1 at every step): IVF {'yes' if sub['ivf'] else 'no'}, HNSW {'yes' if sub['hnsw'] else 'no'}.",
        "",
        f"Defaults (`EvalConfig`): nlist {d['nlist']}, nprobe {d['nprobe']}; HNSW M {d['hnsw_m']}, efSearch "
        f"{d['ef_search']}, efConstruction {d['ef_construction']}. Recall@100 >= 0.99 at every size: "
        f"{'yes' if result.get('defaults_meet_recall_0_99') else 'no'}"
        + (f" (lowest {low[0]:.4f}, {low[1]} at {low[2]:,})." if low else "."),
        "",
        f"`evaluate.index: {d['index']}` builds flat (exact) below {d['auto_min_docs']:,} vectors and {auto} from "
        f"{d['auto_min_docs']:,} on (`resume.index.choose_kind`; `evaluate.auto_min_docs` moves the threshold).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--threads", type=int, default=1, help="FAISS/BLAS threads for the indexes (default 1)")
    p.add_argument("--encode-threads", type=int, default=2, help="torch threads when the embeddings are encoded")
    p.add_argument("--single", type=int, default=32, help="one-query searches timed per index (0 = none)")
    p.add_argument("--nprobe-grid", default="32,64,128,256")
    p.add_argument("--ef-grid", default="512,1024,2048,4096,8192")
    p.add_argument("--hnsw-max-n", type=int, default=10**9, help="skip HNSW above this size")
    p.add_argument("--budget-s", type=float, default=1500, help="past this, sweeps keep only the defaults")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=str(ROOT / "bench" / "out" / "scaling_embeddings.npz"))
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--out", default=str(ROOT / "bench" / "scaling.json"))
    p.add_argument("--markdown", metavar="JSON", help="print the table of an earlier result and exit")
    args = p.parse_args(argv)
    if args.markdown:
        result = json.loads(Path(args.markdown).read_text())
        print(markdown(result))
        return result
    args.nprobe_grid = [int(v) for v in args.nprobe_grid.split(",") if v]
    args.ef_grid = [int(v) for v in args.ef_grid.split(",") if v]
    sizes = sorted(int(float(v)) for v in args.sizes.split(","))

    import faiss
    from threadpoolctl import threadpool_limits

    t_start = time.perf_counter()
    load_start = os.getloadavg()
    docs, queries, emb_info = cranfield_embeddings(None if args.no_cache else Path(args.cache), args.encode_threads)
    faiss.omp_set_num_threads(args.threads)
    cfg = EvalConfig()
    result: dict[str, Any] = {
        "benchmark": "bench_scaling",
        "what": f"top-{args.k} inner-product search of {len(queries)} real Cranfield query embeddings over "
                f"tiled Cranfield document embeddings ({MODEL}, {docs.shape[1]} dims, float32)",
        "baseline": "flat (resume.index.build_index kind flat: FAISS IndexFlatIP, exact), same run",
        "candidates": "ivf (IndexIVFFlat) and hnsw (IndexHNSWFlat) at the EvalConfig defaults, plus a sweep",
        "defaults": {"index": cfg.index, "auto_min_docs": cfg.auto_min_docs,
                     "auto_kind_above": choose_kind("auto", cfg.auto_min_docs, cfg.auto_min_docs),
                     "nlist": cfg.nlist if cfg.nlist is not None else "2 * sqrt(n), clamped to n // 39",
                     "nprobe": cfg.nprobe, "hnsw_m": cfg.hnsw_m, "ef_search": cfg.ef_search,
                     "ef_construction": cfg.ef_construction},
        "embeddings": emb_info,
        "params": {k: v for k, v in vars(args).items()},
        "machine": machine(args.threads),
        "loadavg_at_start": [round(v, 2) for v in load_start],
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    factor = noise_factor(docs)
    result["noise"] = calibrate_noise(docs, factor, args.seed)
    t = time.perf_counter()
    x = tiled_corpus(docs, sizes[-1], result["noise"]["scale"], factor, args.seed)
    result["tiling_s"] = round(time.perf_counter() - t, 1)
    base = np.arange(len(x)) % len(docs)
    deadline = t_start + args.budget_s
    result["sizes"] = []
    with threadpool_limits(limits=args.threads):
        for n in sizes:
            result["sizes"].append(run_size(x[:n], queries, base[:n], args, cfg, deadline))
            result["table"], result["growth"] = table(result["sizes"]), growth(result["sizes"])
            result["elapsed_s"] = round(time.perf_counter() - t_start, 1)
            atomic_write_json(args.out, result)  # partial results survive a cut-off run
            print(json.dumps({k: v for k, v in result["sizes"][-1].items()}, indent=1), flush=True)
    result["defaults_meet_recall_0_99"] = all(r[kind]["recall_at_100"] >= 0.99 for r in result["sizes"]
                                              for kind in ("ivf", "hnsw") if "recall_at_100" in r[kind])
    result["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    result["peak_rss_bytes"] = _status_bytes("VmHWM")
    result["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    atomic_write_json(args.out, result)
    print(json.dumps(result["table"], indent=1))
    return result


if __name__ == "__main__":
    main()
