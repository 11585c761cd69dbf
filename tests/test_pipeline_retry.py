"""A retried grpo-train resumes: killed mid-round under kfp.local, its retry continues from TRL's checkpoint.

    .venv/bin/pytest tests/test_pipeline_retry.py -q -m slow     # about 2-4 minutes on 2 cores

resolve-config -> grpo-train (configs/tiny.yaml, 3 GRPO steps, a checkpoint every step), set up by the
pipeline's own `_setup` (its `set_retry` policy, its shared volume), run by `kfp.local` with a shared
dir. A watcher SIGKILLs the grpo-train executor process (what an OOM kill or a lost node does to the pod)
once checkpoint-1 is complete. kfp.local retries the task (the pipeline's retry policy, its backoff);
the retry finds the killed attempt's checkpoints in the task's deterministic work dir and resumes from
them: checkpoint-1 is never written again, and the reward log equals that of an uninterrupted round.
"""

# no `from __future__ import annotations`: KFP reads the pipeline's annotations as types
import json
import threading
import time
from pathlib import Path

import psutil
import pytest
from _pipeline import load_pipeline_module
from kfp import dsl, local

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ["grpo.save_steps=1", "grpo.max_steps=3"]


class KillAfterFirstCheckpoint(threading.Thread):
    """SIGKILL this test's grpo-train executor once checkpoint-1 is complete; then watch checkpoint-1."""

    def __init__(self, shared: Path, timeout: float = 1800):
        super().__init__(daemon=True)
        self.shared, self.timeout = shared, timeout
        self.killed: list[int] = []
        self.work: Path | None = None
        self.rewritten = False
        self.error = ""

    def _executors(self) -> list[psutil.Process]:
        out = []
        for p in psutil.Process().children(recursive=True):  # only processes this test started
            try:
                cmd = " ".join(p.cmdline())
            except psutil.Error:
                continue
            if "kfp.dsl.executor_main" in cmd and "grpo_train" in cmd and p.name().startswith("python"):
                out.append(p)
        return out

    def run(self) -> None:
        deadline = time.time() + self.timeout
        state = None
        while time.time() < deadline and state is None:
            # trainer_state.json is the last file HF's Trainer writes into a checkpoint: complete once it parses
            hits = sorted(self.shared.glob("ray-jobs/*/*/out/checkpoints/checkpoint-1/trainer_state.json"))
            if hits:
                try:
                    json.loads(hits[0].read_text(encoding="utf-8"))
                    state = hits[0]
                except ValueError:
                    pass
            time.sleep(0.05)
        if state is None:
            self.error = "checkpoint-1 never appeared"
            return
        self.work = state.parents[3]
        mtime = state.stat().st_mtime_ns
        for p in self._executors():
            p.kill()
            self.killed.append(p.pid)
        if not self.killed:
            self.error = "no grpo-train executor process to kill"
            return
        # attempt 2 runs until the task succeeds and deletes its work dir: it must never rewrite checkpoint-1
        while time.time() < deadline and self.work.exists():
            try:
                if state.stat().st_mtime_ns != mtime:
                    self.rewritten = True
            except FileNotFoundError:
                pass  # rotated away (save_total_limit) or the finished round's cleanup
            time.sleep(0.1)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The same round, never killed: grpo-train's component function in this process."""
    from kfp.dsl import Artifact, Dataset, Metrics, Model

    from components.conftest import artifact
    from components.control.component import resolve_config
    from components.grpo_train.component import grpo_train

    d = tmp_path_factory.mktemp("uninterrupted")
    cfg, data = artifact(Artifact, d / "config.yaml"), artifact(Dataset, d / "data")
    resolve_config.python_func(config=cfg, data=data, config_path=str(ROOT / "configs" / "tiny.yaml"),
                               overrides=OVERRIDES, data_path=str(ROOT / "data" / "cranfield"))
    model = artifact(Model, d / "model")
    grpo_train.python_func(config=cfg, data=data, model=model, metrics=artifact(Metrics, d / "metrics"))
    return (Path(model.path) / "reward_log.jsonl").read_text(encoding="utf-8")


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_retried_grpo_train_resumes_from_its_checkpoint(tmp_path, uninterrupted, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    rp = load_pipeline_module()
    assert rp.RETRIES["grpo-train"] >= 1

    @dsl.pipeline(name="grpo-retry")
    def grpo_retry(config_path: str, data_path: str, shared_dir: str):
        cfg = rp._setup(rp.resolve_config(config_path=config_path, overrides=OVERRIDES, data_path=data_path),
                        "resolve-config", "resolve-config")
        rp._setup(rp.grpo_train(config=cfg.outputs["config"], data=cfg.outputs["data"], iteration=1,
                                ray_address="", shared_dir=shared_dir),
                  "grpo-train", "grpo-train-iter1", shared=True)

    shared, root = tmp_path / "shared", tmp_path / "kfp"
    killer = KillAfterFirstCheckpoint(shared)
    killer.start()
    local.init(local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    grpo_retry(config_path=str(ROOT / "configs" / "tiny.yaml"), data_path=str(ROOT / "data" / "cranfield"),
               shared_dir=str(shared))
    killer.join(timeout=120)
    out = capsys.readouterr().out
    assert not killer.error, killer.error
    assert killer.killed, "the first attempt was not killed"
    # the retry resumed from the killed attempt's checkpoint, never redoing step 1
    assert "grpo-train: resuming from" in out and "checkpoint-" in out.split("grpo-train: resuming from", 1)[1][:400]
    step = int(out.split("grpo-train: resuming from", 1)[1].split("(step ", 1)[1].split(")", 1)[0])
    assert step >= 1
    assert not killer.rewritten, "checkpoint-1 was written again: the retry started from step 0"
    # ... and ends where an uninterrupted round ends
    (run,) = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("grpo-retry-")]
    (model,) = [p for p in run.glob("grpo-train*/model")]
    got = (model / "reward_log.jsonl").read_text(encoding="utf-8")
    assert [json.loads(x)["step"] for x in got.splitlines()] == [1, 2, 3]
    assert got == uninterrupted
    assert json.loads((model / "trainer_state.json").read_text())["global_step"] == 3
    assert not killer.work.exists() and not any((shared / "ray-jobs").iterdir()), "the finished task's work dir"
