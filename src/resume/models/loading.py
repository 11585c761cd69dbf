"""Loaders every stage uses: a tokenizer, a causal LM (padded on the left) or an encoder (BERT without its
pooler), in eval mode on a device in a dtype; `torch_dtype` and `pick_device` pick those two."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resume.errors import ConfigError, ModelError
from resume.models.assets import _quiet_transformers
from resume.models.resolve import _first_line, resolve_model

if TYPE_CHECKING:  # pragma: no cover
    import torch


def cpu_info() -> tuple[str, set[str]]:
    """(model name, flags) of this machine's CPU from /proc/cpuinfo; ("", empty) where it cannot be read."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return "", set()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    flags = next((ln.split(":", 1)[1] for ln in lines if ln.startswith("flags")), "")
    return model, set(flags.split())


def cpu_has_native_bf16() -> bool:
    """Whether the CPU multiplies bf16 in hardware (AMX-BF16 or AVX512-BF16). Without either, torch runs bf16
    through conversions: SmolLM2's batched greedy generation ran at 0.33x its fp32 speed on an AMD Zen 3
    (bench/README.md, "Corpus summarisation")."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_info()[1])


def torch_dtype(dtype: Any, device: Any = "cpu") -> torch.dtype:
    """`auto` -> bf16 on CUDA, fp32 elsewhere; `native` -> bf16 on CUDA and on CPUs with bf16 instructions
    (`cpu_has_native_bf16`), fp32 elsewhere; `float32` / `bfloat16` / `float16` (or a torch.dtype) as named."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    on_gpu = str(device).startswith("cuda")
    if dtype in (None, "auto"):
        return torch.bfloat16 if on_gpu else torch.float32
    if dtype == "native":
        return torch.bfloat16 if on_gpu or cpu_has_native_bf16() else torch.float32
    if dtype not in names:
        raise ConfigError(f"dtype: invalid value {dtype!r}; expected one of 'auto', 'native', 'float32', "
                          "'bfloat16', 'float16'")
    return names[dtype]


def pick_device(pref: str | None = "auto") -> str:
    """`auto` -> `cuda` when a GPU is visible, else `cpu`; `cpu`, `cuda`, `cuda:N` are checked and returned."""
    import torch

    pref = "auto" if pref in (None, "") else str(pref)
    if pref == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if pref == "cpu":
        return pref
    if re.fullmatch(r"cuda(:\d+)?", pref):
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {pref!r} requested but no CUDA GPU is available; use 'cpu' or 'auto'")
        return pref
    raise ConfigError(f"device: invalid value {pref!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")


def _load_error(name: str, path: str, e: BaseException) -> ModelError:
    return ModelError(f"{name}: could not load the model from {path}: {_first_line(e)}")


def _tokenizer_at(name: str, path: str, padding_side: str | None):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _load_error(name, path, e) from None
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    if padding_side:
        tok.padding_side = padding_side
    return tok


def load_tokenizer(name: str, *, padding_side: str | None = None):
    """AutoTokenizer for `name` (anything `resolve_model` takes, or a tokenizer-only directory); a missing
    pad token is set to the eos token; `padding_side` if given."""
    p = Path(str(name)).expanduser()
    if p.is_dir() and not (p / "config.json").is_file() and any(
            (p / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        return _tokenizer_at(str(name), str(p), padding_side)
    return _tokenizer_at(name, resolve_model(name), padding_side)


def load_causal_lm(name: str, *, dtype: Any = "auto", device: str = "cpu"):
    """(model in eval mode on `device`, tokenizer padded on the left with a pad token) for a causal LM."""
    from transformers import AutoModelForCausalLM

    device = pick_device(device)
    path = resolve_model(name)
    tok = _tokenizer_at(name, path, "left")
    try:
        with _quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype, device))
    except (OSError, ValueError, KeyError) as e:
        raise _load_error(name, path, e) from None
    model.to(device).eval()
    gen = model.generation_config
    if gen is not None and gen.pad_token_id is None:
        gen.pad_token_id = tok.pad_token_id
    return model, tok


def load_encoder(name: str, *, dtype: Any = "auto", device: str = "cpu"):
    """(AutoModel in eval mode on `device`, tokenizer). BERT-like models are built without their pooler
    (`add_pooling_layer=False`): the retriever pools token states itself, and DDP's unused-parameter check
    would fail on a pooler that gets no gradient."""
    import inspect

    from transformers import AutoConfig, AutoModel

    device = pick_device(device)
    path = resolve_model(name)
    tok = _tokenizer_at(name, path, None)
    try:
        config = AutoConfig.from_pretrained(path)
        kwargs: dict[str, Any] = {}
        cls = AutoModel._model_mapping.get(type(config), None)
        if cls is not None and "add_pooling_layer" in inspect.signature(cls.__init__).parameters:
            kwargs["add_pooling_layer"] = False
        with _quiet_transformers():  # "weights of the pooler not used" is expected
            model = AutoModel.from_pretrained(path, config=config, dtype=torch_dtype(dtype, device), **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise _load_error(name, path, e) from None
    model.to(device).eval()
    return model, tok
