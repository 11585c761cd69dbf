"""The KFP pipeline: compiled YAML up to date and well-formed; end to end under kfp.local (slow).

    .venv/bin/pytest tests/test_pipeline.py -q                 # fast: compile checks
    .venv/bin/pytest tests/test_pipeline.py -q -m slow         # kfp.local runs on configs/tiny.yaml

The slow tests run the whole pipeline with `kfp.local.SubprocessRunner(use_venv=False)` for two unrolled
iterations, once where both run and once where early stopping skips the second, and compare every
artifact with `resume run` (resume.loop.run_loop) on the same config and seed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _pipeline import load_pipeline_module

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "pipelines" / "resume_pipeline.py"
COMPILED = ROOT / "pipelines" / "resume_pipeline.yaml"
FIVE = ("grpo-train", "summarize-corpus", "retriever-finetune", "evaluate", "register-model")
METRICS = ("mrr@10", "ndcg@10", "recall@100", "recall@1000")




def _spec(path: Path) -> dict:
    return next(yaml.safe_load_all(path.read_text(encoding="utf-8")))


def _platform(path: Path) -> dict:
    docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    return docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _tasks(spec: dict) -> dict[str, tuple[str, dict]]:
    """display name -> (task key, task) over the root DAG and every sub-DAG (conditions)."""
    out = {}
    for dag in [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]:
        for key, task in dag["tasks"].items():
            out[task["taskInfo"]["name"]] = (key, task)
    return out


def _executor(spec: dict, task: dict) -> dict:
    comp = spec["components"][task["componentRef"]["name"]]
    return spec["deploymentSpec"]["executors"][comp["executorLabel"]]


# --------------------------------------------------------------------------------------------- fast


def test_compiled_yaml_is_up_to_date(tmp_path):
    """`make pipeline` output is committed: recompiling (default image) gives the same bytes."""
    out = tmp_path / "p.yaml"
    env = {k: v for k, v in os.environ.items() if k != "RESUME_IMAGE"}
    subprocess.run([sys.executable, str(PIPELINE), "--out", str(out)], check=True, env=env, cwd=ROOT,
                   capture_output=True)
    assert COMPILED.is_file(), "run `make pipeline`"
    assert out.read_text(encoding="utf-8") == COMPILED.read_text(encoding="utf-8"), \
        "pipelines/resume_pipeline.yaml is stale: run `make pipeline`"


def test_make_pipeline_target():
    mk = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "python pipelines/resume_pipeline.py --out pipelines/resume_pipeline.yaml" in mk


def test_names_the_five_components_and_unrolls_three_iterations(rp):
    spec = _spec(COMPILED)
    assert spec["pipelineInfo"]["name"] == "resume-loop"
    names = set(spec["deploymentSpec"]["executors"])
    for c in FIVE:
        assert f"exec-{c}" in names, c
    tasks = _tasks(spec)
    for t in range(1, rp.MAX_ITERATIONS + 1):
        for c in ("grpo-train", "summarize-corpus", "retriever-finetune", "evaluate-dev", "evaluate-test",
                  "register-model"):
            assert f"{c}-iter{t}" in tasks, f"{c}-iter{t}"
    assert {"resolve-config", "start-run", "baseline-evaluate-test", "summarize-corpus-iter0", "evaluate-dev-iter0",
            "fixed-summary-evaluate-test"} <= set(tasks)
    assert sorted(n for n in tasks if n.startswith("should-continue")) == \
        [f"should-continue-iter{t}" for t in range(1, rp.MAX_ITERATIONS)]


def test_iteration_guards(rp):
    """Iteration t+1 runs under dsl.If(should-continue-t == true); register-model-t under its Else."""
    spec = _spec(COMPILED)
    tasks = _tasks(spec)
    for t in range(1, rp.MAX_ITERATIONS):
        key = tasks[f"should-continue-iter{t}"][0]
        cond = tasks[f"iteration-{t + 1}"][1]["triggerPolicy"]["condition"]
        assert cond == f"inputs.parameter_values['pipelinechannel--{key}-Output'] == true"
        assert tasks[f"stop-after-{t}"][1]["triggerPolicy"]["condition"] == f"!({cond})"
        # the guarded sub-DAG holds iteration t+1 (the kfp.local bug: never branch on a nested pipeline)
        sub = spec["components"][tasks[f"iteration-{t + 1}"][1]["componentRef"]["name"]]["dag"]["tasks"]
        assert f"grpo-train-iter{t + 1}" in {x["taskInfo"]["name"] for x in sub.values()}
        els = spec["components"][tasks[f"stop-after-{t}"][1]["componentRef"]["name"]]["dag"]["tasks"]
        assert [x["taskInfo"]["name"] for x in els.values()] == [f"register-model-iter{t}"]


def test_resources_caching_secrets_and_volumes(rp):
    spec = _spec(COMPILED)
    platform = _platform(COMPILED)
    seen = set()
    for name, (_, task) in _tasks(spec).items():
        if "executorLabel" not in spec["components"][task["componentRef"]["name"]]:
            continue  # a condition's sub-DAG
        kind = "evaluate" if "evaluate" in name else next(k for k in rp.RESOURCES if name.startswith(k))
        seen.add(kind)
        cpu, mem, cpu_lim, mem_lim, gpus, cache = rp.RESOURCES[kind]
        ex = _executor(spec, task)
        res = ex["container"]["resources"]
        assert (res["resourceCpuRequest"], res["resourceMemoryRequest"]) == (cpu, mem), name
        assert (res["resourceCpuLimit"], res["resourceMemoryLimit"]) == (cpu_lim, mem_lim), name
        if gpus:
            assert res["accelerator"]["resourceType"] == "nvidia.com/gpu"
            assert res["accelerator"]["resourceCount"] == str(gpus), name
        else:
            assert "accelerator" not in res, name
        assert task["cachingOptions"].get("enableCache", False) is cache, name
        assert ex["container"]["image"] == "ghcr.io/resume-project/resume:0.1.0"
        p = platform[spec["components"][task["componentRef"]["name"]]["executorLabel"]]
        (sec,) = p["secretAsEnv"]
        assert sec["secretName"] == rp.MLFLOW_SECRET and sec["optional"] is True
        assert {e["envVar"] for e in sec["keyToEnv"]} == set(rp.MLFLOW_ENV)
        if kind in ("grpo-train", "summarize-corpus"):
            assert p["pvcMount"][0]["mountPath"] == rp.SHARED_MOUNT
        retry = task.get("retryPolicy")
        if rp.RETRIES[kind]:
            assert retry == {"maxRetryCount": rp.RETRIES[kind], "backoffDuration": "30s", "backoffFactor": 2.0,
                             "backoffMaxDuration": "600s"}, name
        else:
            assert retry is None, name
    assert seen == set(rp.RESOURCES) == set(rp.RETRIES)
    # the cache chain starts at resolve-config; the tasks with MLflow side effects are never cached
    assert rp.RESOURCES["resolve-config"][-1] is True
    assert not any(rp.RESOURCES[k][-1] for k in ("start-run", "should-continue", "register-model"))
    assert rp.RETRIES["grpo-train"] >= 1 and rp.RETRIES["register-model"] == 0


def test_finetune_gpus_equal_torchrun_nproc(rp, tmp_path):
    out = rp.compile_pipeline(tmp_path / "p.yaml", max_iterations=4, finetune_gpus=4)
    spec = _spec(out)
    tasks = _tasks(spec)
    assert sum(n.startswith("grpo-train-iter") for n in tasks) == 4
    assert sum(n.startswith("should-continue-iter") for n in tasks) == 3
    assert sum(n.startswith("register-model-iter") for n in tasks) == 4
    key, task = tasks["retriever-finetune-iter4"]
    assert _executor(spec, task)["container"]["resources"]["accelerator"]["resourceCount"] == "4"
    assert task["inputs"]["parameters"]["nproc"]["runtimeValue"]["constant"] == 4


def test_pipeline_parameters(rp):
    params = _spec(COMPILED)["root"]["inputDefinitions"]["parameters"]
    for p in ("config_path", "overrides", "data_path", "summarizer_model", "retriever_model", "grpo_max_steps",
              "grpo_learning_rate", "finetune_max_steps", "finetune_learning_rate", "ray_address", "shared_dir"):
        assert p in params, p
    assert params["ray_address"]["defaultValue"] == rp.RAY_HEAD
    with pytest.raises(ValueError, match="max_iterations"):
        rp.build_pipeline(max_iterations=0)


def _artifact_edges(spec: dict) -> dict[str, dict[str, tuple[str, str]]]:
    """display name -> {artifact input: (producer's display name, output)} for every container task, each
    input followed through the condition sub-DAGs (`componentInputArtifact`) to the task that produced it."""
    dags = {"": spec["root"]["dag"], **{n: c["dag"] for n, c in spec["components"].items() if "dag" in c}}
    runs_dag: dict[str, tuple[str, dict]] = {}  # sub-DAG component -> (DAG holding the task that runs it, task)
    names: dict[str, str] = {}
    for dname, dag in dags.items():
        for key, task in dag["tasks"].items():
            assert key not in names, f"task key {key} twice"
            names[key] = task["taskInfo"]["name"]
            if task["componentRef"]["name"] in dags:
                runs_dag[task["componentRef"]["name"]] = (dname, task)

    def producer(dname: str, src: dict) -> tuple[str, str]:
        if "taskOutputArtifact" in src:
            o = src["taskOutputArtifact"]
            return names[o["producerTask"]], o["outputArtifactKey"]
        outer, task = runs_dag[dname]
        return producer(outer, task["inputs"]["artifacts"][src["componentInputArtifact"]])

    return {names[key]: {i: producer(dname, src) for i, src in task.get("inputs", {}).get("artifacts", {}).items()}
            for dname, dag in dags.items() for key, task in dag["tasks"].items()
            if task["componentRef"]["name"] not in dags}


def _expected_edges(T: int) -> dict[str, dict[str, tuple[str, str]]]:
    """Algorithm 1 unrolled: iteration t+1 starts from iteration t's models (f_t and g_t), S_t comes from f_t,
    g_t is fine-tuned from g_{t-1} on S_t and evaluated over S_t; iteration 1 starts from the config's f_0, g_0."""
    cd = {"config": ("resolve-config", "config"), "data": ("resolve-config", "data")}
    exp = {"resolve-config": {}, "start-run": {"config": cd["config"]},
           "baseline-evaluate-test": dict(cd), "summarize-corpus-iter0": dict(cd),
           "evaluate-dev-iter0": cd | {"summaries": ("summarize-corpus-iter0", "summaries")},
           "fixed-summary-evaluate-test": cd | {"summaries": ("summarize-corpus-iter0", "summaries")}}
    for t in range(1, T + 1):
        f, s, g = (f"grpo-train-iter{t}", "model"), (f"summarize-corpus-iter{t}", "summaries"), \
            (f"retriever-finetune-iter{t}", "model")
        prev = {"summarizer_in": (f"grpo-train-iter{t - 1}", "model"),
                "retriever_in": (f"retriever-finetune-iter{t - 1}", "model")} if t > 1 else {}
        g_prev = {k: v for k, v in prev.items() if k == "retriever_in"}
        exp[f"grpo-train-iter{t}"] = cd | prev
        exp[f"summarize-corpus-iter{t}"] = cd | g_prev | {"summarizer_in": f}
        exp[f"retriever-finetune-iter{t}"] = cd | g_prev | {"summaries": s}
        for split in ("dev", "test"):
            exp[f"evaluate-{split}-iter{t}"] = cd | {"retriever_in": g, "summaries": s}
        exp[f"register-model-iter{t}"] = cd | {
            "summarizer": f, "retriever": g, "summaries": s, "eval_test": (f"evaluate-test-iter{t}", "eval_dir"),
            "eval_dev": (f"evaluate-dev-iter{t}", "eval_dir"), "grpo_metrics": (f"grpo-train-iter{t}", "metrics"),
            "baseline_eval": ("baseline-evaluate-test", "eval_dir"),
            "fixed_summary_eval": ("fixed-summary-evaluate-test", "eval_dir")}
        if t < T:
            exp[f"should-continue-iter{t}"] = {
                "config": cd["config"], "grpo_metrics": (f"grpo-train-iter{t}", "metrics"),
                "eval_metrics": (f"evaluate-dev-iter{t}", "metrics"),
                "prev_eval_metrics": (f"evaluate-dev-iter{t - 1}", "metrics"),
                **({"prev_grpo_metrics": (f"grpo-train-iter{t - 1}", "metrics")} if t > 1 else {})}
    return exp


@pytest.mark.parametrize("source", ["committed", "compiled-4"])
def test_artifact_edges_chain_the_iterations(rp, tmp_path, source):
    """Which artifact feeds which task: iteration t+1 consumes iteration t's summarizer and retriever, and
    every evaluation, decision and registration reads the iteration it belongs to. Checked on the committed
    YAML (what is deployed) and on a fresh compile with four unrolled iterations (what the code builds)."""
    T = rp.MAX_ITERATIONS if source == "committed" else 4
    path = COMPILED if source == "committed" else rp.compile_pipeline(tmp_path / "p.yaml", max_iterations=T)
    got = _artifact_edges(_spec(path))
    exp = _expected_edges(T)
    assert sorted(got) == sorted(exp)
    for task in sorted(exp):
        assert got[task] == exp[task], task


def test_components_import_only_stdlib_and_kfp_at_top():
    import ast

    for path in sorted((ROOT / "components").glob("*/component.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        tops = set()
        for node in tree.body:
            if isinstance(node, ast.Import):
                tops |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                tops.add((node.module or "").split(".")[0])
        assert tops <= {"os", "kfp", "__future__"}, f"{path}: {tops}"


# ------------------------------------------------------------------------------------- kfp.local e2e


def _stage_outputs(root: Path, max_iterations: int, tmp: Path) -> dict[str, Path]:
    """display name -> local output dir of that task in the single run under `root`."""
    rp = load_pipeline_module()
    spec = _spec(rp.compile_pipeline(tmp / "spec.yaml", max_iterations=max_iterations))
    (run,) = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("resume-loop-")]
    return {name: run / key for name, (key, _) in _tasks(spec).items()}


def _run_local(tmp: Path, overrides: list[str], ray_address: str) -> dict[str, Path]:
    from kfp import local

    rp = load_pipeline_module()
    root = tmp / "kfp"
    local.init(local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    pipe = rp.build_pipeline(max_iterations=2, finetune_gpus=1)
    pipe(config_path=str(ROOT / "configs" / "tiny.yaml"), overrides=overrides,
         data_path=str(ROOT / "data" / "cranfield"), ray_address=ray_address, shared_dir=str(tmp / "shared"))
    return _stage_outputs(root, 2, tmp)


def _output_param(task_dir: Path, name: str = "Output"):
    """A task's output parameter, as kfp.local records it in executor_output.json."""
    return json.loads((task_dir / "executor_output.json").read_text(encoding="utf-8"))["parameterValues"][name]


def _metrics(path: Path) -> dict[str, float]:
    return {k: v for k, v in json.loads(path.read_text(encoding="utf-8")).items() if k in METRICS}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """`resume run` on configs/tiny.yaml (both iterations: tiny.yaml has no eps), no MLflow."""
    from resume.config import load_config
    from resume.loop import run_loop

    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["loop.systems=[baseline, fixed_summary, iterative]"])
    out = tmp_path_factory.mktemp("resume-run")
    run_loop(cfg, out_dir=out, track=False, log=lambda s: None)
    return out


def _compare_iteration(out: dict[str, Path], ref: Path, t: int) -> None:
    assert (out[f"summarize-corpus-iter{t}"] / "summaries").read_bytes() == \
        (ref / f"iter_{t:02d}" / "summaries.jsonl").read_bytes(), f"S_{t}"
    if t == 0:
        return
    assert (out[f"grpo-train-iter{t}"] / "model" / "reward_log.jsonl").read_text() == \
        (ref / f"iter_{t:02d}" / "summarizer" / "reward_log.jsonl").read_text(), f"GRPO round {t}"
    assert (out[f"retriever-finetune-iter{t}"] / "model" / "train_log.jsonl").read_text() == \
        (ref / f"iter_{t:02d}" / "retriever" / "train_log.jsonl").read_text(), f"g_{t} training"
    for split, sub in (("dev", "eval"), ("test", "eval_test")):
        got = out[f"evaluate-{split}-iter{t}"] / "eval_dir"
        assert _metrics(got / "metrics.json") == _metrics(ref / f"iter_{t:02d}" / sub / "metrics.json"), (t, split)
        assert (got / "run.trec").read_text() == (ref / f"iter_{t:02d}" / sub / "run.trec").read_text()


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_local_pipeline_two_iterations_matches_resume_run(tmp_path, reference):
    out = _run_local(tmp_path, overrides=[], ray_address="")
    ref = reference
    assert _metrics(out["baseline-evaluate-test"] / "eval_dir" / "metrics.json") == \
        _metrics(ref / "baseline" / "eval_test" / "metrics.json")
    assert _metrics(out["fixed-summary-evaluate-test"] / "eval_dir" / "metrics.json") == \
        _metrics(ref / "iter_00" / "eval_test" / "metrics.json")
    for t in (0, 1, 2):
        _compare_iteration(out, ref, t)
    # iteration 2 ran, so its register step ran and iteration 1's Else branch did not
    assert _output_param(out["should-continue-iter1"]) is True
    assert out["register-model-iter2"].is_dir() and not out["register-model-iter1"].exists()
    registered = out["register-model-iter2"] / "registered"
    results = json.loads((registered / "results.json").read_text())
    res_ref = json.loads((ref / "results.json").read_text())
    assert results["systems"]["iterative"]["test"] == res_ref["systems"]["iterative"]["test"]
    assert results["systems"]["baseline"]["test"] == res_ref["systems"]["baseline"]["test"]
    reg = json.loads((registered / "registered.json").read_text())
    assert reg["retriever"]["champion"] and reg["test_mrr@10"] == res_ref["systems"]["iterative"]["test"]["mrr@10"]


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_local_pipeline_early_stop_skips_second_iteration(tmp_path, reference):
    """eps_metric=1.0: the dev MRR@10 gain of iteration 1 over iteration 0 is < 1, so iteration 2 is
    skipped and iteration 1's models are registered; grpo-train runs on an in-process Ray (launcher=ray)."""
    out = _run_local(tmp_path, overrides=["loop.eps_metric=1.0"], ray_address="local")
    assert _output_param(out["should-continue-iter1"]) is False
    for name in ("grpo-train-iter2", "summarize-corpus-iter2", "retriever-finetune-iter2", "evaluate-dev-iter2",
                 "register-model-iter2"):
        assert not out[name].exists(), f"{name} ran although early stopping said stop"
    assert (out["register-model-iter1"] / "registered" / "registered.json").is_file()
    results = json.loads((out["register-model-iter1"] / "registered" / "results.json").read_text())
    assert results["n_iterations"] == 1 and results["final"]["summarizer"].endswith("iter_01/summarizer")
    # iteration 0 and iteration 1 (GRPO through Ray Train on the local Ray) match `resume run` exactly
    assert _metrics(out["baseline-evaluate-test"] / "eval_dir" / "metrics.json") == \
        _metrics(reference / "baseline" / "eval_test" / "metrics.json")
    _compare_iteration(out, reference, 0)
    _compare_iteration(out, reference, 1)
