"""Probe (issue #11): one summarizer's summaries of the WHOLE corpus as indexes under g_0, against the
document index (the Baseline) and the lead control, on dev (test written beside, used for nothing):

    .venv/bin/resume summarize --config configs/cranfield.yaml --summarizer MODEL ... --out PATH
    .venv/bin/python bench/corpus_index_probe.py --texts PATH --out bench/corpus_index_probe_NAME.json

Indexes (all searched by the config's retriever, g_0, no fine-tuning): `document`; `summary` (the paper's
view); `titled` (each summary after its document's title, `evaluate.summary_title`, the view the product
serves); `lead` (title + first sentence, no LLM; bench/grpo_probe.py's cached lead texts, written when
missing); `document+titled` (score fusion, the document's weight chosen on dev). Paired per-query tests
(`resume.evaluate.paired_test`, MRR@10 and NDCG@10) of the titled and fused indexes against the document
and the lead. Every index is cached under `--work` (`_common.dev_test_index`; the document and lead
indexes once for every summary set), so a rerun resumes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "cranfield.yaml"))
    ap.add_argument("--data", default=str(ROOT / "data" / "cranfield"))
    ap.add_argument("--texts", required=True, help="summaries.jsonl of the whole corpus (`resume summarize`)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default=str(ROOT / "bench" / "out" / "corpus_index_probe"),
                    help="cache directory: <work>/document, <work>/lead and <work>/summaries/<the texts' folder>/")
    args = ap.parse_args(argv)

    from _common import dev_test_index, rel, write_probe_result
    from grpo_probe import OUT_ROOT

    from resume.config import load_config
    from resume.data import load_beir
    from resume.io import iter_jsonl
    from resume.lead import write_lead_summaries

    texts = Path(args.texts).resolve()
    if not texts.is_file():
        raise SystemExit(f"--texts {texts}: no such file (write it with `resume summarize ... --out {texts}`)")
    cfg = load_config(args.config)
    ds = load_beir(args.data)
    ids = {r["_id"] for r in iter_jsonl(texts)}
    missing = [d for d in ds.corpus if d not in ids]
    if missing:
        raise SystemExit(f"--texts {texts}: {len(missing)} of {len(ds.corpus)} documents have no summary "
                         f"(first: {missing[0]}); summarize the whole corpus first")
    work = Path(args.work).resolve()
    root = work / "summaries" / texts.parent.name  # this summary set's indexes; document and lead are shared
    lead = OUT_ROOT / "lead" / "summaries.jsonl"
    if not lead.exists():
        write_lead_summaries(args.data, lead, retriever_tokenizer=cfg.retriever.model)
    g0, t_start = cfg.retriever.model, time.perf_counter()

    def index(where: Path, view: Path | None, title: bool = False, fused: bool = False) -> dict:
        return dev_test_index(cfg, where, data=args.data, retriever=g0, texts=view, fused=fused, summary_title=title)

    results = {"document": index(work / "document", None), "summary": index(root / "summary", texts),
               "titled": index(root / "titled", texts, title=True), "lead": index(work / "lead", lead),
               "document+titled": index(root / "document-titled-fused", texts, title=True, fused=True)}
    write_probe_result(args.out, {"texts": rel(texts), "retriever": rel(g0)}, cfg, results,
                       [("titled", "document"), ("titled", "lead"), ("titled", "summary"),
                        ("document+titled", "document")], {}, t_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
