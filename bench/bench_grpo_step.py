"""Benchmark: where a GRPO step's time goes on the real summarizer, and what a change does to it.

    .venv/bin/python bench/bench_grpo_step.py                                   # fp32 (today) vs bf16 autocast
    .venv/bin/python bench/bench_grpo_step.py --steps 8 --variant fp32= --variant bf16=grpo.bf16=true

One GRPO round of `--steps` optimiser steps per variant (`configs/cranfield.yaml`'s `grpo.*` settings:
SmolLM2-135M-Instruct, 2 prompts x 8 completions of up to 160 tokens per step, reward model g_0 =
all-MiniLM-L6-v2), each variant in its own process from the same seed, one after the other in the same
run; the first variant is the baseline the others are compared with. A step is split into its parts by
timing TRL's own methods (class-level wrappers, nothing changes in what they compute):

    generate   GRPOTrainer._generate: the rollouts (HF generate, sampling)
    reward     GRPOTrainer._calculate_rewards: the retrieval reward (encode summaries, score)
    logps      GRPOTrainer._get_per_token_logps_and_entropies without gradient (old/reference
               log-probabilities; zero with beta 0 and one iteration per generation)
    loss       GRPOTrainer._compute_loss: forward with gradient and the loss
    backward   Accelerator.backward
    optimizer  on_pre_optimizer_step .. on_optimizer_step (clip + AdamW step)
    other      the rest of the step (data, padding, logging)

`--variant NAME=bench.sampling_seed=N` reseeds only the rollouts' sampling (the prompts stay those of
`grpo.seed`): the spread between such a variant and the baseline is the reward curve's own noise, against
which a change that alters the rollouts (bf16 sampling) is judged. `--variant NAME=bench.cat_cache=true` runs
the shared-prompt rollouts with transformers' own key/value cache (a `torch.cat` per token) instead of the
reserved room of `resume.shared_prompt.reserve_cache_room` (same tokens; the before/after of that change).

The first step is reported but left out of the means (it pays one-off costs: thread pools, allocator).
Writes bench/out/bench_grpo_step.json: the machine (CPU model, AMX, threads, load), per variant the per-step
parts, their means over steps 2.., the round's reward curve, and the speed-up against the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A variant override that is not a config key: reseed the rollouts' sampling only (same prompts, same
# weights at step 0); two such runs give the reward curve's own noise at one seed.
SAMPLING_SEED = "bench.sampling_seed"
CAT_CACHE = "bench.cat_cache"
BENCH_KEYS = (SAMPLING_SEED, CAT_CACHE)
PARTS = ("generate", "reward", "logps", "loss", "backward", "optimizer")


def _instrument(timings: dict[str, list[float]]):
    """Wrap TRL's step pieces at class level; `timings[part]` gets one entry per call."""
    import torch
    from accelerate import Accelerator
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    def wrap(cls, name, part, only_no_grad=False):
        fn = getattr(cls, name)

        def timed(*a, **kw):
            if only_no_grad and torch.is_grad_enabled():
                return fn(*a, **kw)
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                timings[part].append(time.perf_counter() - t)

        setattr(cls, name, timed)

    wrap(GRPOTrainer, "_generate", "generate")
    wrap(GRPOTrainer, "_calculate_rewards", "reward")
    wrap(GRPOTrainer, "_get_per_token_logps_and_entropies", "logps", only_no_grad=True)
    wrap(GRPOTrainer, "_compute_loss", "loss")
    wrap(Accelerator, "backward", "backward")

    class StepClock(TrainerCallback):
        """Per optimiser step: its wall time and the optimiser's share; closes each step's bucket."""

        def __init__(self):
            self.steps: list[dict[str, float]] = []
            self._t0 = self._opt = 0.0
            self._mark: dict[str, int] = {}

        def on_step_begin(self, args, state, control, **kw):
            self._t0 = time.perf_counter()
            self._mark = {p: len(timings[p]) for p in PARTS}

        def on_pre_optimizer_step(self, args, state, control, **kw):
            self._opt = time.perf_counter()

        def on_optimizer_step(self, args, state, control, **kw):
            timings["optimizer"].append(time.perf_counter() - self._opt)

        def on_step_end(self, args, state, control, **kw):
            total = time.perf_counter() - self._t0
            # Generation happens in the step's first micro-batch (TRL generates once per
            # steps_per_generation); every part's calls since on_step_begin belong to this step.
            row = {p: sum(timings[p][self._mark[p]:]) for p in PARTS}
            row["total"] = total
            row["other"] = total - sum(row[p] for p in PARTS)
            self.steps.append({k: round(v, 3) for k, v in row.items()})

    return StepClock()


