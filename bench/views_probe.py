"""Probe (issue #11, a retriever-side lever for the fused index): fine-tune g on BOTH views (`finetune.views`).

    .venv/bin/python bench/views_probe.py                 # every arm -> bench/views_probe.json (~70 min, 2 cores)
    .venv/bin/python bench/views_probe.py --arms doc,both # some of them

The fused index searches two views of each document (the document and its summary) with one retriever.
In the paper's loop that retriever is fine-tuned on (query, summary) pairs only, and the fair comparison, the
full-document control, on (query, document) pairs only. Here, on the whole Cranfield collection with f_0's
summaries S_0 (the config's greedy settings; also the Non-iterative system's texts), each arm fine-tunes
g_0 once with the config's `finetune.*` settings on the train split and is evaluated on DEV (settings are
chosen there; test is written beside, for the record, and used for nothing):

- `doc`:  g on documents (the full-document control's retriever), the document index;
- `sum`:  g on S_0 (the paper's Non-iterative retriever), the summary index and the fused index;
- `both`: g on S_0 + documents (`finetune.views: both`), the summary index and the fused index;
- `lead_both`: g on leads + documents, the fused document + lead index (the "second view as such" control).

The both-view arms run half the epochs over twice the pairs: the same optimiser steps as a one-view arm.
Fused: score fusion, the document weight chosen on dev (`resume.evaluate.choose_fusion_weight`).
Everything is cached under bench/out/views_probe/ (summaries, fine-tuned models, evaluations): a rerun
resumes where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ARMS = {  # arm -> (training texts, finetune.views, the indexes to evaluate)
    "doc": (None, "summary", ("document",)),
    "sum": ("s0", "summary", ("summary", "fused")),
    "both": ("s0", "both", ("summary", "fused")),
    "lead_both": ("lead", "both", ("fused",)),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "cranfield.yaml"))
    ap.add_argument("--data", default=str(ROOT / "data" / "cranfield"))
    ap.add_argument("--set", action="append", default=[], help="config override")
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset of " + ",".join(ARMS))
    ap.add_argument("--out", default=str(ROOT / "bench" / "views_probe.json"))
    ap.add_argument("--work", default=str(ROOT / "bench" / "out" / "views_probe"), help="cache directory")
    args = ap.parse_args(argv)
    arms = args.arms.split(",")
    if any(a not in ARMS for a in arms):
        ap.error(f"--arms: expected some of {list(ARMS)}, got {arms}")

    from _common import dev_test_index, rel, write_probe_result

    from resume.config import load_config
    from resume.lead import write_lead_summaries
    from resume.retriever import finetune_retriever
    from resume.summarizer import summarize_corpus

    cfg = load_config(args.config, args.set)
    g0, f0 = cfg.retriever.model, cfg.summarizer.model
    root = Path(args.work).resolve()
    t_start = time.perf_counter()
    texts = {"lead": root / "lead" / "summaries.jsonl", "s0": root / "s0" / "summaries.jsonl"}
    if not texts["lead"].exists():
        write_lead_summaries(args.data, texts["lead"], retriever_tokenizer=g0)
    times: dict[str, float] = {}
    if any(ARMS[a][0] == "s0" for a in arms):
        t0 = time.perf_counter()
        summarize_corpus(cfg, data_dir=args.data, model=f0, retriever=g0, out_path=texts["s0"])
        times["summarize_s0"] = round(time.perf_counter() - t0, 1)

    def evaluate(tag: str, retriever: str, text: Path | None, mode: str) -> dict:
        """Dev (and test) metrics of one index under one retriever; fused: the weight chosen on dev. The summary
        alone (the probe predates `evaluate.summary_title`)."""
        return dev_test_index(cfg, root / "eval" / tag, data=args.data, retriever=retriever, texts=text,
                              fused=mode == "fused")

    results: dict[str, dict] = {"g0/document": evaluate("g0-document", g0, None, "summary"),
                                "g0/s0_fused": evaluate("g0-s0-fused", g0, texts["s0"], "fused")}
    for arm in arms:
        src, views, modes = ARMS[arm]
        ft = dataclasses.replace(cfg.finetune, views=views)
        if views == "both" and ft.max_steps is None:
            # Two pairs per judgement: half the epochs keep the optimiser steps (and the cost) of a one-view arm,
            # so "both" does not win by training longer.
            if ft.epochs % 2:
                ap.error(f"finetune.epochs {ft.epochs}: the both-view arms need an even number (they run half)")
            ft = dataclasses.replace(ft, epochs=ft.epochs // 2)
        acfg = dataclasses.replace(cfg, finetune=ft)
        model_dir = root / "models" / arm
        t0 = time.perf_counter()
        model = finetune_retriever(acfg, data_dir=args.data, split=cfg.data.train_split, init_model=g0,
                                   texts=None if src is None else str(texts[src]), out_dir=model_dir)
        times[f"finetune_{arm}"] = round(time.perf_counter() - t0, 1)
        for mode in modes:
            text = None if mode == "document" else texts[src]
            results[f"{arm}/{mode}"] = evaluate(f"{arm}-{mode}", model, text, "summary" if mode == "document" else mode)
        print(f"{arm}: " + "; ".join(f"{k} dev {v['dev']['mrr@10']:.3f}/{v['dev']['ndcg@10']:.3f}"
                                     for k, v in results.items() if k.startswith(arm + "/")), flush=True)

    write_probe_result(args.out, {"config": rel(args.config), "overrides": args.set}, cfg, results, [
        ("both/fused", "doc/document"), ("both/fused", "sum/fused"), ("both/fused", "lead_both/fused"),
        ("both/summary", "sum/summary"), ("sum/fused", "doc/document"), ("lead_both/fused", "doc/document")],
        times, t_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
