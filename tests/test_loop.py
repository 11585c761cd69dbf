"""Tests of resume.loop: control flow with fake stages (fast), then the real stages on configs/tiny.yaml.

    .venv/bin/pytest tests/test_loop.py -x -q
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _loop_fakes import FakeStages, fake_cfg, write_tiny_beir

from resume.errors import ConfigError
from resume.evaluate import read_eval_info
from resume.io import write_jsonl
from resume.loop import run_loop
from resume.run_dir import read_results

ROOT = Path(__file__).resolve().parents[1]
ALL_SYSTEMS = ["baseline", "fixed_summary", "non_iterative", "iterative", "full_doc_control"]
ALL_ABLATIONS = ["no_retrieval_adaptation", "no_negative_queries", "continuous_reward"]


@pytest.fixture()
def beir(tmp_path) -> Path:
    return write_tiny_beir(tmp_path / "beir")


def _run(cfg, out, fake, **kw):
    return run_loop(cfg, out_dir=out, stages=fake.stages(), track=False, log=lambda s: None, **kw)


# ------------------------------------------------------------------------------ control flow (fake)


def test_all_systems_and_ablations_layout_and_sharing(beir, tmp_path):
    fake = FakeStages()
    cfg = fake_cfg(beir, max_iterations=2, eps_reward=None, eps_metric=None, systems=ALL_SYSTEMS,
                   ablations=ALL_ABLATIONS)
    out = _run(cfg, tmp_path / "run", fake)
    run = tmp_path / "run"
    assert set(out["metrics"]) == set(ALL_SYSTEMS)
    assert set(out["ablations"]) == set(ALL_ABLATIONS)
    # DESIGN §2 layout
    for p in ("config.yaml", "data/corpus.jsonl", "iter_01/summarizer/reward_log.jsonl", "iter_01/summaries.jsonl",
              "iter_01/retriever/config.json", "iter_01/eval/metrics.json", "iter_01/eval/run.trec",
              "iter_02/eval_test/metrics.json", "report.md", "plots/metrics.png", "plots/reward.png",
              "results.json", "metrics.json"):
        assert (run / p).exists(), p
    # the numbers come from the right artifacts
    m = out["metrics"]
    assert m["baseline"]["mrr@10"] == pytest.approx(0.31)
    assert m["fixed_summary"]["mrr@10"] == pytest.approx(0.21)
    assert m["non_iterative"]["mrr@10"] == pytest.approx(0.26)
    assert m["iterative"]["mrr@10"] == pytest.approx(0.31)
    # S_0 once, no_retrieval_adaptation reuses iteration 1 of the main loop, never fine-tunes
    assert [c for c in fake.calls if c[0] == "summarize" and "iter_00" in c[1]] == \
        [("summarize", str(run / "iter_00" / "summaries.jsonl"))]
    nra = [c for c in fake.calls if "no_retrieval_adaptation" in c[1]]
    assert not [c for c in nra if c[0] == "finetune"]
    assert [c[0] for c in nra if "iter_01" in c[1]] == ["evaluate", "evaluate"]
    # g_t chains: iteration 2 starts from iteration 1's retriever; the control has the same number of rounds
    assert json.loads((run / "iter_02/retriever/config.json").read_text())["init"] == str(run / "iter_01/retriever")
    ctrl2 = json.loads((run / "full_doc_control/round_02/retriever/config.json").read_text())
    assert ctrl2 == {"init": str(run / "full_doc_control/round_01/retriever"), "texts": "None"}
    assert not (run / "full_doc_control/round_03").exists()
    # every stage left a marker; the report holds both tables
    assert (run / "iter_02/_stages/grpo-train.json").exists()
    report = (run / "report.md").read_text()
    assert "paper MRR@10" in report and "w/o negative queries" in report and "S_2" in report


def _received(fake: FakeStages, run: Path) -> dict[tuple[str, str], dict]:
    """(stage, output path relative to the run dir) -> what that call received, paths made run-relative."""

    def rel(v):
        return Path(v).relative_to(run).as_posix() if isinstance(v, str) and v.startswith(f"{run}/") else v

    return {(a["stage"], rel(a["out"])): {k: rel(v) for k, v in a.items()} for a in fake.args if "out" in a}


def _expected_chain(root: str, T: int, *, f0: str = "f0", g0: str = "g0", adapt: bool = True,
                    first_shared_from: str | None = None) -> dict[tuple[str, str], dict]:
    """Algorithm 1 under `root`: f_t = GRPO(f_{t-1}, reward model g_{t-1}); S_t = f_t(corpus) (tokens counted
    with g_{t-1}); g_t = fine-tune(g_{t-1}, S_t) on train; g_t over S_t on dev and test."""
    p = f"{root}/" if root else ""
    exp: dict[tuple[str, str], dict] = {}
    f_prev, g_prev = f0, g0
    for t in range(1, T + 1):
        it = f"{p}iter_{t:02d}"
        if first_shared_from is not None and t == 1:
            f_t, s_t = f"{first_shared_from}/summarizer", f"{first_shared_from}/summaries.jsonl"
        else:
            f_t, s_t = f"{it}/summarizer", f"{it}/summaries.jsonl"
            exp["grpo", f_t] = {"summarizer": f_prev, "retriever": g_prev}
            exp["summarize", s_t] = {"model": f_t, "retriever": g_prev}
        g_t = f"{it}/retriever" if adapt else g0
        if adapt:
            exp["finetune", g_t] = {"init": g_prev, "texts": s_t, "split": "train"}
        exp["evaluate", f"{it}/eval"] = {"retriever": g_t, "texts": s_t, "split": "dev"}
        exp["evaluate", f"{it}/eval_test"] = {"retriever": g_t, "texts": s_t, "split": "test"}
        f_prev, g_prev = f_t, g_t
    return exp


def test_method_data_flow_every_stage_gets_the_models_of_algorithm_1(beir, tmp_path):
    """Which summarizer, retriever, texts and reward config each stage receives, for three iterations of the
    main loop, every system and every ablation (the chain of Algorithm 1, DESIGN §1)."""
    fake = FakeStages()
    T = 3
    cfg = fake_cfg(beir, max_iterations=T, eps_reward=None, eps_metric=None, systems=ALL_SYSTEMS,
                   ablations=ALL_ABLATIONS)
    _run(cfg, tmp_path / "run", fake)
    run = tmp_path / "run"
    got = _received(fake, run)

    exp = _expected_chain("", T)
    # S_0 = f_0's summaries; the Fixed Summary, the Baseline and Non-iterative (g_0 over S_1) are scored with g_0
    exp["summarize", "iter_00/summaries.jsonl"] = {"model": "f0", "retriever": "g0"}
    exp["evaluate", "iter_00/eval_test"] = {"retriever": "g0", "texts": "iter_00/summaries.jsonl", "split": "test"}
    exp["evaluate", "baseline/eval_test"] = {"retriever": "g0", "texts": "None", "split": "test"}
    exp["evaluate", "non_iterative/eval_test"] = {"retriever": "g0", "texts": "iter_01/summaries.jsonl",
                                                  "split": "test"}
    # the full-doc control: g_0 fine-tuned on full documents, one round per iteration of the loop
    for r in range(1, T + 1):
        init = "g0" if r == 1 else f"full_doc_control/round_{r - 1:02d}/retriever"
        exp["finetune", f"full_doc_control/round_{r:02d}/retriever"] = {"init": init, "texts": "None",
                                                                        "split": "train"}
    exp["evaluate", f"full_doc_control/round_{T:02d}/eval_test"] = {
        "retriever": f"full_doc_control/round_{T:02d}/retriever", "texts": "None", "split": "test"}
    # the ablations: each its own chain from f_0 and g_0; w/o retrieval adaptation keeps g_0 throughout and
    # takes its iteration 1 (f_1, S_1) from the main loop
    for name in ALL_ABLATIONS:
        nra = name == "no_retrieval_adaptation"
        exp |= _expected_chain(f"ablations/{name}", T, adapt=not nra, first_shared_from="iter_01" if nra else None)

    for stage in ("grpo", "summarize", "finetune", "evaluate"):
        keys = sorted(k for k in exp if k[0] == stage)
        assert sorted(k for k in got if k[0] == stage) == keys, stage  # no call missing, none extra
        for k in keys:
            assert {f: got[k][f] for f in exp[k]} == exp[k], k

    # the reward config GRPO trains with: the config's in the main loop and w/o retrieval adaptation; each
    # reward ablation changes exactly its one field
    base = dataclasses.asdict(cfg.reward)
    assert base["use_negatives"] is True and base["discrete"] is True
    changed = {"no_negative_queries": {"use_negatives": False}, "continuous_reward": {"discrete": False}}
    for (stage, out), a in got.items():
        if stage == "grpo":
            name = out.split("/")[1] if out.startswith("ablations/") else "main"
            assert a["reward"] == base | changed.get(name, {}), out
    assert {out.split("/")[1] for (stage, out) in got if stage == "grpo" and out.startswith("ablations/")} == \
        {"no_negative_queries", "continuous_reward", "no_retrieval_adaptation"}
    # what the fake GRPO was given is also what results.json reports as f_t and g_t (paths resolved by read_results)
    res = read_results(run)
    assert [(it["summarizer"], it["summaries"], it["retriever"]) for it in res["iterations"]] == [
        (str(run / f"iter_{t:02d}/summarizer"), str(run / f"iter_{t:02d}/summaries.jsonl"),
         str(run / f"iter_{t:02d}/retriever")) for t in range(1, T + 1)]
    assert res["final"] == {"summarizer": str(run / f"iter_{T:02d}/summarizer"),
                            "retriever": str(run / f"iter_{T:02d}/retriever")}
    assert res["systems"]["non_iterative"]["dir"] == str(run / "non_iterative/eval_test")


def test_fused_lead_quality_and_ood_get_the_right_models_and_texts(beir, tmp_path):
    """The systems beyond the paper and the OOD table: which model and which texts feed each evaluation."""
    ood = write_tiny_beir(tmp_path / "ood", n_docs=10)
    fake = FakeStages()
    cfg = fake_cfg(beir, max_iterations=2, eps_reward=None, eps_metric=None,
                   systems=[*ALL_SYSTEMS, "iterative_fused", "lead", "lead_fused"])
    cfg.data.ood = str(ood)
    out = _run(cfg, tmp_path / "run", fake)
    run = tmp_path / "run"
    ev = {Path(a["out"]).relative_to(run).as_posix(): a for a in fake.args if a["stage"] == "evaluate"}
    g2, s2 = str(run / "iter_02/retriever"), str(run / "iter_02/summaries.jsonl")
    lead = str(run / "lead/summaries.jsonl")
    # Iterative + fused: g_T over the documents and S_T, with the weight chosen on dev with g_T and S_T
    assert ev["iterative_fused/eval_test"] | {"out": None, "encoder": None} == {
        "stage": "evaluate", "out": None, "retriever": g2, "texts": s2, "mode": "fused", "weight": 0.7,
        "data": str(run / "data"), "split": "test", "encoder": None, "title": False}
    choose = [a for a in fake.args if a["stage"] == "choose_weight"]
    assert {(a["retriever"], a["texts"], a["split"]) for a in choose} == {(g2, s2, "dev"), ("g0", lead, "dev")}
    # a fused system's weight choice and test evaluation share one encoder (each view encoded once)
    by_texts = {a["texts"]: a["encoder"] for a in choose}
    assert by_texts[s2] is not None and by_texts[s2] == ev["iterative_fused/eval_test"]["encoder"]
    assert by_texts[lead] is not None and by_texts[lead] == ev["lead_fused/eval_test"]["encoder"]
    assert ev["iter_02/eval_test"]["encoder"] is None  # the other systems: the stage loads its retriever
    # the lead control is g_0 over the leads, alone and fused
    assert (ev["lead/eval_test"]["retriever"], ev["lead/eval_test"]["texts"], ev["lead/eval_test"]["mode"]) == \
        ("g0", lead, "summary")
    assert (ev["lead_fused/eval_test"]["retriever"], ev["lead_fused/eval_test"]["weight"]) == ("g0", 0.7)
    assert out["metrics"]["iterative_fused"]["mrr@10"] == pytest.approx(0.31 + 0.03 * 0.3)
    # quality: S_0, S_1, S_2 and the leads, each judged by g_0 (never by a fine-tuned retriever)
    q = [a for a in fake.args if a["stage"] == "quality"]
    assert {a["judge"] for a in q} == {"g0"}
    assert {Path(a["summaries"]).relative_to(run).as_posix() for a in q} >= {
        "iter_00/summaries.jsonl", "iter_01/summaries.jsonl", "iter_02/summaries.jsonl", "lead/summaries.jsonl"}
    res = json.loads((run / "results.json").read_text())
    assert [it["quality"]["fixed_judge"]["delta_mean"] for it in res["iterations"]] == [0.01, 0.02]
    assert res["s0_quality"]["fixed_judge"]["judge"] == "g0" and res["env"]["cpu"]
    # OOD: f_0 and f_T summarise the OOD corpus; g_0 / g_T evaluate; the fused weight is the in-domain one
    summ = {Path(a["out"]).relative_to(run).as_posix(): a for a in fake.args if a["stage"] == "summarize"}
    assert summ["ood/fixed_summary/summaries.jsonl"]["model"] == "f0"
    assert summ["ood/iterative/summaries.jsonl"]["model"] == str(run / "iter_02/summarizer")
    assert {summ[k]["data"] for k in summ if k.startswith("ood/")} == {str(ood)}
    assert (ev["ood/iterative/eval_test"]["retriever"], ev["ood/iterative/eval_test"]["data"]) == (g2, str(ood))
    assert ev["ood/iterative_fused/eval_test"]["weight"] == 0.7 and ev["ood/baseline/eval_test"]["retriever"] == "g0"
    assert ev["ood/full_doc_control/eval_test"]["retriever"] == str(run / "full_doc_control/round_02/retriever")
    assert set(res["ood"]["systems"]) == {"baseline", "fixed_summary", "iterative", "iterative_fused",
                                          "full_doc_control", "lead", "lead_fused"}
    assert not [c for c in fake.calls if c[0] == "choose_weight" and "ood" in c[1]]  # nothing chosen on OOD
    assert res["ood"]["working_set"] is None  # the whole OOD set

    # an OOD working set: materialised once under ood/data, every OOD stage reads it
    cfg.data.ood_max_queries, cfg.data.ood_distractors = 2, 1
    fake2 = FakeStages()
    _run(cfg, tmp_path / "run2", fake2)
    res2 = read_results(tmp_path / "run2")
    ws = res2["ood"]["working_set"]
    assert ws["queries"]["test"] == 2 and ws["n_docs"] < ws["n_docs_source"] and res2["ood"]["path"] == str(tmp_path / "run2/ood/data")
    ood_stages = [a for a in fake2.args if "/ood/" in a.get("out", "") and a["stage"] in ("summarize", "evaluate")]
    assert ood_stages and {a["data"] for a in ood_stages} == {str(tmp_path / "run2/ood/data")}
    report = (run / "report.md").read_text()
    for text in ("Iterative + fused", "Lead control + fused", "## Summary quality", "fixed-judge Δ (g_0)",
                 "The in-domain models on `ood`", "- Machine: "):
        assert text in report, text


def test_fused_systems_encode_each_view_once_with_the_real_evaluation(beir, tmp_path, monkeypatch):
    """With the real evaluate_retrieval / choose_fusion_weight (a bag-of-words encoder in place of the model),
    a fused system encodes the documents once for its weight choice on dev and its test evaluation."""
    import zlib

    import numpy as np

    from resume import evaluate

    encoded: list[tuple[str, tuple[str, ...]]] = []

    class Words:
        def __init__(self, name: str):
            self.name = name

        def _emb(self, texts):
            out = np.zeros((len(texts), 64), dtype=np.float32)
            for i, t in enumerate(texts):
                for w in t.lower().split():
                    out[i, zlib.crc32(w.encode()) % 64] += 1.0
            return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

        def encode_docs(self, texts):
            encoded.append((self.name, tuple(texts)))
            return self._emb(list(texts))

        def encode_queries(self, texts):
            return self._emb(list(texts))

    monkeypatch.setattr(evaluate, "load_encoder", lambda cfg, retriever: Words(str(retriever)))
    stages = FakeStages().stages()
    stages.evaluate_retrieval = stages.choose_fusion_weight = None  # the real ones
    cfg = fake_cfg(beir, max_iterations=1, eps_reward=None, eps_metric=None,
                   systems=["baseline", "iterative", "iterative_fused", "lead", "lead_fused"])
    out = run_loop(cfg, out_dir=tmp_path / "run", stages=stages, track=False, log=lambda s: None)
    run = tmp_path / "run"
    from resume.data import doc_text, load_beir

    docs = tuple(doc_text(d) for d in load_beir(run / "data").corpus.values())
    g1 = str(run / "iter_01" / "retriever")
    assert encoded.count((g1, docs)) == 1  # iterative_fused: dev weight choice + test evaluation
    assert encoded.count(("g0", docs)) == 2  # the Baseline once, lead_fused once for both of its stages
    assert len([e for e in encoded if e[0] == g1]) == 4  # iter_01 dev, iter_01 test, the fused system's two views
    res = json.loads((run / "results.json").read_text())
    assert res["systems"]["iterative_fused"]["fusion"]["chosen_on"] == "dev"
    assert set(out["metrics"]) == {"baseline", "iterative", "iterative_fused", "lead", "lead_fused"}
    # the loop names its run dir to the evaluation: eval_info.json holds the run's paths relative to it
    raw = json.loads((run / "iterative_fused" / "eval_test" / "eval_info.json").read_text())
    assert (raw["run_dir"], raw["retriever"], raw["texts"], raw["data_dir"]) == \
        ("../..", "./iter_01/retriever", "./iter_01/summaries.jsonl", "./data")
    info = read_eval_info(read_results(run)["systems"]["iterative_fused"]["dir"])
    assert (info["retriever"], info["texts"]) == (g1, str(run / "iter_01" / "summaries.jsonl"))


def test_titled_systems_index_the_papers_summaries_after_their_titles(beir, tmp_path):
    """fixed_summary_titled, iterative_titled and iterative_titled_fused: the paper rows' own models and
    summaries, evaluated with summary_title on (the weight chosen on dev with it too), in domain and OOD;
    the paper's rows keep summary_title off."""
    ood = write_tiny_beir(tmp_path / "ood", n_docs=10)
    fake = FakeStages()
    titled = ["fixed_summary_titled", "iterative_titled", "iterative_titled_fused"]
    cfg = fake_cfg(beir, max_iterations=1, eps_reward=None, eps_metric=None,
                   systems=["baseline", "fixed_summary", "iterative", "iterative_fused", *titled])
    cfg.data.ood = str(ood)
    out = _run(cfg, tmp_path / "run", fake)
    run = tmp_path / "run"
    ev = {Path(a["out"]).relative_to(run).as_posix(): a for a in fake.args if a["stage"] == "evaluate"}
    g1, s1, s0 = str(run / "iter_01/retriever"), str(run / "iter_01/summaries.jsonl"), str(run / "iter_00/summaries.jsonl")

    def what(key):
        a = ev[key]
        return a["retriever"], a["texts"], a["mode"], a["weight"], a["title"]

    assert what("fixed_summary_titled/eval_test") == ("g0", s0, "summary", None, True)
    assert what("iterative_titled/eval_test") == (g1, s1, "summary", None, True)
    assert what("iterative_titled_fused/eval_test") == (g1, s1, "fused", 0.7, True)
    choose = {a["texts"] + str(a["title"]): a for a in fake.args if a["stage"] == "choose_weight"}
    assert set(choose) == {s1 + "False", s1 + "True"} and choose[s1 + "True"]["split"] == "dev"
    # the paper's rows (and every other evaluation) index the summaries alone
    assert {k for k, a in ev.items() if a["title"]} == {
        "fixed_summary_titled/eval_test", "iterative_titled/eval_test", "iterative_titled_fused/eval_test",
        "ood/fixed_summary_titled/eval_test", "ood/iterative_titled/eval_test", "ood/iterative_titled_fused/eval_test"}
    assert what("iter_01/eval_test")[-1] is False and what("baseline/eval_test")[-1] is False
    assert out["metrics"]["iterative_titled"]["mrr@10"] == pytest.approx(out["metrics"]["iterative"]["mrr@10"] + 0.015)
    res = read_results(run)
    assert res["systems"]["iterative_titled_fused"]["fusion"]["chosen_on"] == "dev"
    assert ev["ood/iterative_titled_fused/eval_test"]["weight"] == 0.7  # the in-domain weight, nothing chosen on OOD
    assert set(titled) <= set(res["ood"]["systems"])
    report = (run / "report.md").read_text()
    for text in ("| Fixed Summary + title (", "| Iterative + title (", "| Iterative + title + fused (",
                 "Paired tests of Iterative + title against", "Paired tests of Iterative + title + fused against",
                 "0.70 for Iterative + title + fused (chosen on dev"):
        assert text in report, text


