"""MLflow tracking and registry for a run directory written by `resume.loop`.

    resume run --config configs/tiny.yaml --out runs/tiny      # tracks + registers at the end
    resume register --config configs/tiny.yaml --run-dir runs/tiny
    mlflow ui --backend-store-uri sqlite:///runs/tiny/mlflow.db

Tracking URI: `tracking.tracking_uri`, else `$MLFLOW_TRACKING_URI`, else `sqlite:///<run_dir>/mlflow.db` with
artifacts in <run_dir>/mlartifacts.

Runs. One parent run per run directory (`resume run`), opened when the loop starts (status RUNNING, the
flattened config as params) and completed at the end. A killed run that is rerun reopens the same parent
(its id is kept in <run_dir>/tracking.json). Everything else is logged from the run directory's files
(results.json, reward logs, eval dirs) once the loop has finished, so what MLflow shows is exactly what
the run dir holds, whatever was resumed:
  parent:   params; reward + its parts per GRPO step (step = global step across iterations); per-iteration
            dev/test MRR@10, NDCG@10, R@100, R@1000, mean reward, summary length, separator rate
            (step = iteration); test metrics per system; stage times; artifacts report.md, plots/,
            results.json, config.yaml, sample summaries.
  nested:   `iter_XX` per iteration (its metrics, reward per global step, stage times, eval run files),
            `system/<name>` per system (test metrics, run.trec), `ablation/<name>` per ablation.
Metric names replace `@` (not allowed by MLflow) with `_at_`: `test/mrr_at_10`.

Live GRPO metrics (`live_grpo`). While a round trains, `resume.loop` wraps the grpo-train stage in
`live_grpo(...)`: it creates the round's nested run (`iter_XX`, or `ablation/<name>`) up front and names it in
`MLFLOW_TRACKING_URI` / `MLFLOW_RUN_ID` (+ `RESUME_GRPO_STEP_OFFSET`, the global step of the round's step 0),
the variables KFP >= 2.17's MLflow integration injects into every task too; `resume.grpo`'s MLflow callback
then logs `grpo/<part>` at each logging step, as the replay above names them. The replay stays the fallback
(tracking off during training, Ray workers elsewhere, a failed live write): it logs only the (metric, step)
pairs a run does not have yet, so nothing is logged twice.

Datasets and experiment kind. The experiment carries `mlflow.experimentKind = custom_model_development` (the
tag MLflow 3's UI reads to open the classic training view instead of the GenAI one). Each run gets the
working set (<run_dir>/data) as dataset inputs (`mlflow.log_inputs`, `mlflow.data.from_pandas`: name
`<data>-<split>`, digest of the rows, source = the working-set dir): the train-split judgements and the
corpus as "training", the dev and test splits as "evaluation" (systems: the test split only).

Registry (`register_models`). The final summarizer f_T and retriever g_T are logged as MLflow pyfunc models
(python_model = `SummarizerModel` / `RetrieverModel` below, with a signature (`model_signature`: one string
column in, `params` declared) and the `resume` package source as `code_paths`, so they load with MLflow's
listed requirements alone, outside the project image; the model dir as an artifact; the retriever also
carries the serving bundle: model dir + FAISS index + docs.jsonl + bundle.json, when resume.serving provides
`build_retriever_bundle`) and registered as new versions of `tracking.summarizer_name` / `retriever_name`.
Each version is tagged with the run's test MRR@10 of the iterative system. Champion rule: the alias
`tracking.alias` moves to the new versions when no version holds it yet, or when the new test MRR@10 is
>= the MRR@10 tagged on the current champion (ties go to the newer model). Both names move together, so the
champion summarizer and retriever are always a matched pair. Note that the comparison does not check that
both runs used the same dataset: use different registered names per dataset.

    mlflow.pyfunc.load_model("models:/resume-retriever@champion").predict(["what is a shock wave?"])
    # -> list of embeddings; params={"kind": "doc"} embeds documents; a one-column DataFrame works too
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
from mlflow.tracking import MlflowClient

from resume.config import ResumeConfig, flatten
from resume.io import atomic_write_json, iter_jsonl
from resume.run_dir import read_results, read_reward_log

STATE = "tracking.json"
# MLflow 3's experiment kind: the UI opens an experiment tagged so in its model-training view (the value set of
# the `mlflow.experimentKind` tag in MLflow 3.17's UI: genai_development, custom_model_development, ...)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
STEP_OFFSET_ENV = "RESUME_GRPO_STEP_OFFSET"  # the global step of a live GRPO round's step 0 (resume.grpo reads it)


# ----------------------------------------------------------------------------------------- plumbing


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


# --------------------------------------------------------------------------------------------- runs


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


def _quality_items(quality: dict[str, Any] | None, step: int) -> list[tuple[str, float, int]]:
    """`quality/<signal>` and `quality/judge_<key>` metrics of one summary set (resume.quality)."""
    q = quality or {}
    items = [(f"quality/{k}", float(v), step) for k, v in (q.get("text") or {}).items()
             if isinstance(v, int | float) and not isinstance(v, bool) and k != "n"]
    items += [(f"quality/judge_{k}", float(v), step) for k, v in (q.get("fixed_judge") or {}).items()
              if isinstance(v, int | float) and not isinstance(v, bool)]
    return items


def _iteration_items(it: dict[str, Any]) -> list[tuple[str, float, int]]:
    t = it["iteration"]
    items = [(f"{split}/{m}", v, t) for split in ("dev", "test") for m, v in (it.get(split) or {}).items()]
    for k in ("reward_mean", "summary_len", "separator_rate", "reward_gain", "dev_gain"):
        if it.get(k) is not None:
            items.append((k, it[k], t))
    return items + _quality_items(it.get("quality"), t)


def _artifact(client: MlflowClient, rid: str, path: str | Path, dest: str | None = None) -> None:
    p = Path(path)
    if p.is_dir():
        client.log_artifacts(rid, str(p), dest)
    elif p.exists():
        client.log_artifact(rid, str(p), dest)


def _sample_summaries(run_dir: Path, results: dict[str, Any], n: int = 20) -> Path:
    """A small JSONL of the first `n` summaries of S_0, S_1, ... (full files stay in the run dir)."""
    out = run_dir / "summary_samples.jsonl"
    rows = []
    paths = ([("S_0", results["s0"])] if results.get("s0") else []) + \
        [(f"S_{it['iteration']}", it["summaries"]) for it in results.get("iterations", [])]
    for name, p in paths:
        if p and Path(p).exists():
            for i, r in enumerate(iter_jsonl(p)):
                if i >= n:
                    break
                rows.append({"set": name, "_id": r["_id"], "summary": r.get("summary"),
                             "n_tokens": r.get("n_tokens"), "has_separator": r.get("has_separator")})
    from resume.io import write_jsonl

    write_jsonl(out, rows)
    return out


def working_set_datasets(run_dir: str | Path, results: dict[str, Any] | None = None) -> dict[str, Any]:
    """The working set <run_dir>/data as `mlflow.data` pandas datasets: one per judged split (rows: query_id,
    query, doc_id, score) and `corpus` (doc_id, title, text); name `<data>-<split>`, source the working-set
    dir, digest MLflow's hash of the rows. {} when the run dir has no working set."""
    import warnings

    import mlflow.data
    import pandas as pd

    from resume.data import CORPUS_FILE, load_beir
    from resume.run_dir import DATA

    data_dir = Path(run_dir).resolve() / DATA
    if not (data_dir / CORPUS_FILE).exists():
        return {}
    ds = load_beir(data_dir)
    base = Path(str(((results or {}).get("data") or {}).get("source") or data_dir)).name
    frames = {split: pd.DataFrame([(q, ds.queries[q], d, int(score)) for q, rels in qrels.items()
                                   for d, score in rels.items()], columns=["query_id", "query", "doc_id", "score"])
              for split, qrels in ds.qrels.items()}
    frames["corpus"] = pd.DataFrame([(d, doc.get("title") or "", doc.get("text") or "") for d, doc in ds.corpus.items()],
                                    columns=["doc_id", "title", "text"])
    with warnings.catch_warnings():  # MLflow warns that a local path source is resolved by guessing its kind
        warnings.simplefilter("ignore")
        return {k: mlflow.data.from_pandas(df, source=str(data_dir), name=f"{base}-{k}") for k, df in frames.items()}


