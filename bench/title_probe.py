"""Probe (issue #11): fine-tune the retriever on the view it will search, each summary after its title.

    .venv/bin/python bench/title_probe.py      # -> bench/title_probe.json (~25 min, 2 cores)

The titled systems of a loop run (`evaluate.summary_title`) index title + S_T but search it with g_T, which
the loop fine-tuned on (query, S_T) pairs, the summary alone (the paper's). This probe asks whether training
on the indexed view helps: on a finished whole-collection run directory (default `runs/cranfield`, the
2026-12-07 run: its working set, its S_1 = `iter_01/summaries.jsonl` and its g_1 = `iter_01/retriever/model`),

- `plain`:  g_1 as the loop trained it (g_0 on S_1), searched over S_1 and over title + S_1;
- `titled`: g_0 fine-tuned once on title + S_1 (`resume.evaluate.load_index_texts`, the product's join) with the same
  `finetune.*` settings, train split, searched over title + S_1;

each alone and fused with the document (score fusion, the document weight chosen on dev with
`resume.evaluate.choose_fusion_weight`). Settings are chosen on DEV; test is written beside, for the record,
and used for nothing. Everything is cached under bench/out/title_probe/ (a rerun resumes where it stopped).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "cranfield"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "title_probe.json"))
    ap.add_argument("--work", default=str(ROOT / "bench" / "out" / "title_probe"), help="cache directory")
    args = ap.parse_args(argv)

    from _common import dev_test_index, finished_run, rel, write_probe_result

    from resume.data.load import load_beir
    from resume.evaluate import load_index_texts
    from resume.io import write_jsonl
    from resume.retriever import finetune_retriever

    run_dir, root = Path(args.run_dir).resolve(), Path(args.work).resolve()
    cfg, data, s1, g1 = finished_run(ap, run_dir)
    t_start = time.perf_counter()
    times: dict[str, float] = {}

    # title + S_1 as a summaries.jsonl, so that fine-tuning reads it through the same path as any summaries
    titled = root / "s1_titled" / "summaries.jsonl"
    if not titled.exists():
        indexed = load_index_texts(load_beir(data), s1, title=True)  # what the titled index holds
        write_jsonl(titled, [{"_id": d, "summary": text} for d, text in indexed.items()])

    def evaluate(tag: str, retriever: Path, texts: Path, title: bool, fused: bool) -> dict:
        return dev_test_index(cfg, root / "eval" / tag, data=data, retriever=retriever, texts=texts, fused=fused,
                              summary_title=title)

    results = {"plain/summary": evaluate("plain-summary", g1, s1, False, False),
               "plain/titled": evaluate("plain-titled", g1, s1, True, False)}
    t0 = time.perf_counter()
    g_titled = Path(finetune_retriever(cfg, data_dir=data, split=cfg.data.train_split, init_model=cfg.retriever.model,
                                       texts=str(titled), out_dir=root / "models" / "titled"))
    times["finetune_titled"] = round(time.perf_counter() - t0, 1)
    # the titled texts already carry their titles: indexed as they are (summary_title false)
    results["titled/titled"] = evaluate("titled-titled", g_titled, titled, False, False)
    results["plain/titled_fused"] = evaluate("plain-titled-fused", g1, s1, True, True)
    results["titled/titled_fused"] = evaluate("titled-titled-fused", g_titled, titled, False, True)

    write_probe_result(args.out, {"run_dir": rel(run_dir)}, cfg, results,
                       [("titled/titled", "plain/titled"), ("plain/titled", "plain/summary"),
                        ("titled/titled_fused", "plain/titled_fused")], times, t_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
