"""evaluate: metrics + run file for summaries and for full documents (baseline), compile."""

from __future__ import annotations

import json
from pathlib import Path

from kfp.dsl import Artifact, Metrics

from components.conftest import artifact
from components.evaluate.component import evaluate

KEYS = {"mrr@10", "ndcg@10", "recall@100", "recall@1000"}


def test_evaluates_summaries(trained):
    values = json.loads(Path(trained["eval_metrics"].path).read_text())
    assert KEYS <= set(values) and values["mrr@10"] == trained["mrr"]
    assert (Path(trained["eval_dir"].path) / "run.trec").is_file()
    assert json.loads((Path(trained["eval_dir"].path) / "metrics.json").read_text())["mrr@10"] == trained["mrr"]


def test_baseline_on_full_documents(tiny, tmp_path):
    cfg, data = tiny
    m, d = artifact(Metrics, tmp_path / "m"), artifact(Artifact, tmp_path / "eval")
    mrr = evaluate.python_func(config=cfg, data=data, metrics=m, eval_dir=d, split="dev", iteration=0)
    assert 0.0 <= mrr <= 1.0 and KEYS <= set(m.metadata)


def test_baseline_of_a_titled_fused_config_indexes_the_documents_alone(tiny, tmp_path):
    """A config whose index is title + summary fused with the document (`evaluate.summary_title`, `mode:
    fused`) evaluates the Baseline's full documents as they are: nothing to fuse, no summary to title."""
    import yaml

    cfg, data = tiny
    conf = yaml.safe_load(Path(cfg.path).read_text())
    conf["evaluate"].update(mode="fused", fusion_weight=0.5, summary_title=True)
    c = artifact(Artifact, tmp_path / "config.yaml")
    Path(c.path).write_text(yaml.safe_dump(conf))
    m, d = artifact(Metrics, tmp_path / "m"), artifact(Artifact, tmp_path / "eval")
    mrr = evaluate.python_func(config=c, data=data, metrics=m, eval_dir=d, split="dev", iteration=0)
    info = json.loads((Path(d.path) / "eval_info.json").read_text())
    assert (info["mode"], info["summary_title"]) == ("summary", False) and 0.0 <= mrr <= 1.0


def test_compiles(tmp_path):
    from kfp import compiler

    out = tmp_path / "c.yaml"
    compiler.Compiler().compile(evaluate, str(out))
    assert "split" in out.read_text()
