"""KFP component evaluate: index the served texts with FAISS, search a split, compute trec_eval metrics.

    python components/evaluate/component.py   # writes components/evaluate/component.yaml

Without `summaries` it indexes the full documents (the Baseline when `retriever_in` is absent too).
"""

import os

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

RESUME_IMAGE = os.environ.get("RESUME_IMAGE", "ghcr.io/resume-project/resume:0.1.0")


@dsl.component(base_image=RESUME_IMAGE, install_kfp_package=False)
def evaluate(
    config: Input[Artifact],
    data: Input[Dataset],
    metrics: Output[Metrics],
    eval_dir: Output[Artifact],
    retriever_in: Input[Model] = None,
    summaries: Input[Dataset] = None,
    split: str = "test",
    iteration: int = 0,
) -> float:
    """Evaluate a retriever over documents or summaries; returns the primary metric (MRR@10).

    Args:
        config: resolved run config (YAML).
        data: the working set (BEIR dir) from resolve-config.
        metrics: mrr@10, ndcg@10, recall@100, recall@1000 (also as JSON in the file).
        eval_dir: run.trec + metrics.json, as `resume evaluate` writes them.
        retriever_in: g_t (absent = the config's original retriever).
        summaries: S_t (absent = full documents).
        split: qrels split to evaluate ('dev' for early stopping, 'test' for the table).
        iteration: 0 = baseline, t >= 1 = iteration t (MLflow run name and step).

    The MLflow parent run is found from the output's URI (`kfp_ops.parent_run_for`): a run id input
    would change the cache key on every run.
    """
    from resume import kfp_ops
    from resume.evaluate import eval_config, evaluate_retrieval
    from resume.run_dir import PRIMARY_METRIC

    cfg = kfp_ops.stage_config(config.path, data.path)
    retriever = (kfp_ops.model_path(retriever_in.path, retriever_in.metadata) if retriever_in
                 else cfg.retriever.model)
    texts = summaries.path if summaries else None
    name = f"evaluate-{split}-" + (f"iter{iteration:02d}" if iteration else "baseline")
    # the index as searched: full documents ignore the config's mode and summary_title (`eval_config`)
    searched = eval_config(cfg, texts=texts, weight_later=True)
    params = {"iteration": iteration, "split": split, "retriever": retriever,
              "texts": "summaries" if summaries else "documents",
              **{f"evaluate.{k}": v for k, v in vars(searched).items()}}
    parent = kfp_ops.parent_run_for(eval_dir, cfg.tracking.experiment)
    with kfp_ops.child_run(parent, name, cfg.tracking.experiment, params) as ml:
        values = evaluate_retrieval(cfg, data_dir=cfg.data.path, split=split, retriever=retriever,
                                    texts=texts, out_dir=eval_dir.path)
        kfp_ops.log_metrics(ml, values, step=iteration)
        kfp_ops.write_metrics(metrics, values)
    return float(values[PRIMARY_METRIC])


if __name__ == "__main__":
    from pathlib import Path

    from kfp import compiler

    compiler.Compiler().compile(evaluate, str(Path(__file__).with_name("component.yaml")))
