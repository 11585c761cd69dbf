"""Datasets loaded through Hugging Face `datasets` (a hub BEIR name or a `save_to_disk` folder) and written
in BEIR layout (`load_hf_dataset`, `resume data download`), and `resolve_data_path`, which turns
`data.path = hf:<name>` into a cached BEIR folder."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from resume.data.beir import CORPUS_FILE, QRELS_HEADER, BeirDataset, write_beir
from resume.errors import DataError, ResumeError

log = logging.getLogger(__name__)

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