def test_summary_title_with_the_real_evaluation(beir, tmp_path, monkeypatch):
    """The real evaluate_retrieval with summary_title: the indexed texts are title + summary (join_title),
    eval_info.json records it, and without summaries it is refused before any encoding."""
    from resume import evaluate
    from resume.config import ResumeConfig
    from resume.data import load_beir
    from resume.errors import ResumeError
    from resume.lead import join_title

    seen: list[list[str]] = []

    class Counts:
        def encode_docs(self, texts):
            seen.append(list(texts))
            return [[1.0, float(len(t))] for t in texts]

        def encode_queries(self, texts):
            return [[1.0, 0.0] for _ in texts]

    s = tmp_path / "s.jsonl"
    ds = load_beir(beir)
    write_jsonl(s, [{"_id": d, "summary": f"summary {d}"} for d in ds.corpus])
    cfg = ResumeConfig()
    cfg.data.path = str(beir)
    m = evaluate.evaluate_retrieval(cfg, data_dir=beir, split="test", retriever="x", texts=s, out_dir=tmp_path / "e",
                                    encoder=Counts(), summary_title=True)
    assert seen[-1] == [join_title(doc["title"], f"summary {d}") for d, doc in ds.corpus.items()]
    assert seen[-1][0] == "T0. summary d0" and set(m) >= {"mrr@10", "ndcg@10"}
    assert read_eval_info(tmp_path / "e")["summary_title"] is True
    evaluate.evaluate_retrieval(cfg, data_dir=beir, split="test", retriever="x", texts=s, out_dir=tmp_path / "f",
                                encoder=Counts())
    assert seen[-1][0] == "summary d0" and read_eval_info(tmp_path / "f")["summary_title"] is False
    n = len(seen)
    with pytest.raises(ResumeError, match="summary_title .* needs summaries"):
        evaluate.evaluate_retrieval(cfg, data_dir=beir, split="test", retriever="x", out_dir=tmp_path / "g",
                                    encoder=Counts(), summary_title=True)
    assert len(seen) == n and not (tmp_path / "g").exists()


