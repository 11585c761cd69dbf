"""results.json: the typed schema of resume.run_dir, its one writer and reader, and paths relative to the run dir.

    .venv/bin/pytest tests/test_results_schema.py -q
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _loop_fakes import FakeStages, fake_cfg, write_tiny_beir

from resume import run_dir as rd
from resume.errors import DataError
from resume.io import atomic_write_json, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


def _results(run: Path) -> dict:
    """A results.json as the loop holds it in memory: absolute paths inside the run dir, a hub id for g_0
    (the retriever of an ablation without retrieval adaptation), and paths outside the run dir."""
    it = {"iteration": 1, "dir": str(run / "iter_01"), "summarizer": str(run / "iter_01/summarizer"),
          "summaries": str(run / "iter_01/summaries.jsonl"), "retriever": str(run / "iter_01/retriever"),
          "test": {"mrr@10": 0.5, "ndcg@10": 0.4}, "dev": None, "reward_mean": 0.25}
    return {
        "name": "t", "run_dir": str(run), "data": {"source": "data/cranfield", "n_docs": 3},
        "models": {"summarizer": "smollm2-135m-instruct", "retriever": "sentence-transformers/all-MiniLM-L6-v2"},
        "splits": {"train": "train", "dev": "dev", "test": "test"},
        "systems": {"iterative": {"test": it["test"], "dir": str(run / "iter_01/eval_test")},
                    "full_doc_control": {"test": it["test"], "dir": str(run / "full_doc_control/round_01/eval_test"),
                                         "retriever": str(run / "full_doc_control/round_01/retriever"), "rounds": 1}},
        "iterations": [it], "final": {"summarizer": it["summarizer"], "retriever": it["retriever"]},
        "stopped": {"iteration": None, "reason": "max_iterations (1) reached"}, "s0": str(run / "iter_00/summaries.jsonl"),
        "ood": {"dataset": "medline", "split": "test", "path": "/data/medline", "systems": {}},
        "ablations": {"no_retrieval_adaptation": {
            "iterations": [{**it, "retriever": "sentence-transformers/all-MiniLM-L6-v2"}],
            "stopped": {"iteration": None, "reason": "x"}, "n_iterations": 1, "test": it["test"], "dev": None,
            "final": {"summarizer": it["summarizer"], "retriever": "sentence-transformers/all-MiniLM-L6-v2"}}},
    }


def test_round_trip_writes_paths_relative_and_reads_them_back_absolute(tmp_path):
    run = tmp_path / "run"
    res = _results(run)
    res["models"]["summarizer"] = "./models/f0"  # a local model relative to the working dir, outside the run dir
    path = rd.write_results(run, res)
    raw = json.loads(path.read_text())
    assert str(tmp_path) not in path.read_text()
    assert raw["schema_version"] == rd.RESULTS_SCHEMA_VERSION and raw["run_dir"] == "."
    assert raw["iterations"][0]["summaries"] == "./iter_01/summaries.jsonl"
    assert raw["final"] == {"summarizer": "./iter_01/summarizer", "retriever": "./iter_01/retriever"}
    assert raw["systems"]["full_doc_control"]["retriever"] == "./full_doc_control/round_01/retriever"
    assert raw["s0"] == "./iter_00/summaries.jsonl"
    # hub ids and paths outside the run dir are kept; an outside "./x" loses "./" (which means "run dir")
    assert raw["ablations"]["no_retrieval_adaptation"]["final"]["retriever"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert raw["ood"]["path"] == "/data/medline" and raw["data"]["source"] == "data/cranfield"
    assert raw["models"]["summarizer"] == "models/f0"

    back = rd.read_results(run)
    assert back == {**res, "schema_version": rd.RESULTS_SCHEMA_VERSION, "run_dir": str(run),
                    "models": {**res["models"], "summarizer": "models/f0"}}
    rd.write_results(run, back)  # what read_results returns writes back to the same file
    assert json.loads(path.read_text()) == raw


def test_a_moved_run_dir_resolves_against_its_new_place(tmp_path):
    rd.write_results(tmp_path / "a", _results(tmp_path / "a"))
    shutil.move(tmp_path / "a", tmp_path / "b")
    got = rd.read_results(tmp_path / "b")
    assert got["run_dir"] == str(tmp_path / "b")
    assert got["iterations"][0]["summaries"] == str(tmp_path / "b" / "iter_01" / "summaries.jsonl")
    assert got["systems"]["iterative"]["dir"] == str(tmp_path / "b" / "iter_01" / "eval_test")


def test_version_0_absolute_paths_of_another_machine_are_relocated(tmp_path):
    """A results.json written before the schema (no schema_version, absolute paths of the machine that made it,
    as docs/cranfield/results.json was) still reads: its paths under its recorded run_dir move to the dir read."""
    old = _results(Path("/elsewhere/runs/x"))
    atomic_write_json(tmp_path / rd.RESULTS, old)
    got = rd.read_results(tmp_path)
    assert got["final"]["summarizer"] == str(tmp_path / "iter_01" / "summarizer")
    assert got["ood"]["path"] == "/data/medline"  # outside the recorded run dir: kept


@pytest.mark.parametrize("edit,field", [
    (lambda r: r["systems"]["iterative"].pop("test"), "systems.iterative.test: missing"),
    (lambda r: r["iterations"][0].update(iteration="one"), "iterations[0].iteration: expected an integer"),
    (lambda r: r["systems"]["iterative"]["test"].update({"mrr@10": "high"}), "systems.iterative.test.mrr@10"),
    (lambda r: r.pop("final"), "field final: missing"),
    (lambda r: r["data"].pop("source"), "data.source: missing"),
    (lambda r: r["ablations"]["no_retrieval_adaptation"]["stopped"].pop("reason"),
     "ablations.no_retrieval_adaptation.stopped.reason: missing"),
    (lambda r: r.update(iterations={}), "iterations: expected a list"),
])
def test_malformed_results_name_the_file_and_the_field(tmp_path, edit, field):
    rd.write_results(tmp_path, _results(tmp_path))
    raw = json.loads((tmp_path / rd.RESULTS).read_text())
    edit(raw)
    (tmp_path / rd.RESULTS).write_text(json.dumps(raw))
    with pytest.raises(DataError) as e:
        rd.read_results(tmp_path)
    assert str(tmp_path / rd.RESULTS) in str(e.value) and field in str(e.value)
    # the writer refuses the same mistake and leaves the file as it was
    before = (tmp_path / rd.RESULTS).read_text()
    with pytest.raises(DataError, match=field.split(":")[0].replace("[", r"\[").replace("]", r"\]")):
        rd.write_results(tmp_path, rd.resolve_run_paths(raw, tmp_path))
    assert (tmp_path / rd.RESULTS).read_text() == before


def test_missing_unreadable_and_newer_results(tmp_path):
    with pytest.raises(DataError, match="results.json: not found"):
        rd.read_results(tmp_path)
    (tmp_path / rd.RESULTS).write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        rd.read_results(tmp_path)
    atomic_write_json(tmp_path / rd.RESULTS, {**_results(tmp_path), "schema_version": rd.RESULTS_SCHEMA_VERSION + 1})
    with pytest.raises(DataError, match="schema_version"):
        rd.read_results(tmp_path)


def test_stage_markers_hold_relative_paths_and_old_markers_still_resolve(tmp_path):
    from resume.loop import Runner

    run = Runner(tmp_path, seed=1, log=lambda s: None)
    out = run.stage("t", tmp_path / "iter_01", "grpo-train", lambda: str(tmp_path / "iter_01" / "summarizer"))
    marker = json.loads((tmp_path / "iter_01" / "_stages" / "grpo-train.json").read_text())
    assert marker["result"] == "./iter_01/summarizer" and out == str(tmp_path / "iter_01" / "summarizer")
    assert run.result(tmp_path / "iter_01", "grpo-train") == out
    atomic_write_json(tmp_path / "iter_02" / "_stages" / "summarize.json",  # a marker of an older run
                      {"stage": "summarize", "seconds": 1.0, "result": {"out_path": "${RUN_DIR}/iter_02/s.jsonl"}})
    assert run.result(tmp_path / "iter_02", "summarize") == {"out_path": str(tmp_path / "iter_02" / "s.jsonl")}


def test_the_loop_writes_results_through_run_dir_and_the_readers_read_through_it(tmp_path, monkeypatch):
    """`resume run` calls rd.write_results (a spy sees the call); the file it leaves has no absolute path of the
    run dir and reads back with paths that exist; the report refuses a malformed results.json by field."""
    from resume.loop import run_loop
    from resume.report import write_report

    calls = []
    real = rd.write_results
    monkeypatch.setattr(rd, "write_results", lambda d, r: calls.append(d) or real(d, r))
    beir = write_tiny_beir(tmp_path / "beir")
    cfg = fake_cfg(beir, max_iterations=2, eps_reward=None, eps_metric=None,
                   systems=["baseline", "fixed_summary", "iterative"], ablations=["no_retrieval_adaptation"])
    run = tmp_path / "run"
    run_loop(cfg, out_dir=run, stages=FakeStages().stages(), track=False, log=lambda s: None)
    assert calls == [run.resolve()]
    text = (run / rd.RESULTS).read_text()
    assert str(run) not in text and str(tmp_path) not in text.replace(str(beir), "")
    res = rd.read_results(run)
    assert Path(res["s0"]).is_file() and Path(res["iterations"][-1]["summaries"]).is_file()
    assert all(Path(s["dir"]).is_dir() for s in res["systems"].values())
    assert res["ablations"]["no_retrieval_adaptation"]["final"]["retriever"] == "g0"  # a model name: kept
    raw = json.loads(text)
    del raw["systems"]["baseline"]["test"]
    (run / rd.RESULTS).write_text(json.dumps(raw))
    with pytest.raises(DataError, match="systems.baseline.test: missing"):
        write_report(run)


def test_register_models_reads_through_run_dir(tmp_path):
    pytest.importorskip("mlflow")
    from resume import tracking
    from resume.config import ResumeConfig

    with pytest.raises(DataError, match="results.json: not found"):
        tracking.register_models(ResumeConfig(), tmp_path)
    raw = _results(tmp_path)
    del raw["iterations"][0]["summaries"]
    atomic_write_json(tmp_path / rd.RESULTS, raw)
    with pytest.raises(DataError, match=r"iterations\[0\].summaries: missing"):
        tracking.register_models(ResumeConfig(), tmp_path)


def test_serving_finds_the_final_iteration_from_relative_paths(tmp_path):
    """bundle.last_iteration follows results.json (iteration 1 here, though a complete iter_02 exists: early
    stopping ended the run at 1 after an interrupted rerun, say)."""
    from resume.serving.bundle import last_iteration

    run = tmp_path / "run"
    for t in (1, 2):
        (run / f"iter_{t:02d}" / "retriever").mkdir(parents=True)
        (run / f"iter_{t:02d}" / "retriever" / "config.json").write_text("{}")
        write_jsonl(run / f"iter_{t:02d}" / "summaries.jsonl", [{"_id": "d", "summary": "s"}])
    rd.write_results(run, _results(run))
    moved = tmp_path / "moved"
    shutil.move(run, moved)
    assert last_iteration(moved) == (moved / "iter_01" / "retriever", moved / "iter_01" / "summaries.jsonl")


def test_committed_results_are_relative_and_valid():
    for name in ("cranfield", "demo"):
        d = ROOT / "docs" / name
        if not (d / rd.RESULTS).exists():
            continue
        text = (d / rd.RESULTS).read_text()
        raw = json.loads(text)
        assert raw["schema_version"] == rd.RESULTS_SCHEMA_VERSION and raw["run_dir"] == "."
        assert '"/' not in text, f"docs/{name}/results.json holds an absolute path"
        assert rd.read_results(d)["final"]["retriever"].startswith(str(d))