def _log_datasets(uri: str, run_id: str, datasets: dict[str, Any], used: list[tuple[str, str]]) -> None:
    """`mlflow.log_inputs` of the named datasets into a run: used = [(dataset key, context)], keys missing
    from `datasets` skipped. Logging a dataset again is a no-op in MLflow."""
    pairs = [(datasets[k], ctx) for k, ctx in used if k in datasets]
    if not pairs:
        return
    import warnings

    with _fluent(uri), mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "integer columns cannot hold missing values": qrels scores are ints
        mlflow.log_inputs([d for d, _ in pairs], contexts=[c for _, c in pairs], tags_list=[None] * len(pairs))


def _used(cfg: ResumeConfig, results: dict[str, Any]) -> list[tuple[str, str]]:
    """(dataset key, context) of a training run: train split + corpus, the dev and test splits."""
    splits = {**{"train": cfg.data.train_split, "dev": cfg.data.dev_split, "test": cfg.data.test_split},
              **(results.get("splits") or {})}
    return [(splits["train"], "training"), ("corpus", "training"), (splits["dev"], "evaluation"),
            (splits["test"], "evaluation")]


def log_run(cfg: ResumeConfig, run_dir: str | Path) -> dict[str, Any]:
    """Log results.json of a finished run dir into MLflow (parent + nested runs); returns the run ids."""
    run_dir = Path(run_dir).resolve()
    results = read_results(run_dir)
    parent = start_parent(cfg, run_dir)
    client, exp_id, uri = _client(cfg, run_dir)
    st = _state(run_dir, uri)
    iterations = results.get("iterations", [])
    datasets = working_set_datasets(run_dir, results)
    used = _used(cfg, results)
    test_only = [u for u in used if u[1] == "evaluation"][-1:]

    # parent: per-step GRPO series, per-iteration metrics, per-system metrics, stage times
    items = _grpo_series(iterations) + [(f"iter/{k}", v, s) for k, v, s in _quality_items(results.get("s0_quality"), 0)]
    for it in iterations:
        items += [(f"iter/{k}", v, s) for k, v, s in _iteration_items(it)]
    for name, sysm in results.get("systems", {}).items():
        items += [(f"{name}/test/{m}", v, 0) for m, v in sysm["test"].items()]
    for name, ab in results.get("ablations", {}).items():
        items += [(f"ablation/{name}/test/{m}", v, 0) for m, v in ab["test"].items()]
    for name, sysm in ((results.get("ood") or {}).get("systems") or {}).items():
        items += [(f"ood/{name}/test/{m}", v, 0) for m, v in sysm["test"].items()]
    items += [(f"time/{k}", v, 0) for k, v in results.get("stage_seconds", {}).items()]
    items += [("time/total_stages", results.get("seconds_stages", 0), 0),
              ("iterations", len(iterations), 0)]
    grpo = [x for x in items if x[0].startswith("grpo/")]
    _log_metrics(client, parent, [x for x in items if not x[0].startswith("grpo/")] + _missing(client, parent, grpo))
    client.set_tag(parent, "resume.stopped", json.dumps(results.get("stopped")))

    # nested: one per iteration
    offset_steps = 0
    for it in iterations:
        key = f"iter_{it['iteration']:02d}"
        rid = _child(client, exp_id, st, key, parent, {"resume.iteration": str(it["iteration"])})
        series = _grpo_series([it])
        series = [(k, v, s + offset_steps) for k, v, s in series]
        offset_steps = max([s for _, _, s in series] or [offset_steps])
        times = [(f"time/{k.split('/')[-1]}", v, 0) for k, v in results.get("stage_seconds", {}).items()
                 if k.startswith(f"{key}/")]
        _log_metrics(client, rid, _missing(client, rid, series) + _iteration_items(it) + times)
        for sub in ("eval", "eval_test"):
            _artifact(client, rid, Path(it["dir"]) / sub, sub)
        _log_datasets(uri, rid, datasets, used)
        client.set_terminated(rid)
    # nested: one per system
    for name, sysm in results.get("systems", {}).items():
        rid = _child(client, exp_id, st, f"system/{name}", parent, {"resume.system": name})
        _log_metrics(client, rid, [(f"test/{m}", v, 0) for m, v in sysm["test"].items()]
                     + [(f"dev/{m}", v, 0) for m, v in (sysm.get("dev") or {}).items()])
        _artifact(client, rid, sysm.get("dir", ""), "eval_test")
        _log_datasets(uri, rid, datasets, test_only)
        client.set_terminated(rid)
    # nested: one per ablation (its iterations as steps)
    for name, ab in results.get("ablations", {}).items():
        rid = _child(client, exp_id, st, f"ablation/{name}", parent, {"resume.ablation": name})
        its = ab.get("iterations", [])
        items = [(f"test/{m}", v, 0) for m, v in ab["test"].items()] + _missing(client, rid, _grpo_series(its))
        for it in its:
            items += [(f"iter/{k}", v, s) for k, v, s in _iteration_items(it)]
        _log_metrics(client, rid, items)
        client.set_tag(rid, "resume.stopped", json.dumps(ab.get("stopped")))
        _log_datasets(uri, rid, datasets, used)
        client.set_terminated(rid)

    # artifacts of the parent
    for name in ("report.md", "results.json", "metrics.json", "config.yaml"):
        _artifact(client, parent, run_dir / name)
    _artifact(client, parent, run_dir / "plots", "plots")
    _artifact(client, parent, _sample_summaries(run_dir, results))
    _log_datasets(uri, parent, datasets, used)
    client.set_terminated(parent)
    st["logged"] = True
    _save_state(run_dir, st)
    return {"parent": parent, **st["runs"]}


