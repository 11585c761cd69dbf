"""KFP component summarize-corpus: S_t = f_t(d) for every document (greedy, cached).

    python components/summarize_corpus/component.py   # writes components/summarize_corpus/component.yaml

`ray_address`: '' runs `resume.summarizer.summarize_corpus` in the task's pod; 'local' runs the
Ray Data driver (`resume.ray_jobs.summarize_corpus_ray`) on an in-process Ray; 'auto' / 'ray://...'
joins a cluster from the pod; 'http://<head-svc>:8265' submits the Ray Data driver as a Ray job to
the KubeRay cluster (vLLM where installed: set summarizer.backend=vllm). All paths write the same
summaries.jsonl with the same cache semantics.
"""

import os

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

RESUME_IMAGE = os.environ.get("RESUME_IMAGE", "ghcr.io/resume-project/resume:0.1.0")


@dsl.component(base_image=RESUME_IMAGE, install_kfp_package=False)
def summarize_corpus(
    config: Input[Artifact],
    data: Input[Dataset],
    summaries: Output[Dataset],
    metrics: Output[Metrics],
    summarizer_in: Input[Model] = None,
    retriever_in: Input[Model] = None,
    iteration: int = 1,
    ray_address: str = "",
    num_actors: int = 1,
    gpus_per_actor: float = 0.0,
    shared_dir: str = "",
):
    """Summarise the working corpus with f_t; writes summaries.jsonl ({"_id","summary","completion",...}).

    Args:
        config: resolved run config (YAML).
        data: the working set (BEIR dir) from resolve-config.
        summaries: output summaries.jsonl (corpus order).
        metrics: the library's summary stats (numeric ones).
        summarizer_in: f_t (absent = the config's summarizer: the Fixed Summary system).
        retriever_in: the retriever whose tokenizer counts summary tokens (absent = config's).
        ray_address: '', 'local', 'auto', 'ray://...', or the KubeRay job-submission URL.
        num_actors / gpus_per_actor: Ray Data generation actors.
        shared_dir: volume mounted in this pod and in the Ray pods (job submission only); the job's
            work dir (and its completion cache, which a retried task resumes from) lives there.

    The MLflow parent run is found from the output's URI (`kfp_ops.parent_run_for`): a run id input
    would change the cache key on every run.
    """
    from resume import kfp_ops, ray_jobs

    cfg = kfp_ops.stage_config(config.path, data.path)
    model = (kfp_ops.model_path(summarizer_in.path, summarizer_in.metadata) if summarizer_in
             else cfg.summarizer.model)
    retriever = (kfp_ops.model_path(retriever_in.path, retriever_in.metadata) if retriever_in
                 else cfg.retriever.model)
    params = {"iteration": iteration, "summarizer": model, "ray_address": ray_address or "in-process",
              **{f"summarizer.{k}": v for k, v in vars(cfg.summarizer).items() if k != "prompt"}}
    remote = ray_jobs.is_remote(ray_address)
    work_name = kfp_ops.task_work_name(summaries, iteration) if remote and shared_dir else ""
    parent = kfp_ops.parent_run_for(summaries, cfg.tracking.experiment)
    with kfp_ops.child_run(parent, f"summarize-corpus-iter{iteration:02d}", cfg.tracking.experiment,
                           params) as ml:
        if remote:
            ray_jobs.run_stage_on_cluster(
                ray_address, stage="summarize", shared_dir=shared_dir, work_name=work_name, cfg=cfg,
                data_dir=cfg.data.path, summarizer=model, retriever=retriever, dest=summaries.path,
                num_actors=num_actors, gpus_per_actor=gpus_per_actor)
            stats = {}
        elif ray_address:
            stats = ray_jobs.summarize_corpus_ray(
                cfg, data_dir=cfg.data.path, model=model, retriever=retriever, out_path=summaries.path,
                ray_address=ray_address, num_actors=num_actors, num_gpus_per_actor=gpus_per_actor)
        else:
            from resume.summarizer import summarize_corpus as run

            stats = run(cfg, data_dir=cfg.data.path, model=model, retriever=retriever, out_path=summaries.path)
        stats = dict(stats or {})
        kfp_ops.log_metrics(ml, stats)
        kfp_ops.write_metrics(metrics, stats)
    if work_name:
        ray_jobs.remove_work_dir(shared_dir, work_name)


if __name__ == "__main__":
    from pathlib import Path

    from kfp import compiler

    compiler.Compiler().compile(summarize_corpus, str(Path(__file__).with_name("component.yaml")))
