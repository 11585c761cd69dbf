"""resume.run_dir: the run directory's contracts shared by `resume run` and the KFP components.

    .venv/bin/pytest tests/test_run_dir.py -q
"""

from __future__ import annotations

import json
import random

import pytest

from resume import kfp_ops
from resume import run_dir as rd
from resume.config import ResumeConfig
from resume.io import write_jsonl


def test_reward_log_reader_direct_nested_absent(tmp_path):
    rows = [{"step": 1, "reward_mean": 0.25}, {"step": 2, "reward_mean": 0.75}]
    write_jsonl(tmp_path / "direct" / rd.REWARD_LOG, rows)
    write_jsonl(tmp_path / "artifact" / "model" / rd.REWARD_LOG, rows)  # a KFP Model artifact's sub-dir
    assert rd.read_reward_log(tmp_path / "direct") == rows
    assert rd.read_reward_log(tmp_path / "artifact") == rows
    assert rd.read_reward_log(tmp_path / "nowhere") == [] and rd.read_reward_log(tmp_path / "artifact" / "x") == []
    assert rd.mean_reward(rows) == pytest.approx(0.5)


def test_mean_reward_keys_and_non_finite_rows():
    assert rd.mean_reward([]) is None
    assert rd.mean_reward([{"reward": 1.0}, {"rewards/mean": 0.0}, {"reward_mean": float("nan")}, {"x": 3}]) == 0.5
    assert rd.reward_key({"reward": "high"}) is None


def test_stage_config_is_a_copy_with_sampling_off():
    cfg = ResumeConfig()
    cfg.data.path, cfg.data.max_train_queries, cfg.data.distractors = "src", 10, 5
    s = rd.stage_config(cfg, "/run/data")
    assert (s.data.path, s.data.max_train_queries, s.data.max_eval_queries, s.data.distractors) == \
        ("/run/data", None, None, None)
    assert (cfg.data.path, cfg.data.max_train_queries) == ("src", 10)  # the run's config is untouched


def test_seed_everything_repeats_python_numpy_torch():
    import numpy as np
    import torch

    draws = []
    for _ in range(2):
        rd.seed_everything(7)
        draws.append((random.random(), float(np.random.rand()), float(torch.rand(1))))
    assert draws[0] == draws[1]


@pytest.mark.parametrize("kw,stop,reward_gain,metric_gain,reason", [
    (dict(reward=0.5, prev_reward=None, metric=None, prev_metric=None), False, None, None, ""),  # round 1
    (dict(reward=0.5, prev_reward=0.45, metric=None, prev_metric=None), True, 0.05, None, "eps_reward 0.1"),
    (dict(reward=0.5, prev_reward=0.3, metric=None, prev_metric=None), False, 0.2, None, ""),
    (dict(reward=None, prev_reward=None, metric=0.30, prev_metric=0.28), True, None, 0.02, "eps_metric 0.05"),
    (dict(reward=0.5, prev_reward=0.45, metric=0.30, prev_metric=0.28), True, 0.05, 0.02, "; "),
])
def test_early_stop_rule(kw, stop, reward_gain, metric_gain, reason):
    d = rd.early_stop(eps_reward=0.1, eps_metric=0.05, **kw)
    assert d.stop is stop and d.reason.count("<") == len(d.reasons) and reason in d.reason
    assert d.reward_gain == pytest.approx(reward_gain) and d.metric_gain == pytest.approx(metric_gain)
    off = rd.early_stop(eps_reward=None, eps_metric=None, **kw)
    assert not off.stop and off.reward_gain is None and off.metric_gain is None


