"""KFP control components: resolve-config (first task), start-run (MLflow) and should-continue (the loop's guard).

    python components/control/component.py   # writes control/{resolve_config,start_run,should_continue}.yaml

resolve-config turns the pipeline's parameters into one resolved config artifact that every task
reads and writes the working set once as a Dataset (a BEIR dir). It is deterministic and cached: two
runs with the same parameters (and image) get the same artifacts, so the cached tasks downstream can
hit the cache. start-run (never cached) opens the MLflow parent run of the pipeline run, tagged with
the KFP run's id and name; the cached tasks find it from their output URIs
(`resume.kfp_ops.parent_run_for`), the uncached ones (should-continue, register-model) get its id.
should-continue compares an iteration's GRPO reward and dev MRR@10 with the previous iteration's
(iteration 0 = g_0 over S_0, the summaries of the initial summarizer, for the first) and eps, as
`resume run` does; its bool output is what each unrolled iteration's `dsl.If` reads (a component
output, never a nested pipeline's output: kfp.local skips such a lone `dsl.If`).
"""

import os

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

RESUME_IMAGE = os.environ.get("RESUME_IMAGE", "ghcr.io/resume-project/resume:0.1.0")


@dsl.component(base_image=RESUME_IMAGE, install_kfp_package=False)
def resolve_config(
    config: Output[Artifact],
    data: Output[Dataset],
    config_path: str = "configs/demo.yaml",
    overrides: list = None,
    data_path: str = "",
    summarizer_model: str = "",
    retriever_model: str = "",
    grpo_max_steps: int = 0,
    grpo_learning_rate: float = 0.0,
    finetune_max_steps: int = 0,
    finetune_learning_rate: float = 0.0,
):
    """Resolve the run config (file + overrides + typed parameters; ''/0 keeps the file's value) and
    write the working set (data.path sampled by the data section) as a BEIR dir, as `resume run` does.

    No side effects and no run-specific input: cached (see start-run for the MLflow parent run).
    """
    from resume import kfp_ops

    cfg = kfp_ops.resolve_config(
        config_path, list(overrides or []), config.path, data_path=data_path, summarizer_model=summarizer_model,
        retriever_model=retriever_model,
        extra={"grpo.max_steps": grpo_max_steps, "grpo.learning_rate": grpo_learning_rate,
               "finetune.max_steps": finetune_max_steps, "finetune.learning_rate": finetune_learning_rate})
    config.metadata["name"] = cfg.name
    data.metadata.update(kfp_ops.materialise_data(cfg, data.path))


@dsl.component(base_image=RESUME_IMAGE, install_kfp_package=False)
def start_run(
    config: Input[Artifact],
    run: Output[Artifact],
    kfp_run_id: str = "",
    kfp_run_name: str = "",
) -> str:
    """Open the MLflow parent run of this pipeline run; returns its id ('' when MLFLOW_TRACKING_URI is unset).

    Args:
        config: resolved run config (its params are logged on the parent run).
        run: {"run_id", "experiment", "kfp_run_id", "kfp_run_name"} as JSON.
        kfp_run_id / kfp_run_name: the KFP run (`dsl.PIPELINE_JOB_ID_PLACEHOLDER` /
            `dsl.PIPELINE_JOB_NAME_PLACEHOLDER`), set as tags: the cached tasks find the parent run by
            them, and a retried start-run reuses the run it opened before.
    """
    import json
    from pathlib import Path

    from resume import kfp_ops

    cfg = kfp_ops.load_config_file(config.path)
    run_id = kfp_ops.start_parent_run(cfg.tracking.experiment, kfp_run_name or cfg.name, cfg.to_dict(),
                                      kfp_run_id=kfp_run_id, kfp_run_name=kfp_run_name)
    info = {"run_id": run_id, "experiment": cfg.tracking.experiment, "kfp_run_id": kfp_run_id,
            "kfp_run_name": kfp_run_name}
    Path(run.path).parent.mkdir(parents=True, exist_ok=True)
    Path(run.path).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    run.metadata.update(info)
    return run_id


@dsl.component(base_image=RESUME_IMAGE, install_kfp_package=False)
def should_continue(
    config: Input[Artifact],
    grpo_metrics: Input[Metrics],
    eval_metrics: Input[Metrics],
    prev_eval_metrics: Input[Metrics],
    prev_grpo_metrics: Input[Metrics] = None,
    iteration: int = 1,
    parent_run_id: str = "",
) -> bool:
    """True when iteration `iteration + 1` should run (kfp_ops.continue_decision, LoopConfig's rule)."""
    from resume import kfp_ops
    from resume.run_dir import PRIMARY_METRIC

    cfg = kfp_ops.load_config_file(config.path)
    cur_g, prev_g = kfp_ops.read_metrics(grpo_metrics), kfp_ops.read_metrics(prev_grpo_metrics)
    cur_e, prev_e = kfp_ops.read_metrics(eval_metrics), kfp_ops.read_metrics(prev_eval_metrics)
    ok, why = kfp_ops.continue_decision(
        iteration=iteration, max_iterations=cfg.loop.max_iterations,
        reward=cur_g.get("reward_mean"), prev_reward=prev_g.get("reward_mean"),
        metric=cur_e.get(PRIMARY_METRIC), prev_metric=prev_e.get(PRIMARY_METRIC),
        eps_reward=cfg.loop.eps_reward, eps_metric=cfg.loop.eps_metric)
    print(f"iteration {iteration}: {'continue' if ok else 'stop'} ({why})")
    with kfp_ops.child_run(parent_run_id, f"should-continue-iter{iteration:02d}", cfg.tracking.experiment,
                           {"iteration": iteration, "decision": why}) as ml:
        kfp_ops.log_metrics(ml, {"continue": float(ok)}, step=iteration)
    return ok


if __name__ == "__main__":
    from pathlib import Path

    from kfp import compiler

    here = Path(__file__).parent
    compiler.Compiler().compile(resolve_config, str(here / "resolve_config.yaml"))
    compiler.Compiler().compile(start_run, str(here / "start_run.yaml"))
    compiler.Compiler().compile(should_continue, str(here / "should_continue.yaml"))