def run_one(config: str, overrides: list[str], steps: int, out_json: Path) -> None:
    """One variant in this process: a GRPO round of `steps` steps, timed; writes `out_json`."""
    from resume.config import load_config
    from resume.grpo import REWARD_LOG, train_local
    from resume.io import atomic_write_json, iter_jsonl

    sampling_seed = [o.split("=", 1)[1] for o in overrides if o.startswith(SAMPLING_SEED + "=")]
    if f"{CAT_CACHE}=true" in overrides:
        import resume.shared_prompt as shared_prompt

        shared_prompt.reserve_cache_room = lambda cache: cache  # transformers' own DynamicLayer (torch.cat)
    overrides = [o for o in overrides if not o.startswith(BENCH_KEYS)]
    cfg = load_config(config, [f"grpo.max_steps={steps}", "grpo.save_steps=100000", *overrides])
    timings: dict[str, list[float]] = defaultdict(list)
    clock = _instrument(timings)
    callbacks = [clock]
    if sampling_seed:
        import torch
        from transformers import TrainerCallback

        class Reseed(TrainerCallback):
            """Reseed torch's global RNG (the rollouts' sampling) once training begins; the prompt order comes
            from TRL's RepeatSampler's own generator (grpo.seed), so the data stay the same."""

            def on_train_begin(self, args, state, control, **kw):
                torch.manual_seed(int(sampling_seed[-1]))

        callbacks.append(Reseed())
    with tempfile.TemporaryDirectory(prefix="grpo-step-") as tmp:
        t = time.perf_counter()
        train_local(cfg, data_dir=cfg.data.path, summarizer=cfg.summarizer.model, retriever=cfg.retriever.model,
                    out_dir=tmp, callbacks=callbacks)
        wall = time.perf_counter() - t
        log = list(iter_jsonl(Path(tmp) / REWARD_LOG))
    import torch

    atomic_write_json(out_json, {"overrides": overrides, "steps": clock.steps, "wall_s": round(wall, 1),
                                 "torch_threads": torch.get_num_threads(),
                                 "reward_curve": [round(r.get("reward_mean", float("nan")), 4) for r in log],
                                 "loadavg_1m_at_end": os.getloadavg()[0]})


def summarise(steps: list[dict[str, float]]) -> dict[str, float]:
    body = steps[1:] or steps  # the first step pays one-off costs
    return {k: round(statistics.mean(s[k] for s in body), 2) for k in (*PARTS, "other", "total")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "cranfield.yaml"))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME=KEY=V[,KEY=V...]: config overrides of one variant; the first is the baseline "
                         "(default: fp32= and bf16=grpo.bf16=true)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "bench_grpo_step.json"))
    ap.add_argument("--_one", nargs=2, metavar=("OVERRIDES_JSON", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._one:
        run_one(args.config, json.loads(args._one[0]), args.steps, Path(args._one[1]))
        return 0

    from _common import write_result

    from resume.config import load_config
    from resume.loop import run_env

    variants: list[tuple[str, list[str]]] = []
    for spec in args.variant or ["fp32=", "bf16=grpo.bf16=true"]:
        name, _, rest = spec.partition("=")
        variants.append((name, [s for s in rest.split(",") if s]))
    base_cfg = load_config(args.config)
    for _, ov in variants:  # every variant's overrides are checked before any work
        load_config(args.config, [o for o in ov if not o.startswith(BENCH_KEYS)])
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="grpo-step-bench-") as tmp:
        for name, ov in variants:
            part = Path(tmp) / f"{name}.json"
            print(f"== {name} {ov}", flush=True)
            subprocess.run([sys.executable, __file__, "--config", args.config, "--steps", str(args.steps),
                            "--_one", json.dumps(ov), str(part)], check=True)
            r = json.loads(part.read_text())
            r["mean_from_step_2"] = summarise(r["steps"])
            results[name] = r
            print(f"{name}: {r['mean_from_step_2']}  reward {r['reward_curve']}", flush=True)
    base = next(iter(results))
    for r in results.values():
        r["speedup_vs_" + base] = round(results[base]["mean_from_step_2"]["total"] / r["mean_from_step_2"]["total"], 2)
    doc = {"what": "one GRPO step split into its parts (seconds, mean over steps 2..)", "config": args.config,
           "grpo": base_cfg.to_dict()["grpo"], "env": run_env(base_cfg), "baseline": base, "variants": results}
    write_result(args.out, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
