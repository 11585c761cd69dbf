"""Tests of resume.tracking: a fabricated run dir into the default sqlite store (fast), then a real tiny loop
against a real `mlflow server` (nested runs, metrics, artifacts, registry, `models:/...@champion` loads).

    .venv/bin/pytest tests/test_tracking.py -x -q
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from _loop_fakes import FakeStages, fake_cfg, write_tiny_beir

from resume.loop import run_loop

ROOT = Path(__file__).resolve().parents[1]


def _runs(client, exp_name):
    exp = client.get_experiment_by_name(exp_name)
    return client.search_runs([exp.experiment_id], max_results=1000)


@pytest.fixture()
def fake_run(tmp_path, monkeypatch) -> tuple:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    beir = write_tiny_beir(tmp_path / "beir")
    cfg = fake_cfg(beir, max_iterations=2, eps_reward=None, eps_metric=None,
                   systems=["baseline", "fixed_summary", "iterative"], ablations=["no_negative_queries"])
    run_loop(cfg, out_dir=tmp_path / "run", stages=FakeStages().stages(), track=False, log=lambda s: None)
    return cfg, tmp_path / "run"


def test_log_run_default_sqlite_nested_runs_metrics_artifacts(fake_run):
    from mlflow.tracking import MlflowClient

    from resume import tracking

    cfg, run = fake_run
    ids = tracking.log_run(cfg, run)
    uri = tracking.tracking_uri(cfg, run)
    assert uri == f"sqlite:///{run.resolve() / 'mlflow.db'}" and (run / "mlflow.db").exists()
    client = MlflowClient(uri)
    runs = _runs(client, cfg.tracking.experiment)
    parent = client.get_run(ids["parent"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == ids["parent"]]
    assert sorted(r.info.run_name for r in children) == [
        "ablation/no_negative_queries", "iter_01", "iter_02", "system/baseline", "system/fixed_summary",
        "system/iterative"]
    assert parent.info.status == "FINISHED" and parent.data.params["loop.max_iterations"] == "2"
    # reward per GRPO step with a global step across iterations (3 steps per round in the fakes)
    hist = client.get_metric_history(ids["parent"], "grpo/reward_mean")
    assert [m.step for m in hist] == [1, 2, 3, 4, 5, 6]
    assert [m.value for m in hist][3] == pytest.approx(0.29)
    per_iter = client.get_metric_history(ids["parent"], "iter/test/mrr_at_10")
    assert [(m.step, round(m.value, 3)) for m in per_iter] == [(1, 0.26), (2, 0.31)]
    it2 = client.get_run(ids["iter_02"]).data.metrics
    assert it2["test/mrr_at_10"] == pytest.approx(0.31) and "time/grpo-train" in it2 and "separator_rate" in it2
    assert [m.step for m in client.get_metric_history(ids["iter_02"], "grpo/reward_mean")] == [4, 5, 6]
    # summary-quality signals per iteration (S_0 at step 0), the fixed judge's Delta among them
    judge = client.get_metric_history(ids["parent"], "iter/quality/judge_delta_mean")
    assert [(m.step, round(m.value, 3)) for m in judge] == [(0, 0.0), (1, 0.01), (2, 0.02)]
    assert it2["quality/copy_rate"] == pytest.approx(0.2) and "quality/placeholder_rate" in it2
    assert parent.data.metrics["baseline/test/ndcg_at_10"] == pytest.approx(0.36)
    arts = {a.path for a in client.list_artifacts(ids["parent"])}
    assert {"report.md", "results.json", "config.yaml", "plots", "summary_samples.jsonl"} <= arts
    assert {a.path for a in client.list_artifacts(ids["system/baseline"], "eval_test")} >= {"eval_test/run.trec"}
    # idempotent: logging again reuses the same runs
    again = tracking.log_run(cfg, run)
    assert again == ids and len(_runs(client, cfg.tracking.experiment)) == len(runs)


def test_sample_summaries_are_the_first_rows_of_each_set(fake_run):
    """The parent's summary_samples.jsonl: the first n rows of S_0, S_1, ... as the one summaries reader gives
    them (resume.run_dir.iter_summary_rows with a limit)."""
    from resume import tracking
    from resume.io import iter_jsonl
    from resume.run_dir import read_results

    _, run = fake_run
    out = tracking._sample_summaries(run, read_results(run), n=2)
    want = []
    for name, path in (("S_0", run / "iter_00"), ("S_1", run / "iter_01"), ("S_2", run / "iter_02")):
        for r in list(iter_jsonl(path / "summaries.jsonl"))[:2]:
            want.append({"set": name, "_id": r["_id"], "summary": r["summary"], "n_tokens": r["n_tokens"],
                         "has_separator": r["has_separator"]})
    assert list(iter_jsonl(out)) == want and len(want) == 6


def test_register_champion_rule(fake_run, monkeypatch):
    """The alias moves only when the new test MRR@10 is >= the champion's recorded one (both names together)."""
    from mlflow.tracking import MlflowClient

    from resume import tracking

    cfg, run = fake_run
    monkeypatch.setattr(tracking.registry, "_retriever_bundle", lambda *a, **k: None)
    tracking.log_run(cfg, run)
    client = MlflowClient(tracking.tracking_uri(cfg, run))

    def register_with(mrr):
        res = json.loads((run / "results.json").read_text())
        res["systems"]["iterative"]["test"]["mrr@10"] = mrr
        (run / "results.json").write_text(json.dumps(res))
        return tracking.register_models(cfg, run)

    first = register_with(0.5)
    assert first["retriever"]["version"] == "1" and first["retriever"]["champion"]
    assert tracking.register_models(cfg, run, once=True) == first  # `resume run` reruns do not re-register
    worse = register_with(0.4)
    assert worse["retriever"]["version"] == "2" and not worse["summarizer"]["champion"]
    assert str(client.get_model_version_by_alias("resume-retriever", "champion").version) == "1"
    better = register_with(0.6)
    assert better["retriever"]["champion"] and better["previous_champion_mrr@10"] == pytest.approx(0.5)
    for name in ("resume-retriever", "resume-summarizer"):
        mv = client.get_model_version_by_alias(name, "champion")
        assert str(mv.version) == "3" and mv.tags["test_mrr_at_10"] == "0.6"


