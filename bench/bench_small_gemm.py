"""Benchmark (issue #12): do the rollouts' decode products use the second core?

    .venv/bin/python bench/run_all.py --only small_gemm      # ~1 minute on 2 cores; into results.json

The GRPO rollouts decode 16 rows at a time, so every linear layer of SmolLM2-135M is a product of 16 rows
by a weight matrix. This times `F.linear` for each of those shapes (fp32, random values of the real sizes)
on 1 and on 2 torch threads, with a 512-row product as the reference that does scale, and checks whether
the 1- and 2-thread outputs are bitwise equal (if they are, running a product on one thread cannot change
a sampled token). Each is timed twice: `warm`, one weight matrix reused (it stays in the CPU's caches), and
`streamed`, cycling through copies of the weight that together exceed 256 MB, as the decode does (it reads
each layer's weights once per token, 538 MB in all): the streamed time is what a decode step pays.
Baseline: the same product on 1 thread, same run. Writes bench/out/bench_small_gemm.json.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (rows, in, out): SmolLM2-135M's q/o (576x576), k/v (576x192), gate/up (576x1536), down (1536x576), LM head
SHAPES = [(16, 576, 576), (16, 576, 192), (16, 576, 1536), (16, 1536, 576), (16, 576, 49152), (512, 576, 1536)]


def _ms(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(5):  # best of 5 blocks: the least disturbed estimate on a noisy machine
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t) / reps)
    return best * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "bench_small_gemm.json"))
    args = p.parse_args(argv)

    import torch
    import torch.nn.functional as F
    from _common import cpu_env

    from resume.io import atomic_write_json

    torch.manual_seed(0)
    rows = []
    for m, k, n in SHAPES:
        x, w = torch.randn(m, k), torch.randn(n, k) / k ** 0.5
        copies = [w.clone() for _ in range(max(2, (256 << 20) // (4 * n * k) + 1))]
        reps = 5 if n > 10000 or m > 100 else 200
        out, ms, streamed = {}, {}, {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out[threads] = F.linear(x, w)
            ms[threads] = _ms(lambda x=x, w=w: F.linear(x, w), reps)
            cycle = itertools.cycle(copies)
            streamed[threads] = _ms(lambda x=x, c=cycle: F.linear(x, next(c)), max(reps, len(copies)))
        row = {"shape": [m, k, n], "bitwise_equal": bool(torch.equal(out[1], out[2])), "weight_mb": 4 * n * k / 2**20}
        for name, t in (("warm", ms), ("streamed", streamed)):
            row[name] = {"ms_1_thread": round(t[1], 4), "ms_2_threads": round(t[2], 4),
                         "speedup_2_over_1": round(t[1] / t[2], 3),
                         "gflops_2": round(2 * m * k * n / (t[2] * 1e-3) / 1e9, 1),
                         "weight_gb_per_s_2": round(4 * n * k / (t[2] * 1e-3) / 1e9, 2)}
        rows.append(row)
        print(f"{m:4d} x {k:5d} -> {n:6d}: warm 1t {ms[1]:7.3f} 2t {ms[2]:7.3f} ms ({ms[1] / ms[2]:.2f}x); "
              f"streamed 1t {streamed[1]:7.3f} 2t {streamed[2]:7.3f} ms ({streamed[1] / streamed[2]:.2f}x, "
              f"{row['streamed']['weight_gb_per_s_2']} GB/s of weights); equal {row['bitwise_equal']}", flush=True)
    torch.set_num_threads(2)
    atomic_write_json(args.out, {"baseline": "the same product on 1 thread", "dtype": "float32", "rows": rows,
                                 "env": cpu_env(), "torch": torch.__version__})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
