"""retriever-finetune: encoder dir + train log, nproc from the task, compile."""

from __future__ import annotations

import json
from pathlib import Path

from kfp.dsl import Metrics, Model

from components.conftest import artifact
from components.retriever_finetune.component import retriever_finetune
from resume import kfp_ops


def test_finetune_writes_an_encoder(trained):
    m = trained["retriever"]
    model_dir = Path(kfp_ops.model_path(m.path, m.metadata))
    assert (model_dir / "config.json").is_file()
    values = json.loads(Path(trained["ft_metrics"].path).read_text())
    assert values["steps"] >= 1 and "final_loss" in values


def test_full_documents_when_no_summaries(tiny, tmp_path, monkeypatch):
    """summaries absent = full documents (the full-document control); nproc sets finetune.nproc."""
    import resume.retriever

    seen = {}

    def fake(cfg, *, data_dir, split, init_model, texts, out_dir):
        seen.update(nproc=cfg.finetune.nproc, texts=texts, split=split, init=init_model, data=data_dir)
        Path(out_dir, "model").mkdir(parents=True)
        Path(out_dir, "model", "config.json").write_text("{}")
        return str(Path(out_dir, "model"))

    monkeypatch.setattr(resume.retriever, "finetune_retriever", fake)
    cfg, data = tiny
    model = artifact(Model, tmp_path / "g")
    retriever_finetune.python_func(config=cfg, data=data, model=model, metrics=artifact(Metrics, tmp_path / "m"),
                                   nproc=4)
    assert seen == {"nproc": 4, "texts": None, "split": "train", "init": "tiny-encoder", "data": data.path}
    assert model.metadata["model_dir"] == "model"
    assert kfp_ops.model_path(model.path, model.metadata) == str(Path(model.path, "model").resolve())


def test_compiles(tmp_path):
    from kfp import compiler

    out = tmp_path / "c.yaml"
    compiler.Compiler().compile(retriever_finetune, str(out))
    assert "nproc" in out.read_text()
