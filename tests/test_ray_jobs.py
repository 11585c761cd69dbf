"""resume.ray_jobs job control on a real local Ray: SIGTERM stops the submitted job, retries find it.

    .venv/bin/pytest tests/test_ray_jobs.py -q     # starts a one-CPU Ray head with its job server on 127.0.0.1

Kubernetes deletes a pod (a terminated KFP run, a preempted node) with SIGTERM. The component process then
waits in `resume.ray_jobs.submit_job`; it must stop the Ray job it submitted (`JobSubmissionClient.stop_job`)
and exit non-zero. A pod killed with SIGKILL (OOM) cannot: the retried task attaches to the job that still
runs instead of submitting a second one, and after a job that ended STOPPED/FAILED it submits `<id>-r1`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from resume import kfp_ops, ray_jobs
from resume.errors import ResumeError

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HEAD = textwrap.dedent("""
    import signal, sys, time
    import ray

    ray.init(num_cpus=1, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port={port},
             log_to_driver=False, _temp_dir={tmp!r})

    def bye(*_):
        ray.shutdown()
        sys.exit(0)

    signal.signal(signal.SIGTERM, bye)
    print("ready", flush=True)
    while True:
        time.sleep(1)
""")


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A local Ray head with the job server (dashboard) on 127.0.0.1; shut down by SIGTERM to its driver."""
    from ray.job_submission import JobSubmissionClient

    port = _free_port()
    tmp = tmp_path_factory.mktemp("ray")
    ray_tmp = f"/tmp/ray-{os.getpid()}"  # Ray's socket paths must stay short
    proc = subprocess.Popen([sys.executable, "-c", HEAD.format(port=port, tmp=ray_tmp)], cwd=tmp,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            # a loopback-only test cluster: no token auth (Ray >= 2.5x enables it by default
                            # and would write ~/.ray/auth_token)
                            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"})
    address = f"http://127.0.0.1:{port}"
    deadline = time.time() + 240
    client = None
    while time.time() < deadline and proc.poll() is None:
        try:
            client = JobSubmissionClient(address)
            client.list_jobs()
            break
        except Exception:  # noqa: BLE001 - the job server is still starting
            client = None
            time.sleep(2)
    if client is None:
        proc.terminate()
        out = proc.communicate(timeout=60)[0]
        shutil.rmtree(ray_tmp, ignore_errors=True)
        pytest.fail(f"Ray head with job server did not come up at {address}:\n{out[-3000:]}")
    yield address, client
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
    shutil.rmtree(ray_tmp, ignore_errors=True)


SUBMITTER = textwrap.dedent("""
    import sys
    from resume import ray_jobs

    address, sid, seconds = sys.argv[1], sys.argv[2], sys.argv[3]
    code = f"import time; print('working', flush=True); time.sleep({seconds})"
    ray_jobs.submit_job(address, [sys.executable, "-c", code], submission_id=sid, poll_s=0.5)
""")


def _submitter(address: str, sid: str, log: Path, seconds: int = 600) -> subprocess.Popen:
    """The project's submit_job in a subprocess, as the KFP component process runs it; output to `log`."""
    with open(log, "w", encoding="utf-8") as f:
        return subprocess.Popen([sys.executable, "-u", "-c", SUBMITTER, address, sid, str(seconds)], cwd=ROOT,
                                stdout=f, stderr=subprocess.STDOUT)


def _wait_for_line(log: Path, text: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in log.read_text(encoding="utf-8"):
            return
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not in {log} within {timeout}s:\n{log.read_text(encoding='utf-8')[-3000:]}")


def _wait_status(client, sid: str, want: set[str], timeout: float = 180) -> str:
    deadline, status = time.time() + timeout, None
    while time.time() < deadline:
        try:
            status = str(client.get_job_status(sid))
        except RuntimeError:
            status = None
        if status in want:
            return status
        time.sleep(0.5)
    raise AssertionError(f"job {sid}: status {status}, expected one of {want} within {timeout}s")


@pytest.mark.timeout(900)
def test_sigterm_stops_the_job_and_retries_find_it(ray_head, tmp_path):
    address, client = ray_head
    sid = f"resume-test-{os.getpid()}"

    # 1. the task's process is killed with SIGKILL (OOM): the job runs on without anyone waiting
    first = _submitter(address, sid, tmp_path / "first.log")
    assert _wait_status(client, sid, {"RUNNING"}) == "RUNNING"
    first.kill()
    first.wait(timeout=60)
    time.sleep(2)
    assert str(client.get_job_status(sid)) == "RUNNING"

    # 2. the retried task attaches to that job (no second submission) ...
    log = tmp_path / "retry.log"
    retry = _submitter(address, sid, log)
    _wait_for_line(log, f"[ray] {sid} is still RUNNING")
    _wait_for_line(log, "working")  # streaming the job's logs: waiting, with the SIGTERM handler installed
    submitted = [j.submission_id for j in client.list_jobs() if j.submission_id]  # (the head's driver has none)
    assert submitted == [sid], "a retry must not submit a second job"

    # 3. ... and is terminated with SIGTERM: it stops the job and exits with 128 + SIGTERM
    retry.send_signal(signal.SIGTERM)
    retry.wait(timeout=120)
    out = log.read_text(encoding="utf-8")
    assert retry.returncode == 128 + signal.SIGTERM, out
    assert f"SIGTERM: stopping Ray job {sid}" in out, out
    assert _wait_status(client, sid, {"STOPPED", "SUCCEEDED", "FAILED"}) == "STOPPED"

    # 4. the next attempt submits <id>-r1, since <id> ended STOPPED
    logs = []
    job = ray_jobs.submit_job(address, [sys.executable, "-c", "print('done')"], submission_id=sid, poll_s=0.5,
                              log=logs.append)
    assert job == f"{sid}-r1" and any(f"{sid} ended STOPPED" in x for x in logs), logs
    assert str(client.get_job_status(job)) == "SUCCEEDED"


# ---------------------------------------------------------------------------------- work directories


class _Artifact:
    def __init__(self, uri: str):
        self.uri = uri


def test_task_work_name_is_deterministic_per_task_and_run():
    backend = "minio://mlpipeline/v2/artifacts/resume-loop/0b5c7a1e-run/grpo-train-2/model"
    name = kfp_ops.task_work_name(_Artifact(backend), 2)
    assert name == kfp_ops.task_work_name(_Artifact(backend), 2)  # every attempt of the task
    assert name.startswith("0b5c7a1e-run/grpo-train-2-iter02-")
    assert kfp_ops.task_work_name(_Artifact(backend.replace("/model", "/metrics")), 2) == name  # any output
    others = {kfp_ops.task_work_name(_Artifact(backend.replace("0b5c7a1e-run", "other-run")), 2),
              kfp_ops.task_work_name(_Artifact(backend.replace("grpo-train-2", "grpo-train-3")), 2),
              kfp_ops.task_work_name(_Artifact(backend), 3)}
    assert name not in others and len(others) == 3
    # KFP >= 2.5 salts the task root (<task>/<salt>/<name>): still one dir per task
    salted = kfp_ops.task_work_name(_Artifact("minio://b/v2/artifacts/p/run/grpo-train-2/9f8e7d/model"), 1)
    assert salted.startswith("grpo-train-2/9f8e7d-iter01-")
    with pytest.raises(ResumeError, match="URI"):
        kfp_ops.task_work_name(_Artifact("model"), 1)


def test_work_dir_stays_under_the_shared_volume(tmp_path):
    assert ray_jobs.work_dir(str(tmp_path), "run/task-iter01-ab") == tmp_path / "ray-jobs" / "run" / "task-iter01-ab"
    for bad in ("", "/etc", "../x", "run/../../x"):
        with pytest.raises(ResumeError, match="work_name"):
            ray_jobs.work_dir(str(tmp_path), bad)


def test_prune_removes_old_work_dirs_only(tmp_path):
    now = time.time()
    old = ray_jobs.work_dir(str(tmp_path), "run-a/grpo-train-iter01-aa")
    new = ray_jobs.work_dir(str(tmp_path), "run-b/grpo-train-iter01-bb")
    for d, age in ((old, 10 * 86400), (new, 3600)):
        (d / "out" / "checkpoints" / "checkpoint-1").mkdir(parents=True)
        f = d / "out" / "checkpoints" / "checkpoint-1" / "model.safetensors"
        f.write_text("x")
        for p in [d, *d.rglob("*")]:
            os.utime(p, (now - age, now - age))
    removed = ray_jobs.prune_work_dirs(str(tmp_path), 7 * 86400, now=now)
    assert removed == [old] and not old.exists() and not old.parent.exists()
    assert (new / "out" / "checkpoints" / "checkpoint-1" / "model.safetensors").is_file()
    assert ray_jobs.main(["prune", "--shared-dir", str(tmp_path), "--older-than-days", "0"]) == 0
    assert not (tmp_path / "ray-jobs" / "run-b").exists()


def test_half_written_checkpoints_are_dropped_before_a_retry_resumes(tmp_path):
    """A kill while the Trainer saves leaves checkpoint-N without a readable trainer_state.json (written last):
    the retry drops it and resumes from the previous complete checkpoint instead of failing on it."""
    from transformers.trainer_utils import get_last_checkpoint

    ckpts = tmp_path / "checkpoints"
    for step, state in ((1, '{"global_step": 1}'), (2, '{"global_step": 2, "log_hist'), (3, None)):
        d = ckpts / f"checkpoint-{step}"
        d.mkdir(parents=True)
        (d / "model.safetensors").write_text("weights")
        if state is not None:
            (d / "trainer_state.json").write_text(state)
    assert get_last_checkpoint(str(ckpts)).endswith("checkpoint-3")
    assert kfp_ops.drop_incomplete_checkpoints(ckpts) == [ckpts / "checkpoint-2", ckpts / "checkpoint-3"]
    assert get_last_checkpoint(str(ckpts)).endswith("checkpoint-1")
    assert kfp_ops.drop_incomplete_checkpoints(tmp_path / "none") == []
