"""Validation of a BEIR folder: `validate_dataset` streams the files, raises `DataError` on what
`load_beir` rejects, and returns the counts and the warnings (`resume data validate`)."""

from __future__ import annotations

from pathlib import Path

from resume.data.beir import (
    CORPUS_FILE,
    QUERIES_FILE,
    _check_root,
    _iter_corpus,
    _iter_qrels,
    _read_queries_lines,
    _split_files,
)
from resume.data.hub import resolve_data_path
from resume.errors import DataError


def validate_dataset(dir: str | Path) -> dict:
    """Validate a BEIR directory (streaming) and return counts + warnings; "_text" is the readable report.

    Errors (DataError): anything `load_beir` rejects. Warnings: documents with an empty text, documents
    whose text duplicates an earlier one, queries judged in no split, queries judged in several splits,
    splits with no judgement.
    """
    root = Path(resolve_data_path(dir))
    _check_root(root)
    files = _split_files(root, None)
    ids: set[str] = set()
    empty: list[str] = []
    first_with_text: dict[int, str] = {}
    duplicates: list[tuple[str, str]] = []
    n_docs = 0
    for _, _id, doc in _iter_corpus(root / CORPUS_FILE, known=ids):
        n_docs += 1
        ids.add(_id)
        text = doc["text"].strip()
        if not text:
            empty.append(_id)
            continue
        h = hash(text)
        if h in first_with_text:
            duplicates.append((_id, first_with_text[h]))
        else:
            first_with_text[h] = _id
    del first_with_text
    if not n_docs:
        raise DataError(root / CORPUS_FILE, 1, "no documents; expected at least one document")
    queries = _read_queries_lines(root / QUERIES_FILE)
    if not queries:
        raise DataError(root / QUERIES_FILE, 1, "no queries; expected at least one query")
    judgements: dict[str, int] = {}
    split_queries: dict[str, set[str]] = {}
    for split, path in files.items():
        qs: set[str] = set()
        n = 0
        for line, qid, did, _ in _iter_qrels(path):
            if qid not in queries:
                raise DataError(path, line, f"query id {qid!r} is not in {QUERIES_FILE}; expected a known query id")
            if did not in ids:
                raise DataError(path, line, f"corpus id {did!r} is not in {CORPUS_FILE}; expected a known document id")
            qs.add(qid)
            n += 1
        judgements[split], split_queries[split] = n, qs

    warnings: list[str] = []
    if empty:
        warnings.append(f"{len(empty)} document(s) with an empty text: {_some(empty)}")
    if duplicates:
        pairs = [f"{a} (= {b})" for a, b in duplicates]
        warnings.append(f"{len(duplicates)} document(s) whose text duplicates an earlier one: {_some(pairs)}")
    judged = set().union(*split_queries.values())
    unjudged = [q for q in queries if q not in judged]
    if unjudged:
        warnings.append(f"{len(unjudged)} query(ies) judged in no split: {_some(unjudged)}")
    splits = list(files)
    for i, a in enumerate(splits):
        for b in splits[i + 1:]:
            both = split_queries[a] & split_queries[b]
            if both:
                warnings.append(f"{len(both)} query(ies) judged in both {a} and {b}: {_some(sorted(both))}")
    for s, n in judgements.items():
        if not n:
            warnings.append(f"split {s!r} has no judgement")

    report = {
        "path": str(root),
        "documents": n_docs,
        "queries": len(queries),
        "splits": {s: {"queries": len(split_queries[s]), "judgements": judgements[s]} for s in files},
        "judgements": sum(judgements.values()),
        "empty_documents": empty,
        "duplicate_documents": [a for a, _ in duplicates],
        "warnings": warnings,
    }
    lines = [f"{root}: OK", f"  documents:  {n_docs}", f"  queries:    {len(queries)}"]
    for s in files:
        lines.append(f"  {s + ':':<11} {len(split_queries[s])} queries, {judgements[s]} judgements")
    lines.append(f"  judgements: {report['judgements']} in total")
    lines += [f"  warning: {w}" for w in warnings]
    report["_text"] = "\n".join(lines)
    return report


def _some(items: list[str], k: int = 10) -> str:
    shown = ", ".join(items[:k])
    return shown + (f", ... (+{len(items) - k} more)" if len(items) > k else "")
