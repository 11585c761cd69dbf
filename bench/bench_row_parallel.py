"""Benchmark (issue #12): decode each GRPO group's 8 rows on its own core instead of 16 rows on two cores?

    .venv/bin/python bench/run_all.py --only row_parallel      # ~5 minutes on 2 cores; into results.json

The GRPO rollouts decode the step's two groups (8 completions of one prompt each) as one batch of 16 rows
on 2 torch threads, and bench_small_gemm found that the decode's 16-row products gain at most 1.33x from
the second core. This tries the other split: the two groups' rows in two Python threads, each running
the real SmolLM2-135M (fp32) on 1 torch thread (PyTorch releases the GIL inside its operators), against
the rollouts' shape, 16 rows on 2 threads, in the same run. Each variant decodes `--steps` tokens after
a prompt of `--prompt` random tokens, teacher-forced with the same token sequence, so that every variant
computes the logits of the same inputs: the JSON records ms per token (best of `--rounds` alternating
rounds) and whether each half's logits are bitwise equal to the 16-row batch's rows (if not, the split
would change sampled tokens, and with them the learning). The prefill is not timed.
Baseline: 16 rows on 2 threads, same run. Writes bench/out/bench_row_parallel.json.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "bench_row_parallel.json"))
    p.add_argument("--prompt", type=int, default=480, help="prompt tokens per row (GRPO prompts: ~300-600)")
    p.add_argument("--steps", type=int, default=32, help="decoded tokens per variant and round")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)

    import torch
    from _common import cpu_env
    from transformers import AutoModelForCausalLM

    from resume.io import atomic_write_json
    from resume.models import resolve_model
    from resume.models.kv_cache import reserve_cache_room

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(resolve_model("smollm2-135m-instruct"),
                                                 dtype=torch.float32).eval()
    rows, half = 16, 8
    prompt = torch.randint(100, 40000, (rows, args.prompt))
    forced = torch.randint(100, 40000, (rows, args.steps))  # the tokens fed at each step, same for every variant

    def prefill(sel: slice):
        with torch.no_grad():
            return reserve_cache_room(model(input_ids=prompt[sel], use_cache=True).past_key_values)

    def decode(sel: slice, cache, threads: int | None = None) -> tuple[list, float]:
        if threads is not None:
            torch.set_num_threads(threads)
        logits = []
        t = time.perf_counter()
        with torch.no_grad():
            for i in range(args.steps):
                out = model(input_ids=forced[sel, i:i + 1], past_key_values=cache, use_cache=True,
                            cache_position=torch.tensor([args.prompt + i]))
                logits.append(out.logits[:, -1])
        return logits, time.perf_counter() - t

    ms: dict[str, list[float]] = {"batch16_2threads": [], "half8_1thread_alone": [], "two_halves_parallel": []}
    equal, max_diff = True, 0.0
    for r in range(args.rounds):
        torch.set_num_threads(2)
        full, t_full = decode(slice(0, rows), prefill(slice(0, rows)))
        ms["batch16_2threads"].append(1e3 * t_full / args.steps)
        torch.set_num_threads(1)
        _, t_half = decode(slice(0, half), prefill(slice(0, half)))
        ms["half8_1thread_alone"].append(1e3 * t_half / args.steps)
        caches = [prefill(slice(0, half)), prefill(slice(half, rows))]
        res: dict[int, list] = {}

        def work(i: int, cache, res: dict) -> None:
            res[i] = decode(slice(i * half, (i + 1) * half), cache, threads=1)[0]

        workers = [threading.Thread(target=work, args=(i, caches[i], res)) for i in range(2)]
        t = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        ms["two_halves_parallel"].append(1e3 * (time.perf_counter() - t) / args.steps)
        torch.set_num_threads(2)
        for a, b, f in zip(res[0], res[1], full):
            both = torch.cat([a, b])
            equal &= bool(torch.equal(both, f))
            max_diff = max(max_diff, float((both - f).abs().max()))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} ms/token" for k, v in ms.items())
              + f"; halves bitwise equal to the batch so far: {equal} (max |diff| {max_diff:.2e})", flush=True)
    best = {k: min(v) for k, v in ms.items()}
    doc = {"baseline": "batch16_2threads", "dtype": "float32", "model": "smollm2-135m-instruct",
           "prompt_tokens": args.prompt, "steps": args.steps, "rounds": args.rounds, "ms_per_token": ms,
           "best_ms_per_token": best,
           "speedup_parallel_vs_baseline": round(best["batch16_2threads"] / best["two_halves_parallel"], 3),
           "halves_bitwise_equal_to_batch": equal, "max_abs_logit_diff": max_diff,
           "env": cpu_env(),
           "torch": torch.__version__}
    atomic_write_json(args.out, doc)
    print(f"two halves in parallel: {doc['speedup_parallel_vs_baseline']}x the 16-row batch; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
