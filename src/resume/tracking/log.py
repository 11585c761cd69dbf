"""`log_run`: a finished run directory's results.json, reward logs and eval dirs into the parent run and its
nested runs (`iter_XX`, `system/<name>`, `ablation/<name>`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from resume.config import ResumeConfig
from resume.run_dir import iter_summary_rows, read_results
from resume.tracking.datasets import _log_datasets, _used, working_set_datasets
from resume.tracking.live import _grpo_series
from resume.tracking.runs import _child, _client, _log_metrics, _missing, _save_state, _state, start_parent


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
            for r in iter_summary_rows(p, limit=n):  # the one reader, first n rows
                rows.append({"set": name, "_id": r["_id"], "summary": r.get("summary"),
                             "n_tokens": r.get("n_tokens"), "has_separator": r.get("has_separator")})
    from resume.io import write_jsonl

    write_jsonl(out, rows)
    return out


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
