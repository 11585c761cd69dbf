"""Datasets in BEIR layout: read, validate, write, sample a working set, convert Cranfield and MEDLINE,
load hub data.

    resume data validate data/cranfield
    resume data stats data/cranfield --tokenizer all-minilm-l6-v2
    resume data convert-cranfield data/cranfield-raw data/cranfield --seed 13
    resume data convert-medline --raw data/medline-raw --out data/medline
    resume data download BeIR/scifact data/scifact --split test      # or a `save_to_disk` directory

BEIR layout (https://github.com/beir-cellar/beir):

    <dir>/corpus.jsonl        {"_id": str, "title": str, "text": str} per line
    <dir>/queries.jsonl       {"_id": str, "text": str} per line
    <dir>/qrels/<split>.tsv   header `query-id<TAB>corpus-id<TAB>score`, then one integer judgement per line

Every malformed input raises `DataError(path, line, what was expected)`; the CLI prints it as one line
and exits 2. Readers stream line by line (MS MARCO has 8.8M passages): `read_corpus` is a generator and
nothing here is quadratic. Writers stage everything in a temporary folder and move it into place only
when all files are complete, so a failure leaves no half-written dataset.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resume.errors import DataError, ResumeError

CORPUS_FILE = "corpus.jsonl"
QUERIES_FILE = "queries.jsonl"
QRELS_DIR = "qrels"
QRELS_HEADER = ("query-id", "corpus-id", "score")
log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ records


def doc_text(doc: dict) -> str:
    """The text a model sees for a document: `title + ". " + text` when the title is non-empty, else text."""
    title = (doc.get("title") or "").strip()
    text = (doc.get("text") or "").strip()
    return f"{title}. {text}".strip() if title else text


def _open_lines(path: Path, what: str) -> Iterator[tuple[int, str]]:
    """Yield (line number, decoded line without the newline); DataError on a missing file or bad UTF-8."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise DataError(path, None, f"file not found; expected {what}") from None
    except IsADirectoryError:
        raise DataError(path, None, f"is a directory; expected {what}") from None
    except OSError as e:
        raise DataError(path, None, f"cannot read ({e.strerror}); expected {what}") from None
    with f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(path, n, f"invalid UTF-8 (byte {e.start}); expected UTF-8 text") from None
            yield n, line.rstrip("\r\n")


def _iter_json_objects(path: Path, what: str) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line of a JSONL file."""
    for n, line in _open_lines(path, what):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, n, f"invalid JSON ({e.msg} at column {e.colno}); expected one {what} per line") \
                from None
        if not isinstance(obj, dict):
            raise DataError(path, n, f"expected a JSON object ({what}), got {type(obj).__name__}")
        yield n, obj


def _get_id(path: Path, n: int, obj: dict) -> str:
    if "_id" not in obj:
        raise DataError(path, n, 'missing "_id"; expected a non-empty string id')
    _id = obj["_id"]
    if not isinstance(_id, str) or not _id.strip():
        raise DataError(path, n, f'"_id" is {_id!r}; expected a non-empty string id')
    return _id


def _get_str(path: Path, n: int, obj: dict, key: str, *, required: bool) -> str:
    if key not in obj:
        if required:
            raise DataError(path, n, f'missing "{key}"; expected a string')
        return ""
    value = obj[key]
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise DataError(path, n, f'"{key}" is {type(value).__name__}; expected a string')
    return value


def _first_line_with_id(path: Path, _id: str) -> int | None:
    """Line of the first record with this `_id` (only called on the error path, so a rescan is fine)."""
    for n, obj in _iter_json_objects(path, "record"):
        if obj.get("_id") == _id:
            return n
    return None


def _iter_corpus(path: str | Path, known=None) -> Iterator[tuple[int, str, dict]]:
    """Yield (line, id, {"title", "text"}). Duplicate ids are checked against `known` (a set or dict the
    caller fills with each yielded id, so a large corpus keeps a single index), or an own set if None."""
    path = Path(path)
    own = known is None
    if own:
        known = set()
    for n, obj in _iter_json_objects(path, 'document {"_id", "title", "text"}'):
        _id = _get_id(path, n, obj)
        if _id in known:
            first = _first_line_with_id(path, _id)
            raise DataError(path, n, f"duplicate document id {_id!r} (first at line {first}); expected unique ids")
        if own:
            known.add(_id)
        yield n, _id, {"title": _get_str(path, n, obj, "title", required=False),
                       "text": _get_str(path, n, obj, "text", required=True)}


def read_corpus(path: str | Path) -> Iterator[dict]:
    """Stream `corpus.jsonl` as {"_id", "title", "text"} dicts, validating each line.

    Empty texts are allowed (validation reports them); duplicate ids, a missing `_id` or `text`,
    non-string fields and malformed lines raise DataError.
    """
    for _, _id, doc in _iter_corpus(path):
        doc["_id"] = _id
        yield doc


def _read_queries_lines(path: str | Path) -> dict[str, tuple[str, int]]:
    path = Path(path)
    out: dict[str, tuple[str, int]] = {}
    for n, obj in _iter_json_objects(path, 'query {"_id", "text"}'):
        _id = _get_id(path, n, obj)
        if _id in out:
            raise DataError(path, n, f"duplicate query id {_id!r} (first at line {out[_id][1]}); expected unique ids")
        text = _get_str(path, n, obj, "text", required=True)
        if not text.strip():
            raise DataError(path, n, f"query {_id!r} has an empty text; expected a non-empty string")
        out[_id] = (text, n)
    return out


def read_queries(path: str | Path) -> dict[str, str]:
    """Read `queries.jsonl` into {query id: text}; every query needs a non-empty text."""
    return {k: v for k, (v, _) in _read_queries_lines(path).items()}


def _iter_qrels(path: str | Path) -> Iterator[tuple[int, str, str, int]]:
    """Yield (line, query id, corpus id, score) of a BEIR qrels tsv, checking header, columns and types."""
    path = Path(path)
    header_seen = False
    seen: dict[tuple[str, str], int] = {}
    for n, line in _open_lines(path, "a BEIR qrels tsv"):
        if not header_seen:
            if tuple(c.strip() for c in line.split("\t")) != QRELS_HEADER:
                raise DataError(path, n, f"bad header {line[:60]!r}; expected 'query-id\\tcorpus-id\\tscore'")
            header_seen = True
            continue
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 3:
            raise DataError(path, n, f"{len(cols)} tab-separated columns; expected 3 (query-id, corpus-id, score)")
        qid, did, score = (c.strip() for c in cols)
        if not qid or not did:
            raise DataError(path, n, "empty query-id or corpus-id; expected non-empty ids")
        try:
            value = int(score)
        except ValueError:
            raise DataError(path, n, f"score {score!r}; expected an integer") from None
        if (qid, did) in seen:
            raise DataError(path, n, f"duplicate judgement ({qid!r}, {did!r}) (first at line {seen[qid, did]}); "
                                     "expected one score per query-document pair")
        seen[qid, did] = n
        yield n, qid, did, value
    if not header_seen:
        raise DataError(path, 1, "empty file; expected the header 'query-id\\tcorpus-id\\tscore'")


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels tsv into {query id: {corpus id: score}}."""
    out: dict[str, dict[str, int]] = {}
    for _, qid, did, score in _iter_qrels(path):
        out.setdefault(qid, {})[did] = score
    return out


