"""KFP component retriever-finetune: g_t = contrastive fine-tune of g_{t-1} on (q, S_t), DDP.

    python components/retriever_finetune/component.py   # writes components/retriever_finetune/component.yaml

`nproc` processes under torchrun (the library launches `torchrun --standalone --nproc_per_node N`
when N > 1): the pipeline sets it to the task's GPU limit. For several nodes use the Kubeflow
Trainer job in manifests/trainer/ instead.
"""

import os

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

RESUME_IMAGE = os.environ.get("RESUME_IMAGE", "ghcr.io/resume-project/resume:0.1.0")


@dsl.component(base_image=RESUME_IMAGE, install_kfp_package=False)
def retriever_finetune(
    config: Input[Artifact],
    data: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    retriever_in: Input[Model] = None,
    summaries: Input[Dataset] = None,
    split: str = "",
    nproc: int = 0,
    iteration: int = 1,
):
    """Fine-tune the retriever with InfoNCE; writes an encoder dir and train_log.jsonl.

    Args:
        config: resolved run config (YAML).
        data: the working set (BEIR dir) from resolve-config.
        model: output encoder directory.
        metrics: final_loss and steps from train_log.jsonl.
        retriever_in: g_{t-1} (absent = the config's initial retriever).
        summaries: S_t (absent = full documents: the full-document control).
        split: training qrels split ('' = data.train_split).
        nproc: DDP processes (0 = the config's finetune.nproc).
        iteration: 1-based iteration (MLflow run name).

    The MLflow parent run is found from the output's URI (`kfp_ops.parent_run_for`): a run id input
    would change the cache key on every run.
    """
    import json
    from pathlib import Path

    from resume import kfp_ops

    cfg = kfp_ops.stage_config(config.path, data.path)
    if nproc > 0:
        cfg.finetune.nproc = nproc
    init = (kfp_ops.model_path(retriever_in.path, retriever_in.metadata) if retriever_in
            else cfg.retriever.model)
    params = {"iteration": iteration, "init_model": init, "texts": "summaries" if summaries else "documents",
              **{f"finetune.{k}": v for k, v in vars(cfg.finetune).items()}}
    parent = kfp_ops.parent_run_for(model, cfg.tracking.experiment)
    with kfp_ops.child_run(parent, f"retriever-finetune-iter{iteration:02d}", cfg.tracking.experiment,
                           params) as ml:
        from resume.retriever import finetune_retriever

        returned = finetune_retriever(cfg, data_dir=cfg.data.path, split=split or cfg.data.train_split,
                                      init_model=init, texts=summaries.path if summaries else None,
                                      out_dir=model.path)
        kfp_ops.record_model_dir(model, returned)
        rows = []
        for log in sorted(Path(model.path).rglob("train_log.jsonl"))[:1]:
            rows = [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines() if x.strip()]
        for i, row in enumerate(rows):
            kfp_ops.log_metrics(ml, {"loss": row.get("loss")}, step=int(row.get("step", i)))
        values = {"steps": len(rows), "iteration": iteration}
        if rows and isinstance(rows[-1].get("loss"), int | float):
            values["final_loss"] = rows[-1]["loss"]
        kfp_ops.write_metrics(metrics, values)


if __name__ == "__main__":
    from pathlib import Path

    from kfp import compiler

    compiler.Compiler().compile(retriever_finetune, str(Path(__file__).with_name("component.yaml")))
