"""The model cache (`$RESUME_CACHE`, default `~/.cache/resume/models`): a short name is built into a temp
dir and renamed into place under a file lock, with a marker naming the recipe that built it."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from resume.models.assets import _quiet_transformers

if TYPE_CHECKING:  # pragma: no cover
    from resume.models.registry import ShortName

MARKER = ".resume-model.json"  # written last into a built cache dir; names the recipe that built it


def cache_root() -> Path:
    """`$RESUME_CACHE`, else `~/.cache/resume/models`."""
    return Path(os.environ.get("RESUME_CACHE") or Path.home() / ".cache" / "resume" / "models").expanduser()


def _is_complete(d: Path, name: str, recipe: int) -> bool:
    try:
        marker = json.loads((d / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("name") == name and marker.get("recipe") == recipe and (d / "config.json").is_file()


def _make_readable(d: Path) -> None:
    """mkdtemp/mkstemp create private (0700/0600) entries; a shared cache should be readable by all."""
    for p in [d, *d.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def _cached_build(name: str, spec: ShortName) -> Path:
    target = cache_root() / name
    if _is_complete(target, name, spec.recipe):
        return target
    from filelock import FileLock

    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{name}.lock")):
        if _is_complete(target, name, spec.recipe):  # another process built it while we waited
            return target
        for stale in root.glob(f".{name}.tmp-*"):  # left by a crashed build (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
        try:
            print(f"resume.models: building {name} into {target} (once)", file=sys.stderr)
            with _quiet_transformers():
                spec.build(tmp)
            (tmp / MARKER).write_text(json.dumps({"name": name, "recipe": spec.recipe}) + "\n")
            _make_readable(tmp)
            if target.exists():  # an outdated or incomplete copy: move it aside, then swap
                old = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-old-", dir=root))
                os.replace(target, old / name)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target