# ------------------------------------------------------------------------------------------ dataset


@dataclass
class BeirDataset:
    """A BEIR collection in memory. corpus: id -> {"title", "text"} (file order kept);
    queries: id -> text; qrels: split -> query id -> corpus id -> integer score; path: where it came from."""

    corpus: dict[str, dict]
    queries: dict[str, str]
    qrels: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    path: str | None = None

    def split_queries(self, split: str) -> dict[str, str]:
        """Queries judged in `split` (qrels order)."""
        return {q: self.queries[q] for q in self.qrels.get(split, {})}


def _split_files(root: Path, splits: Iterable[str] | None) -> dict[str, Path]:
    qdir = root / QRELS_DIR
    if not qdir.is_dir():
        raise DataError(qdir, None, "qrels folder not found; expected qrels/<split>.tsv files")
    available = {p.stem: p for p in sorted(qdir.glob("*.tsv"))}
    if splits is None:
        if not available:
            raise DataError(qdir, None, "no .tsv files; expected at least one qrels/<split>.tsv")
        return available
    out = {}
    for s in splits:
        if s not in available:
            raise DataError(qdir / f"{s}.tsv", None,
                            f"file not found; expected qrels for split {s!r} (available: {sorted(available)})")
        out[s] = available[s]
    return out


def _check_root(root: Path) -> None:
    if not root.exists():
        raise DataError(root, None, "directory not found; expected a BEIR-layout dataset directory")
    if not root.is_dir():
        raise DataError(root, None, "not a directory; expected a BEIR-layout dataset directory")


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


# ------------------------------------------------------------------------------------------ writing


def _stage_dir(out_dir: Path) -> Path:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the dataset folder gets the usual mode
    return tmp