def test_early_stop_on_metric_after_completing_the_iteration(beir, tmp_path):
    fake = FakeStages()  # dev: S_0 0.20 -> iter 1 0.25 (gain 0.05)
    cfg = fake_cfg(beir, max_iterations=3, eps_reward=None, eps_metric=0.06, systems=["iterative"])
    _run(cfg, tmp_path / "a", fake)
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    assert len(res["iterations"]) == 1 and res["stopped"]["iteration"] == 1
    assert "eps_metric" in res["stopped"]["reason"]
    assert (tmp_path / "a/iter_01/retriever").exists()  # the iteration that showed the small gain completed
    assert not (tmp_path / "a/iter_02").exists()

    cfg = fake_cfg(beir, max_iterations=3, eps_reward=None, eps_metric=0.04, systems=["iterative"])
    _run(cfg, tmp_path / "b", FakeStages())
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    assert len(res["iterations"]) == 3 and res["stopped"]["iteration"] is None


def test_early_stop_on_reward(beir, tmp_path):
    fake = FakeStages(rewards={1: 0.1, 2: 0.3, 3: 0.4})  # gains 0.2 then 0.1
    cfg = fake_cfg(beir, max_iterations=4, eps_reward=0.15, eps_metric=None, systems=["iterative"])
    _run(cfg, tmp_path / "r", fake)
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [it["iteration"] for it in res["iterations"]] == [1, 2, 3]
    assert res["stopped"]["iteration"] == 3 and "eps_reward" in res["stopped"]["reason"]
    assert res["iterations"][1]["reward_gain"] == pytest.approx(0.2)
    assert not any("iter_00" in c[1] for c in fake.calls)  # no S_0 needed: no fixed_summary, no eps_metric