# ----------------------------------------------------------------------------------- pyfunc models


def _texts(model_input: Any) -> list[str]:
    """list[str] | str | pandas DataFrame (column `text`, `query` or `document`, else the first) -> list[str]."""
    if isinstance(model_input, str):
        return [model_input]
    if hasattr(model_input, "columns"):
        for col in ("text", "query", "document"):
            if col in model_input.columns:
                return [str(x) for x in model_input[col].tolist()]
        return [str(x) for x in model_input.iloc[:, 0].tolist()]
    if isinstance(model_input, dict):
        for col in ("text", "query", "document", "texts", "queries"):
            if col in model_input:
                v = model_input[col]
                return [v] if isinstance(v, str) else [str(x) for x in v]
    return [str(x) for x in model_input]


def _load_cfg(context) -> ResumeConfig:
    from resume.config import ResumeConfig, from_dict

    d = json.loads(Path(context.artifacts["resume_config"]).read_text(encoding="utf-8"))
    return from_dict(ResumeConfig, d)


class RetrieverModel(mlflow.pyfunc.PythonModel):
    """Query/document encoder g_T. predict(texts, params={"kind": "query"|"doc"}) -> list of embeddings."""

    def load_context(self, context):
        from resume.retriever import Encoder

        cfg = _load_cfg(context)
        self.encoder = Encoder(context.artifacts["model_dir"], cfg.retriever, device="cpu")

    def predict(self, context, model_input, params=None):
        texts = _texts(model_input)
        kind = (params or {}).get("kind", "query")
        emb = self.encoder.encode_docs(texts) if kind in ("doc", "document", "docs") else \
            self.encoder.encode_queries(texts)
        return [list(map(float, row)) for row in emb]


