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

Before/after a change to the serving code (`--ref REV`): REV's src/ is exported with `git archive` into a
temporary directory, and every (dtype, mode) server runs twice side by side, once on the working tree's
code ("current") and once on REV's (PYTHONPATH=<tmp>/src, same venv, same bundle, same clients), in the
same alternating rounds. The JSON's `ref` block has REV's stats, the throughput ratio current / REV per
dtype and mode, whether the probe rankings agree, and `throughput_drop_at_most_5pct` (issue #13):

    .venv/bin/python bench/bench_serving.py --ref 6c4da0e --dtypes float32   # 4 servers, about 3 min
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _common import drive, summarize, top10_overlap

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


V1_PATH = f"/v1/models/{NAME}:predict"


def v1_target(qs: list[str]) -> tuple[str, list[bytes], Any]:
    """(path, request bodies, answer check) of the work measured: v1 predict, one query per request, k=10,
    an answer of 10 doc ids."""
    bodies = [json.dumps({"instances": [{"query": q, "k": 10}]}).encode() for q in qs]
    return V1_PATH, bodies, lambda r: len(r["predictions"][0]["doc_ids"]) == 10


MODES = {"unbatched": (1, 0.0), "batched": (32, 2.0)}


# ----------------------------------------------------------------------- the serving code of another commit


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, check=False)


def ref_env(src: Path) -> dict[str, str]:
    """The environment of a server that runs the `resume` package in `src` instead of the installed one
    (the project's editable install is a plain path entry, which PYTHONPATH precedes)."""
    old = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": str(src) + (os.pathsep + old if old else "")}


def export_ref(rev: str, dest: Path) -> dict[str, Any]:
    """`git archive` of commit `rev`'s src/ into `dest` (the same venv runs it: only the package changes).
    Checks that an interpreter with `ref_env` imports `resume` from there. Exits with one error line when
    `rev` is not a commit or the export does not take."""
    r = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if r.returncode:
        sys.exit(f"error: --ref {rev!r}: not a commit in {ROOT}")
    sha = r.stdout.decode().strip()
    tar = _git("archive", "--format=tar", sha, "src")
    if tar.returncode:
        sys.exit(f"error: --ref {rev}: git archive {sha} src failed: {tar.stderr.decode().strip()[:300]}")
    with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as t:
        t.extractall(dest, filter="data")
    src = dest / "src"
    where = subprocess.run([sys.executable, "-c", "import resume; print(resume.__file__)"], capture_output=True,
                           text=True, env={**os.environ, **ref_env(src)}, check=False)
    if where.returncode or not Path(where.stdout.strip()).resolve().is_relative_to(src.resolve()):
        sys.exit(f"error: --ref {rev}: the exported package is not the one imported "
                 f"({where.stdout.strip() or where.stderr.strip()[-300:]})")
    return {"rev": rev, "commit": sha, "imported_from": where.stdout.strip()}


def current_code() -> dict[str, Any]:
    """HEAD and whether src/ differs from it (the "current" servers run the working tree)."""
    head = _git("rev-parse", "HEAD").stdout.decode().strip()
    dirty = _git("status", "--porcelain", "--", "src").stdout.decode().split("\n")
    return {"head": head, "src_uncommitted_changes": [line[3:] for line in dirty if line.strip()]}


# --------------------------------------------------------------------------------------------- the run


