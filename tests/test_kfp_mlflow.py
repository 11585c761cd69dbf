"""The components' MLflow runs with and without KFP's MLflow plugin (KFP >= 2.17, KEP-12862).

With the plugin on, KFP's driver creates the pipeline's parent run and one nested run per task in its own
experiment and injects MLFLOW_RUN_ID / MLFLOW_EXPERIMENT_ID into the task container. `resume.kfp_ops` then
logs into those runs: before, `child_run` set `tracking.experiment` as the active experiment and MLflow
refused to reattach the injected run ("active experiment ID does not match environment run ID"), so every
task would have failed. A real sqlite MLflow store in tmp_path; nothing on the network.
"""

from __future__ import annotations

import pytest

mlflow = pytest.importorskip("mlflow")

from resume import kfp_ops  # noqa: E402


class _Artifact:
    def __init__(self, uri: str):
        self.uri = uri


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    from resume.tracking import _fluent

    with _fluent(uri):  # kfp_ops sets MLflow's process-wide tracking URI: restored afterwards for other tests
        yield mlflow.MlflowClient(uri)
        while mlflow.active_run() is not None:
            mlflow.end_run()


def _plugin_runs(client, monkeypatch, experiment: str = "kfp-plugin") -> tuple[str, str, str]:
    """What the plugin's API server and driver create for one task: (experiment id, parent, task run)."""
    exp = client.create_experiment(experiment)
    parent = client.create_run(exp, run_name="pipeline-run").info.run_id
    task = client.create_run(exp, run_name="grpo-train", tags={"mlflow.parentRunId": parent}).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", task)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", exp)
    return exp, parent, task


def _all_runs(client) -> set[str]:
    exps = [e.experiment_id for e in client.search_experiments()]
    return {r.info.run_id for r in client.search_runs(exps)}


def test_components_log_into_the_plugins_runs(store, monkeypatch):
    exp, parent, task = _plugin_runs(store, monkeypatch)
    mlflow.set_experiment("resume")  # what the component's own config names: not the plugin's experiment
    before = _all_runs(store)
    assert kfp_ops.plugin_run_id() == task
    # start-run: the plugin's parent, tagged so that it is found like ours, and no second parent
    got = kfp_ops.start_parent_run("resume", "demo", {"grpo": {"max_steps": 2}}, kfp_run_id="r-1")
    assert got == parent
    p = store.get_run(parent)
    assert p.data.tags[kfp_ops.RUN_ID_TAG] == "r-1" and p.data.params["grpo.max_steps"] == "2"
    assert kfp_ops.parent_run_for(_Artifact("minio://b/v2/artifacts/p/other/grpo-train/model"), "resume") == parent
    # a retried start-run logs the same parameters again: accepted
    assert kfp_ops.start_parent_run("resume", "demo", {"grpo": {"max_steps": 2}}, kfp_run_id="r-1") == parent
    # a component: its metrics land in the task's run, under the plugin's parent, in the plugin's experiment
    monkeypatch.setenv("MLFLOW_RUN_ID", task)  # the injected variable, as in a fresh task container
    with kfp_ops.child_run("some-other-parent", "grpo-train-iter01", "resume", {"iteration": 1}) as ml:
        assert ml.active_run().info.run_id == task
        kfp_ops.log_metrics(ml, {"reward_mean": 0.5, "mrr@10": 0.25})
    t = store.get_run(task)
    assert t.info.experiment_id == exp and t.info.status == "FINISHED"
    assert t.data.tags["mlflow.parentRunId"] == parent and t.data.tags["resume.component"] == "grpo-train"
    assert t.data.metrics == {"reward_mean": 0.5, "mrr_at_10": 0.25} and t.data.params["iteration"] == "1"
    assert _all_runs(store) == before  # nothing of our own was opened


def test_without_the_plugin_components_open_nested_runs_of_ours(store):
    parent = kfp_ops.start_parent_run("resume", "demo", {"a": 1}, kfp_run_id="r-2")
    assert kfp_ops.start_parent_run("resume", "demo", {"a": 1}, kfp_run_id="r-2") == parent  # retried: reused
    assert kfp_ops.parent_run_for(_Artifact("minio://b/v2/artifacts/p/r-2/evaluate/metrics"), "resume") == parent
    with kfp_ops.child_run(parent, "evaluate-iter01", "resume") as ml:
        child = ml.active_run().info.run_id
        kfp_ops.log_metrics(ml, {"ndcg@10": 0.5})
    c = store.get_run(child)
    assert child != parent and c.data.tags["mlflow.parentRunId"] == parent
    assert c.info.run_name == "evaluate-iter01" and c.data.metrics == {"ndcg_at_10": 0.5}
    assert store.get_experiment(c.info.experiment_id).name == "resume"