class SummarizerModel(mlflow.pyfunc.PythonModel):
    """Summarizer f_T. predict(documents) -> list of summaries (greedy; text after the last separator)."""

    def load_context(self, context):
        from resume.models import load_causal_lm

        self.cfg = _load_cfg(context)
        self.model, self.tokenizer = load_causal_lm(context.artifacts["model_dir"], device="cpu")
        self.model.eval()

    def predict(self, context, model_input, params=None):
        from resume.summarizer import generate_batch, index_text

        docs = _texts(model_input)
        n = int((params or {}).get("max_new_tokens", self.cfg.summarizer.max_new_tokens))
        completions = generate_batch(self.model, self.tokenizer, docs, self.cfg, n)
        return [index_text(c, d, self.tokenizer, self.cfg)[0] for c, d in zip(completions, docs)]


def _hf_dir(path: str) -> str:
    """The HF model dir inside a stage output (the dir itself or its `model/` subdir)."""
    p = Path(path)
    if (p / "config.json").exists():
        return str(p)
    for sub in ("model", "final", "hf"):
        if (p / sub / "config.json").exists():
            return str(p / sub)
    return str(p)


_SKIP = {"checkpoints", "ray_results", "runs", "training_args.bin", "optimizer.pt", "scheduler.pt", "trainer_state.json",
         "reward_log.jsonl", "reward_inputs.jsonl", "train_log.jsonl", "train_state.json"}


