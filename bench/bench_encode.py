"""Encoding speed: resume.retriever.Encoder vs sentence-transformers `encode` (same model, texts, batch size).

    .venv/bin/python bench/bench_encode.py                 # -> bench/out/encode.json (bounded to ~90 s)
    .venv/bin/python bench/bench_encode.py --n 256 --batch-size 64 --model all-minilm-l6-v2

Texts: the first N real Cranfield documents (title + text) from data/cranfield/corpus.jsonl, or parsed from
the raw ../shared/data/cranfield/cran.all.1400 when the converted copy is absent. Both encoders run on the
same device, in the same process, with the same thread count and max_length, after a warm-up each; the
timed passes alternate (ours, theirs, then theirs, ours) so that drift in machine load hits both, and the
best pass of each is compared: by wall time, or by process CPU time (all threads) when other processes
oversubscribe the machine (a shared CI box), where wall time mostly measures waiting for a core. Both are
reported. On a busy machine the number of texts shrinks (from a speed estimate taken during the warm-up)
so that a round fits the time budget; the JSON says how many were used.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cranfield_texts(n: int) -> tuple[list[str], str]:
    from resume.data import doc_text, read_corpus

    corpus = ROOT / "data" / "cranfield" / "corpus.jsonl"
    if corpus.is_file():
        texts = [doc_text(d) for _, d in zip(range(n), read_corpus(corpus))]
        return texts, str(corpus.relative_to(ROOT))
    raw = ROOT.parent / "shared" / "data" / "cranfield" / "cran.all.1400"
    texts = []
    for block in re.split(r"^\.I ", raw.read_text(encoding="utf-8", errors="replace"), flags=re.M)[1:]:
        fields = dict(re.findall(r"^\.([TWAB])\n(.*?)(?=^\.[TWAB]\n|\Z)", block, flags=re.M | re.S))
        title, text = " ".join(fields.get("T", "").split()), " ".join(fields.get("W", "").split())
        texts.append(f"{title}. {text}" if title else text)
        if len(texts) == n:
            break
    return texts, str(raw)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="all-minilm-l6-v2")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("--budget-s", type=float, default=85.0, help="skip the second round if it would exceed this")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "encode.json"))
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import numpy as np
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    from resume.config import RetrieverConfig
    from resume.io import atomic_write_json
    from resume.retriever import Encoder

    if args.threads:
        torch.set_num_threads(args.threads)
    texts, source = cranfield_texts(args.n)
    ours = Encoder(args.model, RetrieverConfig(model=args.model, batch_size=args.batch_size), device=args.device)
    theirs = SentenceTransformer(ours.path, device=args.device)
    theirs.max_seq_length = ours.max_length
    ids = ours.tokenizer(texts, truncation=True, max_length=ours.max_length)["input_ids"]
    lengths = np.array([len(x) for x in ids])
    warm = []
    for enc in (ours.encode_docs, lambda t: theirs.encode(t, batch_size=args.batch_size)):
        t = time.perf_counter()
        enc(texts[:8])  # warm-up (first-call kernel set-up), and a per-token speed estimate
        warm.append(time.perf_counter() - t)
    # The first round (two passes) must fit the budget: on a busy machine, fewer texts rather than a late
    # answer. Small warm-up batches overstate the time per token, so the estimate errs on the safe side;
    # the second round runs only when the first left time for it.
    per_token = max(warm) / lengths[:8].sum()
    left = args.budget_s - (time.perf_counter() - t_start)
    n_fit = int(np.searchsorted(np.cumsum(lengths) * per_token * 2, left))
    if n_fit < len(texts):
        n = max(args.batch_size * 2, n_fit // args.batch_size * args.batch_size)
        texts, lengths = texts[:n], lengths[:n]

    def run_ours():
        return ours.encode_docs(texts, batch_size=args.batch_size)

    def run_theirs():
        return theirs.encode(texts, batch_size=args.batch_size, convert_to_numpy=True, normalize_embeddings=True)

    times: dict[str, list[float]] = {"ours": [], "sentence_transformers": []}
    cpu: dict[str, list[float]] = {"ours": [], "sentence_transformers": []}
    outputs = {}

    def timed(name, fn):
        t, c = time.perf_counter(), time.process_time()
        outputs[name] = fn()
        times[name].append(round(time.perf_counter() - t, 3))
        cpu[name].append(round(time.process_time() - c, 3))

    timed("ours", run_ours)
    timed("sentence_transformers", run_theirs)
    round_s = times["ours"][-1] + times["sentence_transformers"][-1]
    if time.perf_counter() - t_start + round_s < args.budget_s:
        timed("sentence_transformers", run_theirs)
        timed("ours", run_ours)

    best_ours, best_theirs = min(times["ours"]), min(times["sentence_transformers"])

    cpu_ours, cpu_theirs = min(cpu["ours"]), min(cpu["sentence_transformers"])
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        # Oversubscribed machine: wall time mostly measures waiting for a core; the process CPU time (all
        # threads) measures the work each implementation does.
        verdict_metric = f"process CPU time (load average {load:.1f} > {os.cpu_count()} cores)"
        ok = cpu_ours <= cpu_theirs
    else:
        verdict_metric, ok = "wall time", best_ours <= best_theirs

    def padded(order) -> int:  # tokens the model computes: each batch padded to its longest sequence
        return int(sum(len(b) * lengths[b].max() for b in np.array_split(order, range(args.batch_size, len(order),
                                                                                        args.batch_size))))

    result = {
        "benchmark": "encode",
        "model": args.model,
        "texts": {"n": len(texts), "n_requested": args.n, "source": source,
                  "tokens_after_truncation": int(lengths.sum())},
        "padded_tokens": {"ours (sorted by token count)": padded(np.argsort(-lengths, kind="stable")),
                          "sentence_transformers (sorted by characters)": padded(
                              np.argsort([-len(t) for t in texts]))},
        "batch_size": args.batch_size,
        "max_length": ours.max_length,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "baseline": f"sentence-transformers {sentence_transformers.__version__} SentenceTransformer.encode "
                    "(length-sorted batches, tokenised per batch)",
        "ours": "resume.retriever.Encoder.encode_docs (tokenise once, sort by token length, inference_mode)",
        "seconds": times,
        "cpu_seconds": cpu,
        "best_s": {"ours": best_ours, "sentence_transformers": best_theirs},
        "texts_per_s": {"ours": round(len(texts) / best_ours, 1),
                        "sentence_transformers": round(len(texts) / best_theirs, 1)},
        "speedup_vs_baseline": round(best_theirs / best_ours, 3),
        "cpu_speedup_vs_baseline": round(cpu_theirs / cpu_ours, 3),
        "verdict_metric": verdict_metric,
        "ours_at_least_as_fast": ok,
        "max_abs_diff": float(np.abs(outputs["ours"] - outputs["sentence_transformers"]).max()),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(load, 2)},
        "total_s": round(time.perf_counter() - t_start, 1),
    }
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
