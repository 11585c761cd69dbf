"""The run directory's contracts, shared by both orchestrators (`resume run` and the KFP components).

    from resume import run_dir as rd
    rd.read_reward_log(rd.iter_dir(run, 1) / rd.SUMMARIZER)      # [{"step": 1, "reward_mean": ...}, ...]
    rd.early_stop(reward=0.31, prev_reward=0.30, metric=None, prev_metric=None, eps_reward=0.05, eps_metric=None)

What lives here, and nowhere else:

* the names of the files and directories of a run directory (DESIGN §2), one constant each;
* the metric names (`METRICS`) and the one primary metric (`PRIMARY_METRIC`, MRR@10: the metric of the
  early-stopping rule, of the KFP evaluate task's return value and of the paired tests' default);
* the one reader of summaries.jsonl (`iter_summary_rows`; `read_summaries` and `corpus_summaries` are
  views of it) with one policy: every row an object with an `_id` and a string `summary` (empty allowed);
  a bad row is a DataError naming the file and its line; every corpus document needs one (ids outside the
  corpus are ignored; a repeated id keeps its last row);
* the reward log reader (`read_reward_log`) and the mean GRPO reward of a round (`mean_reward`);
* the typed schema of results.json (`Results`, version `RESULTS_SCHEMA_VERSION`) and its only writer and
  reader (`write_results`, `read_results`), which check it field by field;
* how a run file holds paths (`run_relative`, `resolve_run_paths`): a path inside the run directory is
  written as `./<path relative to the run directory>` (the run directory itself as `.`), so a run directory
  can be moved, copied or committed; readers resolve such paths against the run directory (results.json:
  the directory read from; an eval dir's eval_info.json records where its run directory is, relative to
  itself: `resume.evaluate.write_eval_info` / `read_eval_info`). Hub ids and paths outside the run
  directory are written as they are;
* the stage config (`stage_config`: data.path = the materialised working set, the sampling knobs off) and
  the per-stage seeding (`seed_everything`), so both orchestrators give a stage the same inputs;
* the early-stopping rule (`early_stop`), which `resume.loop.iterate` and `resume.kfp_ops.continue_decision`
  both call.

Light at import: the standard library and `resume.io` only (numpy and torch are seeded when present).
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import sys
import types
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    NotRequired,
    Required,
    TypedDict,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

from resume.errors import DataError
from resume.io import atomic_write_json, iter_jsonl

if TYPE_CHECKING:
    from resume.config import ResumeConfig

# ------------------------------------------------------------------------------------------ names

CONFIG = "config.yaml"                 # the run's resolved config (a rerun must match it)
DATA = "data"                          # the working set, a BEIR dir written once
RESULTS = "results.json"               # everything the report and the tracker read
METRICS_FILE = "metrics.json"          # test metrics per system and ablation (also one per eval dir)
REPORT = "report.md"
STAGES_DIR = "_stages"                 # <scope>/_stages/<stage>.json: a stage's commit marker
SUMMARIZER = "summarizer"              # iter_XX/summarizer: f_t
SUMMARIES = "summaries.jsonl"          # iter_XX/summaries.jsonl: S_t (also iter_00, lead/, ood/<system>/)
RETRIEVER = "retriever"                # iter_XX/retriever: g_t
EVAL_DEV = "eval"                      # iter_XX/eval: g_t over S_t on the dev split
EVAL_TEST = "eval_test"                # <system>/eval_test: the test split
EVAL_INFO = "eval_info.json"           # <eval dir>/eval_info.json: what an evaluation indexed
REWARD_LOG = "reward_log.jsonl"        # <summarizer>/reward_log.jsonl: one row per GRPO step
ABLATIONS = "ablations"                # ablations/<name>/iter_XX/...

METRICS = ("mrr@10", "ndcg@10", "recall@100", "recall@1000")
PRIMARY_METRIC = "mrr@10"


def iter_dir(root: str | Path, t: int) -> Path:
    """<root>/iter_XX, the directory of iteration t (t = 0: the fixed summary S_0)."""
    return Path(root) / f"iter_{t:02d}"


# ------------------------------------------------------------------------------------- summaries


def iter_summary_rows(path: str | Path, *, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """The rows of a summaries.jsonl ({"_id", "summary", ...} per line, as `resume summarize`, the loop and
    the lead control write it), checked one by one, in file order, `_id` as a string, the other keys as
    written; blank lines are skipped. `limit`: stop after that many rows (the first rows of the file; a
    repeated id is not merged here), None = all.

    The one reader of the format: raises DataError for a missing file and, naming the file and the line,
    for a line that is not UTF-8 or not JSON, a row without an `_id` (string or integer) and a row whose
    `summary` is not a string (missing, null, a number ...; an empty string is a summary)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, f"summaries file not found; expected a {SUMMARIES} from `resume summarize`")
    if limit is not None and limit <= 0:
        return
    n_rows = 0
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(path, n, "not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(path, n, f"not valid JSON Lines ({e.msg}, column {e.colno})") from None
            if not isinstance(row, dict) or not isinstance(row.get("_id"), str | int) or isinstance(row["_id"], bool):
                raise DataError(path, n, 'expected an object with an "_id" (string) and a "summary"')
            summary = row.get("summary")
            if not isinstance(summary, str):
                raise DataError(path, n, f'"summary" is {type(summary).__name__}; expected a string')
            yield {**row, "_id": str(row["_id"])}
            n_rows += 1
            if limit is not None and n_rows >= limit:
                return


def read_summaries(path: str | Path) -> dict[str, str]:
    """doc id -> summary of a summaries.jsonl, read by `iter_summary_rows` (its errors); a repeated id keeps
    its last row."""
    return {row["_id"]: row["summary"] for row in iter_summary_rows(path)}


def corpus_summaries(corpus_ids, path: str | Path) -> dict[str, str]:
    """doc id -> summary for every id of `corpus_ids` (the working set's corpus), in its order; ids of the
    file outside the corpus are ignored. A corpus document without a summary is a DataError: a retriever
    trained or evaluated on part of the corpus would give numbers that look right and are not."""
    found = read_summaries(path)
    ids = list(corpus_ids)
    missing = [d for d in ids if d not in found]
    if missing:
        raise DataError(path, None, f"{len(missing)} of {len(ids)} corpus documents have no summary "
                                    f"(e.g. {missing[:3]}); summarise the same working set first")
    return {d: found[d] for d in ids}


# ------------------------------------------------------------------------------------- reward log


def read_reward_log(summarizer_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of the reward log of a GRPO round (one per optimiser step); [] when there is none.

    `summarizer_dir`: the model directory GRPO returned (`<summarizer>/reward_log.jsonl`), or a directory
    holding it deeper (a KFP Model artifact whose model sits in a sub-directory): the first match in
    sorted order is read.
    """
    d = Path(summarizer_dir)
    p = d / REWARD_LOG
    if not p.is_file():
        hits = sorted(d.rglob(REWARD_LOG)) if d.is_dir() else []
        if not hits:
            return []
        p = hits[0]
    return list(iter_jsonl(p))


def reward_key(row: dict[str, Any]) -> str | None:
    """The key holding a reward-log row's mean reward (the names TRL versions and our log have used)."""
    for k in ("reward", "reward_mean", "rewards/mean", "mean_reward"):
        if isinstance(row.get(k), int | float):
            return k
    return None


def mean_reward(rows: list[dict[str, Any]]) -> float | None:
    """Mean GRPO reward of a round: the mean over its logged steps of each step's mean (None: no step)."""
    vals = [float(r[k]) for r in rows if (k := reward_key(r)) is not None and math.isfinite(float(r[k]))]
    return sum(vals) / len(vals) if vals else None


# ------------------------------------------------------------------------------- stage config, seeds


def stage_config(cfg: ResumeConfig, data_dir: str | Path) -> ResumeConfig:
    """The config every stage gets (a copy of `cfg`): data.path = the materialised
    working set `data_dir`, the sampling knobs off (the working set is already the sample)."""
    c = copy.deepcopy(cfg)
    c.data.path = str(data_dir)
    c.data.max_train_queries = c.data.max_eval_queries = c.data.distractors = None
    return c


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (torch when it is imported) just before a stage, so a stage's result
    does not depend on what ran before it in the same process."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:  # pragma: no cover
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


# ---------------------------------------------------------------------------------- early stopping


@dataclass(frozen=True)
class StopDecision:
    """The early-stopping verdict after an iteration has completed.

    Attributes:
        stop: whether the loop ends here (this iteration is the final one; nothing is rolled back).
        reasons: why, one sentence per rule that fired (empty when `stop` is False).
        reward_gain: mean GRPO reward of this round minus the previous round's (None: rule off or no
            previous round).
        metric_gain: dev PRIMARY_METRIC of this iteration minus the previous iteration's (None: rule off
            or nothing to compare with).
    """

    stop: bool
    reasons: tuple[str, ...] = ()
    reward_gain: float | None = None
    metric_gain: float | None = None

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def early_stop(*, reward: float | None, prev_reward: float | None, metric: float | None,
               prev_metric: float | None, eps_reward: float | None, eps_metric: float | None) -> StopDecision:
    """LoopConfig's early-stopping rule (DESIGN §1), decided after an iteration has completed.

    Stop when the mean GRPO reward improved by less than `eps_reward` over the previous round (from
    round 2: round 1 has nothing to compare with), or when the dev PRIMARY_METRIC improved by less than
    `eps_metric` over the previous iteration (iteration 0 = g_0 over S_0, so the rule applies from
    iteration 1). Either rule stops; a None eps disables its rule, a None value skips it.
    """
    reasons: list[str] = []
    reward_gain = metric_gain = None
    if eps_reward is not None and reward is not None and prev_reward is not None:
        reward_gain = reward - prev_reward
        if reward_gain < eps_reward:
            reasons.append(f"mean GRPO reward gain {reward_gain:+.4f} < eps_reward {eps_reward}")
    if eps_metric is not None and metric is not None and prev_metric is not None:
        metric_gain = metric - prev_metric
        if metric_gain < eps_metric:
            reasons.append(f"dev {PRIMARY_METRIC.upper()} gain {metric_gain:+.4f} < eps_metric {eps_metric}")
    return StopDecision(bool(reasons), tuple(reasons), reward_gain, metric_gain)


# ------------------------------------------------------------------------------- paths in run files

# The keys of results.json whose string values are paths (or, for `summarizer` / `retriever`, a hub id or
# short name when the model is not one of the run's own). `source` (the dataset the run read) is not one:
# it is always outside the run directory and is kept as the user wrote it.
PATH_KEYS = frozenset({"run_dir", "s0", "dir", "summaries", "summarizer", "retriever", "shared_from", "path"})
_LEGACY_ROOT = "${RUN_DIR}"  # what stage markers held before paths were written relative


def _roots(run_dir: str | Path, *more: str | None) -> list[str]:
    """The absolute spellings of the run directory a path may start with (as given, symlinks resolved, and
    the recorded root of the results, e.g. where a copied run directory was made)."""
    found = [os.path.abspath(run_dir), str(Path(run_dir).resolve())]
    found += [m.rstrip("/") for m in more if m and os.path.isabs(m) and m.rstrip("/")]
    return list(dict.fromkeys(found))


def _walk(obj: Any, keys: Iterable[str] | None, fn, key: str | None = None) -> Any:
    """A copy of `obj` with `fn` applied to every string (keys None) or to the strings under `keys`."""
    if isinstance(obj, dict):
        return {k: _walk(v, keys, fn, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_walk(v, keys, fn, key) for v in obj]
    if isinstance(obj, str) and (keys is None or key in keys):
        return fn(obj)
    return obj


def run_relative(obj: Any, run_dir: str | Path, *, keys: Iterable[str] | None = PATH_KEYS,
                 recorded_root: str | None = None) -> Any:
    """A copy of `obj` (JSON data) with the paths inside `run_dir` (or `recorded_root`) written relative to
    it: `<run_dir>/iter_01/summaries.jsonl` -> `./iter_01/summaries.jsonl`, `<run_dir>` -> `.`.

    Only the strings under `keys` are touched (every string when `keys` is None, as in a stage marker).
    `obj` holds paths as the code uses them: absolute, or relative to the working directory. A relative
    path that starts with `./` and lies outside the run directory loses the `./` (the same path from the
    working directory), so that `./` always means "inside the run directory" in a written file."""
    roots = _roots(run_dir, recorded_root)

    def rel(s: str) -> str:
        p = s if os.path.isabs(s) else (os.path.abspath(s) if s.startswith("./") else None)
        for root in roots if p is not None else ():
            if p == root:
                return "."
            if p.startswith(root + "/"):
                return "./" + p[len(root) + 1:]
        return s[2:] if s.startswith("./") else s

    return _walk(obj, keys, rel)


def resolve_run_paths(obj: Any, run_dir: str | Path, *, keys: Iterable[str] | None = PATH_KEYS,
                      recorded_root: str | None = None) -> Any:
    """The inverse of `run_relative`: a copy of `obj` with `.` and `./...` resolved against `run_dir`.

    Also relocates the paths of files written before paths were relative: `${RUN_DIR}/...` (old stage
    markers) and absolute paths under `recorded_root` (the `run_dir` an old results.json recorded, e.g. of
    a run directory since moved or copied) are re-rooted at `run_dir`. Anything else is kept."""
    root = os.path.abspath(run_dir)
    old = [r for r in (_LEGACY_ROOT, recorded_root and recorded_root.rstrip("/")) if r]

    def res(s: str) -> str:
        if s == ".":
            return root
        if s.startswith("./"):
            return os.path.join(root, s[2:])
        for r in old:
            if s == r or s.startswith(r + "/"):
                return root + s[len(r):]
        return s

    return _walk(obj, keys, res)


def run_path(run_dir: str | Path, value: str) -> str:
    """One path value of a run file, resolved against `run_dir` (see `resolve_run_paths`)."""
    return resolve_run_paths(value, run_dir, keys=None)


# ------------------------------------------------------------------------------------- results.json

RESULTS_SCHEMA_VERSION = 1  # version 0: files without `schema_version`, absolute paths (still read)

Metrics = dict[str, float]  # METRICS -> value


class FusionChoice(TypedDict, total=False):
    """A fused system's document-view weight (`evaluate.choose_fusion_weight`'s result, or fixed)."""

    weight: Required[float]
    chosen_on: str | None
    metric: str
    value: float
    split: str
    curve: dict[str, float]


class SystemResult(TypedDict, total=False):
    """`systems.<name>` (and `ood.systems.<name>`): one row of the results table."""

    test: Required[Metrics | None]
    dev: Metrics | None
    dir: str                      # the eval dir (metrics.json, per_query.json, run.trec, eval_info.json)
    fusion: FusionChoice          # fused systems
    fusion_weight: float          # OOD fused systems: the in-domain weight
    retriever: str                # full_doc_control: its last round's retriever
    rounds: int                   # full_doc_control: fine-tuning rounds (= the loop's iterations)


class Quality(TypedDict, total=False):
    """`resume.quality.quality_signals` of one summary set."""

    text: dict[str, Any]
    fixed_judge: dict[str, Any]


class IterationResult(TypedDict, total=False):
    """`iterations[i]`: iteration t of Algorithm 1 (f_t, S_t, g_t and their evaluations)."""

    iteration: Required[int]
    dir: Required[str]            # iter_XX
    summarizer: Required[str]     # f_t
    summaries: Required[str]      # S_t
    retriever: Required[str]      # g_t (g_{t-1} = g_0 without retrieval adaptation)
    test: Required[Metrics | None]
    dev: Metrics | None
    reward_mean: float | None
    reward_gain: float
    dev_gain: float
    grpo_steps: int
    quality: Quality | None
    summary_len: float
    separator_rate: float
    n_summaries: int
    shared_from: str              # an ablation's iteration 1 taken from the main loop


class StopInfo(TypedDict):
    iteration: int | None         # the iteration after which early stopping ended the loop (None: it did not)
    reason: str


class FinalModels(TypedDict):
    summarizer: str               # f_T
    retriever: str                # g_T


class LoopResult(TypedDict, total=False):
    """`ablations.<name>`: a loop of its own (`resume.loop.iterate`'s result)."""

    iterations: Required[list[IterationResult]]
    stopped: Required[StopInfo]
    final: Required[FinalModels]
    test: Required[Metrics | None]
    dev: Metrics | None
    n_iterations: Required[int]


class DataInfo(TypedDict, total=False):
    """`data`: the working set (`ood.working_set`: the OOD one)."""

    source: Required[str]         # data.path as configured (outside the run directory)
    n_docs: int
    n_docs_source: int
    queries: dict[str, int]
    judgements: dict[str, int]


class OODResult(TypedDict, total=False):
    """`ood`: the in-domain models on `data.ood`, no further training."""

    dataset: Required[str]
    split: Required[str]
    systems: Required[dict[str, SystemResult]]
    path: str                     # the OOD BEIR dir evaluated (<run_dir>/ood/data for an OOD working set)
    quality: dict[str, Quality]
    working_set: DataInfo | None


class Results(TypedDict, total=False):
    """results.json: everything the report, the tracker and the registry read about a run.

    Written by `resume run` (`resume.loop`) and, for the last iteration only, by the KFP register-model
    component (`source: "kfp"`), through `write_results`; read through `read_results`. The keys marked
    Required are in both; the others only where the run has them."""

    schema_version: Required[int]
    name: Required[str]
    run_dir: Required[str]        # `.` on disk; the directory read from, once read
    data: Required[DataInfo]
    models: Required[dict[str, str]]  # f_0 and g_0 as configured
    splits: Required[dict[str, str]]  # train / dev / test split names
    systems: Required[dict[str, SystemResult]]
    iterations: Required[list[IterationResult]]
    final: Required[FinalModels | None]  # None: the run had no iterative loop
    source: str                   # "kfp" when the pipeline's register-model wrote it
    n_iterations: int
    stopped: StopInfo | None
    started: str
    finished: str
    seconds_this_invocation: float
    seconds_stages: float
    device: str
    s0: str | None                # S_0
    s0_dev: Metrics | None
    s0_quality: Quality | None
    lead_quality: Quality | None
    env: dict[str, Any]
    ood: OODResult | None
    ablations: dict[str, LoopResult]
    stage_seconds: dict[str, float]
    stage_cpu_seconds: dict[str, float]
    early_stopping: dict[str, float | int | None]


def _describe(tp: Any) -> str:
    if is_typeddict(tp):
        return "an object"
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if origin is dict:
        return "an object"
    if origin is list:
        return "a list"
    return {type(None): "null", float: "a number", int: "an integer", str: "a string", bool: "true/false"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _required_keys(tp: Any) -> set[str]:
    """The required keys of TypedDict `tp`, read from its annotations: `__required_keys__` misses
    `Required[...]` when annotations are strings (`from __future__ import annotations`, Python < 3.14)."""
    hints = get_type_hints(tp, include_extras=True)
    return {k for k, h in hints.items()
            if get_origin(h) is Required or (tp.__total__ and get_origin(h) is not NotRequired)}


def _conforms(value: Any, tp: Any, field: str, errors: list[str]) -> bool:
    """Whether `value` has type `tp` (a TypedDict, a union, dict/list of, or a JSON scalar); the first
    mismatch, named by its dotted field, is appended to `errors`."""
    if tp is Any:
        return True
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in get_args(tp):
            if _conforms(value, arg, field, []):
                return True
        # report the deepest mismatch when the value is the right kind of container, else the kinds
        nested = [a for a in get_args(tp) if (is_typeddict(a) or get_origin(a) in (dict, list))]
        if len(nested) == 1 and isinstance(value, dict | list):
            return _conforms(value, nested[0], field, errors)
        errors.append(f"{field}: expected {_describe(tp)}, got {json.dumps(value)[:60]}")
        return False
    if is_typeddict(tp) or origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{field}: expected an object, got {json.dumps(value)[:60]}")
            return False
        if origin is dict:
            vt = get_args(tp)[1]
            return all(_conforms(v, vt, f"{field}.{k}", errors) for k, v in value.items())
        missing = sorted(k for k in _required_keys(tp) if k not in value)
        if missing:
            errors.append(f"{field + '.' if field else ''}{missing[0]}: missing (required)")
            return False
        hints = get_type_hints(tp)
        return all(_conforms(v, hints[k], f"{field + '.' if field else ''}{k}", errors)
                   for k, v in value.items() if k in hints)
    if origin is list:
        if not isinstance(value, list):
            errors.append(f"{field}: expected a list, got {json.dumps(value)[:60]}")
            return False
        return all(_conforms(v, get_args(tp)[0], f"{field}[{i}]", errors) for i, v in enumerate(value))
    ok = {float: isinstance(value, int | float) and not isinstance(value, bool),
          int: isinstance(value, int) and not isinstance(value, bool),
          bool: isinstance(value, bool), str: isinstance(value, str), type(None): value is None}.get(tp, True)
    if not ok:
        errors.append(f"{field}: expected {_describe(tp)}, got {json.dumps(value)[:60]}")
    return ok


def check_results(results: Any, path: str | Path) -> Results:
    """`results` if it matches the `Results` schema, else a DataError naming `path` and the first field
    that does not (e.g. `systems.iterative.test: missing (required)`). Keys the schema does not name are
    allowed (a newer writer may add some); a schema_version above RESULTS_SCHEMA_VERSION is refused."""
    if not isinstance(results, dict):
        raise DataError(path, None, f"expected a JSON object, got {type(results).__name__}")
    version = results.get("schema_version", 0)  # 0: written before the schema had a version
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= RESULTS_SCHEMA_VERSION:
        raise DataError(path, None, f"schema_version: {version!r} is not one this version of resume reads "
                                    f"(0..{RESULTS_SCHEMA_VERSION}); a newer resume wrote it?")
    errors: list[str] = []
    if not _conforms({"schema_version": version, **results}, Results, "", errors):
        raise DataError(path, None, f"field {errors[0]} (results.json schema {RESULTS_SCHEMA_VERSION}, "
                                    "resume.run_dir.Results)")
    return typing.cast(Results, results)


def write_results(run_dir: str | Path, results: dict[str, Any]) -> Path:
    """Write <run_dir>/results.json (atomically) after checking it against `Results`; returns its path.

    `results` holds paths as the code uses them (absolute, as `read_results` returns them); they are
    written relative to the run directory when inside it (`run_relative`), `run_dir` itself as `.`, and
    `schema_version` is set. Raises DataError naming the first bad field (nothing is written then)."""
    path = Path(run_dir) / RESULTS
    recorded = results.get("run_dir") if isinstance(results.get("run_dir"), str) else None
    out = {**run_relative(results, run_dir, recorded_root=recorded), "schema_version": RESULTS_SCHEMA_VERSION,
           "run_dir": "."}
    check_results(out, path)
    atomic_write_json(path, out)
    return path


def read_results(run_dir: str | Path) -> Results:
    """<run_dir>/results.json, checked against `Results`, with its paths resolved against `run_dir`
    (`run_dir` itself = the directory read from, absolute). Raises DataError for a missing file, a file
    that is not JSON or not UTF-8, and the first field that does not match the schema."""
    path = Path(run_dir) / RESULTS
    if not path.is_file():
        raise DataError(path, None, f"not found; `resume run --out {run_dir}` (or the pipeline's "
                                    "register-model step) writes it")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(path, None, f"not valid JSON ({e})") from None
    except UnicodeDecodeError:
        raise DataError(path, None, "not UTF-8 text") from None
    check_results(raw, path)
    recorded = raw["run_dir"] if os.path.isabs(raw["run_dir"]) else None  # version 0: absolute paths
    out = resolve_run_paths(raw, run_dir, recorded_root=recorded)
    out["run_dir"] = os.path.abspath(run_dir)
    return typing.cast(Results, out)
