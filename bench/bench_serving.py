"""Retriever service under load: micro-batching vs one request at a time, same machine, same run.

    .venv/bin/python bench/bench_serving.py                       # 16 clients, 20 s per mode, <= 6000 requests
    .venv/bin/python bench/bench_serving.py --duration 60 --max-requests 20000 --model tiny-encoder

Builds (once, cached under bench/out/) a retriever bundle over the first `--docs` Cranfield documents with
all-MiniLM-L6-v2 (tiny-encoder when that package is missing), then for each encoder dtype (`--dtypes`,
default float32 and bfloat16) and each mode starts a real `resume serve retriever` process on a free
loopback port and drives it with `--clients` concurrent clients (v1 REST over keep-alive connections, one
query per request, k=10, Cranfield queries round-robin) for `--duration` seconds or `--max-requests`
requests, whichever comes first (in `--rounds` phases that alternate between the servers, which run side
by side):
    batched      --max-batch-size 32 --max-wait-ms 2   (the default service settings)
    unbatched    --max-batch-size 1                    (one query per encoder call)
Reports, per dtype, QPS, p50/p99 latency, errors and the mean micro-batch size (from the server's
/metrics), the throughput ratio batched / unbatched, and how far the rankings of 20 probe queries agree
between the modes and with float32. JSON goes to bench/out/serving.json. Loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from _common import top10_overlap

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
NAME = "resume-retriever"


def pick_model(requested: str | None) -> str:
    if requested:
        return requested
    from resume.errors import ResumeError
    from resume.models import resolve_model

    try:
        resolve_model("all-minilm-l6-v2")
        return "all-minilm-l6-v2"
    except (ResumeError, OSError, ImportError):
        return "tiny-encoder"


def build_bundle(model: str, n_docs: int, out: Path) -> Path:
    from resume.config import load_config
    from resume.serving.bundle import build_retriever_bundle, is_bundle, read_bundle_meta

    if is_bundle(out):
        meta = read_bundle_meta(out)
        if meta["n_docs"] == n_docs and meta["source"].get("retriever") == model:
            return out
    texts = {}
    with open(ROOT / "data" / "cranfield" / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            texts[d["_id"]] = f"{d['title']}. {d['text']}".strip() if d.get("title") else d["text"]
            if len(texts) == n_docs:
                break
    cfg = load_config(None, [f"retriever.model={model}", "retriever.max_length=256"])
    return build_retriever_bundle(out, retriever=model, texts=texts, cfg=cfg, device="cpu")


def queries() -> list[str]:
    with open(ROOT / "data" / "cranfield" / "queries.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def batch_stats(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    vals = {}
    for line in text.splitlines():
        if line.startswith("resume_batch_size_") and f"{NAME}-batcher" in line and "_bucket" not in line:
            key = line.split("{", 1)[0].removeprefix("resume_batch_size_")
            vals[key] = float(line.rsplit(" ", 1)[1])
    n, s = vals.get("count", 0.0), vals.get("sum", 0.0)
    return {"batches": n, "queries": s, "mean_batch_size": round(s / n, 2) if n else 0.0}


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


async def drive(url: str, qs: list[str], *, clients: int, duration: float, max_requests: int) -> dict:
    lat: list[float] = []
    errors: list[str] = []
    counter = {"next": 0}
    host, port = url.removeprefix("http://").split(":")
    path = f"/v1/models/{NAME}:predict"
    bodies = [json.dumps({"instances": [{"query": q, "k": 10}]}).encode() for q in qs]
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
                    ok = status == 200 and len(json.loads(data)["predictions"][0]["doc_ids"]) == 10
                except (OSError, asyncio.IncompleteReadError, ValueError, KeyError) as e:
                    errors.append(repr(e))
                    await c.close()
                    continue
                if not ok:
                    errors.append(f"{status} {data[:200]!r}")
                    continue
                lat.append(time.perf_counter() - t0)
        finally:
            await c.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return {"lat": lat, "errors": errors, "wall": time.perf_counter() - t0}


def summarize(parts: list[dict]) -> dict:
    lat = [x for p in parts for x in p["lat"]]
    errors = [e for p in parts for e in p["errors"]]
    wall = sum(p["wall"] for p in parts)
    ms = np.array(lat) * 1000
    return {"requests": len(lat) + len(errors), "ok": len(lat), "errors": len(errors), "error_samples": errors[:3],
            "wall_s": round(wall, 2), "qps": round(len(lat) / wall, 1) if wall else 0.0,
            "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
            "mean_ms": round(float(ms.mean()), 2) if len(ms) else None,
            "qps_per_round": [round(len(p["lat"]) / p["wall"], 1) for p in parts]}


MODES = {"unbatched": (1, 0.0), "batched": (32, 2.0)}


def run_modes(bundle: Path, qs: list[str], args, dtypes: list[str]) -> tuple[dict, dict]:
    """One server per (dtype, mode), all up at once (an idle one costs no CPU); load phases alternate
    between them in `--rounds` rounds, so a change in the machine's background load hits every
    configuration alike. Returns ({dtype: {mode: stats}}, {dtype: {mode: probe rankings}})."""
    from contextlib import ExitStack

    from resume.serving.process import ServerProcess

    configs = [(dt, mode) for dt in dtypes for mode in MODES]
    results: dict = {dt: {} for dt in dtypes}
    rankings: dict = {dt: {} for dt in dtypes}
    with ExitStack() as stack:
        servers = {}
        for dt, mode in configs:
            batch, wait_ms = MODES[mode]
            cmd = ["serve", "retriever", "--model", str(bundle), "--device", "cpu", "--read-only", "--no-access-log",
                   "--max-batch-size", str(batch), "--max-wait-ms", str(wait_ms), "--dtype", dt]
            servers[dt, mode] = stack.enter_context(ServerProcess(cmd, timeout=300))
        parts: dict = {c: [] for c in configs}
        before = {}
        for (dt, mode), srv in servers.items():
            probe = httpx.post(f"{srv.url}/v1/models/{NAME}:predict", timeout=60,
                               json={"instances": [{"query": q, "k": 10} for q in qs[:20]]}).json()
            rankings[dt][mode] = [p["doc_ids"] for p in probe["predictions"]]
            asyncio.run(drive(srv.url, qs, clients=args.clients, duration=2.0, max_requests=100))  # warm-up
            before[dt, mode] = batch_stats(srv.url)
        for r in range(args.rounds):
            for c in (configs if r % 2 == 0 else configs[::-1]):
                parts[c].append(asyncio.run(drive(servers[c].url, qs, clients=args.clients,
                                                  duration=args.duration / args.rounds,
                                                  max_requests=args.max_requests // args.rounds)))
        for (dt, mode), srv in servers.items():
            after = batch_stats(srv.url)
            nb = after["batches"] - before[dt, mode]["batches"]
            nq = after["queries"] - before[dt, mode]["queries"]
            batch, wait_ms = MODES[mode]
            results[dt][mode] = {**summarize(parts[dt, mode]), "max_batch_size": batch, "max_wait_ms": wait_ms,
                                 "startup_s": round(srv.startup_s, 1),
                                 "mean_batch_size": round(nq / nb, 2) if nb else 0.0}
    return results, rankings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="encoder (default: all-minilm-l6-v2 when installed, else tiny-encoder)")
    p.add_argument("--docs", type=int, default=300, help="documents in the index")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duration", type=float, default=20.0, help="seconds per mode (at most 60)")
    p.add_argument("--max-requests", type=int, default=6000, help="request cap per mode")
    p.add_argument("--rounds", type=int, default=4, help="alternating load phases per mode")
    p.add_argument("--dtypes", default="float32,bfloat16",
                   help="encoder dtypes, each measured batched and unbatched (bf16 pays on CPUs with AMX)")
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "serving.json"))
    args = p.parse_args(argv)
    args.duration = min(args.duration, 60.0)
    from resume.io import atomic_write_json

    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    model = pick_model(args.model)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    bundle = build_bundle(model, args.docs, out.parent / f"serving-bundle-{model}")
    build_s = time.perf_counter() - t0
    qs = queries()
    load_before = os.getloadavg()
    stats, rankings = run_modes(bundle, qs, args, dtypes)
    runs = {}
    for dt in dtypes:
        batched, unbatched = stats[dt]["batched"], stats[dt]["unbatched"]
        speedup = batched["qps"] / unbatched["qps"] if unbatched["qps"] else float("inf")
        runs[dt] = {"modes": {"batched": batched, "unbatched": unbatched},
                    "throughput_ratio_batched_vs_unbatched": round(speedup, 2),
                    "same_ranking_both_modes": rankings[dt]["batched"] == rankings[dt]["unbatched"],
                    "probe_top10_overlap_both_modes": top10_overlap(rankings[dt]["batched"], rankings[dt]["unbatched"]),
                    "zero_errors": batched["errors"] == 0 and unbatched["errors"] == 0,
                    "meets_3x": speedup >= 3.0}
        if dt != dtypes[0]:
            runs[dt][f"probe_top10_overlap_vs_{dtypes[0]}"] = top10_overlap(rankings[dt]["batched"],
                                                                           rankings[dtypes[0]]["batched"])
    result = {
        "bench": "serving",
        "model": model,
        "model_note": "all-MiniLM-L6-v2 (real weights)" if model == "all-minilm-l6-v2" else f"{model} (fallback)",
        "n_docs": args.docs, "clients": args.clients, "duration_s_per_mode": args.duration, "rounds": args.rounds,
        "max_requests_per_mode": args.max_requests, "request": "v1, one query per request, k=10",
        "dtypes": dtypes, "bundle_build_s": round(build_s, 1),
        "runs": runs,
        "throughput_ratio_batched_vs_unbatched": {dt: runs[dt]["throughput_ratio_batched_vs_unbatched"] for dt in dtypes},
        "zero_errors": all(r["zero_errors"] for r in runs.values()),
        "meets_3x": {dt: runs[dt]["meets_3x"] for dt in dtypes},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(out, result)
    print(json.dumps(result, indent=2))
    # fp32 rankings must not depend on how queries are batched; bf16 rounding may reorder near-ties
    exact = all(r["same_ranking_both_modes"] for dt, r in runs.items() if dt == "float32")
    return 0 if result["zero_errors"] and exact else 1


if __name__ == "__main__":
    sys.exit(main())
