"""Runtime helpers for the Kubeflow components (components/*/component.py call these inside the container).

    python pipelines/resume_pipeline.py --out pipelines/resume_pipeline.yaml   # compiles the pipeline

The components stay thin: they turn KFP artifacts into paths, call one library stage function, and
log to MLflow through `child_run`. Everything here is light at import (no torch, no mlflow at top).

* Config and data: the pipeline resolves the YAML config once (`resolve_config`) and writes the
  working set once as a BEIR dir (`materialise_data`), both passed to every task as artifacts;
  `stage_config` gives a stage the config `resume run` gives it (data.path = the working set,
  sampling off, RNGs seeded from loop.seed), so both paths produce the same artifacts.
* Models: a Model artifact is a directory; `model_path` finds the HF model dir inside it (the
  library may return a sub-directory, recorded in the artifact's metadata as `model_dir`).
* MLflow: with `MLFLOW_TRACKING_URI` unset (tests, local runs) nothing is logged; otherwise each
  component opens a child run under the pipeline's parent run. The uncached start-run task creates that
  run (tagged with the KFP run's id and name) and passes its id to the uncached tasks; the cached tasks
  never take it as an input (it would change their cache key on every run): `parent_run_for` finds it
  from their own output artifact's URI, which holds the KFP run and is not part of KFP's cache key.
* Retries: `task_work_name` names a task's work directory on the shared volume (and its Ray submission
  id) from its output artifact's URI, the same for every attempt of one task in one run, different for
  any other task or run; a retried grpo-train finds TRL's checkpoints there and resumes.
* Early stopping: `continue_decision` = the iteration budget + `resume.run_dir.early_stop`, the rule
  `resume.loop.iterate` applies (DESIGN §1 / LoopConfig).

The run directory's contracts (file names, the reward log reader, the metric names, the stage config and
seeding, the early-stopping rule) live in `resume.run_dir`; the components import it directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from resume import run_dir as rd
from resume.errors import ResumeError

# --------------------------------------------------------------------------------------------- config


def resolve_config(config_path: str, overrides: list[str] | None, out_path: str, *,
                   data_path: str = "", summarizer_model: str = "", retriever_model: str = "",
                   extra: dict[str, Any] | None = None):
    """Load `config_path` + overrides, apply the pipeline's typed parameters (empty/0 = keep), write YAML."""
    from resume.config import dump_config, load_config

    ov = list(overrides or [])
    if data_path:
        ov.append(f"data.path={data_path}")
    if summarizer_model:
        ov.append(f"summarizer.model={summarizer_model}")
    if retriever_model:
        ov.append(f"retriever.model={retriever_model}")
    for key, value in (extra or {}).items():
        if value not in (None, "", 0, 0.0):
            ov.append(f"{key}={_yaml_scalar(value)}")
    cfg = load_config(config_path or None, ov)
    dump_config(cfg, out_path)
    return cfg


def _yaml_scalar(value: Any) -> str:
    """A value as YAML reads it back (2e-05 -> '2.0e-05': YAML 1.1 needs the dot)."""
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def load_config_file(path: str, overrides: list[str] | None = None):
    from resume.config import load_config

    return load_config(path, overrides)


def materialise_data(cfg, out_dir: str) -> dict[str, Any]:
    """Write the config's working set as a BEIR dir (what `resume run` writes once as <run_dir>/data)."""
    from resume.data import load_beir, select_working_set, write_beir

    ds = load_beir(cfg.data.path)
    ws = select_working_set(ds, cfg.data)
    write_beir(ws, out_dir)
    return {"n_docs": len(ws.corpus), "n_docs_source": len(ds.corpus),
            **{f"queries_{s}": len(q) for s, q in ws.qrels.items()}}


