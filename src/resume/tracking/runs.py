"""The MLflow runs of a run directory: tracking and registry URIs, the experiment, the state file
<run_dir>/tracking.json, nested runs, batched metric writes, and the parent run (`start_parent`,
`parent_run`)."""

from __future__ import annotations

import json
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from resume.config import ResumeConfig, flatten
from resume.io import atomic_write_json

STATE = "tracking.json"
# MLflow 3's experiment kind: the UI opens an experiment tagged so in its model-training view (the value set of
# the `mlflow.experimentKind` tag in MLflow 3.17's UI: genai_development, custom_model_development, ...)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def tracking_uri(cfg: ResumeConfig, run_dir: str | Path) -> str:
    if cfg.tracking.tracking_uri:
        return cfg.tracking.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


def registry_uri(uri: str) -> str:
    return os.environ.get("MLFLOW_REGISTRY_URI") or uri


@contextmanager
def _fluent(uri: str):
    """Point MLflow's fluent API (start_run, log_model) at `uri` for a block, then restore the process's
    settings: mlflow.set_tracking_uri also writes MLFLOW_TRACKING_URI into os.environ, which would leak into
    the next run dir tracked by this process."""
    import mlflow.tracking._model_registry.utils as reg_utils
    import mlflow.tracking._tracking_service.utils as trk_utils

    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    env = {k: os.environ.get(k) for k in keys}
    saved = (trk_utils._tracking_uri, reg_utils._registry_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(registry_uri(uri))
    try:
        yield
    finally:
        trk_utils._tracking_uri, reg_utils._registry_uri = saved
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def metric_name(name: str) -> str:
    return name.replace("@", "_at_")


def _state(run_dir: Path, uri: str) -> dict[str, Any]:
    p = run_dir / STATE
    if p.exists():
        st = json.loads(p.read_text(encoding="utf-8"))
        if st.get("tracking_uri") == uri:
            return st
    return {"tracking_uri": uri, "runs": {}}


def _save_state(run_dir: Path, st: dict[str, Any]) -> None:
    atomic_write_json(run_dir / STATE, st)


def _client(cfg: ResumeConfig, run_dir: Path) -> tuple[MlflowClient, str, str]:
    uri = tracking_uri(cfg, run_dir)
    client = MlflowClient(tracking_uri=uri, registry_uri=registry_uri(uri))
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    if exp is None:
        loc = (run_dir / "mlartifacts").resolve().as_uri() if uri == f"sqlite:///{run_dir / 'mlflow.db'}" else None
        try:
            exp_id = client.create_experiment(cfg.tracking.experiment, artifact_location=loc,
                                              tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except mlflow.exceptions.MlflowException:  # created concurrently
            exp_id = client.get_experiment_by_name(cfg.tracking.experiment).experiment_id
    else:
        exp_id = exp.experiment_id
        if EXPERIMENT_KIND_TAG not in exp.tags:  # an experiment made elsewhere (a kind set by a user stays)
            client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return client, exp_id, uri


def _run_exists(client: MlflowClient, run_id: str | None) -> bool:
    if not run_id:
        return False
    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except mlflow.exceptions.MlflowException:
        return False


def _child(client: MlflowClient, exp_id: str, st: dict[str, Any], key: str, parent: str,
           tags: dict[str, str] | None = None) -> str:
    rid = st["runs"].get(key)
    if _run_exists(client, rid):
        return rid
    run = client.create_run(exp_id, run_name=key, tags={"mlflow.parentRunId": parent, **(tags or {})})
    st["runs"][key] = run.info.run_id
    return run.info.run_id


def _log_metrics(client: MlflowClient, run_id: str, items: list[tuple[str, float, int]]) -> None:
    from mlflow.entities import Metric

    now = int(1000 * __import__("time").time())
    ms = [Metric(metric_name(k), float(v), now, int(s)) for k, v, s in items
          if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))]
    for i in range(0, len(ms), 900):
        client.log_batch(run_id, metrics=ms[i:i + 900])


def _missing(client: MlflowClient, run_id: str, items: list[tuple[str, float, int]]) -> list[tuple[str, float, int]]:
    """The items whose (metric, step) the run does not have yet: the replay of a series that may have been
    logged live (resume.grpo's MLflow callback) or by an earlier `log_run`."""
    have: dict[str, set[int]] = {}
    for key in {metric_name(k) for k, _, _ in items}:
        have[key] = {m.step for m in client.get_metric_history(run_id, key)}
    return [(k, v, s) for k, v, s in items if int(s) not in have[metric_name(k)]]


def start_parent(cfg: ResumeConfig, run_dir: str | Path) -> str:
    """Open (or reopen, after a crash) the parent run of `run_dir`; log the flattened config as params."""
    from mlflow.entities import Param

    run_dir = Path(run_dir).resolve()
    try:
        uri = tracking_uri(cfg, run_dir)
        if uri.startswith(("http://", "https://")):  # fail in seconds, not after MLflow's minutes of retries
            import urllib.request

            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10).close()
        client, exp_id, uri = _client(cfg, run_dir)
    except Exception as e:  # noqa: BLE001 - unreachable server, bad URI: say so in one line
        from resume.errors import ResumeError

        raise ResumeError(f"MLflow tracking at {tracking_uri(cfg, run_dir)} failed ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); start the server, or set "
                          f"tracking.tracking_uri / unset MLFLOW_TRACKING_URI to use the run dir's sqlite file") from None
    st = _state(run_dir, uri)
    rid = st.get("parent")
    if not _run_exists(client, rid):
        run = client.create_run(exp_id, run_name=f"{cfg.name}:{run_dir.name}",
                                tags={"resume.run_dir": str(run_dir), "resume.config": cfg.name})
        rid = run.info.run_id
        st = {"tracking_uri": uri, "experiment_id": exp_id, "parent": rid, "runs": {}}
        params = [Param(k, str(v)[:6000]) for k, v in flatten(cfg.to_dict()).items()]
        for i in range(0, len(params), 90):
            client.log_batch(rid, params=params[i:i + 90])
    else:
        client.update_run(rid, status="RUNNING")
    _save_state(run_dir, st)
    return rid


@contextmanager
def parent_run(cfg: ResumeConfig, run_dir: str | Path):
    """`start_parent` around the body of a `resume run`: yields the parent run id. When the body raises (any
    exception, KeyboardInterrupt and SystemExit included) the parent run ends FAILED
    (`MlflowClient.set_terminated(run_id, "FAILED")`) and the exception goes on, so a crashed or interrupted
    run is neither left RUNNING nor shown FINISHED; a rerun of the run dir reopens it (`start_parent`). A
    normal exit leaves the status to `log_run`, which ends the run FINISHED once everything is logged."""
    uri = tracking_uri(cfg, Path(run_dir).resolve())  # now: the block may change the process's MLflow settings
    rid = start_parent(cfg, run_dir)
    try:
        yield rid
    except BaseException as exc:
        try:
            MlflowClient(tracking_uri=uri).set_terminated(rid, "FAILED")
        except Exception as e:  # noqa: BLE001 - the run's own error is the one to raise
            print(f"warning: could not mark MLflow run {rid} FAILED after {type(exc).__name__}: "
                  f"{type(e).__name__}: {e}", file=sys.stderr)
        raise
