"""Model fingerprints (`model_fingerprint`): a stable 16-hex hash of a model's config, tokenizer files and
weights, with content hashes of big files cached in memory and in `$RESUME_CACHE`."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from resume.models.cache import cache_root
from resume.models.resolve import resolve_model

_FP_FILES = re.compile(
    r"^(config\.json|generation_config\.json|.*\.safetensors|.*\.safetensors\.index\.json|pytorch_model.*\.bin"
    r"|.*\.pt|.*\.pth|.*\.gguf|tokenizer.*\.json|special_tokens_map\.json|added_tokens\.json|vocab\.\w+"
    r"|merges\.txt|.*\.model|chat_template\.jinja|modules\.json|sentence_bert_config\.json)$"
)
_WEIGHTS = re.compile(r"\.(safetensors|bin|pt|pth|gguf)$")
_hash_cache: dict[str, str] = {}
_PERSIST_MIN = 64 << 20  # content hashes of files at least this big are also kept in $RESUME_CACHE


def _persisted_hashes() -> Path:
    return cache_root() / ".sha256-cache.json"


def _file_sha256(path: Path) -> str:
    """sha256 of a file, streamed. HF-cache blobs are named by their sha256 already. Cached by
    (real path, size, mtime), in memory and, for big files, in `$RESUME_CACHE/.sha256-cache.json`."""
    real = path.resolve()
    if real.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", real.name):
        return real.name
    st = real.stat()
    key = f"{real}|{st.st_size}|{st.st_mtime_ns}"
    if key in _hash_cache:
        return _hash_cache[key]
    big = st.st_size >= _PERSIST_MIN
    if big:
        try:
            _hash_cache.update(json.loads(_persisted_hashes().read_text()))
        except (OSError, ValueError):
            pass
        if key in _hash_cache:
            return _hash_cache[key]
    h = hashlib.sha256()
    with open(real, "rb") as f:
        for chunk in iter(lambda: f.read(8 << 20), b""):
            h.update(chunk)
    _hash_cache[key] = h.hexdigest()
    if big:  # best effort: a read-only cache just means hashing again next time
        from resume.io import atomic_write_json

        try:
            try:
                saved = json.loads(_persisted_hashes().read_text())
            except (OSError, ValueError):
                saved = {}
            saved[key] = _hash_cache[key]
            atomic_write_json(_persisted_hashes(), saved)
            _persisted_hashes().chmod(0o644)
        except OSError:
            pass
    return _hash_cache[key]


def model_fingerprint(name_or_path: str) -> str:
    """Stable 16-hex hash of a model: config, tokenizer files and weights (names, sizes, content hashes).

    Identical for identical files on any machine (the path does not enter it). Covers the top-level files
    of the directory and the sentence-transformers module configs one level down (`1_Pooling/config.json`).
    """
    root = Path(resolve_model(name_or_path))
    files = [f for f in root.iterdir() if f.is_file() and _FP_FILES.match(f.name)]
    files += [f for f in root.glob("[0-9]_*/config.json") if f.is_file()]
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.relative_to(root).as_posix()):
        rel = f.relative_to(root).as_posix()
        size = f.stat().st_size
        digest = _file_sha256(f) if _WEIGHTS.search(f.name) or size > (1 << 20) else hashlib.sha256(
            f.read_bytes()).hexdigest()
        h.update(f"{rel}\0{size}\0{digest}\n".encode())
    return h.hexdigest()[:16]
