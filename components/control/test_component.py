"""resolve-config, start-run and should-continue: config + working set, MLflow parent run, the stopping rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kfp.dsl import Artifact, Dataset, Metrics

from components.conftest import ROOT, artifact
from components.control.component import resolve_config, should_continue, start_run
from resume import kfp_ops
from resume.config import load_config


def test_resolve_config_applies_parameters(tmp_path):
    cfg, data = artifact(Artifact, tmp_path / "c.yaml"), artifact(Dataset, tmp_path / "data")
    resolve_config.python_func(config=cfg, data=data, config_path=str(ROOT / "configs" / "tiny.yaml"),
                               overrides=["loop.eps_metric=0.5"], data_path=str(ROOT / "data" / "cranfield"),
                               grpo_max_steps=3, finetune_learning_rate=2e-5, retriever_model="")
    c = load_config(cfg.path)
    assert c.grpo.max_steps == 3 and c.finetune.learning_rate == 2e-5 and c.loop.eps_metric == 0.5
    assert c.retriever.model == "tiny-encoder", "'' keeps the file's value"
    assert (Path(data.path) / "corpus.jsonl").is_file() and data.metadata["n_docs"] < 1400


def test_resolve_config_is_deterministic(tmp_path):
    """Cached in the pipeline: the same parameters give byte-identical artifacts (and no MLflow run)."""
    outs = []
    for n in (1, 2):
        cfg, data = artifact(Artifact, tmp_path / f"{n}" / "c.yaml"), artifact(Dataset, tmp_path / f"{n}" / "data")
        assert resolve_config.python_func(config=cfg, data=data, config_path=str(ROOT / "configs" / "tiny.yaml"),
                                          data_path=str(ROOT / "data" / "cranfield")) is None
        outs.append({p.relative_to(tmp_path / f"{n}"): p.read_bytes()
                     for p in sorted((tmp_path / f"{n}").rglob("*")) if p.is_file()})
    assert outs[0] == outs[1] and len(outs[0]) >= 4


def test_start_run_opens_an_mlflow_parent_run_the_cached_tasks_find(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg, data = artifact(Artifact, tmp_path / "c.yaml"), artifact(Dataset, tmp_path / "data")
    resolve_config.python_func(config=cfg, data=data, config_path=str(ROOT / "configs" / "tiny.yaml"),
                               data_path=str(ROOT / "data" / "cranfield"))
    run_id, run_name = "8f1c2d3e-run-uuid", "resume-loop-2026-12-04"
    parent = start_run.python_func(config=cfg, run=artifact(Artifact, tmp_path / "a1" / "run"), kfp_run_id=run_id,
                                   kfp_run_name=run_name)
    import mlflow

    client = mlflow.MlflowClient(uri)
    run = client.get_run(parent)
    assert run.info.run_name == run_name and run.data.params["grpo.max_steps"] == "2"
    assert run.data.tags[kfp_ops.RUN_ID_TAG] == run_id
    assert json.loads((tmp_path / "a1" / "run").read_text())["run_id"] == parent
    # a retried start-run reuses the parent run it opened; another KFP run gets its own
    assert start_run.python_func(config=cfg, run=artifact(Artifact, tmp_path / "a2" / "run"), kfp_run_id=run_id,
                                 kfp_run_name=run_name) == parent
    other = start_run.python_func(config=cfg, run=artifact(Artifact, tmp_path / "a3" / "run"), kfp_run_id="other-id",
                                  kfp_run_name="resume-loop-other")
    assert other != parent
    # cached tasks find the parent from their output URI: KFP backend and kfp.local layouts
    backend = artifact(Metrics, tmp_path / "v2" / "artifacts" / "resume-loop" / run_id / "evaluate-3" / "a1b2" / "m")
    local = artifact(Metrics, tmp_path / "kfp" / run_name / "evaluate-3" / "metrics")
    stranger = artifact(Metrics, tmp_path / "kfp" / "resume-loop-unknown" / "evaluate-3" / "metrics")
    assert kfp_ops.parent_run_for(backend, "resume-tiny") == parent == kfp_ops.parent_run_for(local, "resume-tiny")
    assert kfp_ops.parent_run_for(stranger, "resume-tiny") == ""
    with kfp_ops.child_run(parent, "evaluate-test-iter01", "resume-tiny", {"split": "test"}) as ml:
        kfp_ops.log_metrics(ml, {"mrr@10": 0.5}, step=1)
    (child,) = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert child.data.metrics == {"mrr_at_10": 0.5}


def _metrics(tmp_path: Path, name: str, values: dict) -> Metrics:
    m = artifact(Metrics, tmp_path / name)
    kfp_ops.write_metrics(m, values)
    return m


@pytest.mark.parametrize("overrides,cur,prev,expected", [
    ([], 0.30, 0.10, True),                                 # eps null: keep going
    (["loop.eps_metric=0.5"], 0.30, 0.10, False),           # gain 0.2 < 0.5
    (["loop.eps_metric=0.1"], 0.30, 0.10, True),            # gain 0.2 >= 0.1
    (["loop.max_iterations=1"], 0.30, 0.10, False),         # budget spent
])
def test_should_continue(tmp_path, overrides, cur, prev, expected):
    cfg, data = artifact(Artifact, tmp_path / "c.yaml"), artifact(Dataset, tmp_path / "data")
    resolve_config.python_func(config=cfg, data=data, config_path=str(ROOT / "configs" / "tiny.yaml"),
                               overrides=overrides, data_path=str(ROOT / "data" / "cranfield"))
    ok = should_continue.python_func(config=cfg, grpo_metrics=_metrics(tmp_path, "g", {"reward_mean": 1.0}),
                                     eval_metrics=_metrics(tmp_path, "e", {"mrr@10": cur}),
                                     prev_eval_metrics=_metrics(tmp_path, "p", {"mrr@10": prev}), iteration=1)
    assert ok is expected


def test_reward_rule_from_round_two():
    kw = dict(iteration=2, max_iterations=5, metric=None, prev_metric=None, eps_metric=None, eps_reward=0.1)
    assert kfp_ops.continue_decision(reward=1.0, prev_reward=0.95, **kw)[0] is False
    assert kfp_ops.continue_decision(reward=1.0, prev_reward=0.5, **kw)[0] is True
    assert kfp_ops.continue_decision(reward=1.0, prev_reward=None, **kw)[0] is True


def test_written_metrics_roundtrip(tmp_path):
    m = _metrics(tmp_path, "m", {"a": 1, "b": float("nan"), "c": "x", "d": True})
    assert json.loads(Path(m.path).read_text()) == {"a": 1.0} == kfp_ops.read_metrics(m)