def test_experiment_kind_and_dataset_inputs(fake_run):
    """The experiment is tagged as model training; every run lists the working set it used as dataset inputs."""
    from mlflow.tracking import MlflowClient

    from resume import tracking

    cfg, run = fake_run
    ids = tracking.log_run(cfg, run)
    client = MlflowClient(tracking.tracking_uri(cfg, run))
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    expected = tracking.working_set_datasets(run)

    def inputs(rid):
        return {(d.dataset.name, d.dataset.digest, {t.key: t.value for t in d.tags}["mlflow.data.context"])
                for d in client.get_run(rid).inputs.dataset_inputs}

    want = {("beir-train", expected["train"].digest, "training"), ("beir-corpus", expected["corpus"].digest, "training"),
            ("beir-dev", expected["dev"].digest, "evaluation"), ("beir-test", expected["test"].digest, "evaluation")}
    assert len({d for _, d, _ in want}) == 4  # the digests tell the splits apart
    for key in ("parent", "iter_01", "iter_02", "ablation/no_negative_queries"):
        assert inputs(ids[key]) == want, key
    assert inputs(ids["system/baseline"]) == {("beir-test", expected["test"].digest, "evaluation")}
    ds = client.get_run(ids["parent"]).inputs.dataset_inputs[0].dataset
    assert json.loads(ds.source)["uri"] == str((run / "data").resolve()) and ds.source_type == "local"
    train = next(d.dataset for d in client.get_run(ids["parent"]).inputs.dataset_inputs if d.dataset.name == "beir-train")
    assert json.loads(train.profile)["num_rows"] == 4 and "query_id" in train.schema  # the 4 train judgements
    tracking.log_run(cfg, run)  # again: no second copy
    assert len(client.get_run(ids["parent"]).inputs.dataset_inputs) == 4
    # an experiment created elsewhere gets the tag; a kind a user chose stays
    client.delete_experiment_tag(exp.experiment_id, "mlflow.experimentKind")
    tracking.log_run(cfg, run)
    assert client.get_experiment(exp.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    client.set_experiment_tag(exp.experiment_id, "mlflow.experimentKind", "finetuning")
    tracking.log_run(cfg, run)
    assert client.get_experiment(exp.experiment_id).tags["mlflow.experimentKind"] == "finetuning"


def test_live_grpo_run_and_replay_without_duplicates(fake_run, monkeypatch):
    """live_grpo names the round's nested run (and the global step offset) in the environment for the block;
    the replay afterwards adds only the steps the run does not have."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from resume import tracking

    cfg, run = fake_run
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    parent = tracking.start_parent(cfg, run)
    uri = tracking.tracking_uri(cfg, run)
    client = MlflowClient(uri)
    prev = [str(run / "iter_01" / "summarizer")]
    with tracking.live_grpo(cfg, run, "main", 2, prev) as rid:
        assert os.environ["MLFLOW_RUN_ID"] == rid and os.environ["MLFLOW_TRACKING_URI"] == uri
        assert os.environ["RESUME_GRPO_STEP_OFFSET"] == "3"  # round 1 logged steps 1..3
        r = client.get_run(rid)
        assert r.info.run_name == "iter_02" and r.data.tags["mlflow.parentRunId"] == parent
        assert r.info.status == "RUNNING"
        # what resume.grpo's callback writes at round 2's first step (global step 4)
        client.log_batch(rid, metrics=[Metric("grpo/reward_mean", 0.29, 0, 4)])
    assert "MLFLOW_RUN_ID" not in os.environ and "RESUME_GRPO_STEP_OFFSET" not in os.environ
    ids = tracking.log_run(cfg, run)
    assert ids["iter_02"] == rid  # the replay reuses the live run
    hist = client.get_metric_history(rid, "grpo/reward_mean")
    assert sorted(m.step for m in hist) == [4, 5, 6]  # step 4 once: the live value is not logged again
    tracking.log_run(cfg, run)
    assert len(client.get_metric_history(rid, "grpo/reward_mean")) == 3
    assert len(client.get_metric_history(ids["parent"], "grpo/reward_mean")) == 6
    # an ablation round goes to the ablation's run; a failure inside the block marks the run FAILED
    with pytest.raises(RuntimeError, match="boom"), \
            tracking.live_grpo(cfg, run, "no_negative_queries", 1, []) as arid:
        assert os.environ["RESUME_GRPO_STEP_OFFSET"] == "0"
        raise RuntimeError("boom")
    assert arid == ids["ablation/no_negative_queries"] and client.get_run(arid).info.status == "FAILED"
    assert "MLFLOW_RUN_ID" not in os.environ


def test_live_grpo_without_parent_is_off(tmp_path, monkeypatch):
    from resume import tracking
    from resume.config import load_config

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    with tracking.live_grpo(load_config(None, []), tmp_path, "main", 1, []) as rid:
        assert rid is None and "MLFLOW_RUN_ID" not in os.environ


def _tracked_loop(tmp_path, monkeypatch, **tracking) -> tuple:
    """`resume run` with MLflow on (the run dir's sqlite store) and the fake stages; returns (cfg, run dir)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    cfg = fake_cfg(write_tiny_beir(tmp_path / "beir"), max_iterations=2, eps_reward=None, eps_metric=None,
                   systems=["baseline", "iterative"])
    cfg.tracking.register = False
    for k, v in tracking.items():
        setattr(cfg.tracking, k, v)
    return cfg, tmp_path / "run"


def _parent_status(cfg, run: Path) -> tuple[str, str, int | None]:
    """(parent run id, its status, its end time) as MLflow's store holds them."""
    from mlflow.tracking import MlflowClient

    from resume import tracking

    rid = json.loads((run / tracking.STATE).read_text())["parent"]
    info = MlflowClient(tracking.tracking_uri(cfg, run)).get_run(rid).info
    return rid, info.status, info.end_time


def test_loop_that_raises_ends_the_parent_run_failed_and_a_rerun_finished(tmp_path, monkeypatch):
    """A stage that raises mid-loop: the parent run ends FAILED (not left RUNNING); the rerun that completes
    reopens the same parent and ends it FINISHED."""
    fake = FakeStages(fail_on="summarize:iter_02")
    cfg, run = _tracked_loop(tmp_path, monkeypatch)
    with pytest.raises(RuntimeError, match="injected failure in summarize"):
        run_loop(cfg, out_dir=run, stages=fake.stages(), log=lambda s: None)
    rid, status, end = _parent_status(cfg, run)
    assert status == "FAILED" and end is not None
    run_loop(cfg, out_dir=run, stages=fake.stages(), log=lambda s: None)  # fail_on fired once: this one completes
    again, status, _ = _parent_status(cfg, run)
    assert again == rid and status == "FINISHED"


def test_interrupted_loop_ends_the_parent_and_the_round_failed(tmp_path, monkeypatch):
    """Ctrl-C (KeyboardInterrupt) inside a GRPO round: the round's live nested run and the parent end FAILED."""
    from mlflow.tracking import MlflowClient

    from resume import tracking

    fake = FakeStages()
    stages = fake.stages()

    def interrupted(cfg, *, out_dir, **kw):
        if "iter_02" in str(out_dir):
            raise KeyboardInterrupt
        return fake.grpo_train(cfg, out_dir=out_dir, **kw)

    stages.grpo_train = interrupted
    cfg, run = _tracked_loop(tmp_path, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_loop(cfg, out_dir=run, stages=stages, log=lambda s: None)
    _, status, _ = _parent_status(cfg, run)
    assert status == "FAILED"
    st = json.loads((run / tracking.STATE).read_text())
    assert MlflowClient(st["tracking_uri"]).get_run(st["runs"]["iter_02"]).info.status == "FAILED"
    assert "MLFLOW_RUN_ID" not in os.environ


def test_failure_after_the_parent_was_logged_still_ends_it_failed(tmp_path, monkeypatch):
    """An error in the last step (registration, after `log_run` ended the parent FINISHED) ends it FAILED."""
    from resume import tracking

    def registry_down(*a, **kw):
        raise RuntimeError("registry down")

    monkeypatch.setattr(tracking, "register_models", registry_down)
    fake = FakeStages()
    cfg, run = _tracked_loop(tmp_path, monkeypatch, register=True)
    with pytest.raises(RuntimeError, match="registry down"):
        run_loop(cfg, out_dir=run, stages=fake.stages(), log=lambda s: None)
    assert json.loads((run / tracking.STATE).read_text()).get("logged")  # log_run had completed
    assert _parent_status(cfg, run)[1] == "FAILED"


def test_registered_models_have_signature_and_code_paths(fake_run, monkeypatch, tmp_path):
    """Both pyfunc models carry a signature (validated at predict) and the `resume` source as code_paths,
    with requirements installable from PyPI (no local version labels)."""
    import mlflow
    import pandas as pd
    import yaml

    from resume import tracking
    from resume.models import resolve_model

    cfg, run = fake_run
    monkeypatch.setattr(tracking.registry, "_retriever_bundle", lambda *a, **k: None)
    res = json.loads((run / "results.json").read_text())
    res["final"] = {"retriever": resolve_model("tiny-encoder"), "summarizer": resolve_model("tiny-causal-lm")}
    (run / "results.json").write_text(json.dumps(res))
    out = tracking.register_models(cfg, run)
    with tracking._fluent(tracking.tracking_uri(cfg, run)):
        for kind in ("retriever", "summarizer"):
            local = Path(mlflow.artifacts.download_artifacts(out[kind]["uri"], dst_path=str(tmp_path / kind)))
            mlmodel = yaml.safe_load((local / "MLmodel").read_text())
            assert mlmodel["signature"]["inputs"] and mlmodel["signature"]["params"], kind
            assert mlmodel["flavors"]["python_function"]["code"] == "code"
            assert (local / "code" / "resume" / "tracking" / "pyfunc.py").is_file()
            assert (local / "code" / "resume" / "retriever" / "encoder.py").is_file()
            reqs = (local / "requirements.txt").read_text().split()
            assert any(r.startswith("mlflow==") for r in reqs) and any(r.startswith("torch==") for r in reqs)
            assert not any("+" in r for r in reqs), reqs
        model = mlflow.pyfunc.load_model(out["retriever"]["uri"])
        sig = model.metadata.signature
        assert sig.inputs.input_types() == [mlflow.types.DataType.string]
        assert {p.name: p.default for p in sig.params.params} == {"kind": "query"}
        q = model.predict(pd.DataFrame({"text": ["what is a shock wave?", "boundary layer"]}))
        d = model.predict(pd.DataFrame({"text": ["what is a shock wave?"]}), params={"kind": "doc"})
        assert len(q) == 2 and len(q[0]) == len(d[0]) > 8
        assert len(model.predict(["a plain list of strings"])) == 1
        with pytest.raises(mlflow.exceptions.MlflowException, match="string"):
            model.predict(pd.DataFrame({"text": [1.5]}))  # the signature rejects a non-text column
        with pytest.raises(mlflow.exceptions.MlflowException, match="kind"):
            model.predict(pd.DataFrame({"text": ["x"]}), params={"kind": 3})
        summ = mlflow.pyfunc.load_model(out["summarizer"]["uri"])
        assert {p.name for p in summ.metadata.signature.params.params} == {"max_new_tokens"}
        assert len(summ.predict(pd.DataFrame({"document": ["A document about shock waves."]}),
                                params={"max_new_tokens": 4})) == 1


# ------------------------------------------------------------------------- real mlflow server, real stages


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}", "--artifacts-destination", str(tmp / "artifacts"),
           "--serve-artifacts"]
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("mlflow server did not become healthy: " + (tmp / "server.log").read_text()[-2000:])
        time.sleep(0.5)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def test_real_loop_against_mlflow_server(mlflow_server, tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from resume.config import load_config

    cranfield = ROOT / "data" / "cranfield"
    if not (cranfield / "corpus.jsonl").exists():
        pytest.skip("data/cranfield not converted yet")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [
        f"data.path={cranfield}", "data.max_train_queries=4", "data.max_eval_queries=2", "data.distractors=4",
        "summarizer.max_new_tokens=8", "grpo.max_completion_length=8", "grpo.max_train_docs=4",
        "loop.max_iterations=1", 'loop.systems=["baseline", "iterative"]', f"tracking.tracking_uri={mlflow_server}",
        "tracking.experiment=resume-server-test"])
    out = run_loop(cfg, out_dir=tmp_path / "run", log=lambda s: None)
    reg = out["registered"]
    assert reg["retriever"]["champion"] and reg["summarizer"]["champion"], reg

    client = MlflowClient(mlflow_server)
    runs = _runs(client, "resume-server-test")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    pid = parents[0].info.run_id
    names = sorted(r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == pid)
    assert names == ["iter_01", "system/baseline", "system/iterative"]
    assert [m.step for m in client.get_metric_history(pid, "iter/test/mrr_at_10")] == [1]
    assert len(client.get_metric_history(pid, "grpo/reward_mean")) == cfg.grpo.max_steps
    # the round's reward went to iter_01 while GRPO trained (live), once per step: the replay at the end
    # (which logged the parent's series above) added nothing there
    it1 = next(r for r in runs if r.info.run_name == "iter_01")
    live = client.get_metric_history(it1.info.run_id, "grpo/retrieval_mean")
    assert sorted(m.step for m in live) == list(range(1, cfg.grpo.max_steps + 1))
    replayed = client.get_metric_history(pid, "grpo/retrieval_mean")
    assert max(m.timestamp for m in live) < min(m.timestamp for m in replayed)
    assert client.get_experiment_by_name("resume-server-test").tags["mlflow.experimentKind"] == "custom_model_development"
    assert {d.dataset.name for d in client.get_run(pid).inputs.dataset_inputs} == {
        "cranfield-train", "cranfield-dev", "cranfield-test", "cranfield-corpus"}
    arts = {a.path for a in client.list_artifacts(pid)}
    assert {"report.md", "plots", "results.json", "config.yaml", "summary_samples.jsonl"} <= arts
    assert {a.path for a in client.list_artifacts(pid, "plots")} == {"plots/metrics.png", "plots/reward.png"}
    assert {m.name for m in client.search_registered_models()} >= {"resume-summarizer", "resume-retriever"}
    for name in ("resume-summarizer", "resume-retriever"):  # versions logged from the run's parent
        assert client.get_model_version_by_alias(name, "champion").run_id == pid

    # the champion loads through the registry and embeds; its files include the serving bundle
    from resume.tracking import _fluent

    with _fluent(mlflow_server):  # = mlflow.set_tracking_uri(server), restored afterwards
        model = mlflow.pyfunc.load_model("models:/resume-retriever@champion")
        emb = model.predict(["what is the lift of a wing?", "boundary layer"])
        assert len(emb) == 2 and len(emb[0]) > 8
        files = Path(mlflow.artifacts.download_artifacts("models:/resume-retriever@champion",
                                                         dst_path=str(tmp_path / "dl")))
        bundle = list(files.rglob("bundle.json"))
        assert bundle and json.loads(bundle[0].read_text())["format"] == "resume-retriever-bundle"
        assert not list(files.rglob("checkpoints"))  # training leftovers are not part of the model
        summ = mlflow.pyfunc.load_model("models:/resume-summarizer@champion")
        assert len(summ.predict(["A document about shock waves in supersonic flow."])) == 1
    shutil.rmtree(tmp_path / "dl", ignore_errors=True)


def test_unreachable_server_is_one_clear_error(tmp_path):
    from resume import tracking
    from resume.config import load_config
    from resume.errors import ResumeError

    cfg = load_config(None, [f"tracking.tracking_uri=http://127.0.0.1:{_free_port()}"])
    t0 = time.time()
    with pytest.raises(ResumeError, match=r"MLflow tracking at http://127\.0\.0\.1:\d+ failed"):
        tracking.start_parent(cfg, tmp_path)
    assert time.time() - t0 < 30
