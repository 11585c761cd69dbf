"""KFP caching: two runs with identical arguments give every cached task the same cache key (fast, no execution).

    .venv/bin/pytest tests/test_pipeline_cache.py -q

KFP's backend computes a task's cache key (backend/src/v2/cacheutils/cache.go, `GenerateCacheKey`) from
its input parameter values, the names of its input artifacts, its output artifacts' types and metadata
(URIs wiped), its output parameter types, and the container's image, command and args, PVCs and env.
A cache hit hands the downstream tasks the cached execution's outputs, so a cached task's key is stable
across runs exactly when each input is a constant, a pipeline argument, or an output of a cached task
whose key is stable. An output of an uncached task (a new execution every run) or a
`{{$.pipeline_job_*}}` / `{{$.pipeline_task_*}}` placeholder changes it on every run.

The tests compile the pipeline twice with identical arguments, replay one run of each compilation (uncached
tasks and run placeholders get values specific to the run, cached tasks hand on outputs named by their
key) and compare the keys of every cached task. A pipeline that feeds an uncached output into a cached
task shows the check failing.
"""

# no `from __future__ import annotations`: KFP reads the components' annotations as types
import hashlib
import json
from pathlib import Path

import pytest
import yaml
from kfp import dsl

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "pipelines" / "resume_pipeline.py"
RUN_PLACEHOLDERS = ("{{$.pipeline_job_", "{{$.pipeline_task_")




def _docs(path: Path) -> tuple[dict, dict]:
    docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(docs) > 1 else {}
    return docs[0], platform


def replay_cache_keys(path: Path, run: str, arguments: dict | None = None) -> dict[str, tuple[bool, str]]:
    """display name -> (caching enabled, cache key) of every container task, for one simulated run `run`."""
    spec, platform = _docs(path)
    comps = spec["components"]
    dags = {"": spec["root"]["dag"], **{n: c["dag"] for n, c in comps.items() if "dag" in c}}
    roots = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    args = {k: v.get("defaultValue") for k, v in roots.items()} | dict(arguments or {})
    runs_dag: dict[str, tuple[str, dict]] = {}  # sub-DAG component -> (DAG holding its task, task)
    tasks: dict[str, tuple[str, dict]] = {}     # task key -> (DAG it sits in, task)
    for dname, dag in dags.items():
        for key, task in dag["tasks"].items():
            tasks[key] = (dname, task)
            if task["componentRef"]["name"] in dags:
                runs_dag[task["componentRef"]["name"]] = (dname, task)
    keys: dict[str, tuple[bool, str]] = {}

    def output(producer: str, name: str):
        """What a consumer sees of `producer`'s output `name` in this run."""
        _, task = tasks[producer]
        cached, key = task_key(producer)
        return f"cached:{key}:{name}" if cached else f"{run}:{producer}:{name}"

    def constant(value):
        text = json.dumps(value, sort_keys=True)
        return f"{run}:{text}" if any(p in text for p in RUN_PLACEHOLDERS) else value

    def param(dname: str, src: dict):
        if "runtimeValue" in src:
            return constant(src["runtimeValue"].get("constant"))
        if "taskOutputParameter" in src:
            o = src["taskOutputParameter"]
            return output(o["producerTask"], o["outputParameterKey"])
        if "componentInputParameter" in src:
            name = src["componentInputParameter"]
            if dname == "":
                return args.get(name)
            outer, task = runs_dag[dname]
            return param(outer, task["inputs"]["parameters"][name])
        raise AssertionError(f"unknown parameter source {src}")

    def artifact(dname: str, src: dict):
        if "taskOutputArtifact" in src:
            o = src["taskOutputArtifact"]
            return output(o["producerTask"], o["outputArtifactKey"])
        if "componentInputArtifact" in src:
            outer, task = runs_dag[dname]
            return artifact(outer, task["inputs"]["artifacts"][src["componentInputArtifact"]])
        raise AssertionError(f"unknown artifact source {src}")

    def task_key(key: str) -> tuple[bool, str]:
        if key in keys:
            return keys[key]
        dname, task = tasks[key]
        comp = comps[task["componentRef"]["name"]]
        ex = spec["deploymentSpec"]["executors"][comp["executorLabel"]]["container"]
        inputs = task.get("inputs", {})
        outs = comp.get("outputDefinitions", {})
        pvcs = sorted(m.get("constant", m.get("taskOutputParameter", {}).get("producerTask", ""))
                      for m in platform.get(comp["executorLabel"], {}).get("pvcMount", []))
        cache_key = {
            "inputArtifactNames": {k: artifact(dname, v) for k, v in inputs.get("artifacts", {}).items()},
            "inputParameterValues": {k: param(dname, v) for k, v in inputs.get("parameters", {}).items()},
            "outputArtifactsSpec": {k: v["artifactType"] for k, v in outs.get("artifacts", {}).items()},
            "outputParametersSpec": {k: v["parameterType"] for k, v in outs.get("parameters", {}).items()},
            "containerSpec": {"image": ex["image"], "cmdArgs": ex.get("command", []) + ex.get("args", []),
                              "pvcNames": pvcs, "env": ex.get("env", [])},
        }
        digest = hashlib.sha256(json.dumps(cache_key, sort_keys=True, default=str).encode()).hexdigest()
        keys[key] = (bool(task.get("cachingOptions", {}).get("enableCache", False)), digest)
        return keys[key]

    return {task["taskInfo"]["name"]: task_key(key) for key, (_, task) in tasks.items()
            if task["componentRef"]["name"] not in dags}


