"""Tests of resume.summarizer: prompts, separator parsing, batched generation, cache and crash safety.

    .venv/bin/pytest tests/test_summarizer.py -q
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resume.config import load_config
from resume.errors import ResumeError
from resume.summarizer import (
    BatchSummarizer,
    append_cache,
    build_prompt,
    detect_thinking,
    generate_batch,
    generate_prompts,
    index_text,
    is_thinking,
    parse_completion,
    plan_batches,
    read_cache,
    reasoning_prefix,
    strip_tags,
    summarize_corpus,
    truncate_document,
)

ROOT = Path(__file__).resolve().parents[1]
DOC = "Aerodynamic heating of a flat plate at hypersonic speeds. The boundary layer {x} transition is studied."


@pytest.fixture(scope="module")
def cfg():
    return load_config(ROOT / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def plain():
    from resume.models import load_causal_lm

    return load_causal_lm("tiny-causal-lm")


@pytest.fixture(scope="module")
def thinking():
    from resume.models import load_causal_lm

    return load_causal_lm("tiny-thinking-lm")


# ------------------------------------------------------------------------------------------- prompts


def test_prompt_non_thinking_template(plain, cfg):
    _, tok = plain
    assert not detect_thinking(tok) and not is_thinking(tok, cfg)
    p = build_prompt(tok, DOC, cfg)
    assert p.endswith("<|im_start|>assistant\n<think>\n")  # prefill_think: same shape as a thinking model
    assert DOC in p  # the document's braces are left alone
    assert "end your thinking with </think>, then write the summary" in p  # reasoning, the closing tag, the summary
    assert f"{round(cfg.reward.min_tokens * 0.75)} to {round(cfg.reward.max_tokens * 0.75)} words" in p
    assert "[" not in p.replace(DOC, "")  # no bracketed placeholder for a small model to copy
    c = load_config(ROOT / "configs" / "tiny.yaml", ["summarizer.prefill_think=false"])
    assert build_prompt(tok, DOC, c).endswith("<|im_start|>assistant\n")  # the model opens the tag itself


def test_prompt_thinking_template(thinking, cfg):
    _, tok = thinking
    assert detect_thinking(tok) and is_thinking(tok, cfg)
    p = build_prompt(tok, DOC, cfg)
    assert p.endswith("<|im_start|>assistant\n<think>\n")  # the model only has to close the tag
    assert not p.endswith("<think>\n<think>\n")  # the template's own prefill is not doubled
    c = load_config(ROOT / "configs" / "tiny.yaml", ["summarizer.prefill_think=false"])
    assert build_prompt(tok, DOC, c) == p


def test_thinking_override_and_custom_separator(plain, cfg):
    _, tok = plain
    c = load_config(ROOT / "configs" / "tiny.yaml", ["summarizer.thinking=true", "summarizer.separator='SUMMARY:'"])
    assert is_thinking(tok, c)
    assert "end your thinking with SUMMARY:, then" in build_prompt(tok, DOC, c)


def test_skip_reasoning_prefills_an_empty_block(plain, thinking):
    """`reasoning: skip`: the generation prompt ends with a closed, empty reasoning block (both kinds of
    template), so the completion is all summary and parsing prefix + completion finds the separator."""
    c = load_config(ROOT / "configs" / "tiny.yaml", ["summarizer.reasoning=skip"])
    for _, tok in (plain, thinking):
        p = build_prompt(tok, DOC, c)
        assert p.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n"), p[-60:]
        assert p.count("<think>") == 1 and "Summarize the text above" in p
        assert p.index(DOC) < p.index("Summarize the text above")  # the document first, then the instruction
    assert reasoning_prefix(c) == "</think>"
    assert index_text("  A flat plate at Mach 6. ", DOC, tok, c) == ("A flat plate at Mach 6.", True)
    assert index_text("thought</think> B", DOC, tok, c) == ("B", True)  # still the text after the LAST tag
    assert reasoning_prefix(load_config(ROOT / "configs" / "tiny.yaml")) == ""
    # prefill_think false: no reasoning tags at all for a plain template, the separator opens the answer
    c2 = load_config(ROOT / "configs" / "tiny.yaml", ["summarizer.reasoning=skip", "summarizer.prefill_think=false",
                                                     "summarizer.separator='Summary:'"])
    p = build_prompt(plain[1], DOC, c2)
    assert p.endswith("<|im_start|>assistant\nSummary:\n\n") and "<think>" not in p, p[-60:]
    assert index_text(" A flat plate.", DOC, plain[1], c2) == ("A flat plate.", True)


def test_document_truncated_to_max_doc_tokens(plain, cfg):
    _, tok = plain
    long_doc = " ".join(f"word{i}" for i in range(400))
    cut = truncate_document(tok, long_doc, cfg.summarizer.max_doc_tokens)
    assert len(tok(cut, add_special_tokens=False)["input_ids"]) <= cfg.summarizer.max_doc_tokens
    assert long_doc.startswith(cut[:20]) and cut in build_prompt(tok, long_doc, cfg)
    assert truncate_document(tok, "short", 48) == "short"


# ------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text,expected", [
    ("the terms a searcher uses</think> Flat plate heating at Mach 6.", "Flat plate heating at Mach 6."),  # prefilled
    ("<think>\nterms\n</think>\n\nFlat plate heating.", "Flat plate heating."),  # non-thinking model
    ("a</think>b</think> last one ", "last one"),  # the LAST separator counts
    ("</think>", ""),
    ("no separator at all", None),
    ("", None),
])
def test_parse_completion_shapes(text, expected):
    assert parse_completion(text, "</think>") == expected


def test_parse_custom_separator():
    assert parse_completion("why SUMMARY: what", "SUMMARY:") == "what"
    assert parse_completion("why </think> what", "SUMMARY:") is None


def test_fallbacks(plain, cfg):
    _, tok = plain
    assert index_text("x</think> s ", DOC, tok, cfg) == ("s", True)
    assert strip_tags("<think> a b </think> c") == "a b c"
    assert index_text("<think> rambling without end", DOC, tok, cfg) == ("rambling without end", False)
    c = load_config(ROOT / "configs" / "tiny.yaml", ["summarizer.fallback=document"])
    text, ok = index_text("rambling", DOC, tok, c)
    assert not ok and text == truncate_document(tok, DOC, c.summarizer.max_doc_tokens)
    assert index_text("\n\n", DOC, tok, cfg)[0] == truncate_document(tok, DOC, cfg.summarizer.max_doc_tokens)


# ---------------------------------------------------------------------------------------- generation


def test_separator_survives_decoding(thinking):
    from resume.summarizer import _decode

    _, tok = thinking
    ids = tok("reason </think> summary", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert tok.convert_tokens_to_ids("</think>") in ids
    text = _decode(tok, ids, "</think>")
    assert "</think>" in text and "<|im_end|>" not in text
    assert parse_completion(text) == "summary"


@pytest.mark.parametrize("which", ["plain", "thinking"])
def test_generate_batch_matches_one_by_one(which, request, cfg):
    model, tok = request.getfixturevalue(which)
    docs = [DOC, "short", DOC + " " + DOC]
    batched = generate_batch(model, tok, docs, cfg, max_new_tokens=8)
    single = [generate_batch(model, tok, [d], cfg, max_new_tokens=8)[0] for d in docs]
    assert len(batched) == 3 and all(isinstance(t, str) for t in batched)
    assert batched == single  # greedy + left padding: batching does not change the tiny model's output


def test_generate_prompts_counts_stop_at_eos(plain):
    model, tok = plain
    texts, counts = generate_prompts(model, tok, ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"], 5)
    assert len(texts) == 1 and 1 <= counts[0] <= 5
    assert generate_prompts(model, tok, [], 5) == ([], [])
    texts, counts, finished = generate_prompts(model, tok, ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"],
                                               5, return_finished=True)
    assert finished[0] == (counts[0] < 5 or texts[0] == "")  # cut at the budget = not finished
    assert generate_prompts(model, tok, [], 5, return_finished=True) == ([], [], [])


def test_generated_no_repeat_ngram_bans_only_the_completions_own_ngrams():
    import torch

    from resume.summarizer import GeneratedNoRepeatNGram

    # prompt [5, 6, 7] (3 tokens), then generated [1, 2, 3, 1, 2]: the 3-gram (1, 2, 3) would repeat
    ids = torch.tensor([[5, 6, 7, 1, 2, 3, 1, 2], [5, 6, 7, 5, 6, 1, 5, 6]])
    scores = torch.zeros(2, 10)
    out = GeneratedNoRepeatNGram(3, prompt_len=3)(ids, scores.clone())
    assert out[0, 3] == -float("inf") and torch.isfinite(out[0, [0, 1, 2, 4, 5, 6, 7, 8, 9]]).all()
    # row 2 generated [5, 6, 1, 5, 6]: (5, 6) was followed by 1 in the completion -> 1 banned; in the PROMPT
    # (5, 6) is followed by 7, which stays allowed (transformers' no_repeat_ngram_size would ban it)
    assert out[1, 1] == -float("inf") and torch.isfinite(out[1, 7])
    assert torch.equal(GeneratedNoRepeatNGram(3, prompt_len=7)(ids, scores.clone()), scores)  # too short to repeat


def test_no_repeat_ngram_enters_the_cache_key_only_when_set(cfg):
    from resume.summarizer import generation_settings

    assert "no_repeat_ngram_size" not in generation_settings(cfg, "torch.float32")  # old caches keep their keys
    c = load_config(ROOT / "configs" / "tiny.yaml", ["summarizer.no_repeat_ngram_size=3"])
    assert generation_settings(c, "torch.float32")["no_repeat_ngram_size"] == 3


def test_batch_summarizer_for_ray_data(cfg):
    fn = BatchSummarizer("tiny-causal-lm", cfg, device="cpu")
    out = fn({"_id": ["a", "b"], "text": [DOC, "short"]})
    assert list(out["_id"]) == ["a", "b"] and len(out["completion"]) == 2


def test_plan_batches_sorted_and_complete():
    lengths = [5, 50, 7, 50, 1]
    batches = plan_batches(lengths, 2)
    assert batches == [[1, 3], [2, 0], [4]]
    assert sorted(i for b in batches for i in b) == list(range(5))


# ----------------------------------------------------------------------------------- corpus + cache


def _first_ids(cranfield_dir, n):
    from resume.data import read_corpus

    return [d["_id"] for d, _ in zip(read_corpus(cranfield_dir / "corpus.jsonl"), range(n))]


def test_summarize_corpus_rows_order_and_cache(tmp_path, cfg, cranfield_dir):
    ids = _first_ids(cranfield_dir, 7)
    out = tmp_path / "summaries.jsonl"
    stats = summarize_corpus(cfg, data_dir=cranfield_dir, model="tiny-causal-lm", retriever="tiny-encoder",
                             out_path=out, doc_ids=list(reversed(ids)), progress=False)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["_id"] for r in rows] == ids  # corpus order whatever order doc_ids came in
    assert all(set(r) == {"_id", "summary", "completion", "n_tokens", "has_separator", "truncated"} for r in rows)
    assert stats["truncated_share"] == sum(r["truncated"] for r in rows) / 7
    assert stats["n_docs"] == 7 and stats["n_generated"] + stats["n_cached"] <= 7
    assert 0.0 <= stats["missing_separator_share"] <= 1.0
    assert stats["missing_separator_share"] == sum(not r["has_separator"] for r in rows) / 7
    assert {"docs_per_s", "tokens_per_s", "time_s"} <= set(stats)
    first = out.read_bytes()
    again = summarize_corpus(cfg, data_dir=cranfield_dir, model="tiny-causal-lm", retriever="tiny-encoder",
                             out_path=out, doc_ids=ids, progress=False)
    assert again["n_generated"] == 0 and out.read_bytes() == first
    with pytest.raises(ResumeError, match="not in the corpus"):
        summarize_corpus(cfg, data_dir=cranfield_dir, model="tiny-causal-lm", retriever="tiny-encoder",
                         out_path=tmp_path / "x.jsonl", doc_ids=["no-such-doc"], progress=False)


def test_batches_are_planned_over_the_uncached_documents_only(tmp_path, cfg, cranfield_dir, monkeypatch):
    """A cache filled by another working set (the first 4 documents) saves their work: the 6 others are
    generated in 2 batches of 3, none of the cached 4 rides along in a batch."""
    import resume.summarizer as summ

    c = load_config(ROOT / "configs" / "tiny.yaml", ["summarizer.batch_size=3"])
    ids = _first_ids(cranfield_dir, 10)
    out = tmp_path / "summaries.jsonl"
    summarize_corpus(c, data_dir=cranfield_dir, model="tiny-causal-lm", retriever="tiny-encoder", out_path=out,
                     doc_ids=ids[:4], progress=False)
    cached = {r["_id"] for r in read_cache(Path(str(out) + ".cache.jsonl"))[0].values()}
    assert cached == set(ids[:4])
    batches: list[int] = []
    real = summ.generate_prompts

    def spy(model, tok, prompts, *a, **k):
        batches.append(len(prompts))
        return real(model, tok, prompts, *a, **k)

    monkeypatch.setattr(summ, "generate_prompts", spy)
    stats = summarize_corpus(c, data_dir=cranfield_dir, model="tiny-causal-lm", retriever="tiny-encoder",
                             out_path=out, doc_ids=ids, progress=False)
    assert batches == [3, 3]
    assert stats["n_cached"] == 4 and stats["n_generated"] == 6
    assert [json.loads(x)["_id"] for x in out.read_text().splitlines()] == ids


def test_cache_torn_last_line_is_cut(tmp_path):
    p = tmp_path / "c.jsonl"
    append_cache(p, [{"key": "a", "_id": "1", "completion": "x"}, {"key": "b", "_id": "2", "completion": "y"}])
    with open(p, "ab") as f:
        f.write(b'{"key": "c", "_id": "3", "compl')  # killed mid-write
    entries, bad = read_cache(p)
    assert set(entries) == {"a", "b"} and bad == 1
    assert p.read_bytes().endswith(b"\n")  # truncated to the last full line, ready for appends
    append_cache(p, [{"key": "c", "_id": "3", "completion": "z"}])
    entries, bad = read_cache(p)
    assert set(entries) == {"a", "b", "c"} and bad == 0


def test_vllm_backend_missing_is_a_clear_error(tmp_path, cfg, cranfield_dir, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_vllm(name, *a, **k):
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("no vllm")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    c = load_config(ROOT / "configs" / "tiny.yaml", ["summarizer.backend=vllm"])
    with pytest.raises(ResumeError, match="vllm is not installed"):
        summarize_corpus(c, data_dir=cranfield_dir, model="tiny-causal-lm", retriever="tiny-encoder",
                         out_path=tmp_path / "s.jsonl", doc_ids=_first_ids(cranfield_dir, 2), progress=False)


# A small working set (34 documents) generated one at a time: slow enough for the kill to land mid-run.
CRASH_SETTINGS = ["summarizer.batch_size=1", "summarizer.max_new_tokens=16", "data.max_train_queries=2",
                  "data.max_eval_queries=1", "data.distractors=10"]


def _cli(out: Path) -> list[str]:
    sets = [a for kv in CRASH_SETTINGS for a in ("--set", kv)]
    return [sys.executable, "-m", "resume.cli", "summarize", "--config", str(ROOT / "configs" / "tiny.yaml"),
            *sets, "--out", str(out)]


def _lines(p: Path) -> int:
    return p.read_bytes().count(b"\n") if p.exists() else 0


def test_sigkill_mid_run_then_resume_is_byte_identical(tmp_path, cfg, cranfield_dir):
    """Kill `resume summarize` with SIGKILL once the cache holds some documents; the rerun must
    produce exactly the bytes of an uninterrupted run, each document once."""
    ref = tmp_path / "ref" / "summaries.jsonl"
    c = load_config(ROOT / "configs" / "tiny.yaml", CRASH_SETTINGS)
    summarize_corpus(c, data_dir=cranfield_dir, model=c.summarizer.model, retriever=c.retriever.model,
                     out_path=ref, progress=False)
    n_docs = _lines(ref)
    n_unique = len(read_cache(Path(str(ref) + ".cache.jsonl"))[0])

    out = tmp_path / "run" / "summaries.jsonl"
    cache = Path(str(out) + ".cache.jsonl")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_cli(out), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while _lines(cache) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _lines(cache)
    assert 3 <= done < n_unique, f"kill did not land mid-run ({done} of {n_unique} cached)"
    assert not out.exists()  # the final file only appears at the end
    with open(cache, "ab") as f:  # and a torn line, as if the kill had hit mid-write
        f.write(b'{"key": "deadbeef", "_id": "1", "comp')

    r = subprocess.run(_cli(out), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    stats = json.loads(r.stdout)
    assert stats["n_cached"] == done and stats["n_generated"] == n_unique - done
    assert stats["bad_cache_lines"] == 1
    assert out.read_bytes() == ref.read_bytes()
    ids = [json.loads(x)["_id"] for x in out.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == n_docs
    keys = [json.loads(x)["key"] for x in cache.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == n_unique  # no document generated twice