def test_crash_and_rerun_skips_completed_stages_and_matches(beir, tmp_path):
    cfg = fake_cfg(beir, max_iterations=2, eps_reward=None, eps_metric=None, systems=ALL_SYSTEMS,
                   ablations=["no_negative_queries"])
    ref = _run(cfg, tmp_path / "ref", FakeStages())

    crashing = FakeStages(fail_on="grpo:run/iter_02")
    with pytest.raises(RuntimeError, match="injected"):
        _run(cfg, tmp_path / "run", crashing)
    stale = tmp_path / "run/iter_02/summarizer/stale"
    stale.write_text("left by the killed stage")
    again = FakeStages()
    out = _run(cfg, tmp_path / "run", again)
    assert out["metrics"] == ref["metrics"] and out["ablations"] == ref["ablations"]
    done_before = [c for c in again.calls if "iter_01" in c[1] and "ablations" not in c[1]]
    assert done_before == []  # iteration 1 of the main loop was not redone
    assert ("grpo", str(tmp_path / "run/iter_02/summarizer")) in again.calls
    assert not stale.exists()  # a non-resumable stage restarts from a clean dir

    # a third invocation does nothing but the report
    third = FakeStages()
    assert _run(cfg, tmp_path / "run", third)["metrics"] == ref["metrics"]
    assert third.calls == []


