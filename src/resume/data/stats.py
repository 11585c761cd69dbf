"""Token-length statistics of a dataset under a tokenizer (`dataset_stats`, `resume data stats`) and the
helpers the converters and the lead control share: token lengths in batches, percentiles, a tokenizer
from a model name."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from resume.data.beir import CORPUS_FILE, QUERIES_FILE, doc_text, read_corpus, read_queries
from resume.data.hub import resolve_data_path
from resume.data.validate import validate_dataset


def _percentiles(lengths: list[int]) -> dict[str, float]:
    import numpy as np

    if not lengths:
        return {"count": 0}
    a = np.asarray(lengths)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"count": int(a.size), "mean": round(float(a.mean()), 2), "p50": round(float(p50), 2),
            "p90": round(float(p90), 2), "p99": round(float(p99), 2), "max": int(a.max())}


def _token_lengths(tokenizer, texts: Iterable[str], batch_size: int = 1024) -> list[int]:
    out: list[int] = []
    batch: list[str] = []
    for t in texts:
        batch.append(t)
        if len(batch) == batch_size:
            out += [len(ids) for ids in tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]]
            batch = []
    if batch:
        out += [len(ids) for ids in tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]]
    return out


def _load_tokenizer(tokenizer: Any) -> tuple[str, Any]:
    """(name, tokenizer) for a model name (loaded with `resume.models.load_tokenizer`) or a tokenizer object."""
    if not isinstance(tokenizer, str):
        return type(tokenizer).__name__, tokenizer
    from resume.models import load_tokenizer

    return tokenizer, load_tokenizer(tokenizer)


def dataset_stats(dir: str | Path, tokenizer: Any = "all-minilm-l6-v2") -> dict:
    """Counts per split and token-length percentiles (p50/p90/p99/max, no special tokens) of documents
    (`doc_text`) and queries under a tokenizer: a model name for `resume.models.load_tokenizer`, or a
    tokenizer object. Validates first, then streams the corpus (nothing held in memory but the lengths)."""
    root = Path(resolve_data_path(dir))
    report = validate_dataset(root)
    name, tokenizer = _load_tokenizer(tokenizer)
    return {
        "path": str(dir),
        "tokenizer": name,
        "documents": report["documents"],
        "queries": report["queries"],
        "splits": report["splits"],
        "judgements": report["judgements"],
        "document_tokens": _percentiles(_token_lengths(tokenizer, (doc_text(d) for d in read_corpus(root / CORPUS_FILE)))),
        "query_tokens": _percentiles(_token_lengths(tokenizer, read_queries(root / QUERIES_FILE).values())),
    }