def _commit_dir(tmp: Path, out_dir: Path) -> None:
    """Move a fully written staging folder into place: rename when out_dir is new, else file by file."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    if not out_dir.is_dir():
        raise DataError(out_dir, None, "exists and is not a directory; expected a dataset directory to write")
    for src in sorted(p for p in tmp.rglob("*") if p.is_file()):
        dst = out_dir / src.relative_to(tmp)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    shutil.rmtree(tmp, ignore_errors=True)


def _write_rows(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def _write_qrels_file(path: Path, qrels: dict[str, dict[str, int]]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(QRELS_HEADER) + "\n")
        for qid, docs in qrels.items():
            for did, score in docs.items():
                f.write(f"{qid}\t{did}\t{int(score)}\n")
                n += 1
    return n


def write_beir(ds: BeirDataset, out_dir: str | Path, extra_files: dict[str, str] | None = None) -> str:
    """Write `ds` in BEIR layout under out_dir, atomically (staged, then moved into place).

    extra_files: {relative path: text} written in the same transaction (e.g. a README.md).
    Judgements naming unknown queries or documents raise DataError before anything is written.
    """
    out = Path(out_dir)
    for split, qrels in ds.qrels.items():
        for qid, docs in qrels.items():
            if qid not in ds.queries:
                raise DataError(out / QRELS_DIR / f"{split}.tsv", None, f"query id {qid!r} has no query text")
            for did in docs:
                if did not in ds.corpus:
                    raise DataError(out / QRELS_DIR / f"{split}.tsv", None, f"corpus id {did!r} is not in the corpus")
    for qid, text in ds.queries.items():
        if not isinstance(text, str) or not text.strip():
            raise DataError(out / QUERIES_FILE, None, f"query {qid!r} has an empty text; expected a non-empty string")
    tmp = _stage_dir(out)
    try:
        _write_rows(tmp / CORPUS_FILE, ({"_id": i, "title": d.get("title") or "", "text": d.get("text") or ""}
                                        for i, d in ds.corpus.items()))
        _write_rows(tmp / QUERIES_FILE, ({"_id": i, "text": t} for i, t in ds.queries.items()))
        (tmp / QRELS_DIR).mkdir()
        for split, qrels in ds.qrels.items():
            _write_qrels_file(tmp / QRELS_DIR / f"{split}.tsv", qrels)
        for rel, text in (extra_files or {}).items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            with open(tmp / rel, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
        _commit_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(out)


# ------------------------------------------------------------------------------------------ working set


def _sample_in_order(items: list[str], k: int | None, rng: random.Random) -> list[str]:
    if k is None or k >= len(items):
        return list(items)
    keep = set(rng.sample(items, k))
    return [x for x in items if x in keep]


def select_working_set(ds: BeirDataset, cfg) -> BeirDataset:
    """The part of `ds` a run uses, from a `DataConfig` (seeded, deterministic, file order preserved).

    Queries: per split, the queries with at least one positive judgement (score > 0); keep
    `max_train_queries` of the train split and `max_eval_queries` of every other split (None = all),
    sampled with a generator seeded by (seed, split), so one split's cap never changes another's sample.
    Documents: every document judged (any score) for a kept query, plus `distractors` other documents
    sampled uniformly (None = the whole corpus). Document dicts are shared with `ds`, not copied.
    """
    qrels: dict[str, dict[str, dict[str, int]]] = {}
    for split, split_qrels in ds.qrels.items():
        cap = cfg.max_train_queries if split == cfg.train_split else cfg.max_eval_queries
        candidates = [q for q, docs in split_qrels.items() if q in ds.queries and any(s > 0 for s in docs.values())]
        kept = _sample_in_order(candidates, cap, random.Random(f"{cfg.seed}:{split}"))
        qrels[split] = {q: split_qrels[q] for q in kept}
    kept_queries = {q for split_qrels in qrels.values() for q in split_qrels}
    queries = {q: t for q, t in ds.queries.items() if q in kept_queries}
    if cfg.distractors is None:
        corpus = ds.corpus
    else:
        judged = {d for split_qrels in qrels.values() for docs in split_qrels.values() for d in docs}
        ids = list(ds.corpus)
        rng = random.Random(f"{cfg.seed}:distractors")
        # Sample positions, not a filtered copy of the corpus: O(distractors + judged), not O(corpus).
        want = min(len(ids), cfg.distractors + len(judged))
        picked = [ids[i] for i in rng.sample(range(len(ids)), want)]
        distract = [d for d in picked if d not in judged][: cfg.distractors]
        keep = judged | set(distract)
        corpus = {d: doc for d, doc in ds.corpus.items() if d in keep}
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels, path=ds.path)


# ------------------------------------------------------------------------------------------ validation


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


# ------------------------------------------------------------------------------------------ stats


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


# ------------------------------------------------------------------------------------------ Cranfield

CRANFIELD_SPLIT = {"dev": 50, "test": 50}  # of 225 judged queries; train takes the rest (125)
_FIELD = re.compile(r"^\.([A-Z])\s*$")


def _parse_smart(path: Path, fields: set[str]) -> tuple[list[dict], list[str]]:
    """Parse a SMART file into records {"id", "line", <field letter>: [lines]}.

    Quirks: the final bare `.I` (no id, no content) is ignored; a field marker met again after `.W`
    (stray `.A`/`.B`/`.W` lines inside the abstract of a few documents) is a corruption of the source,
    so its lines stay in the text and the marker itself is dropped; those ids are returned as notes.
    """
    records: list[dict] = []
    stray: list[str] = []
    cur: dict | None = None
    field_name: str | None = None
    bare_line: int | None = None
    markers = ", ".join("." + f for f in sorted(fields))
    for n, line in _open_lines(path, f"a SMART file (.I id, then {markers} fields)"):
        if line.startswith(".I"):
            if bare_line is not None:
                raise DataError(path, bare_line, "'.I' without an id before the end of the file; expected '.I <number>'")
            rest = line[2:].strip()
            if not rest:
                bare_line = n
                cur, field_name = None, None
                continue
            if not rest.isdigit():
                raise DataError(path, n, f"record id {rest!r}; expected '.I <number>'")
            cur = {"id": str(int(rest)), "line": n}
            records.append(cur)
            field_name = None
            continue
        m = _FIELD.match(line)
        if m:
            if cur is None:
                raise DataError(path, n, f"field '{line.strip()}' outside a record; expected '.I <number>' first")
            letter = m.group(1)
            if letter not in fields:
                raise DataError(path, n, f"unknown field '{line.strip()}'; expected one of {markers}")
            if field_name == "W":
                if cur["id"] not in stray:
                    stray.append(cur["id"])
                continue
            field_name = letter
            cur.setdefault(letter, [])
            continue
        if bare_line is not None and line.strip():
            raise DataError(path, n, "text after the final bare '.I'; expected '.I <number>' to start a record")
        if cur is None:
            if line.strip():
                raise DataError(path, n, "text before the first record; expected '.I <number>'")
            continue
        if field_name is None:
            if line.strip():
                raise DataError(path, n, f"text before any field marker; expected one of {markers}")
            continue
        cur[field_name].append(line)
    return records, stray


def _join(lines: list[str] | None) -> str:
    """Lines of one SMART field -> one string: each line stripped, joined by single spaces; nothing else."""
    return " ".join(s for s in (x.strip() for x in lines or []) if s)


def _collapse(lines: list[str] | None) -> str:
    """Lines of one SMART field -> one string with every run of whitespace (inside lines too) one space."""
    return " ".join(" ".join(lines or []).split())


def _smart_corpus(path: Path, fields: set[str], make_doc) -> tuple[dict[str, dict], list[str]]:
    """Documents of a SMART file: ({id: make_doc(record)}, ids with stray field markers); DataError on
    duplicate ids or no document at all."""
    docs, stray = _parse_smart(path, fields)
    corpus: dict[str, dict] = {}
    for r in docs:
        if r["id"] in corpus:
            raise DataError(path, r["line"], f"duplicate document id {r['id']!r}; expected unique '.I' ids")
        corpus[r["id"]] = make_doc(r)
    if not corpus:
        raise DataError(path, 1, "no documents; expected '.I <number>' records")
    return corpus, stray


def _smart_queries(path: Path, join=_join) -> dict[str, str]:
    """Queries of a SMART file (`.I`, `.W`) in file order: {id: join(.W lines)}; DataError on duplicate
    ids, a query without text, or a repeated `.W`."""
    qrecs, qstray = _parse_smart(path, {"W"})
    queries: dict[str, str] = {}
    for r in qrecs:
        if r["id"] in queries:
            raise DataError(path, r["line"], f"duplicate query id {r['id']!r}; expected unique '.I' ids")
        text = join(r.get("W"))
        if not text:
            raise DataError(path, r["line"], f"query {r['id']!r} has no text; expected a '.W' field with text")
        queries[r["id"]] = text
    if qstray:
        raise DataError(path, None, f"repeated '.W' in queries {qstray}; expected one '.W' per query")
    if not queries:
        raise DataError(path, 1, "no queries; expected '.I <number>' records")
    return queries


def _read_rel(path: Path, columns: str, judge) -> tuple[dict[str, dict[str, int]], list[dict], dict[int, int], int]:
    """Judgement lines of three integers `columns` -> (judged {query id: {doc id: score}}, dropped lines,
    {third column: count}, non-blank lines). `judge(a, b, c)` returns (query id, doc id, score), or the
    reason to drop the line; a line repeating a (query, document) pair is dropped too. A line that is not
    three integers raises DataError."""
    judged: dict[str, dict[str, int]] = {}
    dropped: list[dict] = []
    codes: dict[int, int] = {}
    n_lines = 0
    for n, line in _open_lines(path, f"lines '{columns}'"):
        if not line.strip():
            continue
        n_lines += 1
        cols = line.split()
        if len(cols) != 3:
            raise DataError(path, n, f"{len(cols)} columns; expected 3 integers '{columns}'")
        try:
            a, b, c = (int(x) for x in cols)
        except ValueError:
            raise DataError(path, n, f"{line.strip()!r}; expected 3 integers '{columns}'") from None
        codes[c] = codes.get(c, 0) + 1
        verdict = judge(a, b, c)
        if isinstance(verdict, str):
            reason = verdict
        else:
            qid, did, score = verdict
            reason = (f"repeats the judgement of (query {qid}, document {did})"
                      if did in judged.get(qid, {}) else None)
        if reason:
            dropped.append({"line": n, "raw": line.strip(), "reason": reason})
            continue
        judged.setdefault(qid, {})[did] = score
    return judged, dropped, codes, n_lines


def _conversion_report(raw: Path, out_dir, corpus: dict[str, dict], queries: dict[str, str], rel: tuple,
                       qrels: dict[str, dict[str, dict[str, int]]], stray: list[str], **extra) -> dict:
    """The report of a SMART conversion: counts, `rel` (= `_read_rel`'s result), the judgements per split,
    unjudged queries, documents with an empty text or a text repeating an earlier one (`"id (= first id)"`),
    documents with stray field markers; `extra` entries follow `out`."""
    judged, dropped, codes, n_lines = rel
    empty = [d for d, doc in corpus.items() if not doc["text"].strip()]
    seen: dict[str, str] = {}
    dup = []
    for d, doc in corpus.items():
        t = doc["text"].strip()
        if t and t in seen:
            dup.append(f"{d} (= {seen[t]})")
        seen.setdefault(t, d)
    return {
        "source": str(raw),
        "out": str(out_dir),
        **extra,
        "documents": len(corpus),
        "queries": len(queries),
        "qrels_lines": n_lines,
        "relevance_codes": {str(k): v for k, v in sorted(codes.items())},
        "judgements": sum(len(v) for v in judged.values()),
        "dropped": dropped,
        "splits": {s: {"queries": len(q), "judgements": sum(len(v) for v in q.values())} for s, q in qrels.items()},
        "unjudged_queries": [q for q in queries if q not in judged],
        "empty_documents": empty,
        "duplicate_documents": dup,
        "stray_field_markers": stray,
    }


def _cranfield_split(qids: list[str], seed: int) -> dict[str, list[str]]:
    n = len(qids)
    n_dev = round(n * CRANFIELD_SPLIT["dev"] / 225)
    n_test = round(n * CRANFIELD_SPLIT["test"] / 225)
    order = list(qids)
    random.Random(seed).shuffle(order)
    parts = {"train": order[: n - n_dev - n_test], "dev": order[n - n_dev - n_test: n - n_test],
             "test": order[n - n_test:]}
    pos = {q: i for i, q in enumerate(qids)}
    return {s: sorted(p, key=pos.__getitem__) for s, p in parts.items()}


def convert_cranfield(raw_dir: str | Path, out_dir: str | Path, seed: int = 13) -> dict:
    """Convert the raw SMART Cranfield files (cran.all.1400, cran.qry, cranqrel) into BEIR layout + README.md.

    Mapping (see data/cranfield/README.md):
      - documents: `_id` = the `.I` number, title = `.T`, text = `.W` (authors `.A` and source `.B` dropped);
        each field's lines are stripped and joined with one space, nothing else is changed.
      - queries: `_id` = the `.I` number as written without leading zeros (`.I 008` -> "8").
      - cranqrel numbers queries by POSITION in cran.qry (1..225): position p -> the p-th query's id.
      - relevance codes 1 (complete answer) .. 4 (minimum interest) -> gain = 5 - code (4..1).
        A line whose code is outside 1..4, whose position or document does not exist, or that repeats
        a (query, document) pair, is dropped and named in the report.
      - judged queries are shuffled with `random.Random(seed)` and split 125/50/50 into train/dev/test
        (proportionally for another count); a query with no kept judgement stays in queries.jsonl and
        goes to no split (named in the report).
    Malformed raw input raises DataError; nothing is written then. Returns the conversion report.
    """
    raw = Path(raw_dir)
    if not raw.is_dir():
        raise DataError(raw, None, "directory not found; expected a folder with cran.all.1400, cran.qry, cranqrel")
    doc_path, qry_path, rel_path = raw / "cran.all.1400", raw / "cran.qry", raw / "cranqrel"

    corpus, stray = _smart_corpus(doc_path, {"T", "A", "B", "W"},
                                  lambda r: {"title": _join(r.get("T")), "text": _join(r.get("W"))})
    queries = _smart_queries(qry_path)
    by_position = list(queries)

    def judge(pos: int, did: int, code: int):
        if not 1 <= pos <= len(by_position):
            return f"query position {pos} is outside 1..{len(by_position)}"
        if str(did) not in corpus:
            return f"document {did} is not in cran.all.1400"
        if not 1 <= code <= 4:
            return f"relevance code {code} is outside 1..4"
        return by_position[pos - 1], str(did), 5 - code

    rel = _read_rel(rel_path, "query-position doc-id code", judge)
    judged = rel[0]
    split_ids = _cranfield_split([q for q in by_position if q in judged], seed)
    qrels = {s: {q: judged[q] for q in ids} for s, ids in split_ids.items()}
    report = _conversion_report(raw, out_dir, corpus, queries, rel, qrels, stray, seed=seed)
    ds = BeirDataset(corpus=corpus, queries=queries, qrels=qrels)
    write_beir(ds, out_dir, extra_files={"README.md": _cranfield_readme(report, queries, by_position)})
    return report


def _cranfield_readme(r: dict, queries: dict[str, str], by_position: list[str]) -> str:
    """README.md of the converted collection (generated, so it always matches the files)."""
    examples = [(p, q) for p, q in enumerate(by_position, 1) if str(p) != q][:3]
    ex = ", ".join(f"position {p} -> id `{q}`" for p, q in examples)
    codes = ", ".join(f"code {k}: {v}" for k, v in r["relevance_codes"].items())
    dropped = ("\n".join(f"- cranqrel line {d['line']} `{d['raw']}`: {d['reason']}" for d in r["dropped"])
               or "None: every cranqrel line was kept.")
    split_rows = "\n".join(f"| {s} | {v['queries']} | {v['judgements']} |" for s, v in r["splits"].items())
    unjudged = ", ".join(r["unjudged_queries"]) or "none"
    return f"""# Cranfield 1400 in BEIR layout

Generated by `resume data convert-cranfield <raw> data/cranfield --seed {r['seed']}`
(`scripts/convert_cranfield.py`, `resume.data.convert_cranfield`) from the raw SMART files
(`cran.all.1400`, `cran.qry`, `cranqrel`, as distributed with the Cranfield collection; the project's
copy lives in `data/cranfield-raw/`). Do not edit these files by hand: rerun the converter; it is
deterministic (same input and seed, same bytes).

| file | content |
| --- | --- |
| `corpus.jsonl` | {r['documents']} documents `{{"_id", "title", "text"}}` |
| `queries.jsonl` | {r['queries']} queries `{{"_id", "text"}}` |
| `qrels/train.tsv`, `qrels/dev.tsv`, `qrels/test.tsv` | graded judgements `query-id corpus-id score` |

## Mapping

- Documents: `_id` = the `.I` number; `title` = `.T`; `text` = `.W` (the abstract, which in this
  collection begins by repeating the title). Authors (`.A`) and source (`.B`) are not kept. The lines of
  a field are stripped and joined with one space; nothing else is changed (lowercase, ` .` before
  punctuation and typos are kept as distributed).
- Queries: `_id` = the `.I` number without leading zeros (`.I 008` -> `8`); `text` = `.W`.
- Judgements: `cranqrel` numbers queries by their POSITION in `cran.qry` (1..{len(by_position)}), not by
  their `.I` id; the position is mapped to the id ({ex}, ...).
- Relevance: Cleverdon's codes 1 (complete answer) .. 4 (minimum interest) become graded gains
  `score = 5 - code` (1 -> 4, 2 -> 3, 3 -> 2, 4 -> 1), so higher is more relevant, as NDCG expects.
  `cranqrel.readme` also defines code 5 (no interest), which never occurs; there is no `-1` code in this
  file. Codes found: {codes}. Every judgement has a score >= 1 (relevant); there are no zero-score rows.

## Quirks handled

- The final line of `cran.all.1400` and of `cran.qry` is a bare `.I` with no id and no text: ignored.
- `cran.qry` has CRLF line ends: read as text, the ends are dropped.
- Documents with an empty text keep their id (validation reports them): {', '.join(r['empty_documents']) or 'none'}.
  Documents whose text duplicates an earlier one: {', '.join(r['duplicate_documents']) or 'none'} (empty texts
  are not counted as duplicates).
- A few abstracts contain stray field markers (`.A`, `.B`, `.W` lines) after `.W`: documents
  {', '.join(r['stray_field_markers']) or 'none'}. The marker lines are dropped and the lines after them
  stay in the text (they are abstract text, not author or source fields).

## Split

The {sum(v['queries'] for v in r['splits'].values())} judged queries are shuffled with
`random.Random({r['seed']})` and cut into train / dev / test (125 / 50 / 50 of 225); each file lists its
queries in `cran.qry` order. Queries with no judgement go to no split: {unjudged}.

| split | queries | judgements |
| --- | --- | --- |
{split_rows}

Use: train for GRPO and retriever adaptation, dev for early stopping, test for the final table.

## Counts and dropped judgements

{r['documents']} documents, {r['queries']} queries, {r['qrels_lines']} lines in `cranqrel`,
{r['judgements']} judgements kept, {len(r['dropped'])} dropped.

{dropped}
"""


# ------------------------------------------------------------------------------------------ MEDLINE

MEDLINE_FILES = ("MED.ALL", "MED.QRY", "MED.REL")
MEDLINE_SPLIT = "test"  # 30 queries are too few to split: all of them are the (never trained on) test split


def convert_medline(raw_dir: str | Path, out_dir: str | Path, tokenizer: Any = None) -> dict:
    """Convert the raw SMART MEDLINE files (MED.ALL, MED.QRY, MED.REL) into BEIR layout + README.md.

    MEDLINE is the project's out-of-distribution set (`data.ood`): models trained on Cranfield are
    evaluated on it unchanged. Mapping (see data/medline/README.md):
      - documents: `_id` = the `.I` number, title = "" (MED.ALL has no title field: `.I` then `.W`),
        text = `.W` with every run of whitespace collapsed to one space (the raw text is lowercase, with
        spaces before punctuation and lines padded with trailing blanks; the words are kept as they are).
      - queries: `_id` = the `.I` number, text = `.W`, whitespace collapsed the same way.
      - MED.REL has three columns `query-id doc-id relevance` (not TREC's four); relevance is binary and
        kept as the score. A line naming an unknown query or document, a relevance other than 0/1, or a
        repeated (query, document) pair is dropped and named in the report.
      - every judged query goes to the one split `test` (qrels/test.tsv).
      - CRLF line ends are dropped by the line reader, so ids are "1", not "1\\r".
    tokenizer: a model name (`all-minilm-l6-v2`) or tokenizer object; when given, the README also carries
    token-length statistics of documents and queries (as `resume data stats`).
    Malformed raw input raises DataError (file and line); nothing is written then. Returns the report.
    """
    raw = Path(raw_dir)
    if not raw.is_dir():
        raise DataError(raw, None, f"directory not found; expected a folder with {', '.join(MEDLINE_FILES)}")
    doc_path, qry_path, rel_path = (raw / f for f in MEDLINE_FILES)

    corpus, stray = _smart_corpus(doc_path, {"W"}, lambda r: {"title": "", "text": _collapse(r.get("W"))})
    queries = _smart_queries(qry_path, join=_collapse)

    def judge(q: int, d: int, rel: int):
        if str(q) not in queries:
            return f"query {q} is not in MED.QRY"
        if str(d) not in corpus:
            return f"document {d} is not in MED.ALL"
        if rel not in (0, 1):
            return f"relevance {rel} is not binary (0 or 1)"
        return str(q), str(d), rel

    rel = _read_rel(rel_path, "query-id doc-id relevance", judge)
    test = {q: rel[0][q] for q in queries if q in rel[0]}  # in MED.QRY order
    report = _conversion_report(raw, out_dir, corpus, queries, rel, {MEDLINE_SPLIT: test}, stray)
    report["crlf_files"] = [f for f in MEDLINE_FILES if b"\r\n" in (raw / f).read_bytes()]
    if tokenizer is not None:
        name, tok = _load_tokenizer(tokenizer)
        doc_lengths = _token_lengths(tok, (doc_text(d) for d in corpus.values()))
        report["tokenizer"] = name
        report["document_tokens"] = {**_percentiles(doc_lengths),
                                     "over_256": sum(1 for n in doc_lengths if n > 256)}
        report["query_tokens"] = _percentiles(_token_lengths(tok, queries.values()))
    ds = BeirDataset(corpus=corpus, queries=queries, qrels={MEDLINE_SPLIT: test})
    write_beir(ds, out_dir, extra_files={"README.md": _medline_readme(report)})
    return report


def _medline_readme(r: dict) -> str:
    """README.md of the converted MEDLINE collection (generated, so it always matches the files)."""
    values = ", ".join(f"{k}: {v}" for k, v in r["relevance_codes"].items())
    dropped = ("\n".join(f"- MED.REL line {d['line']} `{d['raw']}`: {d['reason']}" for d in r["dropped"])
               or "None: every MED.REL line was kept.")
    split_rows = "\n".join(f"| {s} | {v['queries']} | {v['judgements']} |" for s, v in r["splits"].items())
    crlf = ", ".join(f"`{f}`" for f in r["crlf_files"]) or "none of the files"
    if "document_tokens" in r:
        d, q = r["document_tokens"], r["query_tokens"]
        lengths = (
            f"Under the `{r['tokenizer']}` tokenizer (word pieces, no special tokens), as\n"
            f"`resume data stats data/medline --tokenizer {r['tokenizer']}` counts them:\n\n"
            "| | count | mean | median | p90 | p99 | max |\n| --- | --- | --- | --- | --- | --- | --- |\n"
            + "".join(f"| {what} | {s['count']} | {s['mean']} | {s['p50']} | {s['p90']} | {s['p99']} | {s['max']} |\n"
                      for what, s in (("documents", d), ("queries", q)))
            + f"\n{d['over_256']} of {d['count']} documents are longer than 256 tokens (the retriever's default\n"
            "`max_length`) and are truncated when encoded."
        )
    else:
        lengths = "Not computed here: `resume data stats data/medline --tokenizer all-minilm-l6-v2` prints them."
    return f"""# MEDLINE in BEIR layout (the out-of-distribution test set)

Generated by `resume data convert-medline --raw data/medline-raw --out data/medline`
(`resume.data.convert_medline`) from the raw SMART files (`MED.ALL`, `MED.QRY`, `MED.REL`, the classic
MEDLINE test collection; the project's copy lives in `data/medline-raw/`). Do not edit these files by
hand: rerun the converter; it is deterministic (same input, same bytes).

Biomedical abstracts, far from Cranfield's aeronautics: the models trained on `data.path` (Cranfield)
are evaluated here unchanged (`data.ood: data/medline`), as the paper trains on MS MARCO and reports
NFCorpus without further training. Every query is in the `test` split; nothing is ever trained on it.

| file | content |
| --- | --- |
| `corpus.jsonl` | {r['documents']} documents `{{"_id", "title", "text"}}`, `title` always `""` |
| `queries.jsonl` | {r['queries']} queries `{{"_id", "text"}}` |
| `qrels/test.tsv` | {r['splits'][MEDLINE_SPLIT]['judgements']} binary judgements `query-id corpus-id score` |

## Mapping

- Documents: `_id` = the `.I` number; `title` = `""`: `MED.ALL` has no title field (`.I` then `.W`). The
  abstract often begins with the article's title as its first sentence, but nothing marks where it ends,
  so it stays in the text. `text` = `.W`.
- Queries: `_id` = the `.I` number; `text` = `.W`.
- Judgements: `MED.REL` lines are `query-id doc-id relevance`, three columns (not the four of TREC's
  `query 0 doc relevance`); the query is named by its `.I` id. Relevance is binary and kept as the score.
  Values found: {values}.

## Quirks handled

- CRLF line ends in {crlf}: dropped when reading, so ids are `1`, not `1\\r`.
- The text is lowercase, the documents with a space before punctuation (` .`); lines are padded with
  trailing blanks, paragraphs indented and sentences of the queries separated by two spaces: the words
  are kept as distributed, every run of whitespace becomes one space (Cranfield's converter keeps
  spaces inside lines; here the padding would otherwise leak into the text).
- Blank lines (the last line of `MED.QRY`) are ignored.
- Documents with an empty text: {', '.join(r['empty_documents']) or 'none'}.
- Documents whose text duplicates an earlier one: {', '.join(r['duplicate_documents']) or 'none'}.
- Repeated `.W` markers inside a document (the marker dropped, its lines kept):
  {', '.join(r['stray_field_markers']) or 'none'}.

## Split

{r['queries']} queries are too few to split: every judged query is in `test`.
Queries with no judgement go to no split: {', '.join(r['unjudged_queries']) or 'none'}.

| split | queries | judgements |
| --- | --- | --- |
{split_rows}

## Lengths

{lengths}

## Counts and dropped judgements

{r['documents']} documents, {r['queries']} queries, {r['qrels_lines']} lines in `MED.REL`,
{r['judgements']} judgements kept, {len(r['dropped'])} dropped.

{dropped}
"""


# ------------------------------------------------------------------------------------------ hub datasets

_HUB_ALIASES = {"msmarco": "BeIR/msmarco"}


def _iter_columns(d, cols: tuple[str, ...], batch_size: int = 10_000) -> Iterator[tuple]:
    """Rows of a `datasets.Dataset` as tuples of `cols` (None where a column is absent), read in batches."""
    present = [c for c in cols if c in d.column_names]
    for batch in d.iter(batch_size=batch_size):
        columns = [batch[c] if c in present else [None] * len(batch[present[0]]) for c in cols]
        yield from zip(*columns)


def _rows_to_dataset(corpus_rows, query_rows, qrels_by_split) -> tuple[BeirDataset, dict]:
    """Build a BeirDataset from `datasets` tables; ids become strings. Judgements naming an unknown
    query or document are dropped (as BEIR's own loader does) and counted in the returned notes."""
    corpus = {str(i): {"title": t or "", "text": x or ""} for i, t, x in _iter_columns(corpus_rows, ("_id", "title", "text"))}
    queries = {str(i): x or "" for i, x in _iter_columns(query_rows, ("_id", "text"))}
    notes: dict[str, int] = {}
    qrels: dict[str, dict[str, dict[str, int]]] = {}
    for split, rows in qrels_by_split.items():
        out: dict[str, dict[str, int]] = {}
        unknown = 0
        for q, d, score in _iter_columns(rows, QRELS_HEADER):
            qid, did = str(q), str(d)
            if qid in queries and did in corpus:
                out.setdefault(qid, {})[did] = int(score)
            else:
                unknown += 1
        if unknown:
            notes[f"{split}: judgements naming an unknown query or document, dropped"] = unknown
        qrels[split] = out
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels), notes


def _qrels_splits(dd, split: str) -> dict[str, Any]:
    """qrels parts of a saved DatasetDict: `qrels` (-> `split`) and `qrels/<s>`, `qrels.<s>`, `qrels_<s>`, `qrels-<s>`."""
    out = {}
    for key in dd:
        if key == "qrels":
            out[split] = dd[key]
        elif key.startswith("qrels") and len(key) > 6 and key[5] in "/._-":
            out[key[6:]] = dd[key]
    return out


def _load_saved(path: Path, split: str) -> tuple[BeirDataset, dict]:
    import datasets

    try:
        dd = datasets.load_from_disk(str(path))
    except Exception as e:  # datasets raises FileNotFoundError / ValueError for folders it did not write
        raise DataError(path, None, f"cannot load with datasets.load_from_disk ({_one_line(e)}); expected a "
                                    "folder written by DatasetDict.save_to_disk") from None
    if not isinstance(dd, datasets.DatasetDict):
        raise DataError(path, None, "holds a single Dataset; expected a DatasetDict with corpus, queries, qrels")
    missing = [k for k in ("corpus", "queries") if k not in dd]
    qrels = _qrels_splits(dd, split)
    if missing or not qrels:
        raise DataError(path, None, f"DatasetDict has {sorted(dd)}; expected 'corpus', 'queries' and 'qrels' "
                                    "(or 'qrels/<split>')")
    for key, cols in (("corpus", ("_id", "text")), ("queries", ("_id", "text"))):
        lack = [c for c in cols if c not in dd[key].column_names]
        if lack:
            raise DataError(path / key, None, f"missing column(s) {lack}; expected columns {list(cols)}")
    for s, d in qrels.items():
        lack = [c for c in QRELS_HEADER if c not in d.column_names]
        if lack:
            raise DataError(path, None, f"qrels {s!r} lacks column(s) {lack}; expected {list(QRELS_HEADER)}")
    return _rows_to_dataset(dd["corpus"], dd["queries"], qrels)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:200] + "...") if len(text) > 200 else (text or type(e).__name__)


def _load_hub(name: str, splits: list[str]) -> tuple[BeirDataset, dict]:
    import datasets  # noqa: F401  (imported first: importing it resets the hub logger's level)

    # huggingface_hub logs each network retry as a warning; the failure is reported once, below.
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)
    try:
        return _load_hub_quiet(name, splits)
    finally:
        hub_log.setLevel(level)


