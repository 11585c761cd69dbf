"""The run directory's contracts, shared by both orchestrators (`resume run` and the KFP components).

    from resume import run_dir as rd
    rd.read_reward_log(rd.iter_dir(run, 1) / rd.SUMMARIZER)      # [{"step": 1, "reward_mean": ...}, ...]
    rd.early_stop(reward=0.31, prev_reward=0.30, metric=None, prev_metric=None, eps_reward=0.05, eps_metric=None)

What lives here, and nowhere else:

* the names of the files and directories of a run directory (DESIGN §2), one constant each;
* the metric names (`METRICS`) and the one primary metric (`PRIMARY_METRIC`, MRR@10: the metric of the
  early-stopping rule, of the KFP evaluate task's return value and of the paired tests' default);
* the one reader of summaries.jsonl (`read_summaries`, `corpus_summaries`) with one policy: every row an
  object with an `_id` and a string `summary`; every corpus document needs one (ids outside the corpus
  are ignored; a repeated id keeps its last row);
* the reward log reader (`read_reward_log`) and the mean GRPO reward of a round (`mean_reward`);
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
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resume.errors import DataError
from resume.io import iter_jsonl

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
REWARD_LOG = "reward_log.jsonl"        # <summarizer>/reward_log.jsonl: one row per GRPO step
ABLATIONS = "ablations"                # ablations/<name>/iter_XX/...

METRICS = ("mrr@10", "ndcg@10", "recall@100", "recall@1000")
PRIMARY_METRIC = "mrr@10"


def iter_dir(root: str | Path, t: int) -> Path:
    """<root>/iter_XX, the directory of iteration t (t = 0: the fixed summary S_0)."""
    return Path(root) / f"iter_{t:02d}"


# ------------------------------------------------------------------------------------- summaries


def read_summaries(path: str | Path) -> dict[str, str]:
    """doc id -> summary of a summaries.jsonl ({"_id", "summary", ...} per line, as `resume summarize`, the
    loop and the lead control write it). A repeated id keeps its last row. Raises DataError (file and line)
    for a missing file, a line that is not JSON, a row without an `_id` or with a summary that is not a
    string, and a file that is not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, f"summaries file not found; expected a {SUMMARIES} from `resume summarize`")
    found: dict[str, str] = {}
    try:
        for n, row in enumerate(iter_jsonl(path), start=1):
            if not isinstance(row, dict) or not isinstance(row.get("_id"), str | int):
                raise DataError(path, n, 'expected an object with an "_id" (string) and a "summary"')
            summary = row.get("summary")
            if not isinstance(summary, str):
                raise DataError(path, n, f'"summary" is {type(summary).__name__}; expected a string')
            found[str(row["_id"])] = summary
    except json.JSONDecodeError as e:
        raise DataError(path, None, f"not valid JSON Lines ({e})") from None
    except UnicodeDecodeError:
        raise DataError(path, None, "not UTF-8 text") from None
    return found


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
