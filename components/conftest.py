"""Fixtures for the component tests: the tiny config resolved by resolve-config, as KFP artifacts.

    .venv/bin/pytest components -q

Component tests call each component's `.python_func` directly (kubeflow/pipelines-components style),
with artifacts pointing into tmp dirs; no KFP backend, no network, tiny random models.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def artifact(cls, path: Path, metadata: dict | None = None):
    """A KFP artifact of type `cls` whose local path is `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return cls(name=path.name, uri=str(path), metadata=dict(metadata or {}))


@pytest.fixture(autouse=True)
def _no_mlflow(monkeypatch):
    """Components skip MLflow logging when MLFLOW_TRACKING_URI is unset (tests opt in explicitly)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """(config artifact, data artifact) from resolve-config on configs/tiny.yaml."""
    from kfp.dsl import Artifact, Dataset

    from components.control.component import resolve_config

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    d = tmp_path_factory.mktemp("tiny")
    cfg, data = artifact(Artifact, d / "config.yaml"), artifact(Dataset, d / "data")
    resolve_config.python_func(config=cfg, data=data, config_path=str(ROOT / "configs" / "tiny.yaml"),
                               overrides=None, data_path=str(ROOT / "data" / "cranfield"))
    return cfg, data


@pytest.fixture(scope="session")
def trained(tiny, tmp_path_factory):
    """One tiny GRPO round, summaries, fine-tuned retriever and test evaluation (shared by the tests)."""
    from kfp.dsl import Artifact, Dataset, Metrics, Model

    from components.evaluate.component import evaluate
    from components.grpo_train.component import grpo_train
    from components.retriever_finetune.component import retriever_finetune
    from components.summarize_corpus.component import summarize_corpus

    cfg, data = tiny
    d = tmp_path_factory.mktemp("trained")
    out = {"summarizer": artifact(Model, d / "summarizer"), "grpo_metrics": artifact(Metrics, d / "grpo_metrics"),
           "summaries": artifact(Dataset, d / "summaries"), "summ_metrics": artifact(Metrics, d / "summ_metrics"),
           "retriever": artifact(Model, d / "retriever"), "ft_metrics": artifact(Metrics, d / "ft_metrics"),
           "eval_dir": artifact(Artifact, d / "eval"), "eval_metrics": artifact(Metrics, d / "eval_metrics")}
    grpo_train.python_func(config=cfg, data=data, model=out["summarizer"], metrics=out["grpo_metrics"])
    summarize_corpus.python_func(config=cfg, data=data, summaries=out["summaries"], metrics=out["summ_metrics"],
                                 summarizer_in=out["summarizer"])
    retriever_finetune.python_func(config=cfg, data=data, model=out["retriever"], metrics=out["ft_metrics"],
                                   summaries=out["summaries"])
    out["mrr"] = evaluate.python_func(config=cfg, data=data, metrics=out["eval_metrics"], eval_dir=out["eval_dir"],
                                      retriever_in=out["retriever"], summaries=out["summaries"], split="test",
                                      iteration=1)
    return out