def run_servers(bundle: Path, qs: list[str], args, configs: list[tuple[str, str, str]],
                envs: dict[str, dict[str, str]]) -> tuple[dict, dict]:
    """One server per (code, dtype, mode), all up at once (an idle one costs no CPU); load phases alternate
    between them in `--rounds` rounds (forward, then backward), so a change in the machine's background load
    hits every configuration alike. `code` names the environment in `envs` the server runs with ("current":
    the working tree; "ref": `--ref`'s src/). Returns ({config: stats}, {config: probe rankings})."""
    from contextlib import ExitStack

    from resume.serving.process import ServerProcess

    path, bodies, ok = v1_target(qs)
    stats: dict = {}
    rankings: dict = {}
    with ExitStack() as stack:
        servers = {}
        for code, dt, mode in configs:
            batch, wait_ms = MODES[mode]
            cmd = ["serve", "retriever", "--model", str(bundle), "--device", "cpu", "--read-only", "--no-access-log",
                   "--max-batch-size", str(batch), "--max-wait-ms", str(wait_ms), "--dtype", dt]
            servers[code, dt, mode] = stack.enter_context(ServerProcess(cmd, env=envs[code], timeout=300))
        parts: dict = {c: [] for c in configs}
        before = {}
        for c, srv in servers.items():
            probe = httpx.post(f"{srv.url}{V1_PATH}", timeout=60,
                               json={"instances": [{"query": q, "k": 10} for q in qs[:20]]}).json()
            rankings[c] = [p["doc_ids"] for p in probe["predictions"]]
            asyncio.run(drive(srv.url, path, bodies, ok, clients=args.clients, duration=2.0, max_requests=100))
            before[c] = batch_stats(srv.url)
        for r in range(args.rounds):
            for c in (configs if r % 2 == 0 else configs[::-1]):
                parts[c].append(asyncio.run(drive(servers[c].url, path, bodies, ok, clients=args.clients,
                                                  duration=args.duration / args.rounds,
                                                  max_requests=args.max_requests // args.rounds)))
        for c, srv in servers.items():
            after = batch_stats(srv.url)
            nb = after["batches"] - before[c]["batches"]
            nq = after["queries"] - before[c]["queries"]
            batch, wait_ms = MODES[c[2]]
            stats[c] = {**summarize(parts[c]), "max_batch_size": batch, "max_wait_ms": wait_ms,
                        "startup_s": round(srv.startup_s, 1), "mean_batch_size": round(nq / nb, 2) if nb else 0.0}
    return stats, rankings


def ref_comparison(stats: dict, rankings: dict, dtypes: list[str], modes: list[str], ref: dict) -> dict:
    """The current servers against `--ref`'s, per dtype and mode: throughput ratio, p99, same rankings."""
    out: dict[str, Any] = {**ref, "modes": {}, "qps_ratio_current_over_ref": {}, "same_ranking_as_ref": {}}
    for dt in dtypes:
        out["modes"][dt] = {m: stats["ref", dt, m] for m in modes}
        out["qps_ratio_current_over_ref"][dt] = {
            m: round(stats["current", dt, m]["qps"] / stats["ref", dt, m]["qps"], 3) if stats["ref", dt, m]["qps"]
            else None for m in modes}
        out["same_ranking_as_ref"][dt] = {m: rankings["current", dt, m] == rankings["ref", dt, m] for m in modes}
    ratios = [r for by_mode in out["qps_ratio_current_over_ref"].values() for r in by_mode.values()]
    out["min_qps_ratio"] = min((r for r in ratios if r is not None), default=None)
    out["throughput_drop_at_most_5pct"] = bool(ratios) and all(r is not None and r >= 0.95 for r in ratios)
    out["zero_errors"] = all(s["errors"] == 0 for by_mode in out["modes"].values() for s in by_mode.values())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="encoder (default: all-minilm-l6-v2 when installed, else tiny-encoder)")
    p.add_argument("--docs", type=int, default=300, help="documents in the index")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duration", type=float, default=20.0, help="seconds per server (at most 60)")
    p.add_argument("--max-requests", type=int, default=6000, help="request cap per server")
    p.add_argument("--rounds", type=int, default=4, help="alternating load phases per server")
    p.add_argument("--dtypes", default="float32,bfloat16",
                   help="encoder dtypes, each measured in every mode (bf16 pays on CPUs with AMX)")
    p.add_argument("--modes", default="batched,unbatched", help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--ref", metavar="REV", help="also run the serving code of commit REV (git archive of its src/) "
                                                "beside the current code, and report current / REV throughput")
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "serving.json"))
    args = p.parse_args(argv)
    args.duration = min(args.duration, 60.0)
    from resume.io import atomic_write_json

    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not dtypes or not modes or any(m not in MODES for m in modes):
        p.error(f"--dtypes and --modes must be non-empty, modes of {', '.join(MODES)} (got {args.modes!r})")
    model = pick_model(args.model)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-serving-ref-") as tmp:
        ref = export_ref(args.ref, Path(tmp)) if args.ref else None  # before the expensive part: errors come first
        envs = {"current": {}, **({"ref": ref_env(Path(tmp) / "src")} if ref else {})}
        t0 = time.perf_counter()
        bundle = build_bundle(model, args.docs, out.parent / f"serving-bundle-{model}")
        build_s = time.perf_counter() - t0
        qs = queries()
        load_before = os.getloadavg()
        # each current server next to its ref twin, so the alternating rounds put them side by side in time
        configs = [(code, dt, mode) for dt in dtypes for mode in modes for code in envs]
        stats, rankings = run_servers(bundle, qs, args, configs, envs)
    runs = {}
    for dt in dtypes:
        cur = {m: stats["current", dt, m] for m in modes}
        runs[dt] = {"modes": cur, "zero_errors": all(s["errors"] == 0 for s in cur.values())}
        if "batched" in cur and "unbatched" in cur:
            batched, unbatched = cur["batched"], cur["unbatched"]
            speedup = batched["qps"] / unbatched["qps"] if unbatched["qps"] else float("inf")
            runs[dt].update({
                "throughput_ratio_batched_vs_unbatched": round(speedup, 2),
                "same_ranking_both_modes": rankings["current", dt, "batched"] == rankings["current", dt, "unbatched"],
                "probe_top10_overlap_both_modes": top10_overlap(rankings["current", dt, "batched"],
                                                                rankings["current", dt, "unbatched"]),
                "meets_3x": speedup >= 3.0})
        if dt != dtypes[0]:
            runs[dt][f"probe_top10_overlap_vs_{dtypes[0]}"] = top10_overlap(rankings["current", dt, modes[0]],
                                                                           rankings["current", dtypes[0], modes[0]])
    result = {
        "bench": "serving",
        "model": model,
        "model_note": "all-MiniLM-L6-v2 (real weights)" if model == "all-minilm-l6-v2" else f"{model} (fallback)",
        "n_docs": args.docs, "clients": args.clients, "duration_s_per_mode": args.duration, "rounds": args.rounds,
        "max_requests_per_mode": args.max_requests, "request": "v1, one query per request, k=10",
        "dtypes": dtypes, "modes": modes, "bundle_build_s": round(build_s, 1),
        "code": current_code(),
        "runs": runs,
        "throughput_ratio_batched_vs_unbatched": {dt: runs[dt].get("throughput_ratio_batched_vs_unbatched")
                                                  for dt in dtypes},
        "zero_errors": all(r["zero_errors"] for r in runs.values()),
        "meets_3x": {dt: runs[dt].get("meets_3x") for dt in dtypes},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if ref:
        result["ref"] = ref_comparison(stats, rankings, dtypes, modes, ref)
        result["zero_errors"] = result["zero_errors"] and result["ref"]["zero_errors"]
    atomic_write_json(out, result)
    print(json.dumps(result, indent=2))
    # fp32 rankings must not depend on how queries are batched; bf16 rounding may reorder near-ties
    exact = all(r.get("same_ranking_both_modes", True) for dt, r in runs.items() if dt == "float32")
    return 0 if result["zero_errors"] and exact else 1


if __name__ == "__main__":
    sys.exit(main())