def test_config_change_is_refused_unless_forced(beir, tmp_path):
    cfg = fake_cfg(beir, max_iterations=1, eps_reward=None, eps_metric=None, systems=["baseline"])
    _run(cfg, tmp_path / "run", FakeStages())
    cfg2 = fake_cfg(beir, max_iterations=2, eps_reward=None, eps_metric=None, systems=["baseline"])
    with pytest.raises(ConfigError, match=r"loop.max_iterations: 1 -> 2.*--force"):
        _run(cfg2, tmp_path / "run", FakeStages())
    _run(cfg2, tmp_path / "run", FakeStages(), force=True)
    assert list(tmp_path.glob("run/config.prev-*.yaml"))


def test_cli_run_prints_report_and_refuses_changed_config(beir, tmp_path, monkeypatch, capsys):
    from resume import cli, loop

    fake = FakeStages()
    real = loop.run_loop
    monkeypatch.setattr(loop, "run_loop", lambda cfg, **kw: real(cfg, stages=fake.stages(), track=False, **kw))
    args = ["run", "--out", str(tmp_path / "run"), "--systems", "baseline,fixed_summary", "--ablations", "",
            "--set", f"data.path={beir}", "--set", "summarizer.model=f0", "--set", "retriever.model=g0"]
    assert cli.main(args) == 0
    assert f"report: {tmp_path / 'run' / 'report.md'}" in capsys.readouterr().out
    assert cli.main(args + ["--set", "loop.seed=1"]) == 2
    assert "different config" in capsys.readouterr().err
    assert cli.main(args + ["--set", "loop.seed=1", "--force"]) == 0


