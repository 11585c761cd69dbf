"""Where served models come from: local directories, run directories, and the MLflow registry.

    python -c "from resume.serving.loading import download_model_uri; print(download_model_uri('models:/resume-retriever@champion'))"

`--model` of `resume serve` accepts
- a retriever bundle (see `resume.serving.bundle`) or a directory that contains one (e.g. downloaded artifacts),
- a run directory (`<run_dir>/iter_NN/{retriever,summaries.jsonl}`, DESIGN §2; the last iteration is
  bundled at start-up, indexed as `--index-mode`: a fused index takes the run's own fusion weight) or a
  single iteration directory,
- an MLflow URI: `models:/resume-retriever@champion`, `models:/resume-retriever/3`, `runs:/<id>/bundle`
  (the tracking server comes from `$MLFLOW_TRACKING_URI`). The registered version's artifacts must
  hold a bundle (for the retriever) or an HF model directory (for the summarizer); `log_retriever_bundle`
  / `register_dir` write exactly that.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from resume.errors import ModelError
from resume.serving.bundle import (
    BUNDLE_FILE,
    bundle_from_run_dir,
    check_bundle_mode,
    hf_dir,
    is_bundle,
    read_bundle_meta,
    refuse_add_to_titled,
    run_bundle_args,
)

MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


def is_mlflow_uri(s: str) -> bool:
    return any(str(s).startswith(p) for p in MLFLOW_SCHEMES)


def download_model_uri(uri: str, *, tracking_uri: str | None = None, dst_path: str | Path | None = None) -> str:
    """Download the artifacts behind an MLflow URI (`models:/name@alias`, `models:/name/3`, `runs:/...`).

    Returns the local directory. The tracking server is `tracking_uri`, else `$MLFLOW_TRACKING_URI`.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst_path) if dst_path else None)
    except MlflowException as e:
        raise ModelError(f"{uri}: cannot download it from the MLflow server at {mlflow.get_tracking_uri()}: "
                         f"{e.message.splitlines()[0] if e.message else e}") from None
    except OSError as e:  # connection refused and friends surface as requests/OSError subclasses
        raise ModelError(f"{uri}: cannot reach the MLflow server at {mlflow.get_tracking_uri()}: {e}") from None


def _find(root: Path, pred, max_depth: int = 3) -> Path | None:
    """First directory under `root` (breadth-first, sorted, `root` included) for which `pred` holds."""
    level = [root]
    for _ in range(max_depth + 1):
        nxt = []
        for d in level:
            if pred(d):
                return d
            nxt.extend(sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")))
        level = nxt
    return None


def _local_bundle(local: Path) -> Path | None:
    """The bundle of a local path: the path itself, or the registry layouts beside it; never a wide search."""
    return next((d for d in (local, local / "bundle", local / "artifacts" / "bundle") if is_bundle(d)), None)


def check_retriever_source(model: str | Path, *, mode: str | None = None, fusion_weight: float | None = None,
                           summary_title: bool | None = None, allow_add: bool = False) -> None:
    """Check an index mode / fusion weight / summary_title against a local `--model` before anything loads: a
    built bundle's must agree (`check_bundle_mode`); a run directory's must be buildable (`run_bundle_args`,
    e.g. a fused index needs a weight); a titled index takes no added documents (`allow_add`). An MLflow URI
    is checked once downloaded, a path that is neither when resolved."""
    if is_mlflow_uri(str(model)) or not Path(model).is_dir():
        return
    found = _local_bundle(Path(model))
    if found is not None:
        check_bundle_mode(read_bundle_meta(found), found, mode=mode, fusion_weight=fusion_weight,
                          summary_title=summary_title, allow_add=allow_add)
        return
    try:
        args = run_bundle_args(model, mode=mode, fusion_weight=fusion_weight, summary_title=summary_title)
        refuse_add_to_titled(model, titled=args["summary_title"], allow_add=allow_add)
    except ModelError:
        pass  # not a run directory: `resolve_retriever_source` says what it expected


def resolve_retriever_source(model: str | Path, *, device: str | None = None, work_dir: str | Path | None = None,
                             mode: str | None = None, fusion_weight: float | None = None,
                             summary_title: bool | None = None, allow_add: bool = False) -> Path:
    """A local bundle directory for `--model` (downloading or bundling a run directory as needed).

    work_dir: where a download (`<work_dir>/download`) or the bundle of a run directory
    (`<work_dir>/bundle`) goes; the caller removes it. Without it, a run directory is bundled in a new
    `resume-bundle-*` temporary directory (removed again if bundling fails) and MLflow picks the
    download's place.
    mode / fusion_weight / summary_title: the index of a run directory's bundle (`bundle_from_run_dir`); for
    a built bundle they must agree with its own (`check_bundle_mode`). allow_add: refused for a titled index.
    """
    downloaded = is_mlflow_uri(str(model))
    if downloaded:
        local = Path(download_model_uri(str(model), dst_path=Path(work_dir) / "download" if work_dir else None))
    else:
        local = Path(model)
    if not local.is_dir():
        raise ModelError(f"{model}: no such directory (expected a retriever bundle, a run directory "
                         "or models:/resume-retriever@champion)")
    # registry artifacts: the bundle may sit a few levels down (pyfunc: artifacts/bundle)
    found = _find(local, is_bundle) if downloaded else _local_bundle(local)
    if found is not None:
        check_bundle_mode(read_bundle_meta(found), found, mode=mode, fusion_weight=fusion_weight,
                          summary_title=summary_title, allow_add=allow_add)
        return found
    own = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="resume-bundle-") if own else work_dir)
    try:
        built = bundle_from_run_dir(local, work / "bundle", device=device, mode=mode, fusion_weight=fusion_weight,
                                    summary_title=summary_title)
    except ModelError:
        raise ModelError(f"{model}: neither a retriever bundle ({BUNDLE_FILE}) nor a run directory with "
                         "iter_NN/retriever + summaries.jsonl") from None
    finally:
        if own and not (work / "bundle").is_dir():  # failed: nothing half-built is left behind
            shutil.rmtree(work, ignore_errors=True)
    check_bundle_mode(read_bundle_meta(built), built, allow_add=allow_add)  # checked before building, for a local run
    return built