@pytest.mark.parametrize("kw", [{}, {"max_iterations": 4, "finetune_gpus": 2, "summarize_on_ray": True}])
def test_identical_runs_give_cached_tasks_identical_cache_keys(rp, tmp_path, kw):
    a = rp.compile_pipeline(tmp_path / "a.yaml", **kw)
    b = rp.compile_pipeline(tmp_path / "b.yaml", **kw)
    args = {"config_path": "configs/demo.yaml", "overrides": ["loop.eps_metric=0.01"], "grpo_max_steps": 50}
    run_a, run_b = replay_cache_keys(a, "run-a", args), replay_cache_keys(b, "run-b", args)
    assert set(run_a) == set(run_b)
    cached = sorted(n for n, (c, _) in run_a.items() if c)
    expected = {"resolve-config", "baseline-evaluate-test", "summarize-corpus-iter0", "evaluate-dev-iter0",
                "fixed-summary-evaluate-test"}
    assert expected <= set(cached)
    assert {n for n in cached if n.startswith("grpo-train")} == \
        {f"grpo-train-iter{t}" for t in range(1, kw.get("max_iterations", rp.MAX_ITERATIONS) + 1)}
    for name in cached:
        assert run_a[name] == run_b[name], f"{name}: its cache key changes between identical runs"
    # the uncached tasks do see run-specific inputs: the replay tells the two runs apart
    assert run_a["start-run"] != run_b["start-run"]
    assert all(run_a[n] != run_b[n] for n in run_a if n.startswith(("register-model", "should-continue")))
    # and different arguments give the cached tasks different keys
    other = replay_cache_keys(b, "run-b", args | {"grpo_max_steps": 51})
    assert other["resolve-config"] != run_a["resolve-config"] and other["grpo-train-iter1"] != run_a["grpo-train-iter1"]


def test_no_cached_task_takes_a_run_specific_input(rp):
    """The property behind the keys, on the committed YAML: no cached task reads an uncached task's output
    (start-run's MLflow parent run id above all) or a run placeholder, directly or through a condition."""
    spec, _ = _docs(ROOT / "pipelines" / "resume_pipeline.yaml")
    for text in (json.dumps(t.get("inputs", {})) for dag in
                 [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]
                 for t in dag["tasks"].values() if t.get("cachingOptions", {}).get("enableCache")):
        assert not any(p in text for p in RUN_PLACEHOLDERS), text
        assert "start-run" not in text, text
    params = {n: set(c.get("inputDefinitions", {}).get("parameters", {})) for n, c in spec["components"].items()}
    for name in ("comp-grpo-train", "comp-summarize-corpus", "comp-retriever-finetune", "comp-evaluate",
                 "comp-resolve-config"):
        assert "parent_run_id" not in params[name] and "run_name" not in params[name], name


@dsl.component(base_image="python:3.11")
def _fresh() -> str:
    return "new every run"


@dsl.component(base_image="python:3.11")
def _consumer(x: str) -> str:
    return x


def test_replay_catches_an_uncached_input_of_a_cached_task(tmp_path):
    """The check can fail: a cached task fed by an uncached one (what the pipeline did with the MLflow
    run id of an uncached resolve-config) gets a different key in every run."""
    from kfp import compiler

    @dsl.pipeline(name="bad-cache")
    def bad():
        src = _fresh().set_caching_options(False)
        _consumer(x=src.output).set_caching_options(True).set_display_name("by-uncached-output")
        _consumer(x=dsl.PIPELINE_JOB_NAME_PLACEHOLDER).set_caching_options(True).set_display_name("by-placeholder")
        _consumer(x="constant").set_caching_options(True).set_display_name("by-constant")

    compiler.Compiler().compile(bad, str(tmp_path / "bad.yaml"))
    a, b = replay_cache_keys(tmp_path / "bad.yaml", "run-a"), replay_cache_keys(tmp_path / "bad.yaml", "run-b")
    assert a["by-uncached-output"] != b["by-uncached-output"]
    assert a["by-placeholder"] != b["by-placeholder"]
    assert a["by-constant"] == b["by-constant"]