# ------------------------------------------------------------------------------- real stages (tiny)


def _tiny_overrides(cranfield: Path) -> list[str]:
    return [f"data.path={cranfield}"]


@pytest.fixture(scope="module")
def cranfield() -> Path:
    d = ROOT / "data" / "cranfield"
    if not (d / "corpus.jsonl").exists():
        pytest.skip("data/cranfield not converted yet")
    return d


TINY = ["data.max_train_queries=4", "data.max_eval_queries=2", "data.distractors=4", "summarizer.max_new_tokens=8",
        "grpo.max_completion_length=8", "grpo.max_train_docs=4"]


def _tiny_args(cranfield: Path) -> list[str]:
    return [f"data.path={cranfield}", *TINY]


@pytest.fixture(scope="module")
def tiny_full(cranfield, tmp_path_factory) -> dict:
    """configs/tiny.yaml with the real stages: every system and ablation, two iterations, no early stop."""
    from resume.config import DataConfig, load_config
    from resume.data import load_beir, select_working_set, write_beir

    ood = tmp_path_factory.mktemp("ood") / "medline"  # a slice of the OOD set: 2 queries, their documents + 4
    write_beir(select_working_set(load_beir(ROOT / "data" / "medline"),
                                  DataConfig(max_eval_queries=2, distractors=4, train_split="none")), ood)
    cfg = load_config(ROOT / "configs" / "tiny.yaml", _tiny_args(cranfield) + [
        f"loop.ablations={json.dumps(ALL_ABLATIONS)}", "loop.eps_reward=null", "loop.eps_metric=null",
        f"loop.systems={json.dumps(ALL_SYSTEMS + ['iterative_fused', 'lead', 'lead_fused'])}", f"data.ood={ood}"])
    out_dir = tmp_path_factory.mktemp("tiny") / "run"
    t0 = time.perf_counter()
    out = run_loop(cfg, out_dir=out_dir, track=False)
    out["seconds"] = time.perf_counter() - t0
    out["cfg"] = cfg
    return out


