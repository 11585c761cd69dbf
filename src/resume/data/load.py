"""Load a whole dataset for a run: `load_beir` resolves `data.path` (a BEIR folder or `hf:<name>`), reads
the three files and checks that every judgement names a known query and document."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from resume.data.beir import (
    CORPUS_FILE,
    QUERIES_FILE,
    BeirDataset,
    _check_root,
    _iter_corpus,
    _iter_qrels,
    _split_files,
    read_queries,
)
from resume.data.hub import resolve_data_path
from resume.errors import DataError


def load_beir(dir: str | Path, splits: Iterable[str] | None = None) -> BeirDataset:
    """Load and validate a BEIR directory (or `hf:<name>`, see `resolve_data_path`). splits=None loads every
    qrels/*.tsv (sorted by name).

    Raises DataError for malformed lines, and for judgements naming a query or a document that does not exist.
    """
    root = Path(resolve_data_path(dir))
    _check_root(root)
    files = _split_files(root, splits)
    corpus: dict[str, dict] = {}
    for _, _id, doc in _iter_corpus(root / CORPUS_FILE, known=corpus):
        corpus[_id] = doc
    if not corpus:
        raise DataError(root / CORPUS_FILE, 1, "no documents; expected at least one document")
    queries = read_queries(root / QUERIES_FILE)
    if not queries:
        raise DataError(root / QUERIES_FILE, 1, "no queries; expected at least one query")
    qrels = {s: _read_checked_qrels(p, queries, corpus) for s, p in files.items()}
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels, path=str(root))


def _read_checked_qrels(path: Path, queries, corpus) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for n, qid, did, score in _iter_qrels(path):
        if qid not in queries:
            raise DataError(path, n, f"query id {qid!r} is not in {QUERIES_FILE}; expected a known query id")
        if did not in corpus:
            raise DataError(path, n, f"corpus id {did!r} is not in {CORPUS_FILE}; expected a known document id")
        out.setdefault(qid, {})[did] = score
    return out
