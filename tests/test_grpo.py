"""Tests of resume.grpo: the GRPO dataset, TRL wiring, reward logging, in-process and Ray Train launchers.

    .venv/bin/pytest tests/test_grpo.py -q      # tiny models: GRPO in-process and through Ray Train

The tiny summarizer has random weights: sampled completions almost never contain `</think>`, so every
reward would be -2, every advantage 0 and nothing would move. The tests therefore bias sampling toward
the separator token (`generation_kwargs.sequence_bias`, a TRL pass-through): completions then differ in
summary length and content, rewards differ within a group, and the policy gradient is non-zero.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from transformers import TrainerCallback

from resume.config import load_config
from resume.grpo import (
    REWARD_INPUTS_LOG,
    REWARD_LOG,
    build_grpo_dataset,
    grpo_train,
    judge_doc_ids,
    train_positives,
    trl_config,
)

ROOT = Path(__file__).resolve().parents[1]
LOG_KEYS = {"step", "reward_mean", "reward_std", "structure_mean", "retrieval_mean", "delta_mean", "length_mean",
            "separator_rate"}


@pytest.fixture(scope="module")
def cfg():
    return load_config(ROOT / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def ds(cfg, cranfield_dir):
    from resume.data import load_beir, select_working_set

    return select_working_set(load_beir(cranfield_dir), cfg.data)


@pytest.fixture(scope="module")
def tok():
    from resume.models import load_tokenizer

    return load_tokenizer("tiny-causal-lm")


def _bias(tok) -> dict:
    return {"generation_kwargs": {"sequence_bias": [[[tok.convert_tokens_to_ids("</think>")], 4.0]]}}


def _weights(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


def test_dataset_rows(cfg, ds, tok):
    from resume.summarizer import build_prompt

    rows = build_grpo_dataset(cfg, ds, tok)
    pos = train_positives(ds, cfg.data.train_split)
    assert 0 < len(rows) <= cfg.grpo.max_train_docs
    train_q = set(ds.qrels[cfg.data.train_split])
    for r in rows:
        assert set(r) == {"prompt", "doc_id", "document", "pos_query_ids", "neg_query_ids"}
        assert r["pos_query_ids"] == pos[r["doc_id"]] and r["pos_query_ids"]
        assert all(ds.qrels[cfg.data.train_split][q][r["doc_id"]] > 0 for q in r["pos_query_ids"])
        assert len(r["neg_query_ids"]) == min(cfg.reward.num_negatives, len(train_q) - len(r["pos_query_ids"]))
        assert not set(r["neg_query_ids"]) & set(r["pos_query_ids"]) and set(r["neg_query_ids"]) <= train_q
        assert r["prompt"] == build_prompt(tok, r["document"], cfg)
    assert build_grpo_dataset(cfg, ds, tok) == rows  # seeded


def test_make_reward_titles_follow_reward_summary_title(cfg, ds, tok):
    """grpo-train's reward scores title + summary exactly when `reward.summary_title` is set."""
    from resume.config import load_config
    from resume.grpo import make_reward

    rows = build_grpo_dataset(cfg, ds, tok)[:3]
    assert make_reward(cfg, ds, rows, "tiny-encoder", "cpu").titles is None  # the paper's reward
    on = load_config(ROOT / "configs" / "tiny.yaml", ["reward.summary_title=true"])
    titles = make_reward(on, ds, rows, "tiny-encoder", "cpu").titles
    assert titles == {r["doc_id"]: ds.corpus[r["doc_id"]]["title"] for r in rows} and any(titles.values())


def test_dataset_cap_and_no_negatives(ds, tok):
    c = load_config(ROOT / "configs" / "tiny.yaml", ["grpo.max_train_docs=3", "reward.use_negatives=false"])
    rows = build_grpo_dataset(c, ds, tok)
    assert len(rows) == 3 and all(r["neg_query_ids"] == [] for r in rows)
    full = load_config(ROOT / "configs" / "tiny.yaml", ["grpo.max_train_docs=null"])
    held_out = judge_doc_ids(full, ds)
    assert len(held_out) == full.grpo.judge_docs > 0
    rows = build_grpo_dataset(full, ds, tok)  # every training document but the fixed judge's
    assert {r["doc_id"] for r in rows} == set(train_positives(ds, full.data.train_split)) - set(held_out)
    none = load_config(ROOT / "configs" / "tiny.yaml", ["grpo.max_train_docs=null", "grpo.judge_docs=0"])
    assert judge_doc_ids(none, ds) == []
    assert len(build_grpo_dataset(none, ds, tok)) == len(train_positives(ds, none.data.train_split))


