"""Benchmark (issue #12): the two decode kernels of the GRPO rollouts (`resume.shared_prompt`), each on and off.

    .venv/bin/python bench/run_all.py --only decode_attention      # ~5 minutes on 2 cores; into results.json
    .venv/bin/python bench/bench_decode_attention.py                # the same, bench/out/ only

The rollouts decode 16 rows (2 prompts x 8 completions) one token at a time; each row attends to its prompt,
which is the same for the 8 rows of a group. Measured on the real SmolLM2-135M-Instruct (fp32; the two longest
Cranfield documents in the GRPO prompt; the project's shared-prompt prefill and reserved cache; sampling at the
config's temperature, two seeds), as `shared_prefix_generate` runs it with either change on or off:

- **shared-prefix ("cascade") attention**: each group's prompt keys/values are read once for all its rows'
  query heads, the rows' own generated part separately, the two merged by their log-sum-exp, where SDPA reads
  the prompt once per row. The same function in another summation order (float rounding);
- **the LM head as W @ x^T** instead of `F.linear(x, W)` for the 16 decode rows (also timed alone).

For each: ms per decoded token, and how many of the 16 rows sampled exactly the tokens of the default (both off)
at the same seed. Plus the machine's read bandwidth (a sum over 512 MB): what reading the fp32 weights once per
token would cost. Writes bench/out/bench_decode_attention.json (or `--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _timed(fn, n: int) -> float:
    for _ in range(3):
        fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "cranfield.yaml"))
    p.add_argument("--tokens", type=int, default=96, help="tokens decoded per pass")
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "bench_decode_attention.json"))
    args = p.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from resume.config import load_config
    from resume.data.beir import read_corpus
    from resume.loop import run_env
    from resume.models.kv_cache import reserve_cache_room
    from resume.models.loading import load_causal_lm
    from resume.shared_prompt import _head_transposed, _shared_prefix_decode, prompt_groups
    from resume.summarizer import build_prompt, set_cpu_threads

    threads = set_cpu_threads()
    cfg = load_config(args.config)
    model, tok = load_causal_lm(cfg.summarizer.model, dtype="float32")
    docs = sorted(read_corpus(ROOT / cfg.data.path / "corpus.jsonl"), key=lambda d: -len(d["text"]))[:2]
    prompts = [build_prompt(tok, d["title"] + "\n" + d["text"], cfg) for d in docs]
    g = cfg.grpo.num_generations
    enc = tok([p for p in prompts for _ in range(g)], return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    first, inverse = prompt_groups(ids, mask)

    def decode(cascade: bool, transpose_head: bool, seed: int) -> tuple[torch.Tensor, float]:
        """The rollouts' decode as `resume.shared_prompt.shared_prefix_generate` runs it, either change on or off."""
        with torch.no_grad():
            head_mask = mask[first, :-1]
            pos = (head_mask.cumsum(-1) - 1).masked_fill(head_mask == 0, 0)
            out = model.base_model(input_ids=ids[first, :-1], attention_mask=head_mask, position_ids=pos,
                                   use_cache=True)
            cache = out.cache
            cache.batch_select_indices(inverse)
            torch.manual_seed(seed)
            with _shared_prefix_decode(model, cache, head_mask, first, inverse, cascade=cascade,
                                       transpose_head=transpose_head):
                t = time.perf_counter()
                seq = model.generate(input_ids=ids, attention_mask=mask, cache=reserve_cache_room(cache),
                                     max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=True,
                                     temperature=cfg.grpo.temperature, top_k=0, top_p=1.0)
                ms = (time.perf_counter() - t) / args.tokens * 1e3
        return seq, ms

    variants = {"sdpa": (False, False), "cascade": (True, False), "lm_head_transposed": (False, True),
                "both (the rollouts' default)": (True, True)}
    passes: dict[str, list[float]] = {k: [] for k in variants}
    same_rows: dict[str, list[int]] = {k: [] for k in variants if k != "sdpa"}
    for seed in (1, 2):
        ref = None
        for name, (cascade, transpose_head) in variants.items():
            seq, ms = decode(cascade, transpose_head, seed)
            passes[name].append(round(ms, 1))
            if ref is None:
                ref = seq
            else:
                same_rows[name].append(int((seq == ref).all(dim=1).sum()))

    lm_head = model.get_output_embeddings()
    x = torch.randn(ids.size(0), lm_head.weight.size(1))
    with torch.no_grad():
        head = {"F.linear(x, W) ms": round(_timed(lambda: F.linear(x, lm_head.weight), 20), 2),
                "(W @ x.T).T ms": round(_timed(lambda: _head_transposed(lm_head, x), 20), 2),
                "max |difference|": float((F.linear(x, lm_head.weight) - _head_transposed(lm_head, x)).abs().max())}
    big = torch.randn(128 * 1024 * 1024)
    read_gbs = big.numel() * 4 / _timed(big.sum, 5) / 1e6

    sdpa = min(passes["sdpa"])
    result = {
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "env": {**run_env(cfg), "torch_threads": threads, "policy_dtype": "float32",
                "loadavg_1m_at_end": os.getloadavg()[0]},
        "rows": ids.size(0), "prompt_tokens": ids.size(1), "tokens_per_pass": args.tokens,
        "ms_per_token": passes, "speedup_vs_sdpa": {k: round(sdpa / min(v), 3) for k, v in passes.items() if k != "sdpa"},
        "rows_with_identical_tokens_per_seed": {"of": ids.size(0), **same_rows},
        "lm_head": head, "read_bandwidth_gb_s": round(read_gbs, 1),
        "weights_mb_fp32": round(sum(p.numel() for p in model.parameters()) * 4 / 1e6, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
