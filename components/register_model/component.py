"""KFP component register-model: register the final summarizer f_T and retriever g_T in MLflow.

    python components/register_model/component.py   # writes components/register_model/component.yaml

Lays the artifacts out as `resume run` does (DESIGN §2: iter_XX/summarizer, summaries.jsonl,
retriever, eval/ (dev), eval_test/, baseline/eval_test, iter_00/eval_test, results.json written by
`resume.run_dir.write_results`, its paths relative to the run directory) and calls
`resume.tracking.register_models(cfg, run_dir)`, which logs both models as pyfunc models, registers
them and moves the alias (`models:/resume-retriever@champion`, what the KServe InferenceServices
load) when they beat the current champion. With MLFLOW_TRACKING_URI set, the models are logged
under the pipeline's parent run; without it, into a sqlite store inside the output artifact.
"""

import os

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

RESUME_IMAGE = os.environ.get("RESUME_IMAGE", "ghcr.io/resume-project/resume:0.1.0")


@dsl.component(base_image=RESUME_IMAGE, install_kfp_package=False)
def register_model(
    config: Input[Artifact],
    data: Input[Dataset],
    summarizer: Input[Model],
    retriever: Input[Model],
    summaries: Input[Dataset],
    eval_test: Input[Artifact],
    registered: Output[Artifact],
    eval_dev: Input[Artifact] = None,
    grpo_metrics: Input[Metrics] = None,
    baseline_eval: Input[Artifact] = None,
    fixed_summary_eval: Input[Artifact] = None,
    iteration: int = 1,
    parent_run_id: str = "",
) -> str:
    """Register the models of the last iteration that ran; returns the registry result as JSON.

    Args:
        config: resolved run config (YAML).
        data: the working set (BEIR dir) from resolve-config.
        summarizer / retriever / summaries / eval_test / eval_dev / grpo_metrics: iteration
            `iteration`'s outputs (the final f_T, g_T, S_T and their evaluations).
        registered: the assembled run directory (results.json, registered.json, ...).
        baseline_eval / fixed_summary_eval: the Baseline's and the Fixed Summary's test evaluations.
        iteration: T, the iteration these artifacts come from (iter_XX in the run dir).
        parent_run_id: MLflow parent run of the pipeline run ('' = none).
    """
    import json
    import os
    from pathlib import Path

    from resume import kfp_ops
    from resume import run_dir as rd
    from resume.config import dump_config
    from resume.io import atomic_write_json

    source = kfp_ops.load_config_file(config.path).data.path
    cfg = kfp_ops.stage_config(config.path, data.path, seed=False)
    run_dir = Path(registered.path).resolve()
    it = rd.iter_dir(run_dir, iteration)
    dump_config(cfg, run_dir / rd.CONFIG)
    f_t = kfp_ops.model_path(summarizer.path, summarizer.metadata)
    g_t = kfp_ops.model_path(retriever.path, retriever.metadata)
    baseline_dir, fixed_dir = run_dir / "baseline" / rd.EVAL_TEST, rd.iter_dir(run_dir, 0) / rd.EVAL_TEST
    parts = [(f_t, it / rd.SUMMARIZER), (summaries.path, it / rd.SUMMARIES), (g_t, it / rd.RETRIEVER),
             (eval_test.path, it / rd.EVAL_TEST)]
    parts += [(a.path, d) for a, d in ((eval_dev, it / rd.EVAL_DEV), (baseline_eval, baseline_dir),
                                       (fixed_summary_eval, fixed_dir)) if a is not None]
    for src, dst in parts:
        kfp_ops.link_into(src, dst, copy=True)

    def metrics_of(d: Path):
        p = d / rd.METRICS_FILE
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None

    # results.json as `resume run` writes it (resume.run_dir.Results), for the last iteration only
    test = metrics_of(it / rd.EVAL_TEST)
    systems = {"iterative": {"test": test, "dir": str(it / rd.EVAL_TEST)}}
    for name, d in (("baseline", baseline_dir), ("fixed_summary", fixed_dir)):
        if metrics_of(d) is not None:
            systems[name] = {"test": metrics_of(d), "dir": str(d)}
    last = {"iteration": iteration, "dir": str(it), "summarizer": str(it / rd.SUMMARIZER),
            "summaries": str(it / rd.SUMMARIES), "retriever": str(it / rd.RETRIEVER), "test": test,
            "dev": metrics_of(it / rd.EVAL_DEV), "reward_mean": kfp_ops.read_metrics(grpo_metrics).get("reward_mean")}
    rd.write_results(run_dir, {
        "name": cfg.name, "run_dir": str(run_dir), "source": "kfp", "data": {"source": source},
        "models": {"summarizer": cfg.summarizer.model, "retriever": cfg.retriever.model},
        "splits": {"train": cfg.data.train_split, "dev": cfg.data.dev_split, "test": cfg.data.test_split},
        "systems": systems, "iterations": [last], "n_iterations": iteration,
        "final": {"summarizer": last["summarizer"], "retriever": last["retriever"]}})
    if kfp_ops.mlflow_enabled() and parent_run_id:
        # register_models logs the models under the run recorded here: the pipeline's parent run
        uri = cfg.tracking.tracking_uri or os.environ["MLFLOW_TRACKING_URI"]
        atomic_write_json(run_dir / "tracking.json", {"tracking_uri": uri, "parent": parent_run_id, "runs": {}})
    from resume.tracking import register_models

    result = register_models(cfg, run_dir)
    atomic_write_json(run_dir / "registered.json", result)
    registered.metadata["iteration"] = iteration
    return json.dumps(result, sort_keys=True, default=str)


if __name__ == "__main__":
    from pathlib import Path

    from kfp import compiler

    compiler.Compiler().compile(register_model, str(Path(__file__).with_name("component.yaml")))
