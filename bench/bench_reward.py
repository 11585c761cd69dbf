"""Benchmark: time of the retrieval reward as a share of a GRPO step, with and without the embedding cache.

    .venv/bin/python bench/bench_reward.py                                   # SmolLM2 + all-MiniLM-L6-v2
    .venv/bin/python bench/bench_reward.py --summarizer tiny-causal-lm --retriever tiny-encoder --config configs/tiny.yaml
    python bench/bench_reward.py --device cuda          # on a GPU: GRPO in bf16, reward encoder on the GPU

One short in-process GRPO run (`resume.grpo.grpo_train`). Every reward call is timed twice on the same
completions: the real call (query/document embeddings cached for the round, so it encodes only the
completions) and a shadow call of a fresh `RetrievalReward` with empty caches (encodes the document
and its positive/negative queries too, what a reward without the cache pays). Step time comes from a
callback (on_step_begin -> on_step_end, generation included); the shadow time is subtracted from it.
Writes bench/out/bench_reward.json.

--device cuda runs the whole step (generation, loss, reward encoder) on the GPU; TRL trains in bf16
when summarizer.dtype is auto/bfloat16 (see `resume.grpo.trl_config`). The step callback and the
reward timers synchronise the GPU so queued kernels are counted in the step they belong to; the JSON
then also names the card (`gpu_name`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (see resume.summarizer)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--summarizer", default="smollm2-135m-instruct")
    ap.add_argument("--retriever", default="all-minilm-l6-v2")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--max-completion-length", type=int, default=96)
    ap.add_argument("--data", default=str(ROOT / "data" / "cranfield"))
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="where GRPO and the reward encoder run (cuda: bf16 training on the GPU)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "bench_reward.json"))
    args = ap.parse_args(argv)

    import torch
    from transformers import TrainerCallback

    import resume.grpo as grpo
    from resume.config import load_config
    from resume.errors import ResumeError
    from resume.models import pick_device
    from resume.rewards import RetrievalReward

    try:
        device = pick_device(args.device)
    except ResumeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    on_gpu = device.startswith("cuda")

    def sync() -> None:
        if on_gpu:
            torch.cuda.synchronize(device)

    cfg = load_config(args.config, [f"grpo.max_steps={args.steps}", "grpo.save_steps=100000",
                                    f"grpo.max_completion_length={args.max_completion_length}",
                                    f"device={device}", "grpo.launcher=local"])
    timings = {"cached": [], "uncached": [], "step": [], "warm": None}

    real_make = grpo.make_reward

    def timed_make(*a, **k):
        t0 = time.perf_counter()
        r = real_make(*a, **k)
        timings["warm"] = time.perf_counter() - t0  # encoder load + encoding of every doc/query once
        return r

    grpo.make_reward = timed_make

    class Timed:
        def __init__(self, logged):
            self.logged = logged
            self.__name__ = logged.__name__

        def __call__(self, **kw):
            inner = self.logged.reward
            sync()
            t0 = time.perf_counter()
            out = self.logged(**kw)
            sync()
            timings["cached"].append(time.perf_counter() - t0)
            fresh = RetrievalReward(inner.encoder, inner.queries, inner.docs, inner.cfg, separator=inner.separator,
                                    train_query_ids=inner.train_query_ids)
            shadow = {k: v for k, v in kw.items() if k not in ("log_metric", "log_extra")}
            t0 = time.perf_counter()
            fresh(**shadow)
            sync()
            timings["uncached"].append(time.perf_counter() - t0)
            return out

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            sync()
            timings["step"].append(time.perf_counter() - self.t0)

    load_before = os.getloadavg()
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as td:
        grpo.grpo_train(cfg, data_dir=args.data, summarizer=args.summarizer, retriever=args.retriever,
                        out_dir=Path(td) / "summarizer", callbacks=[StepTimer()], reward_wrapper=Timed)
    n = min(len(timings["step"]), len(timings["cached"]))
    step = sum(timings["step"][:n]) - sum(timings["uncached"][:n])  # the shadow call ran inside the step
    cached, uncached = sum(timings["cached"][:n]), sum(timings["uncached"][:n])
    result = {
        "summarizer": args.summarizer, "retriever": args.retriever, "config": args.config, "steps": n,
        "device": device, "gpu_name": torch.cuda.get_device_name(device) if on_gpu else None,
        "completions_per_step": cfg.grpo.per_device_train_batch_size * cfg.grpo.gradient_accumulation_steps,
        "num_generations": cfg.grpo.num_generations, "max_completion_length": args.max_completion_length,
        "step_time_s": round(step / n, 3),
        "reward_cached_s": round(cached / n, 4),
        "reward_uncached_s": round(uncached / n, 4),
        "reward_share_cached": round(cached / step, 4),
        "reward_share_uncached": round(uncached / (step - cached + uncached), 4),
        "cache_warm_once_s": round(timings["warm"], 2),
        "total_time_s": round(time.perf_counter() - t_start, 1),
        "conditions": {"cpu_count": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                       "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                       "note": "2 CPU cores shared with other engineers' jobs; numbers are noisy"},
    }
    if on_gpu:
        result["conditions"]["cuda"] = torch.version.cuda
        result["conditions"]["torch"] = torch.__version__
        result["conditions"]["note"] = "GPU run: GRPO in bf16 and the reward encoder on the GPU"
    from resume.io import atomic_write_json

    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
