"""resolve-config and should-continue: config + working set, MLflow parent run, the stopping rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kfp.dsl import Artifact, Dataset, Metrics

from components.conftest import ROOT, artifact
from components.control.component import resolve_config, should_continue
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


def test_resolve_config_opens_an_mlflow_parent_run(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg, data = artifact(Artifact, tmp_path / "c.yaml"), artifact(Dataset, tmp_path / "data")
    parent = resolve_config.python_func(config=cfg, data=data, config_path=str(ROOT / "configs" / "tiny.yaml"),
                                        data_path=str(ROOT / "data" / "cranfield"), run_name="kfp-run-1")
    import mlflow

    run = mlflow.MlflowClient(uri).get_run(parent)
    assert run.info.run_name == "kfp-run-1" and run.data.params["grpo.max_steps"] == "2"
    with kfp_ops.child_run(parent, "evaluate-test-iter01", "resume-tiny", {"split": "test"}) as ml:
        kfp_ops.log_metrics(ml, {"mrr@10": 0.5}, step=1)
    (child,) = mlflow.MlflowClient(uri).search_runs([run.info.experiment_id],
                                                    f"tags.mlflow.parentRunId = '{parent}'")
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