def _load_hub_quiet(name: str, splits: list[str]) -> tuple[BeirDataset, dict]:
    import datasets

    repo = _HUB_ALIASES.get(name, name)

    def load(*args, **kw):
        try:
            return datasets.load_dataset(*args, **kw)
        except Exception as e:
            if "script" in str(e).lower():  # script-based repos: use the hub's parquet conversion
                return datasets.load_dataset(*args, revision="refs/convert/parquet", **kw)
            raise

    def unreachable(e: Exception) -> ResumeError:
        return ResumeError(
            f"cannot load {name!r} from the Hugging Face hub ({type(e).__name__}: {_one_line(e)}); the hub is "
            "unreachable or the name is wrong. Point at a local copy instead: a folder written by "
            "DatasetDict.save_to_disk (corpus, queries, qrels), or use a BEIR-layout folder directly as data.path")

    try:
        corpus = load(repo, "corpus", split="corpus")
        queries = load(repo, "queries", split="queries")
    except Exception as e:
        raise unreachable(e) from None
    qrels, missing = {}, []
    for s in splits:
        try:
            qrels[s] = load(f"{repo}-qrels", split=s)
        except ValueError as e:  # `datasets` raises ValueError("Unknown split ...") for a split the repo lacks
            if "split" not in str(e).lower():
                raise unreachable(e) from None
            missing.append(s)
        except Exception as e:
            raise unreachable(e) from None
    if not qrels:
        raise ResumeError(f"{repo}-qrels has none of the splits {splits}; pick one with --split")
    ds, notes = _rows_to_dataset(corpus, queries, qrels)
    if missing:
        notes[f"split(s) {missing} not in {repo}-qrels, skipped"] = len(missing)
    return ds, notes


