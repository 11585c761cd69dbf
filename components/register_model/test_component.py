"""register-model: the run-dir layout, registration in a local sqlite MLflow, compile."""

from __future__ import annotations

import json
from pathlib import Path

from kfp.dsl import Artifact

from components.conftest import artifact
from components.register_model.component import register_model


def test_registers_the_final_models(tiny, trained, tmp_path):
    cfg, data = tiny
    out = artifact(Artifact, tmp_path / "registered")
    result = json.loads(register_model.python_func(
        config=cfg, data=data, summarizer=trained["summarizer"], retriever=trained["retriever"],
        summaries=trained["summaries"], eval_test=trained["eval_dir"], registered=out,
        grpo_metrics=trained["grpo_metrics"], iteration=2))
    run = Path(out.path)
    for p in ("iter_02/summarizer/config.json", "iter_02/summaries.jsonl", "iter_02/eval_test/metrics.json",
              "results.json", "registered.json", "config.yaml"):
        assert (run / p).exists(), p
    assert not (run / "iter_02" / "summarizer").is_symlink(), "copied: MLflow does not follow links"
    assert result["summarizer"]["name"] == "resume-summarizer" and result["retriever"]["name"] == "resume-retriever"
    assert result["summarizer"]["champion"] and result["test_mrr@10"] == trained["mrr"]
    assert out.metadata["iteration"] == 2
    # results.json goes through resume.run_dir: the typed schema, paths relative to the run dir
    from resume import run_dir as rd

    text = (run / "results.json").read_text()
    assert str(run) not in text and json.loads(text)["iterations"][0]["summaries"] == "./iter_02/summaries.jsonl"
    res = rd.read_results(run)
    assert res["source"] == "kfp" and res["schema_version"] == rd.RESULTS_SCHEMA_VERSION
    assert res["final"]["retriever"] == str(run / "iter_02" / "retriever") and Path(res["final"]["retriever"]).is_dir()
    assert res["systems"]["iterative"]["test"]["mrr@10"] == trained["mrr"]


def test_compiles(tmp_path):
    from kfp import compiler

    out = tmp_path / "c.yaml"
    compiler.Compiler().compile(register_model, str(out))
    assert "registered" in out.read_text()