def _is_hf_dir(d: Path) -> bool:
    return (d / "config.json").is_file() and (any(d.glob("*.safetensors")) or (d / "pytorch_model.bin").is_file())


def resolve_summarizer_source(model: str | Path) -> tuple[str, Path | None]:
    """(model for `load_causal_lm`, directory to look for the run's config.yaml in, or None).

    Accepts an MLflow URI (artifacts holding an HF dir, `summarizer/` preferred), an HF dir, a run
    directory (the last `iter_NN/summarizer`), or a packaged / hub name passed on to `resume.models`.
    """
    s = str(model)
    if is_mlflow_uri(s):
        local = Path(download_model_uri(s))
        found = _find(local / "summarizer", _is_hf_dir) if (local / "summarizer").is_dir() else None
        found = found or _find(local, _is_hf_dir)
        if found is None:
            raise ModelError(f"{s}: the downloaded artifacts ({local}) hold no HF model directory (config.json + weights)")
        return str(found), local
    p = Path(s)
    if p.is_dir():
        if _is_hf_dir(hf_dir(p)):
            return str(hf_dir(p)), p
        iters = [hf_dir(d) for d in sorted(p.glob("iter_*/summarizer"))]
        iters = [d for d in iters if _is_hf_dir(d)]
        if iters:
            return str(iters[-1]), p
        raise ModelError(f"{s}: neither an HF model directory nor a run directory with iter_NN/summarizer")
    return s, None


# ------------------------------------------------------------------------------------------ registry


def register_dir(local_dir: str | Path, *, name: str, alias: str | None = "champion", artifact_path: str = "model",
                 tracking_uri: str | None = None, experiment: str = "resume", run_id: str | None = None,
                 tags: dict[str, str] | None = None, artifact_location: str | None = None) -> dict[str, Any]:
    """Log `local_dir` as artifacts of a run, register them as a new version of `name`, set `alias`.

    With `run_id` the artifacts go to that (existing) run; otherwise a run is created in `experiment`
    (created with `artifact_location` when it does not exist yet) and ended. Returns {"name", "version", "alias", "run_id", "source", "model_uri"}; `model_uri` is
    what `resume serve --model` takes (`models:/name@alias`, or `models:/name/version` without alias).
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise ModelError(f"{local_dir}: not a directory")
    client = MlflowClient(tracking_uri)
    own_run = run_id is None
    if own_run:
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(experiment, artifact_location=artifact_location)
        run_id = client.create_run(exp_id, run_name=f"register-{name}").info.run_id
    try:
        client.log_artifacts(run_id, str(local_dir), artifact_path)
        try:
            client.create_registered_model(name)
        except MlflowException as e:
            if "RESOURCE_ALREADY_EXISTS" not in str(e.error_code) and "already exists" not in str(e):
                raise
        source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"
        mv = client.create_model_version(name, source=source, run_id=run_id, tags=tags)
        if alias:
            client.set_registered_model_alias(name, alias, mv.version)
    except BaseException:
        if own_run:
            client.set_terminated(run_id, status="FAILED")
        raise
    if own_run:
        client.set_terminated(run_id)
    return {"name": name, "version": str(mv.version), "alias": alias, "run_id": run_id, "source": source,
            "model_uri": f"models:/{name}@{alias}" if alias else f"models:/{name}/{mv.version}"}


def log_retriever_bundle(bundle_dir: str | Path, *, name: str = "resume-retriever", alias: str | None = "champion",
                         tracking_uri: str | None = None, experiment: str = "resume", run_id: str | None = None,
                         artifact_location: str | None = None) -> dict[str, Any]:
    """Register a retriever bundle (checked first) as a version of `name`; artifacts under `bundle/`."""
    meta = read_bundle_meta(bundle_dir)
    return register_dir(bundle_dir, name=name, alias=alias, artifact_path="bundle", tracking_uri=tracking_uri,
                        experiment=experiment, run_id=run_id, artifact_location=artifact_location,
                        tags={"resume.bundle_format": str(meta["format_version"]), "resume.n_docs": str(meta["n_docs"]),
                              "resume.index_kind": str(meta["index"]["kind"])})