def test_trl_config_mapping(cfg, tmp_path):
    args = trl_config(load_config(ROOT / "configs" / "tiny.yaml", ["grpo.beta=0.5", "grpo.loss_type=dapo"]),
                      tmp_path, "cpu")
    assert args.use_cpu and not args.bf16 and args.beta == 0.5 and args.loss_type == "dapo"
    assert args.scale_rewards == "group" and not args.mask_truncated_completions
    dr = trl_config(load_config(ROOT / "configs" / "tiny.yaml", ["grpo.scale_rewards=none",
                                                                 "grpo.mask_truncated_completions=true"]), tmp_path, "cpu")
    assert dr.scale_rewards == "none" and dr.mask_truncated_completions
    assert args.num_generations == cfg.grpo.num_generations and args.max_steps == cfg.grpo.max_steps
    assert args.generation_batch_size % args.num_generations == 0
    assert args.output_dir == str(tmp_path / "checkpoints")


def _check_run(out: Path, rows: list[dict], steps: int, init: str) -> None:
    log = [json.loads(x) for x in (out / REWARD_LOG).read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, steps + 1))
    for r in log:
        assert LOG_KEYS <= set(r), set(r)
        assert -2.0 <= r["reward_mean"] <= 2.0 and 0.0 <= r["separator_rate"] <= 1.0
    by_doc = {r["doc_id"]: r for r in rows}
    seen = [json.loads(x) for x in (out / REWARD_INPUTS_LOG).read_text().splitlines()]
    assert seen
    for s in seen:  # the reward function got each document's own positive and negative queries
        assert s["pos_query_ids"] == by_doc[s["doc_id"]]["pos_query_ids"]
        assert s["neg_query_ids"] == by_doc[s["doc_id"]]["neg_query_ids"]
    before, after = _weights(init), _weights(out)
    assert set(before) <= set(after) or set(after) <= set(before)
    changed = [k for k in before if k in after and not before[k].equal(after[k])]
    assert changed, "no parameter changed after train()"
    for f in ("config.json", "tokenizer.json", "trainer_state.json"):
        assert (out / f).is_file(), f
    assert (out / "chat_template.jinja").is_file() or "chat_template" in (out / "tokenizer_config.json").read_text()


def test_grpo_two_steps_in_process(tmp_path, cfg, ds, tok, cranfield_dir):
    from resume.models import resolve_model

    out = tmp_path / "summarizer"
    res = grpo_train(cfg, data_dir=cranfield_dir, summarizer="tiny-causal-lm", retriever="tiny-encoder",
                     out_dir=out, trl_args=_bias(tok), record_reward_inputs=True)
    assert res == str(out)
    _check_run(out, build_grpo_dataset(cfg, ds, tok), 2, resolve_model("tiny-causal-lm"))
    # the trained dir loads as a summarizer again
    from resume.models import load_causal_lm
    from resume.summarizer import generate_batch

    model, t2 = load_causal_lm(str(out))
    assert len(generate_batch(model, t2, ["a document"], cfg, max_new_tokens=4)) == 1


class _CrashAfterFirstSave(TrainerCallback):
    """Simulates a crash: raise right after checkpoint-1 is on disk."""

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 1:
            raise RuntimeError("simulated crash after checkpoint-1")


def test_grpo_resumes_from_checkpoint(tmp_path, tok, cranfield_dir):
    c = load_config(ROOT / "configs" / "tiny.yaml", ["grpo.max_steps=2", "grpo.save_steps=1"])
    out = tmp_path / "summarizer"
    with pytest.raises(RuntimeError, match="simulated crash"):
        grpo_train(c, data_dir=cranfield_dir, summarizer="tiny-causal-lm", retriever="tiny-encoder", out_dir=out,
                   trl_args=_bias(tok), callbacks=[_CrashAfterFirstSave()])
    assert (out / "checkpoints" / "checkpoint-1").is_dir()
    assert not (out / "trainer_state.json").exists()
    grpo_train(c, data_dir=cranfield_dir, summarizer="tiny-causal-lm", retriever="tiny-encoder", out_dir=out,
               trl_args=_bias(tok))
    # the finished round keeps the model, not the checkpoints (they only serve a crash mid-training)
    assert not (out / "checkpoints").exists()
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert [json.loads(x)["step"] for x in (out / REWARD_LOG).read_text().splitlines()] == [1, 2]


def test_ray_launcher_missing_ray_is_clear(tmp_path, cranfield_dir, monkeypatch):
    import builtins

    from resume.errors import ResumeError

    real_import = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("no ray")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    c = load_config(ROOT / "configs" / "tiny.yaml", ["grpo.launcher=ray"])
    with pytest.raises(ResumeError, match="ray"):
        grpo_train(c, data_dir=cranfield_dir, summarizer="tiny-causal-lm", retriever="tiny-encoder",
                   out_dir=tmp_path / "x")


