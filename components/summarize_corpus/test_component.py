"""summarize-corpus: in-process summaries, Ray Data on a local Ray (slow), compile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kfp.dsl import Dataset, Metrics

from components.conftest import artifact
from components.summarize_corpus.component import summarize_corpus


def test_writes_summaries_in_corpus_order(trained, tiny):
    rows = [json.loads(x) for x in Path(trained["summaries"].path).read_text().splitlines()]
    corpus = [json.loads(x)["_id"] for x in Path(tiny[1].path, "corpus.jsonl").read_text().splitlines()]
    assert [r["_id"] for r in rows] == corpus
    assert set(rows[0]) == {"_id", "summary", "completion", "n_tokens", "has_separator", "truncated"}
    stats = json.loads(Path(trained["summ_metrics"].path).read_text())
    assert stats["n_docs"] == len(rows)


def test_initial_summarizer_when_no_model_input(tiny, tmp_path):
    """No summarizer_in = the config's summarizer (S_0, the Fixed Summary system)."""
    cfg, data = tiny
    out = artifact(Dataset, tmp_path / "s0")
    summarize_corpus.python_func(config=cfg, data=data, summaries=out, metrics=artifact(Metrics, tmp_path / "m"))
    assert Path(out.path).is_file() and Path(out.path + ".cache.jsonl").is_file()


@pytest.mark.slow
def test_ray_data_path_matches_in_process(tiny, tmp_path, trained):
    """ray_address='local': Ray Data on an in-process Ray writes byte-identical summaries and cache rows."""
    cfg, data = tiny
    ray_out = artifact(Dataset, tmp_path / "ray")
    summarize_corpus.python_func(config=cfg, data=data, summaries=ray_out, metrics=artifact(Metrics, tmp_path / "m"),
                                 summarizer_in=trained["summarizer"], ray_address="local", num_actors=1)
    assert Path(ray_out.path).read_bytes() == Path(trained["summaries"].path).read_bytes()
    a = sorted(Path(ray_out.path + ".cache.jsonl").read_text().splitlines())
    b = sorted(Path(trained["summaries"].path + ".cache.jsonl").read_text().splitlines())
    assert a == b
    stats = json.loads(Path(tmp_path / "m").read_text())
    assert stats["n_generated"] > 0


def test_compiles(tmp_path):
    from kfp import compiler

    out = tmp_path / "c.yaml"
    compiler.Compiler().compile(summarize_corpus, str(out))
    assert "ray_address" in out.read_text()