def test_real_tiny_every_system_and_ablation(tiny_full):
    run = Path(tiny_full["run_dir"])
    assert set(tiny_full["metrics"]) == set(ALL_SYSTEMS) | {"iterative_fused", "lead", "lead_fused"}
    assert set(tiny_full["ablations"]) == set(ALL_ABLATIONS)
    for m in [*tiny_full["metrics"].values(), *tiny_full["ablations"].values()]:
        assert set(m) >= {"mrr@10", "ndcg@10", "recall@100", "recall@1000"}
        assert all(0.0 <= v <= 1.0 for v in m.values())
    res = read_results(run)
    assert len(res["iterations"]) == 2 and res["stopped"]["iteration"] is None  # eps null: never stops early
    for p in ("config.yaml", "data/corpus.jsonl", "iter_01/summarizer/reward_log.jsonl", "iter_01/summaries.jsonl",
              "iter_02/eval/metrics.json", "iter_02/eval/run.trec", "iter_02/eval_test/metrics.json",
              "report.md", "plots/metrics.png", "plots/reward.png", "full_doc_control/round_02/eval_test/run.trec"):
        assert (run / p).exists(), p
    _assert_each_system_evaluated_the_right_retriever_and_texts(run, res, tiny_full["cfg"])
    # f_2 was trained from f_1 with g_1 as reward model; g_2 from g_1 on S_2 (the chain of Algorithm 1)
    assert res["iterations"][1]["retriever"].startswith(str(run / "iter_02" / "retriever"))
    assert all(it["grpo_steps"] == 2 and it["reward_mean"] is not None for it in res["iterations"])
    report = (run / "report.md").read_text()
    assert "Iterative (S_T from f_T, g_T)" in report
    # the quality signals of every summary set, in results.json and the report (placeholder rate 0: no
    # bracketed placeholder in the prompt); the fixed judge scored the same held-out documents each time
    sets = [res["s0_quality"], *(it["quality"] for it in res["iterations"])]
    for q in sets:
        assert set(q["text"]) >= {"placeholder_rate", "boilerplate_rate", "copy_rate", "distinct_2", "mean_tokens",
                                  "truncation_rate", "separator_rate"}
        assert 0.0 <= q["text"]["truncation_rate"] <= 1.0 and -1.0 <= q["fixed_judge"]["delta_mean"] <= 1.0
        assert q["fixed_judge"]["n"] == tiny_full["cfg"].grpo.judge_docs
        assert q["fixed_judge"]["judge"] == tiny_full["cfg"].retriever.model  # g_0, never g_t
    assert "## Summary quality" in report and "fixed-judge Δ (g_0)" in report
    # fused and lead systems, and the OOD table with the in-domain fusion weight
    fw = res["systems"]["iterative_fused"]["fusion"]
    assert fw["chosen_on"] == "dev" and 0.0 <= fw["weight"] <= 1.0
    info = read_eval_info(run / "iterative_fused/eval_test")
    assert info["mode"] == "fused" and info["fusion_weight"] == fw["weight"]
    ood = res["ood"]
    assert set(ood["systems"]) >= {"baseline", "fixed_summary", "iterative", "iterative_fused"}
    assert ood["systems"]["iterative_fused"]["fusion_weight"] == fw["weight"]
    assert "The in-domain models on `medline`" in report


def _assert_each_system_evaluated_the_right_retriever_and_texts(run: Path, res: dict, cfg) -> None:
    """Per system, the retriever and the texts its evaluation indexed (the eval dir's eval_info.json, written
    by the real `evaluate_retrieval`): g_0 for Baseline, Fixed Summary, Non-iterative and the lead control; g_T
    for Iterative; the control's last round; each ablation's own final retriever and summaries."""
    g0 = cfg.retriever.model
    g2 = res["iterations"][-1]["retriever"]
    assert g2.startswith(str(run / "iter_02" / "retriever")) and g2 != g0
    s = {t: str(run / f"iter_{t:02d}" / "summaries.jsonl") for t in (0, 1, 2)}
    lead = str(run / "lead" / "summaries.jsonl")
    expected = {"baseline": (g0, None), "fixed_summary": (g0, s[0]), "non_iterative": (g0, s[1]),
                "iterative": (g2, s[2]), "iterative_fused": (g2, s[2]), "lead": (g0, lead), "lead_fused": (g0, lead),
                "full_doc_control": (res["systems"]["full_doc_control"]["retriever"], None)}
    assert set(expected) == set(res["systems"])
    for name, (retriever, texts) in expected.items():
        info = read_eval_info(res["systems"][name]["dir"])
        assert (info["retriever"], info["texts"], info["split"]) == (retriever, texts, "test"), name
        assert info["mode"] == ("fused" if name.endswith("_fused") else "summary"), name
    assert res["systems"]["full_doc_control"]["retriever"].startswith(
        str(run / "full_doc_control" / "round_02" / "retriever"))
    # the ablations: their own S_2 (w/o retrieval adaptation with g_0; the others with their own g_2)
    for name, abl in res["ablations"].items():
        last = abl["iterations"][-1]
        info = read_eval_info(Path(last["dir"]) / "eval_test")
        own = run / "ablations" / name / "iter_02"
        assert info["texts"] == str(own / "summaries.jsonl"), name
        if name == "no_retrieval_adaptation":
            assert info["retriever"] == g0
        else:
            assert info["retriever"] == last["retriever"] and last["retriever"].startswith(str(own / "retriever"))
    # out of distribution: the in-domain models, over the OOD corpus summarised by f_0 and by f_T
    ood = res["ood"]["systems"]
    for name, (retriever, texts) in {"baseline": (g0, None), "iterative": (g2, "ood/iterative"),
                                     "fixed_summary": (g0, "ood/fixed_summary")}.items():
        info = read_eval_info(ood[name]["dir"])
        want_texts = None if texts is None else str(run / texts / "summaries.jsonl")
        assert (info["retriever"], info["texts"], info["data_dir"]) == (retriever, want_texts, res["ood"]["path"])