def test_grpo_two_steps_through_ray_train(tmp_path, cfg, ds, tok, cranfield_dir):
    """About 20-40 s on 2 shared cores (mostly Ray and worker start-up)."""
    import ray

    from resume.models import resolve_model

    ours = not ray.is_initialized()

    c = load_config(ROOT / "configs" / "tiny.yaml", ["grpo.launcher=ray", "grpo.num_workers=1"])
    out = tmp_path / "summarizer"
    t0 = time.time()
    res = grpo_train(c, data_dir=cranfield_dir, summarizer="tiny-causal-lm", retriever="tiny-encoder",
                     out_dir=out, trl_args=_bias(tok), record_reward_inputs=True)
    print(f"ray grpo: {time.time() - t0:.1f}s")
    assert res == str(out.resolve())
    _check_run(out, build_grpo_dataset(cfg, ds, tok), 2, resolve_model("tiny-causal-lm"))
    if ours:
        assert not ray.is_initialized()  # grpo_train started Ray, so it shut it down


# ------------------------------------------------------------------------------ live MLflow metrics

PARTS = ("grpo/reward_mean", "grpo/structure_mean", "grpo/retrieval_mean", "grpo/delta_mean", "grpo/separator_rate")


class _ReadMlflowAtEachStep(TrainerCallback):
    """Runs after resume.grpo's callbacks: reads the reward parts back from the MLflow store at each logged
    step, i.e. while training is still running."""

    def __init__(self, uri: str, run_id: str):
        self.uri, self.run_id, self.seen, self.logged = uri, run_id, {}, {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        from mlflow.tracking import MlflowClient

        if logs and "reward" in logs:
            client = MlflowClient(self.uri)
            self.logged[state.global_step] = logs["reward"]
            self.seen[state.global_step] = {k: [(m.step, m.value) for m in client.get_metric_history(self.run_id, k)]
                                            for k in PARTS}


def test_grpo_reward_parts_reach_mlflow_while_training(tmp_path, cfg, tok, cranfield_dir, monkeypatch):
    """Under `resume run` tracking (tracking.live_grpo, as the loop wraps a round), each step's reward and
    its parts are in the MLflow store before the stage returns, at the round's global steps; the replay of
    the reward log afterwards adds nothing."""
    import mlflow

    from resume import tracking
    from resume.io import write_jsonl

    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "RESUME_GRPO_STEP_OFFSET"):
        monkeypatch.delenv(k, raising=False)
    run_dir = tmp_path / "run"
    parent = tracking.start_parent(cfg, run_dir)
    uri = tracking.tracking_uri(cfg, run_dir)
    prev = tmp_path / "prev_round"  # an earlier round of 5 steps: this one logs at global steps 6, 7
    write_jsonl(prev / REWARD_LOG, [{"step": i, "reward_mean": 0.0} for i in range(1, 6)])
    out = tmp_path / "summarizer"
    with tracking.live_grpo(cfg, run_dir, "main", 2, [str(prev)]) as rid:
        probe = _ReadMlflowAtEachStep(uri, rid)
        grpo_train(cfg, data_dir=cranfield_dir, summarizer="tiny-causal-lm", retriever="tiny-encoder",
                   out_dir=out, trl_args=_bias(tok), callbacks=[probe])
    assert mlflow.tracking.MlflowClient(uri).get_run(rid).data.tags["mlflow.parentRunId"] == parent
    assert sorted(probe.seen) == [1, 2]
    at1, at2 = probe.seen[1], probe.seen[2]
    assert at1["grpo/reward_mean"] == [(6, pytest.approx(probe.logged[1]))]  # step 1, read during step 1
    assert all(len(at1[k]) == 1 and at1[k][0][0] == 6 for k in PARTS), at1
    assert [s for s, _ in at2["grpo/reward_mean"]] == [6, 7]
    log = [json.loads(x) for x in (out / REWARD_LOG).read_text().splitlines()]
    assert [v for _, v in at2["grpo/structure_mean"]] == pytest.approx([r["structure_mean"] for r in log])
    # the replay of the reward log afterwards (log_run, a KFP component) finds every point there already;
    # into a run without live metrics it logs them all
    assert tracking.replay_reward_log(rid, out, step_offset=5, uri=uri) == 0
    assert len(mlflow.tracking.MlflowClient(uri).get_metric_history(rid, "grpo/reward_mean")) == 2
    other = mlflow.tracking.MlflowClient(uri).create_run(mlflow.tracking.MlflowClient(uri).get_run(rid).info.experiment_id)
    assert tracking.replay_reward_log(other.info.run_id, out, uri=uri) == sum(
        1 for r in log for k, v in r.items() if k != "step" and isinstance(v, int | float))


def test_mlflow_target(monkeypatch, tmp_path):
    """Live GRPO metrics need a run (MLFLOW_RUN_ID, else the active run) and a tracking URI."""
    import mlflow

    from resume.grpo import mlflow_target
    from resume.tracking import _fluent

    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(k, raising=False)
    assert mlflow_target() is None
    monkeypatch.setenv("MLFLOW_RUN_ID", "abc")
    assert mlflow_target() is None  # a run id but no tracking URI: nothing
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    assert mlflow_target() == ("sqlite:///x.db", "abc")
    monkeypatch.delenv("MLFLOW_RUN_ID")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    with _fluent(uri), mlflow.start_run() as run:  # e.g. a KFP component's run
        assert mlflow_target() == (uri, run.info.run_id)