def test_kfp_continue_decision_is_the_budget_plus_the_same_rule(monkeypatch):
    calls = []

    def spy(**kw):
        calls.append(kw)
        return rd.StopDecision(True, ("spy says stop",))

    kw = dict(max_iterations=3, reward=1.0, prev_reward=0.5, metric=0.3, prev_metric=0.2, eps_reward=0.1,
              eps_metric=0.01)
    assert kfp_ops.continue_decision(iteration=1, **kw) == (True, "continue")
    monkeypatch.setattr(rd, "early_stop", spy)
    assert kfp_ops.continue_decision(iteration=1, **kw) == (False, "spy says stop")
    assert calls == [{k: v for k, v in kw.items() if k != "max_iterations"}]
    assert kfp_ops.continue_decision(iteration=3, **kw)[0] is False and len(calls) == 1  # budget first


def test_summaries_reader_one_policy(tmp_path):
    from resume.errors import DataError

    p = tmp_path / rd.SUMMARIES
    write_jsonl(p, [{"_id": "a", "summary": "first"}, {"_id": 7, "summary": "seven"}, {"_id": "a", "summary": "last"},
                    {"_id": "x", "summary": ""}])
    assert rd.read_summaries(p) == {"a": "last", "7": "seven", "x": ""}  # a repeated id keeps its last row
    assert list(rd.corpus_summaries(["7", "a"], p).items()) == [("7", "seven"), ("a", "last")]  # corpus order
    with pytest.raises(DataError, match=r"1 of 3 corpus documents have no summary \(e.g. \['b'\]\)"):
        rd.corpus_summaries(["a", "b", "7"], p)
    for text, match in (('{"_id": "a", "summary": null}\n', r":1: \"summary\" is NoneType; expected a string"),
                        ('{"summary": "s"}\n', r":1: expected an object with an \"_id\""),
                        ('{"_id": "a", "summary": "s"}\nnot json\n', "not valid JSON Lines")):
        p.write_text(text)
        with pytest.raises(DataError, match=match):
            rd.read_summaries(p)
    p.write_bytes(b'{"_id": "a", "summary": "\xff"}\n')
    with pytest.raises(DataError, match="not UTF-8"):
        rd.read_summaries(p)
    with pytest.raises(DataError, match="summaries file not found"):
        rd.read_summaries(tmp_path / "none.jsonl")


def test_summaries_reader_names_the_file_line_and_reads_the_first_rows(tmp_path):
    """Errors name the file's own line (blank lines count); `limit` reads the first rows only, as written (the
    report's and the tracker's samples), and stops before a bad row further down."""
    from resume.errors import DataError

    p = tmp_path / rd.SUMMARIES
    good = [{"_id": "a", "summary": "A", "n_tokens": 3, "has_separator": True}, {"_id": 7, "summary": ""},
            {"_id": "a", "summary": "again"}]
    p.write_text("".join(json.dumps(r) + "\n" for r in good) + "\n" + '{"_id": "b", "summary": 5}\n')
    rows = list(rd.iter_summary_rows(p, limit=3))
    assert rows == [good[0], {"_id": "7", "summary": ""}, good[2]]  # every key kept, _id a string, repeats kept
    assert list(rd.iter_summary_rows(p, limit=1)) == [good[0]] and list(rd.iter_summary_rows(p, limit=0)) == []
    with pytest.raises(DataError, match=r"summaries.jsonl:5: \"summary\" is int; expected a string") as e:
        rd.read_summaries(p)
    assert (e.value.path, e.value.line) == (str(p), 5)
    p.write_text('{"_id": "a", "summary": "s"}\n\n{"_id": "b", "summary": "s"\n')
    with pytest.raises(DataError, match=r"summaries.jsonl:3: not valid JSON Lines"):
        rd.read_summaries(p)
    p.write_bytes(b'{"_id": "a", "summary": "s"}\n{"_id": "b", "summary": "\xff"}\n')
    with pytest.raises(DataError, match=r"summaries.jsonl:2: not UTF-8"):
        rd.read_summaries(p)
    p.write_text('{"_id": true, "summary": "s"}\n')
    with pytest.raises(DataError, match=r":1: expected an object with an \"_id\""):
        rd.read_summaries(p)