def stage_config(config_path: str, data_path: str | None = None, *, seed: bool = True):
    """The config a stage runs with, as in `resume run` (`resume.run_dir.stage_config`: data.path = the
    materialised working set with the sampling knobs off), with every RNG seeded from loop.seed just
    before the stage (`resume.run_dir.seed_everything`)."""
    cfg = load_config_file(config_path)
    if data_path:
        cfg = rd.stage_config(cfg, data_path)
    if seed:
        import torch  # noqa: F401 - loaded before seeding, as in `resume run`, where the stages have loaded it

        rd.seed_everything(cfg.loop.seed)
    return cfg


# --------------------------------------------------------------------------------------------- models


def model_path(path: str, metadata: dict | None = None) -> str:
    """The HF model directory inside a Model artifact (its metadata `model_dir`, or where config.json is)."""
    root = Path(path)
    rel = (metadata or {}).get("model_dir")
    if rel:
        return str((root / rel).resolve())
    if (root / "config.json").is_file() or not root.is_dir():
        return str(root)
    subs = sorted(p.parent for p in root.glob("*/config.json"))
    return str(subs[0]) if len(subs) == 1 else str(root)


def record_model_dir(artifact, returned: str) -> None:
    """Store where the library put the model, relative to the artifact directory."""
    rel = os.path.relpath(Path(returned).resolve(), Path(artifact.path).resolve())
    artifact.metadata["model_dir"] = "." if rel == "." else rel
    if rel.startswith(".."):
        raise ResumeError(f"stage wrote its model outside the artifact dir: {returned} (artifact {artifact.path})")


# --------------------------------------------------------------------------------------------- logs