def load_hf_dataset(name: str, out_dir: str | Path, split: str = "test") -> str:
    """Load a dataset through `datasets` and write it in BEIR layout under out_dir; returns out_dir.

    name: a hub BEIR name (`BeIR/scifact`: configs `corpus`/`queries` + the `BeIR/scifact-qrels` repo, whose
    split(s) are written as qrels/<split>.tsv; `split` may list several, comma-separated, and splits the repo
    lacks are skipped with a warning), `msmarco` (= BeIR/msmarco), or a local folder written by
    `DatasetDict.save_to_disk` with `corpus`, `queries` and `qrels` (written as `split`) or `qrels_<split>` parts.
    Judgements naming unknown ids are dropped (BEIR's own loader does the same); the ids and query texts are
    checked before anything is written (`write_beir`). An unreachable hub raises one ResumeError line.
    """
    splits = [s.strip() for s in split.split(",") if s.strip()] or ["test"]
    local = Path(name)
    if local.exists():
        ds, notes = _load_saved(local, splits[0])
    else:
        ds, notes = _load_hub(name, splits)
    for what, count in notes.items():
        log.warning("%s: %d %s", name, count, what)
    if not ds.corpus:
        raise DataError(name, None, "corpus is empty; expected at least one document")
    write_beir(ds, out_dir)
    return str(out_dir)


def resolve_data_path(path: str | Path, splits: Iterable[str] = ("train", "dev", "test")) -> str:
    """A BEIR folder for `data.path`: a folder is returned as is; `hf:<name>` is loaded once with
    `load_hf_dataset` into `$RESUME_DATA_CACHE/<name>` (default `~/.cache/resume/datasets/<name>`, `/` -> `__`)
    and that folder is returned (reused when it already holds a corpus)."""
    path = str(path)
    if not path.startswith("hf:"):
        return path
    name = path[3:].strip()
    if not name:
        raise ResumeError(f"data.path {path!r}: expected hf:<dataset name>, e.g. hf:BeIR/scifact")
    base = Path(os.environ.get("RESUME_DATA_CACHE") or Path.home() / ".cache" / "resume" / "datasets")
    out = base / name.strip("/").replace("/", "__")
    if not (out / CORPUS_FILE).exists():
        load_hf_dataset(name, out, split=",".join(splits))
    return str(out)
