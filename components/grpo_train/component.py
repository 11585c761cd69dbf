"""KFP component grpo-train: GRPO round of the summarizer, on a KubeRay cluster or in-process.

    python components/grpo_train/component.py   # writes components/grpo_train/component.yaml

`ray_address`: '' runs `resume.grpo.grpo_train` in the task's pod (the config's launcher);
'local' starts Ray inside the pod and trains with `grpo.launcher=ray` (what tests use);
'http://<head-svc>:8265' submits `resume grpo-train ...` to the KubeRay cluster through Ray's
job-submission API, streams its logs, fails when the job fails, and copies the trained model from
`shared_dir` (a volume both sides mount) into the output artifact.

Retries resume: with `shared_dir`, training writes into the task's work dir
`<shared_dir>/ray-jobs/<run>/<task>-iter<NN>-<hash>` (`kfp_ops.task_work_name`: the same for every
attempt of this task in this run), so an attempt that was killed leaves TRL's checkpoints where the
next attempt looks for them, and a still-running Ray job of the killed attempt is attached to, not
submitted twice. The work dir is deleted once the model is in the output artifact. SIGTERM while a
Ray job runs stops the job and fails the task (`resume.ray_jobs.wait_for_job`).
"""

import os

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

RESUME_IMAGE = os.environ.get("RESUME_IMAGE", "ghcr.io/resume-project/resume:0.1.0")


@dsl.component(base_image=RESUME_IMAGE, install_kfp_package=False)
def grpo_train(
    config: Input[Artifact],
    data: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    summarizer_in: Input[Model] = None,
    retriever_in: Input[Model] = None,
    iteration: int = 1,
    ray_address: str = "",
    shared_dir: str = "",
):
    """Train f_t = GRPO(f_{t-1}, reward model g_{t-1}); writes the HF model dir and reward_log.jsonl.

    Args:
        config: resolved run config (YAML) from resolve-config.
        data: the working set (BEIR dir) from resolve-config.
        model: output summarizer model directory.
        metrics: reward_mean (mean over steps of the per-step mean reward) and steps.
        summarizer_in / retriever_in: f_{t-1} and g_{t-1}; absent = the config's initial models.
        iteration: 1-based iteration number (names the MLflow child run).
        ray_address: '', 'local', or the KubeRay head's job-submission URL.
        shared_dir: volume mounted in this pod and in the Ray pods (required with remote Ray); where the
            task's checkpoints live, so that a retry resumes ('' = inside the output artifact).

    The MLflow parent run is found from the output artifact's URI (`kfp_ops.parent_run_for`), not
    passed in: a run id input would change the cache key on every run.
    """
    import shutil
    from pathlib import Path

    from resume import kfp_ops, ray_jobs
    from resume.run_dir import mean_reward, read_reward_log

    cfg = kfp_ops.stage_config(config.path, data.path)
    summarizer = (kfp_ops.model_path(summarizer_in.path, summarizer_in.metadata) if summarizer_in
                  else cfg.summarizer.model)
    retriever = (kfp_ops.model_path(retriever_in.path, retriever_in.metadata) if retriever_in
                 else cfg.retriever.model)
    params = {"iteration": iteration, "summarizer": summarizer, "retriever": retriever,
              "ray_address": ray_address or "in-process", **{f"grpo.{k}": v for k, v in vars(cfg.grpo).items()}}
    work_name = kfp_ops.task_work_name(model, iteration) if shared_dir else ""
    parent = kfp_ops.parent_run_for(model, cfg.tracking.experiment)
    with kfp_ops.child_run(parent, f"grpo-train-iter{iteration:02d}", cfg.tracking.experiment, params) as ml:
        if ray_jobs.is_remote(ray_address):
            returned = ray_jobs.run_stage_on_cluster(
                ray_address, stage="grpo-train", shared_dir=shared_dir, work_name=work_name, cfg=cfg,
                data_dir=cfg.data.path, summarizer=summarizer, retriever=retriever, dest=model.path)
            returned = kfp_ops.model_path(returned)
        else:
            from resume.grpo import grpo_train as train

            if ray_address:
                cfg.grpo.launcher, cfg.grpo.ray_address = "ray", ray_address
            out = ray_jobs.work_dir(shared_dir, work_name) / "out" if shared_dir else Path(model.path)
            if shared_dir and (out / "checkpoints").is_dir():
                from transformers.trainer_utils import get_last_checkpoint

                for ckpt in kfp_ops.drop_incomplete_checkpoints(out / "checkpoints"):
                    print(f"grpo-train: dropped {ckpt}, half-written when an earlier attempt was killed")
                last = get_last_checkpoint(str(out / "checkpoints"))  # what resume.grpo resumes from
                if last:
                    print(f"grpo-train: resuming from {last} (step {last.rsplit('-', 1)[-1]}), "
                          "left by an earlier attempt of this task")
            returned = train(cfg, data_dir=cfg.data.path, summarizer=summarizer, retriever=retriever,
                             out_dir=str(out))
            if shared_dir:
                shutil.copytree(out, model.path, dirs_exist_ok=True)
                returned = model.path
        kfp_ops.record_model_dir(model, returned)
        rows = read_reward_log(model.path)
        if ml is not None and ml.active_run() is not None:
            # grpo/<part> per step, as `resume run` logs them; points resume.grpo logged live are skipped
            from resume.tracking import replay_reward_log

            replay_reward_log(ml.active_run().info.run_id, model.path)
        mean = mean_reward(rows)
        values = {"steps": len(rows), "iteration": iteration}
        if mean is not None:
            values["reward_mean"] = mean
            kfp_ops.log_metrics(ml, {"reward_mean": mean})
        kfp_ops.write_metrics(metrics, values)
    if shared_dir:
        ray_jobs.remove_work_dir(shared_dir, work_name)


if __name__ == "__main__":
    from pathlib import Path

    from kfp import compiler

    compiler.Compiler().compile(grpo_train, str(Path(__file__).with_name("component.yaml")))