def write_metrics(metrics_artifact, values: dict[str, Any]) -> None:
    """Log numeric values on a KFP Metrics artifact and write them as JSON in its file."""
    clean = {k: float(v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)
             and math.isfinite(float(v))}
    for k, v in clean.items():
        metrics_artifact.log_metric(k, v)
    Path(metrics_artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(metrics_artifact.path).write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_metrics(metrics_artifact) -> dict[str, float]:
    """Values of a Metrics artifact written by `write_metrics` ({} for None or a missing file)."""
    if metrics_artifact is None:
        return {}
    p = Path(metrics_artifact.path)
    if p.is_file():
        return json.loads(p.read_text(encoding="utf-8"))
    return {k: float(v) for k, v in (metrics_artifact.metadata or {}).items() if isinstance(v, int | float)}


# ---------------------------------------------------------------------------------------- early stop


def continue_decision(*, iteration: int, max_iterations: int, reward: float | None, prev_reward: float | None,
                      metric: float | None, prev_metric: float | None, eps_reward: float | None,
                      eps_metric: float | None) -> tuple[bool, str]:
    """Whether iteration `iteration + 1` should run, and why: not when the iteration budget is spent,
    nor when `resume.run_dir.early_stop` (the rule of `resume.loop.iterate`) says stop. `metric` and
    `prev_metric` are dev PRIMARY_METRIC values (iteration 0 = g_0 over S_0)."""
    if iteration >= max_iterations:
        return False, f"iteration budget spent ({iteration}/{max_iterations})"
    d = rd.early_stop(reward=reward, prev_reward=prev_reward, metric=metric, prev_metric=prev_metric,
                      eps_reward=eps_reward, eps_metric=eps_metric)
    return (False, d.reason) if d.stop else (True, "continue")


# ------------------------------------------------------------------------------------------- MLflow


def mlflow_enabled() -> bool:
    return bool(os.environ.get("MLFLOW_TRACKING_URI"))


def plugin_run_id() -> str:
    """The task's own MLflow run when KFP's MLflow plugin is on (KFP >= 2.17, KEP-12862: its driver creates a
    nested run per task under the pipeline run's parent and injects MLFLOW_RUN_ID and MLFLOW_EXPERIMENT_ID
    into the task container), else ''. With it, the components log into the plugin's runs instead of
    opening their own: `mlflow.start_run()` would otherwise reattach to it anyway, and refuses to when the
    active experiment (`tracking.experiment`) is not the plugin's."""
    return os.environ.get("MLFLOW_RUN_ID", "") if mlflow_enabled() else ""


def _plugin_runs(run_id: str) -> tuple[str, str]:
    """(experiment id, parent run id) of the plugin's task run `run_id`; the parent is the run itself when
    it has none."""
    import mlflow

    run = mlflow.MlflowClient().get_run(run_id)
    return run.info.experiment_id, run.data.tags.get("mlflow.parentRunId") or run_id


RUN_ID_TAG = "resume.kfp_run_id"      # the KFP run's id ({{$.pipeline_job_uuid}}), on the parent run
RUN_NAME_TAG = "resume.kfp_run_name"  # the KFP run's name ({{$.pipeline_job_name}}; kfp.local's run dir)


def start_parent_run(experiment: str, run_name: str, params: dict[str, Any] | None = None, *,
                     kfp_run_id: str = "", kfp_run_name: str = "") -> str:
    """Create the pipeline's parent MLflow run; '' when MLFLOW_TRACKING_URI is unset.

    With `kfp_run_id`, a parent run already tagged with it is reused, so a retried start-run task
    does not open a second one."""
    if not mlflow_enabled():
        return ""
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    tags = {"resume.source": "kfp", **({RUN_ID_TAG: kfp_run_id} if kfp_run_id else {}),
            **({RUN_NAME_TAG: kfp_run_name} if kfp_run_name else {})}
    if rid := plugin_run_id():  # KFP's plugin opened the pipeline's parent run: use it, do not open a second
        _, parent = _plugin_runs(rid)
        client = mlflow.MlflowClient()
        for k, v in tags.items():
            client.set_tag(parent, k, v)
        if params:  # a retried start-run logs the same values again, which MLflow accepts
            from mlflow.entities import Param

            client.log_batch(parent, params=[Param(k, v) for k, v in _flat(params).items()])
        return parent
    exp = mlflow.set_experiment(experiment)
    if kfp_run_id:
        found = mlflow.MlflowClient().search_runs([exp.experiment_id], f"tags.`{RUN_ID_TAG}` = '{kfp_run_id}'",
                                                  max_results=1)
        if found:
            return found[0].info.run_id
    with mlflow.start_run(run_name=run_name or None, tags=tags) as run:
        if params:
            mlflow.log_params(_flat(params))
        return run.info.run_id


def parent_run_for(artifact, experiment: str, max_runs: int = 200) -> str:
    """The parent MLflow run of the KFP run that writes `artifact` (an output of the calling task), or ''.

    A KFP output URI holds the run (`<root>/<pipeline>/<run id>/<task>/[<salt>/]<name>` on a KFP
    backend, `<root>/<run name>/<task>/<name>` under kfp.local): the parent run is the most recent one
    of `experiment` whose KFP run id or name is one of the URI's path components."""
    if not mlflow_enabled():
        return ""
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    if rid := plugin_run_id():
        return _plugin_runs(rid)[1]
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return ""
    parts = set(str(artifact.uri).split("/"))
    runs = mlflow.MlflowClient().search_runs([exp.experiment_id], "tags.`resume.source` = 'kfp'",
                                             max_results=max_runs, order_by=["attributes.start_time DESC"])
    for run in runs:
        if {run.data.tags.get(RUN_ID_TAG), run.data.tags.get(RUN_NAME_TAG)} & parts:
            return run.info.run_id
    return ""


@contextlib.contextmanager
def child_run(parent_run_id: str, name: str, experiment: str = "resume",
              params: dict[str, Any] | None = None) -> Iterator[Any]:
    """An MLflow child run of `parent_run_id` (yields the mlflow module), or yields None when disabled.

    Under KFP's MLflow plugin (`plugin_run_id`) the task's own run, created by the plugin under its parent,
    is reattached instead (in the plugin's experiment; `parent_run_id` and `experiment` are not used)."""
    if not mlflow_enabled():
        yield None
        return
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    tags = {"resume.component": name.split("-iter")[0]}
    if rid := plugin_run_id():
        mlflow.set_experiment(experiment_id=_plugin_runs(rid)[0])
        kwargs: dict[str, Any] = {"run_id": rid}
        tags["resume.task"] = name
    else:
        mlflow.set_experiment(experiment)
        kwargs = {"run_name": name, **({"parent_run_id": parent_run_id} if parent_run_id else {})}
    with mlflow.start_run(tags=tags, **kwargs):
        if params:
            mlflow.log_params(_flat(params))
        yield mlflow


def log_metrics(ml, values: dict[str, Any], step: int | None = None) -> None:
    if ml is None:
        return
    clean = {k.replace("@", "_at_"): float(v) for k, v in values.items()
             if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))}
    if clean:
        ml.log_metrics(clean, step=step)


