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
    """The slice of ray.job_submission.JobSubmissionClient that submit_job uses (unknown ids raise, as in Ray)."""

    def __init__(self, status="SUCCEEDED", on_submit=None, jobs=None):
        self.status, self.on_submit, self.submitted = status, on_submit, []
        self.jobs = dict(jobs or {})  # submission id -> status (jobs of earlier attempts)
        self.ids, self.stopped = [], []

    def submit_job(self, *, entrypoint, submission_id=None, runtime_env=None, metadata=None):
        sid = submission_id or "raysubmit_1"
        if sid in self.jobs:
            raise RuntimeError(f"Job with submission_id {sid} already exists")
        self.submitted.append(entrypoint)
        self.ids.append(sid)
        if self.on_submit:
            self.on_submit(entrypoint)
        self.jobs[sid] = self.status
        return sid

    async def tail_job_logs(self, job_id):
        for line in ("step 1 reward -1.0\n", "step 2 reward -0.5\n"):
            yield line

    def get_job_status(self, job_id):
        if job_id not in self.jobs:
            raise RuntimeError(f"Job {job_id} does not exist")
        if self.jobs[job_id] == "RUNNING":  # an earlier attempt's job that finishes while we wait
            self.jobs[job_id] = "SUCCEEDED"
            return "RUNNING"
        return self.jobs[job_id]

    def get_job_logs(self, job_id):
        return "Traceback ...\nRuntimeError: CUDA out of memory"

    def stop_job(self, job_id):
        self.stopped.append(job_id)
        return True


def _fake_train(entrypoint: str) -> None:
    """What the Ray job would do: write a model dir + reward log under --out."""
    import shlex

    args = build_parser().parse_args(shlex.split(entrypoint)[1:])
    assert args.command == "grpo-train"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # a retried job writes where the earlier one left checkpoints
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


def _remote(tiny, tmp_path, client, monkeypatch, run="run-1"):
    cfg, data = tiny
    monkeypatch.setattr(ray_jobs, "_default_client", lambda address: client)
    task = tmp_path / "kfp" / run / "grpo-train-2"
    model, metrics = artifact(Model, task / "model"), artifact(Metrics, task / "metrics")
    grpo_train.python_func(config=cfg, data=data, model=model, metrics=metrics, iteration=2,
                           ray_address="http://head:8265", shared_dir=str(tmp_path / "shared"))
    return model


def test_submission_id_and_work_dir_are_deterministic_per_task(tiny, tmp_path, monkeypatch):
    """Same task, same run: the same work dir and submission id in every attempt; another run: others.
    The work dir is deleted once the model is in the output artifact."""
    seen = []

    def record(entrypoint):
        import shlex

        seen.append(Path(shlex.split(entrypoint)[shlex.split(entrypoint).index("--out") + 1]).parent)
        _fake_train(entrypoint)

    ids = []
    for attempt, run in ((1, "run-1"), (2, "run-1"), (3, "run-2")):
        client = FakeClient(on_submit=record)
        _remote(tiny, tmp_path / f"a{attempt}" if run == "run-2" else tmp_path, client, monkeypatch, run)
        ids += client.ids
        assert not seen[-1].exists(), "the work dir of a finished task is deleted"
    assert ids[0] == ids[1] != ids[2] and seen[0] == seen[1] != seen[2]
    name = kfp_ops.task_work_name(artifact(Model, tmp_path / "kfp" / "run-1" / "grpo-train-2" / "model"), 2)
    assert seen[0] == tmp_path / "shared" / "ray-jobs" / name and name.startswith("run-1/grpo-train-2-iter02-")
    assert ids[0] == "resume-" + name.replace("/", "-")
    assert not (tmp_path / "shared" / "ray-jobs" / "run-1").exists(), "the run's empty dir goes too"


def test_retry_attaches_to_the_running_job_of_the_killed_attempt(tiny, tmp_path, monkeypatch):
    name = kfp_ops.task_work_name(artifact(Model, tmp_path / "kfp" / "run-1" / "grpo-train-2" / "model"), 2)
    sid = "resume-" + name.replace("/", "-")
    client = FakeClient(jobs={sid: "RUNNING"})

    def earlier_attempt_output():  # what the still-running job of the killed attempt writes
        out = tmp_path / "shared" / "ray-jobs" / name / "out"
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        (out / "reward_log.jsonl").write_text('{"step": 1, "reward_mean": 0.25}\n')

    earlier_attempt_output()
    writing = tmp_path / "shared" / "ray-jobs" / name / "out" / "checkpoints" / "checkpoint-2"
    writing.mkdir(parents=True)  # the running job is saving it: attaching must leave it alone
    seen = []
    monkeypatch.setattr(ray_jobs, "wait_for_job", lambda c, j, **kw: (seen.append(writing.is_dir()), "SUCCEEDED")[1])
    model = _remote(tiny, tmp_path, client, monkeypatch)
    assert client.submitted == [], "not submitted twice"
    assert seen == [True]
    assert read_reward_log(model.path) == [{"step": 1, "reward_mean": 0.25}]


def test_retry_resubmits_after_the_earlier_job_failed(tiny, tmp_path, monkeypatch):
    name = kfp_ops.task_work_name(artifact(Model, tmp_path / "kfp" / "run-1" / "grpo-train-2" / "model"), 2)
    sid = "resume-" + name.replace("/", "-")
    half = tmp_path / "shared" / "ray-jobs" / name / "out" / "checkpoints" / "checkpoint-3"
    half.mkdir(parents=True)  # the stopped job was killed while saving it (no trainer_state.json yet)
    client = FakeClient(on_submit=lambda e: (seen.append(half.exists()), _fake_train(e)),
                        jobs={sid: "FAILED", f"{sid}-r1": "STOPPED"})
    seen = []
    _remote(tiny, tmp_path, client, monkeypatch)
    assert client.ids == [f"{sid}-r2"]
    assert seen == [False], "the new job must not resume from a half-written checkpoint"


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
    import yaml

    (ex,) = yaml.safe_load(out.read_text())["deploymentSpec"]["executors"].values()
    text = "\n".join(ex["container"]["command"] + ex["container"]["args"])  # parsed: YAML may fold long lines
    assert "from resume import kfp_ops" in text and "pip install" not in text
