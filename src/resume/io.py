"""Small file helpers shared by every stage: atomic writes, JSONL, and output locations checked up front."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from resume.errors import ResumeError


@contextmanager
def atomic_path(path: str | Path, suffix: str = ""):
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows atomically; returns the number written."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _nearest_existing(path: Path) -> Path:
    """`path` or its closest ancestor that exists (a file where a directory should be stops the walk too)."""
    p = path
    while not p.exists() and not p.is_symlink() and p != p.parent:
        p = p.parent
    return p


def check_output(path: str | Path, *, kind: Literal["file", "dir"], what: str = "--out") -> Path:
    """Check, before any work, that `path` can be written as a `kind` (a file, or a directory of outputs):
    an existing file must not be a directory (nor a directory a file), the closest existing ancestor must be
    a directory, and the directory the output goes into must take a new file (a probe file is created and
    removed at once: it catches read-only file systems and permissions, for root too). Creates nothing
    else. Raises ResumeError naming `what`, the path and what is wrong; returns the path."""
    p = Path(path)
    if p.is_dir() and kind == "file":
        raise ResumeError(f"{what} {p}: is a directory; expected a file path")
    if p.exists() and not p.is_dir() and kind == "dir":
        raise ResumeError(f"{what} {p}: is a file; expected a directory (or a path to create one at)")
    where = p if p.is_dir() else _nearest_existing(p.parent)
    if not where.is_dir():
        raise ResumeError(f"{what} {p}: {where} is not a directory, so nothing can be created under it")
    try:
        fd, probe = tempfile.mkstemp(prefix=".resume-write-check-", dir=where)
    except OSError as e:
        raise ResumeError(f"{what} {p}: cannot write in {where} ({e.strerror})") from None
    os.close(fd)
    os.unlink(probe)
    return p