def _flat(d: dict[str, Any]) -> dict[str, str]:
    """Dotted keys with values as MLflow params (strings of at most 500 characters)."""
    from resume.config import flatten

    return {k: str(v)[:500] for k, v in flatten(d).items()}


# ---------------------------------------------------------------------------------------- run dir


def link_into(src: str, dst: Path, copy: bool = False) -> None:
    """Place `src` at `dst`: a symlink, or a copy (`copy=True`, or where links are not allowed).

    Copy what MLflow will upload: `log_artifacts` walks directories without following links.
    """
    import shutil

    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        if copy:
            raise OSError("copy requested")
        dst.symlink_to(Path(src).resolve(), target_is_directory=Path(src).is_dir())
    except OSError:
        if Path(src).is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)


# ------------------------------------------------------------------------------------------ retries


def task_work_name(artifact, iteration: int) -> str:
    """A task's work directory under `<shared_dir>/ray-jobs/`, from one of its output artifacts' URI.

    KFP gives a task's outputs the same URIs in every attempt of that task (the driver runs once, a
    retry reruns the executor) and different URIs in any other task or run, and leaves the URIs out of
    the cache key. So `<run>/<task>-iter<NN>-<hash>` (run and task: the URI's components above the
    artifact name; hash: of the task's whole output prefix) is deterministic per task and attempt-proof:
    a retried grpo-train finds the checkpoints of the killed attempt, and the Ray submission id derived
    from it finds that attempt's job.
    """
    uri = str(artifact.uri).rstrip("/")
    prefix = uri.rsplit("/", 1)[0]
    parts = [p for p in prefix.split("/") if p]
    if len(parts) < 2:
        raise ResumeError(f"output artifact URI {uri!r} does not name a run and a task")
    digest = hashlib.sha256(prefix.encode("utf-8")).hexdigest()[:10]
    return f"{_slug(parts[-2])}/{_slug(parts[-1])}-iter{int(iteration):02d}-{digest}"


def _slug(text: str) -> str:
    """A path component / Ray submission id fragment: [A-Za-z0-9_-] only, at most 60 characters."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:60] or "x"


def drop_incomplete_checkpoints(checkpoints_dir: str | Path) -> list[Path]:
    """Delete the HF Trainer checkpoints that a killed attempt left half-written; return them.

    `Trainer._save_checkpoint` writes the model, optimizer, scheduler and RNG states into
    `checkpoint-<step>` and `trainer_state.json` last, in place. A pod killed meanwhile leaves a
    checkpoint without a readable `trainer_state.json`, which `get_last_checkpoint` would still pick
    (and every retry would fail on); without it, the retry resumes from the previous complete one.
    """
    import shutil

    removed = []
    for ckpt in sorted(Path(checkpoints_dir).glob("checkpoint-*")):
        try:
            json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            shutil.rmtree(ckpt, ignore_errors=True)
            removed.append(ckpt)
    return removed
