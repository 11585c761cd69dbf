"""grpo-train: in-process round, Ray job submission (fake client), local Ray (slow), compile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kfp.dsl import Metrics, Model

from components.conftest import artifact
from components.grpo_train.component import grpo_train
from resume import kfp_ops, ray_jobs
from resume.cli import build_parser
from resume.errors import ResumeError
from resume.run_dir import mean_reward, read_reward_log


def test_round_writes_model_reward_log_and_metrics(trained):
    m = trained["summarizer"]
    model_dir = Path(kfp_ops.model_path(m.path, m.metadata))
    assert (model_dir / "config.json").is_file()
    rows = read_reward_log(m.path)
    assert rows, "reward_log.jsonl per GRPO step"
    values = json.loads(Path(trained["grpo_metrics"].path).read_text())
    assert values["steps"] == len(rows) and values["reward_mean"] == pytest.approx(mean_reward(rows))
    assert trained["grpo_metrics"].metadata["reward_mean"] == pytest.approx(values["reward_mean"])


class FakeClient:
    """The slice of ray.job_submission.JobSubmissionClient that submit_job uses."""

    def __init__(self, status="SUCCEEDED", on_submit=None):
        self.status, self.on_submit, self.submitted = status, on_submit, []

    def submit_job(self, *, entrypoint, submission_id=None, runtime_env=None, metadata=None):
        self.submitted.append(entrypoint)
        if self.on_submit:
            self.on_submit(entrypoint)
        return submission_id or "raysubmit_1"

    async def tail_job_logs(self, job_id):
        for line in ("step 1 reward -1.0\n", "step 2 reward -0.5\n"):
            yield line

    def get_job_status(self, job_id):
        return self.status

    def get_job_logs(self, job_id):
        return "Traceback ...\nRuntimeError: CUDA out of memory"


def _fake_train(entrypoint: str) -> None:
    """What the Ray job would do: write a model dir + reward log under --out."""
    import shlex

    args = build_parser().parse_args(shlex.split(entrypoint)[1:])
    assert args.command == "grpo-train"
    out = Path(args.out)
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")
    (out / "reward_log.jsonl").write_text('{"step": 1, "reward_mean": 0.5}\n{"step": 2, "reward_mean": 1.0}\n')
    assert Path(args.data, "corpus.jsonl").is_file()
    from resume.config import load_config

    staged = load_config(args.config)
    assert (staged.grpo.launcher, staged.grpo.ray_address, staged.data.path) == ("ray", "auto", args.data)
    assert staged.data.max_train_queries is None, "the stage config: the working set is already selected"


def test_job_submission_streams_logs_and_copies_the_model(tiny, tmp_path, monkeypatch, capsys):
    cfg, data = tiny
    client = FakeClient(on_submit=_fake_train)
    monkeypatch.setattr(ray_jobs, "_default_client", lambda address: client)
    model, metrics = artifact(Model, tmp_path / "model"), artifact(Metrics, tmp_path / "metrics")
    grpo_train.python_func(config=cfg, data=data, model=model, metrics=metrics,
                           ray_address="http://resume-raycluster-head-svc:8265", shared_dir=str(tmp_path / "shared"))
    assert len(client.submitted) == 1 and client.submitted[0].startswith("resume grpo-train ")
    assert "step 2 reward -0.5" in capsys.readouterr().out, "job logs are streamed"
    assert (Path(model.path) / "config.json").is_file()
    assert json.loads(Path(metrics.path).read_text())["reward_mean"] == pytest.approx(0.75)


def test_job_failure_fails_the_component(tiny, tmp_path, monkeypatch):
    cfg, data = tiny
    monkeypatch.setattr(ray_jobs, "_default_client", lambda address: FakeClient(status="FAILED"))
    with pytest.raises(ResumeError, match="ended FAILED.*\n.*\n.*CUDA out of memory"):
        grpo_train.python_func(config=cfg, data=data, model=artifact(Model, tmp_path / "m"),
                               metrics=artifact(Metrics, tmp_path / "x"), ray_address="http://head:8265",
                               shared_dir=str(tmp_path / "shared"))


def test_remote_ray_needs_a_shared_dir(tiny, tmp_path):
    cfg, data = tiny
    with pytest.raises(ResumeError, match="shared_dir"):
        grpo_train.python_func(config=cfg, data=data, model=artifact(Model, tmp_path / "m"),
                               metrics=artifact(Metrics, tmp_path / "x"), ray_address="http://head:8265")


@pytest.mark.slow
def test_local_ray_round(tiny, tmp_path):
    """ray_address='local': Ray in this process, grpo.launcher=ray (Ray Train)."""
    cfg, data = tiny
    model, metrics = artifact(Model, tmp_path / "model"), artifact(Metrics, tmp_path / "metrics")
    grpo_train.python_func(config=cfg, data=data, model=model, metrics=metrics, ray_address="local")
    assert (Path(kfp_ops.model_path(model.path, model.metadata)) / "config.json").is_file()
    assert json.loads(Path(metrics.path).read_text())["steps"] >= 1


def test_compiles(tmp_path):
    from kfp import compiler

    out = tmp_path / "c.yaml"
    compiler.Compiler().compile(grpo_train, str(out))
    text = out.read_text()
    assert "from resume import kfp_ops" in text and "pip install" not in text