def _clean_model_dir(src: str, dest: Path) -> str:
    """The model files of a stage output without training leftovers (checkpoints hold GBs of optimizer
    state); hard links where possible, so this costs no copy."""

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    if not Path(src).is_dir():  # a model name (e.g. g_0 itself): its resolved local dir
        from resume.models import resolve_model

        src = resolve_model(src)
    shutil.copytree(src, dest, copy_function=link,
                    ignore=lambda _d, names: [n for n in names if n in _SKIP or n.startswith("rng_state")])
    return str(dest)


def _retriever_bundle(cfg: ResumeConfig, run_dir: Path, retriever_dir: str, summaries: str | None,
                      dest: Path) -> str | None:
    """The serving bundle (resume.serving.build_retriever_bundle), when that function exists."""
    try:
        from resume.serving.bundle import build_retriever_bundle
    except Exception:  # noqa: BLE001 - the serving package is optional here
        return None
    if not summaries:
        return None
    try:
        out = build_retriever_bundle(dest, retriever=retriever_dir, texts=summaries, cfg=cfg, device="cpu",
                                     source={"run_dir": str(run_dir)})
    except Exception as e:  # noqa: BLE001 - the model is still registered, without the bundle
        print(f"warning: no serving bundle for {retriever_dir}: {type(e).__name__}: {e}", file=sys.stderr)
        return None
    return str(out)


def _pip_requirements() -> list[str]:
    """What the pyfunc models import when they load (the `resume` source travels as code_paths): pinned to
    this environment's versions, without a local version label (torch 2.13.0+cpu -> torch==2.13.0, as
    requirements.txt pins it: pip picks the CPU or CUDA wheel of the target machine)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in ("mlflow", "torch", "transformers", "numpy"):
        try:
            reqs.append(f"{pkg}=={version(pkg).split('+')[0]}")
        except PackageNotFoundError:
            pass
    return reqs


def model_signature(kind: str, cfg: ResumeConfig):
    """The pyfunc signature: one string column in (a DataFrame with one text column, or a plain list of
    strings; the column is unnamed because MLflow rejects a list for a named column), the outputs, and the
    `params` predict() honours (MLflow drops params a signature does not declare)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array

    texts = Schema([ColSpec(DataType.string)])
    if kind == "retriever":  # texts -> one embedding each; kind=query|doc picks the encoder's prompt
        return ModelSignature(inputs=texts, outputs=Schema([ColSpec(Array(DataType.double))]),
                              params=ParamSchema([ParamSpec("kind", DataType.string, "query")]))
    return ModelSignature(inputs=texts, outputs=Schema([ColSpec(DataType.string)]),  # documents -> summaries
                          params=ParamSchema([ParamSpec("max_new_tokens", DataType.long,
                                                        int(cfg.summarizer.max_new_tokens))]))


def _code_paths() -> list[str]:
    """The `resume` package source, shipped inside the model (MLflow puts it on sys.path at load)."""
    return [str(Path(__file__).resolve().parent)]


