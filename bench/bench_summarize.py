"""Benchmark: batched corpus summarisation (`summarize_corpus`) vs a naive loop of one `generate` per document.

    .venv/bin/python bench/bench_summarize.py                      # SmolLM2-135M-Instruct, 16 Cranfield docs
    .venv/bin/python bench/bench_summarize.py --n-docs 32 --max-new-tokens 96 --dtypes float32,bfloat16
    python bench/bench_summarize.py --device cuda --dtypes bfloat16 [--vllm]   # on a GPU (bench/gpu_check.py)

Same documents, same prompts, greedy, same max_new_tokens. The naive loop is fp32 batch 1 (the
DESIGN §5 baseline, about 23 tokens/s on 2 cores); the batched path runs once per dtype in --dtypes
(length-sorted batches of --batch-size, left padding, KV cache). Reports throughput, speedup and the
share of summaries identical to the naive loop's. Writes bench/out/bench_summarize.json.

--device cuda runs both paths on the GPU (one short warm-up generate per loaded model first, so CUDA
start-up is not timed); the naive baseline stays fp32 batch 1 and `batched_bfloat16` is the bf16 figure.
The JSON then also names the card (`gpu_name`). --vllm adds a `vllm` entry: the same documents through
`summarize_corpus` with `summarizer.backend=vllm` (its time includes the vLLM engine start-up), or the
reason it was skipped when vllm is not importable.
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
RAW = Path("/work/shared/data/cranfield/cran.all.1400")


def _docs(n: int) -> tuple[str, list[str]]:
    """(data dir, first n doc ids); the bundled BEIR Cranfield, else converted from the raw files."""
    data = ROOT / "data" / "cranfield"
    if not (data / "corpus.jsonl").is_file():
        from resume.data import convert_cranfield

        data = Path(tempfile.mkdtemp()) / "cranfield"
        convert_cranfield(RAW.parent, data, seed=13)
    from resume.data import read_corpus

    ids = [d["_id"] for d, _ in zip(read_corpus(data / "corpus.jsonl"), range(n))]
    return str(data), ids


def _vllm_entry(args, data_dir: str, ids: list[str], naive: list[str], base: dict, overrides: list[str]) -> dict:
    """The same documents through `summarize_corpus` with `summarizer.backend=vllm`, or why it was skipped."""
    try:
        import vllm
    except Exception as e:  # noqa: BLE001 - ImportError, or a broken install raising anything
        return {"skipped": f"vllm not importable: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"}
    from resume.config import load_config
    from resume.summarizer import summarize_corpus

    dtype = "bfloat16" if args.device == "cuda" else "float32"
    c = load_config(args.config, [*overrides, "summarizer.backend=vllm", f"summarizer.dtype={dtype}"])
    with tempfile.TemporaryDirectory() as td:
        out = Path(td) / "summaries.jsonl"
        stats = summarize_corpus(c, data_dir=data_dir, model=args.model, retriever=args.retriever,
                                 out_path=out, doc_ids=ids, progress=False)
        rows = {r["_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    tps = stats["tokens_per_s"]
    return {
        "vllm_version": getattr(vllm, "__version__", None), "dtype": dtype,
        "time_s": stats["generation_time_s"], "tokens": stats["generated_tokens"], "tokens_per_s": round(tps, 2),
        "docs_per_s": round(stats["docs_per_s"], 4),
        "speedup_docs_per_s": round(stats["docs_per_s"] / base["docs_per_s"], 2),
        "speedup_tokens_per_s": round(tps / base["tokens_per_s"], 2),
        "identical_to_naive_share": sum(rows[i]["completion"] == naive[k] for k, i in enumerate(ids)) / len(ids),
        "missing_separator_share": stats["missing_separator_share"],
        "note": "time_s includes the vLLM engine start-up (model load, CUDA graph capture)",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--retriever", default="all-minilm-l6-v2")
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--n-docs", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--dtypes", default="float32,bfloat16", help="dtypes of the batched path")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="where both paths run (cuda: the GPU, bf16 via --dtypes)")
    ap.add_argument("--vllm", action="store_true",
                    help="also time summarizer.backend=vllm (skipped, with the reason, when vllm is absent)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "bench_summarize.json"))
    args = ap.parse_args(argv)

    import torch

    from resume.config import load_config
    from resume.data import doc_text, load_beir
    from resume.errors import ResumeError
    from resume.models import load_causal_lm, pick_device
    from resume.summarizer import (
        build_prompt,
        generate_prompts,
        parse_completion,
        set_cpu_threads,
        summarize_corpus,
    )

    try:
        device = pick_device(args.device)
    except ResumeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    on_gpu = device.startswith("cuda")
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    threads = torch.get_num_threads() if on_gpu else set_cpu_threads()
    data_dir, ids = _docs(args.n_docs)
    corpus = load_beir(data_dir).corpus
    result: dict = {
        "model": args.model, "n_docs": len(ids), "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size, "decoding": "greedy", "data": data_dir,
        "device": device, "gpu_name": torch.cuda.get_device_name(device) if on_gpu else None,
        "conditions": {"cpu_count": os.cpu_count(), "torch_threads": threads, "torch": torch.__version__,
                       "loadavg_before": [round(x, 2) for x in load_before],
                       "note": "2 CPU cores shared with other engineers' jobs; numbers are noisy"},
    }
    if on_gpu:
        result["conditions"]["cuda"] = torch.version.cuda
        result["conditions"]["note"] = "GPU run: both paths on the GPU after a warm-up generate each"
    overrides = [f"summarizer.max_new_tokens={args.max_new_tokens}", f"summarizer.batch_size={args.batch_size}",
                 f"device={device}"]

    # naive: fp32, one generate call per document
    cfg = load_config(args.config, [*overrides, "summarizer.dtype=float32"])
    model, tok = load_causal_lm(args.model, dtype="float32", device=device)
    prompts = [build_prompt(tok, doc_text(corpus[i]), cfg) for i in ids]

    def warm_up(m) -> None:  # CUDA context, kernels and allocator: not part of either path's time
        if on_gpu:
            generate_prompts(m, tok, prompts[:1], 4, cfg.summarizer.separator)
            torch.cuda.synchronize(device)

    warm_up(model)
    naive, n_tok = [], 0
    t0 = time.perf_counter()
    for p in prompts:
        texts, counts = generate_prompts(model, tok, [p], args.max_new_tokens, cfg.summarizer.separator)
        naive.append(texts[0])
        n_tok += counts[0]
    dt = time.perf_counter() - t0
    result["naive_fp32_batch1"] = {"time_s": round(dt, 2), "tokens": n_tok, "tokens_per_s": round(n_tok / dt, 2),
                                   "docs_per_s": round(len(ids) / dt, 4),
                                   "separator_rate": sum(parse_completion(t) is not None for t in naive) / len(ids)}
    print(json.dumps(result["naive_fp32_batch1"]), file=sys.stderr)

    for dtype in [d.strip() for d in args.dtypes.split(",") if d.strip()]:
        c = load_config(args.config, [*overrides, f"summarizer.dtype={dtype}"])
        m = model if dtype == "float32" else load_causal_lm(args.model, dtype=dtype, device=device)[0]
        if m is not model:
            warm_up(m)
        with tempfile.TemporaryDirectory() as td:
            out = Path(td) / "summaries.jsonl"
            stats = summarize_corpus(c, data_dir=data_dir, model=args.model, retriever=args.retriever,
                                     out_path=out, doc_ids=ids, loaded=(m, tok), progress=False)
            rows = {r["_id"]: r for r in map(json.loads, out.read_text().splitlines())}
        same = sum(rows[i]["completion"] == naive[k] for k, i in enumerate(ids)) / len(ids)
        tps = stats["tokens_per_s"]
        result[f"batched_{dtype}"] = {
            "time_s": stats["generation_time_s"], "tokens": stats["generated_tokens"], "tokens_per_s": round(tps, 2),
            "docs_per_s": round(stats["docs_per_s"], 4),
            "speedup_docs_per_s": round(stats["docs_per_s"] / result["naive_fp32_batch1"]["docs_per_s"], 2),
            "speedup_tokens_per_s": round(tps / result["naive_fp32_batch1"]["tokens_per_s"], 2),
            "identical_to_naive_share": same,
            "missing_separator_share": stats["missing_separator_share"],
        }
        print(json.dumps(result[f"batched_{dtype}"]), file=sys.stderr)
        if m is not model:
            del m
    if args.vllm:
        model = m = None  # free the HF weights: vLLM sizes its KV cache from the free GPU memory
        if on_gpu:
            torch.cuda.empty_cache()
        try:
            result["vllm"] = _vllm_entry(args, data_dir, ids, naive, result["naive_fp32_batch1"], overrides)
        except Exception as e:  # noqa: BLE001 - the HF figures above are kept; the failure is recorded
            result["vllm"] = {"error": f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"}
        print(json.dumps(result["vllm"]), file=sys.stderr)
    result["conditions"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    result["total_time_s"] = round(time.perf_counter() - t_start, 1)
    from resume.io import atomic_write_json

    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
