"""The BEIR layout on disk: the record types, streaming readers that check every line, `BeirDataset`, and
the atomic writer.

BEIR layout (https://github.com/beir-cellar/beir):

    <dir>/corpus.jsonl        {"_id": str, "title": str, "text": str} per line
    <dir>/queries.jsonl       {"_id": str, "text": str} per line
    <dir>/qrels/<split>.tsv   header `query-id<TAB>corpus-id<TAB>score`, then one integer judgement per line

Every malformed input raises `DataError(path, line, what was expected)`; the CLI prints it as one line
and exits 2. Readers stream line by line (MS MARCO has 8.8M passages): `read_corpus` is a generator and
nothing here is quadratic. Writers stage everything in a temporary folder and move it into place only
when all files are complete, so a failure leaves no half-written dataset. Loading a whole dataset (a
folder or `hf:<name>`) is `resume.data.load.load_beir`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resume.errors import DataError

CORPUS_FILE = "corpus.jsonl"
QUERIES_FILE = "queries.jsonl"
QRELS_DIR = "qrels"
QRELS_HEADER = ("query-id", "corpus-id", "score")


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
