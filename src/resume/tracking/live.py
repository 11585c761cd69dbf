"""The GRPO reward series of a run: logged live while a round trains (`live_grpo`), replayed from the reward
logs afterwards (`replay_reward_log`, `log_run`), with a global step across rounds (`grpo_step_offset`)."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from resume.config import ResumeConfig
from resume.run_dir import read_reward_log
from resume.tracking.runs import _child, _client, _log_metrics, _missing, _run_exists, _save_state, _state

STEP_OFFSET_ENV = "RESUME_GRPO_STEP_OFFSET"  # the global step of a live GRPO round's step 0 (resume.grpo reads it)


def _last_step(rows: list[dict[str, Any]]) -> int:
    return max([int(r.get("step", i + 1)) for i, r in enumerate(rows)] or [0])


def grpo_step_offset(summarizers: list[str]) -> int:
    """The global GRPO step before a round: the last steps of the earlier rounds' reward logs, summed."""
    return sum(_last_step(read_reward_log(s)) for s in summarizers)


def _grpo_series(iterations: list[dict[str, Any]]) -> list[tuple[str, float, int]]:
    """Reward and its parts per GRPO step, with a global step across iterations."""
    items: list[tuple[str, float, int]] = []
    offset = 0
    for it in iterations:
        rows = read_reward_log(it["summarizer"])
        for i, row in enumerate(rows):
            step = offset + int(row.get("step", i + 1))
            for k, v in row.items():
                if k != "step" and isinstance(v, int | float) and not isinstance(v, bool):
                    items.append((f"grpo/{k}", v, step))
        offset += _last_step(rows)
    return items


def replay_reward_log(run_id: str, summarizer: str | Path, *, step_offset: int = 0, uri: str | None = None) -> int:
    """Log a round's reward_log.jsonl to a run as `grpo/<part>` at step_offset + step, skipping the points the
    run has already (logged live by resume.grpo): the fallback for a process that trained without live
    metrics, e.g. a KFP component after a remote Ray job. uri: the tracking URI (None: MLflow's current one).
    Returns the number of points logged."""
    client = MlflowClient(tracking_uri=uri) if uri else MlflowClient()
    items = [(k, v, s + step_offset) for k, v, s in _grpo_series([{"summarizer": str(summarizer)}])]
    new = _missing(client, run_id, items)
    _log_metrics(client, run_id, new)
    return len(new)


@contextmanager
def live_grpo(cfg: ResumeConfig, run_dir: str | Path, name: str, iteration: int, previous: list[str]):
    """Around one GRPO round of `resume run`: create the round's nested run now (`iter_XX` for the main loop,
    `ablation/<name>` for an ablation, as `log_run` names them) and set MLFLOW_TRACKING_URI / MLFLOW_RUN_ID /
    RESUME_GRPO_STEP_OFFSET for the block, so resume.grpo logs each GRPO step to it while training (the
    in-process launcher and Ray workers started here read them). `previous`: the summarizer dirs of the
    earlier rounds (their reward logs give the step offset). Yields the run id, or None when tracking is off
    or fails (a warning: training goes on, `log_run` replays the reward log). An exception in the block marks
    the nested run FAILED."""
    run_dir = Path(run_dir).resolve()
    rid = client = None
    try:
        client, exp_id, uri = _client(cfg, run_dir)
        st = _state(run_dir, uri)
        if _run_exists(client, st.get("parent")):
            key, tags = ((f"iter_{iteration:02d}", {"resume.iteration": str(iteration)}) if name == "main"
                         else (f"ablation/{name}", {"resume.ablation": name}))
            rid = _child(client, exp_id, st, key, st["parent"], tags)
            client.update_run(rid, status="RUNNING")
            _save_state(run_dir, st)
    except Exception as e:  # noqa: BLE001 - tracking must not stop training
        print(f"warning: no live MLflow metrics for GRPO round {iteration}: {type(e).__name__}: {e}", file=sys.stderr)
        rid = None
    if rid is None:
        yield None
        return
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_RUN_ID": rid, STEP_OFFSET_ENV: str(grpo_step_offset(previous))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield rid
    except BaseException:
        client.set_terminated(rid, "FAILED")
        raise
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