def register_models(cfg: ResumeConfig, run_dir: str | Path, *, once: bool = False) -> dict[str, Any]:
    """Register the run's final summarizer and retriever; move the alias when they beat the champion.

    Returns {"summarizer": {"name", "version", "uri", "champion"}, "retriever": {...}, "test_mrr@10": x}.
    once=True (used by `resume run`) returns the earlier registration of this run dir instead of adding
    new versions on a rerun.
    """
    from resume.errors import ResumeError

    run_dir = Path(run_dir).resolve()
    results = read_results(run_dir)  # DataError when missing or malformed
    if not results.get("final"):
        raise ResumeError(f"{run_dir}: the run has no iterative loop (systems without iterative/ablations)")
    # the run's own config describes its models (encoder settings, prompt); `cfg` gives the tracking settings
    run_cfg = cfg
    if (run_dir / "config.yaml").exists():
        from resume.config import load_config

        run_cfg = load_config(run_dir / "config.yaml")
    client, exp_id, uri = _client(cfg, run_dir)
    st = _state(run_dir, uri)
    if once and st.get("registered"):
        return st["registered"]
    parent = st.get("parent") if _run_exists(client, st.get("parent")) else start_parent(cfg, run_dir)
    st = _state(run_dir, uri)
    sysm = results["systems"].get("iterative") or {"test": results["iterations"][-1]["test"]}
    mrr = float(sysm["test"]["mrr@10"])
    final = results["final"]
    last = results["iterations"][-1]
    t = cfg.tracking
    out: dict[str, Any] = {"test_mrr@10": mrr}
    with tempfile.TemporaryDirectory(prefix=".register-", dir=run_dir) as tmp:  # same filesystem: hard links
        cfg_json = Path(tmp) / "resume_config.json"
        cfg_json.write_text(json.dumps(run_cfg.to_dict()), encoding="utf-8")
        bundle = _retriever_bundle(run_cfg, run_dir, _hf_dir(final["retriever"]), last.get("summaries"),
                                   Path(tmp) / "bundle")
        f_dir = _clean_model_dir(_hf_dir(final["summarizer"]), Path(tmp) / "summarizer")
        g_dir = _clean_model_dir(_hf_dir(final["retriever"]), Path(tmp) / "retriever")
        specs = [("summarizer", t.summarizer_name, SummarizerModel(), {"model_dir": f_dir}),
                 ("retriever", t.retriever_name, RetrieverModel(),
                  {"model_dir": g_dir, **({"bundle": bundle} if bundle else {})})]
        with _fluent(uri), mlflow.start_run(run_id=parent):
            for kind, name, pm, arts in specs:
                info = mlflow.pyfunc.log_model(name=kind, python_model=pm,
                                               artifacts={**arts, "resume_config": str(cfg_json)},
                                               signature=model_signature(kind, run_cfg),
                                               code_paths=_code_paths(),
                                               pip_requirements=_pip_requirements(),
                                               registered_model_name=name)
                version = str(info.registered_model_version)
                client.set_model_version_tag(name, version, "test_mrr_at_10", str(mrr))
                client.set_model_version_tag(name, version, "run_dir", str(run_dir))
                client.set_model_version_tag(name, version, "dataset", str(results["data"]["source"]))
                out[kind] = {"name": name, "version": version, "uri": f"models:/{name}/{version}"}
    # champion: compare with the MRR@10 recorded on the current alias holder (per name; both move together)
    best_other = -math.inf
    for kind in ("summarizer", "retriever"):
        name = out[kind]["name"]
        try:
            mv = client.get_model_version_by_alias(name, t.alias)
            best_other = max(best_other, float(mv.tags.get("test_mrr_at_10", "-inf")))
        except mlflow.exceptions.MlflowException:
            pass
    champion = mrr >= best_other
    for kind in ("summarizer", "retriever"):
        if champion:
            client.set_registered_model_alias(out[kind]["name"], t.alias, out[kind]["version"])
        out[kind]["champion"] = champion
        out[kind]["alias_uri"] = f"models:/{out[kind]['name']}@{t.alias}"
    out["previous_champion_mrr@10"] = None if best_other == -math.inf else best_other
    st["registered"] = out
    _save_state(run_dir, st)
    return out