def test_real_tiny_early_stop_fires_with_a_huge_eps(tiny_full, tmp_path):
    """Same run (copied; completed stages are reused via --force) with eps_metric huge: stops after iteration 1."""
    import shutil

    from resume.config import load_config

    run = tmp_path / "run"
    shutil.copytree(tiny_full["run_dir"], run)
    cfg = load_config(ROOT / "configs" / "tiny.yaml", _tiny_args(Path(tiny_full["cfg"].data.path)) + [
        "loop.eps_metric=1000000000.0", "loop.eps_reward=null", 'loop.systems=["iterative", "full_doc_control"]'])
    lines: list[str] = []
    out = run_loop(cfg, out_dir=run, force=True, track=False, log=lines.append)
    res = json.loads((run / "results.json").read_text())
    assert res["stopped"]["iteration"] == 1 and "eps_metric" in res["stopped"]["reason"]
    assert len(res["iterations"]) == 1 and res["s0_dev"] is not None
    assert out["metrics"]["iterative"] == res["iterations"][0]["test"]
    assert res["systems"]["full_doc_control"]["rounds"] == 1  # same budget as the 1-iteration loop
    assert any("early stop after iteration 1" in x for x in lines)
    assert not any(x.endswith("grpo-train ...") for x in lines)  # GRPO round 1 was reused, not rerun


def test_real_tiny_killed_in_iteration_2_resumes_to_the_same_metrics(tiny_full, tmp_path):
    """SIGKILL `resume run` once iteration 2 has started; the rerun continues and matches an uninterrupted run
    (the module's in-process run with the same seed: also shows two runs give the same metrics)."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "resume.cli", "run", "--config", str(ROOT / "configs" / "tiny.yaml"),
           "--out", str(out), "--systems", "iterative", "--ablations", ""]
    for o in _tiny_args(Path(tiny_full["cfg"].data.path)) + ["loop.eps_reward=null", "loop.eps_metric=null"]:
        cmd += ["--set", o]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log1 = open(tmp_path / "first.log", "w")
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log1, stderr=subprocess.STDOUT, start_new_session=True)
    marker = out / "iter_02" / "_stages" / "grpo-train.json"
    deadline = time.time() + 600
    while not marker.exists():
        assert p.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.time() < deadline, "iteration 2 never started"
        time.sleep(0.1)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    log1.close()
    assert not (out / "results.json").exists() and not (out / "iter_02" / "_stages" / "evaluate-test.json").exists()

    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "[iter 1/2] grpo-train ... done earlier" in r.stdout
    assert "[iter 2/2] grpo-train ... done earlier" in r.stdout
    assert f"report: {out / 'report.md'}" in r.stdout
    res = json.loads((out / "results.json").read_text())
    ref = json.loads((Path(tiny_full["run_dir"]) / "results.json").read_text())
    assert [it["test"] for it in res["iterations"]] == [it["test"] for it in ref["iterations"]]
    assert [it["dev"] for it in res["iterations"]] == [it["dev"] for it in ref["iterations"]]
    assert [it["reward_mean"] for it in res["iterations"]] == [it["reward_mean"] for it in ref["iterations"]]
    assert res["systems"]["iterative"]["test"] == tiny_full["metrics"]["iterative"]
    # the default tracking store: a sqlite file in the run dir, one parent run with its nested iterations
    assert (out / "mlflow.db").exists()
    state = json.loads((out / "tracking.json").read_text())
    assert state["parent"] and {"iter_01", "iter_02", "system/iterative"} <= set(state["runs"])


def test_one_run_per_run_dir_at_a_time(beir, tmp_path):
    import fcntl

    from resume.errors import ResumeError

    run = tmp_path / "run"
    run.mkdir()
    with open(run / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        cfg = fake_cfg(beir, max_iterations=1, systems=["baseline"])
        with pytest.raises(ResumeError, match="in use by another"):
            _run(cfg, run, FakeStages())
    _run(cfg, run, FakeStages())  # released: runs


def test_loop_takes_its_early_stop_decision_from_run_dir(beir, tmp_path, monkeypatch):
    """`resume run` and the KFP should-continue task decide with the same function, resume.run_dir.early_stop
    (tests/test_run_dir.py checks kfp_ops.continue_decision): replaced by a spy, it alone stops the loop."""
    from resume import run_dir as rd

    seen = []

    def spy(**kw):
        seen.append(kw)
        return rd.StopDecision(len(seen) == 2, ("spy says stop",) if len(seen) == 2 else ())

    monkeypatch.setattr(rd, "early_stop", spy)
    cfg = fake_cfg(beir, max_iterations=4, eps_reward=0.5, eps_metric=None, systems=["iterative"])
    _run(cfg, tmp_path / "run", FakeStages())
    res = json.loads((tmp_path / "run/results.json").read_text())
    assert res["stopped"] == {"iteration": 2, "reason": "spy says stop"} and len(res["iterations"]) == 2
    # round 1's reward is 0.1 +- 0.01 over steps (mean 0.1), round 2's 0.3; no dev rule without eps_metric's S_0
    assert [(s["prev_reward"], s["eps_reward"], s["eps_metric"]) for s in seen] == \
        [(None, 0.5, None), (pytest.approx(0.1), 0.5, None)]
    assert seen[1]["reward"] == pytest.approx(0.3)
