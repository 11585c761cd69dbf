"""A model name to a local Hugging Face model directory (`resolve_model`): a directory with config.json, a
short name (built once into the cache), or a hub id (local HF cache first, then the hub unless offline)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from resume.errors import ModelError
from resume.models.cache import _cached_build
from resume.models.registry import SHORT_NAMES


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_HUB_IGNORE = ["*.h5", "*.msgpack", "*.onnx", "*.ot", "*.tflite", "*.gguf", "tf_model*", "flax_model*",
               "rust_model*", "onnx/*", "openvino/*", "coreml/*", "*.mlmodel", "original/*"]


def _hub_offline() -> bool:
    try:
        from huggingface_hub.constants import is_offline_mode

        if is_offline_mode():
            return True
    except ImportError:  # pragma: no cover
        pass
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _resolve_hub(name: str) -> str:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    local_hint = (f"point the config at a local copy (a directory with config.json, e.g. downloaded with "
                  f"`hf download {name} --local-dir DIR`) or use a resume short name "
                  f"({', '.join(SHORT_NAMES)})")
    try:
        path = snapshot_download(name, local_files_only=True)
        if Path(path, "config.json").is_file():
            return path
    except Exception:  # noqa: BLE001 - not (fully) in the local cache: fall through to the hub
        pass
    if _hub_offline():
        raise ModelError(f"{name}: not in the local Hugging Face cache and the hub is offline (HF_HUB_OFFLINE=1); "
                         f"{local_hint}")
    try:  # one request (no retry loop), so an unreachable hub fails in seconds
        info = HfApi().model_info(name, timeout=20)
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError) as e:
        raise ModelError(f"{name}: not found on the Hugging Face hub or not accessible ({type(e).__name__}); "
                         f"{local_hint}") from None
    except Exception as e:  # noqa: BLE001 - network errors of every kind
        raise ModelError(f"{name}: the Hugging Face hub could not be reached ({type(e).__name__}: {_first_line(e)}); "
                         f"{local_hint}") from None
    ignore = list(_HUB_IGNORE)
    if any(s.rfilename.endswith(".safetensors") for s in info.siblings or []):
        ignore += ["*.bin", "*.pt", "*.pth"]  # safetensors present: skip the duplicate pickled weights
    try:
        return snapshot_download(name, revision=info.sha, ignore_patterns=ignore)
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"{name}: download from the Hugging Face hub failed ({type(e).__name__}: {_first_line(e)}); "
                         f"{local_hint}") from None


def resolve_model(name: str | os.PathLike) -> str:
    """Return a local HF model directory for `name` (a directory, a short name or a hub id); see module doc."""
    name = str(name).strip()
    if not name:
        raise ModelError("model name is empty; give a directory, a hub id or a short name "
                         f"({', '.join(SHORT_NAMES)})")
    p = Path(name).expanduser()
    if p.is_dir():
        if (p / "config.json").is_file():
            return name if p == Path(name) else str(p)
        if name not in SHORT_NAMES:
            raise ModelError(f"{name}: directory has no config.json (not a Hugging Face model directory)")
    if name in SHORT_NAMES:
        spec = SHORT_NAMES[name]
        return str(spec.path() if spec.path else _cached_build(name, spec))
    if p.exists():
        raise ModelError(f"{name}: not a model directory (expected a directory with config.json)")
    if _HUB_ID.match(name) and not name.startswith((".", "/", "~")):
        return _resolve_hub(name)
    raise ModelError(f"{name}: no such directory, not a short name ({', '.join(SHORT_NAMES)}) and not a hub id "
                     "(owner/name)")
