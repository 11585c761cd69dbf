"""`register_models`: the run's final summarizer and retriever logged as pyfunc models (signature, code_paths,
requirements, the serving bundle) and registered; the champion alias rule."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc

from resume.config import ResumeConfig
from resume.run_dir import read_results
from resume.tracking.pyfunc import RetrieverModel, SummarizerModel
from resume.tracking.runs import _client, _fluent, _run_exists, _save_state, _state, start_parent


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
    return [str(Path(__file__).resolve().parents[1])]  # src/resume (this file is src/resume/tracking/registry.py)


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
