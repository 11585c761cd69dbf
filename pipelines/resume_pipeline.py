"""The ReSuMe loop as a Kubeflow Pipelines v2 pipeline (Algorithm 1, unrolled).

    python pipelines/resume_pipeline.py --out pipelines/resume_pipeline.yaml        # make pipeline
    python pipelines/resume_pipeline.py --out /tmp/p.yaml --max-iterations 5 --finetune-gpus 4

KFP v2 has no while loop: `--max-iterations` (a Python int at compile time, default 3) iterations
are unrolled, and iteration t+1 sits inside `dsl.If(should-continue-t == True)`, so a run stops
early when the reward / dev MRR@10 gain falls under eps (LoopConfig). The config's
`loop.max_iterations` can only lower the count at run time. Each iteration:

    grpo-train (KubeRay job) -> summarize-corpus (Ray Data) -> retriever-finetune (DDP)
      -> evaluate (dev, test) -> should-continue

Before the loop, as `resume run` does: resolve-config (one config artifact for every task, the
working set written once as a Dataset), start-run (the MLflow parent run), the Baseline (g_0 over full
documents, test) and iteration 0 (S_0 = the initial summarizer's summaries; g_0 over S_0 on dev, the
reference for iteration 1's early stopping, and on test, the Fixed Summary system). The final register-model
step runs in the `dsl.Else` of the iteration that stopped (or after the last one), so it always
gets the last iteration's models without `dsl.OneOf` (which fails under kfp.local).

Resources per task come from the module constants below. Caching is explicit per task: resolve-config,
training, summaries and evaluation are deterministic functions of their inputs (cached); start-run,
should-continue and register-model have side effects in MLflow (never cached). KFP's cache key is the
task's input parameter values and input artifacts, its output specs (URIs wiped), image, command and
args, PVCs and env, so no cached task takes a run-specific input: not the MLflow parent run id (the
cached components find the parent run from their output URIs, `resume.kfp_ops.parent_run_for`), no
output of an uncached task, no `{{$.pipeline_job_*}}` placeholder; two runs with the same arguments give
each cached task the same key (tests/test_pipeline_cache.py). Retries (`RETRIES`, `RETRY_BACKOFF`):
every task but register-model (whose MLflow registration is not idempotent) is retried with exponential
backoff; grpo-train resumes from its checkpoints on the shared volume (deterministic work dir per task,
`resume.kfp_ops.task_work_name`) and re-attaches to its Ray job. MLflow credentials come from the
`resume-mlflow` Secret (manifests/secrets/mlflow-secret.template.yaml), never from parameters.
"""

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from kfp import compiler, dsl, kubernetes

ROOT = Path(__file__).resolve().parents[1]


def _load(sub: str):
    """Each component folder holds a module named component.py: load them under distinct names."""
    spec = importlib.util.spec_from_file_location(f"resume_components_{sub}",
                                                  ROOT / "components" / sub / "component.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_control = _load("control")
resolve_config = _control.resolve_config
start_run = _control.start_run
should_continue = _control.should_continue
grpo_train = _load("grpo_train").grpo_train
summarize_corpus = _load("summarize_corpus").summarize_corpus
retriever_finetune = _load("retriever_finetune").retriever_finetune
evaluate = _load("evaluate").evaluate
register_model = _load("register_model").register_model

MAX_ITERATIONS = 3                      # compile-time unroll count (--max-iterations)
FINETUNE_GPUS = 1                       # retriever-finetune accelerator limit = torchrun nproc
SUMMARIZE_GPUS = 1                      # summarize-corpus in-process (ray_address '') uses the pod's GPU
SUMMARIZE_ON_RAY = False                # --summarize-on-ray: summarize-corpus submits to Ray, requests no GPU
GPU_TYPE = "nvidia.com/gpu"
MLFLOW_SECRET = "resume-mlflow"
MLFLOW_ENV = {"MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI",
              "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
              "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD",
              "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
              "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
              "MLFLOW_S3_ENDPOINT_URL": "MLFLOW_S3_ENDPOINT_URL"}
SHARED_PVC = "resume-artifacts"
SHARED_MOUNT = "/mnt/resume"
RAY_HEAD = "http://resume-raycluster-head-svc:8265"
SHM_SIZE = "16Gi"                       # memory-backed /dev/shm of retriever-finetune (NCCL, DataLoader workers)

# (cpu request, memory request, cpu limit, memory limit, gpus, cache)
RESOURCES = {
    "resolve-config": ("500m", "1Gi", "1", "2Gi", 0, True),     # deterministic: the cache chain starts here
    "start-run": ("250m", "512Mi", "500m", "1Gi", 0, False),    # opens the MLflow parent run
    "grpo-train": ("1", "4Gi", "2", "8Gi", 0, True),            # the work runs on the KubeRay cluster
    "summarize-corpus": ("4", "16Gi", "8", "32Gi", SUMMARIZE_GPUS, True),
    "retriever-finetune": ("8", "32Gi", "16", "64Gi", FINETUNE_GPUS, True),
    "evaluate": ("4", "16Gi", "8", "32Gi", 0, True),
    "should-continue": ("250m", "512Mi", "500m", "1Gi", 0, False),  # cheap; logs its decision to MLflow
    "register-model": ("1", "4Gi", "2", "8Gi", 0, False),
}
# Retries per task (`set_retry`; 0 = none). Safe where an attempt can be repeated: the stages are
# deterministic, grpo-train resumes from the killed attempt's checkpoints (and Ray job), summarize-corpus on
# Ray from its completion cache, start-run reuses the parent run it tagged. Not register-model: a repeated
# attempt could register a second model version.
RETRIES = {"resolve-config": 2, "start-run": 2, "grpo-train": 2, "summarize-corpus": 2, "retriever-finetune": 2,
           "evaluate": 2, "should-continue": 2, "register-model": 0}
RETRY_BACKOFF = {"backoff_duration": "30s", "backoff_factor": 2.0, "backoff_max_duration": "600s"}


def _setup(task: dsl.PipelineTask, kind: str, display: str, *, resources: dict | None = None,
           shared: bool = False) -> dsl.PipelineTask:
    """Display name, caching, retries, requests/limits, GPUs, the MLflow Secret as env, the shared volume."""
    cpu, mem, cpu_lim, mem_lim, gpus, cache = (resources or RESOURCES)[kind]
    task.set_display_name(display).set_caching_options(cache)
    if RETRIES[kind]:
        task.set_retry(num_retries=RETRIES[kind], **RETRY_BACKOFF)
    task.set_cpu_request(cpu).set_memory_request(mem).set_cpu_limit(cpu_lim).set_memory_limit(mem_lim)
    if gpus:
        task.set_accelerator_type(GPU_TYPE).set_accelerator_limit(gpus)
        kubernetes.add_toleration(task, key=GPU_TYPE, operator="Exists", effect="NoSchedule")
    kubernetes.use_secret_as_env(task, secret_name=MLFLOW_SECRET, secret_key_to_env=MLFLOW_ENV, optional=True)
    if shared:
        kubernetes.mount_pvc(task, pvc_name=SHARED_PVC, mount_path=SHARED_MOUNT)
    return task


def build_pipeline(max_iterations: int = MAX_ITERATIONS, finetune_gpus: int = FINETUNE_GPUS,
                   summarize_on_ray: bool = SUMMARIZE_ON_RAY):
    """Return the pipeline function with `max_iterations` unrolled iterations.

    `summarize_on_ray`: summarize-corpus submits its Ray Data job to the KubeRay cluster by default
    (summarize_ray_address defaults to RAY_HEAD, one GPU per actor there) and its pod requests no GPU;
    otherwise it summarises in its own pod, which gets SUMMARIZE_GPUS. Resources are fixed at compile
    time, so this is a compile-time choice; the run-time parameter can still move the work, not the GPU.
    """
    if max_iterations < 1:
        raise ValueError(f"max_iterations ({max_iterations}) must be >= 1")
    res = dict(RESOURCES)
    res["retriever-finetune"] = RESOURCES["retriever-finetune"][:4] + (finetune_gpus, True)
    if summarize_on_ray:
        res["summarize-corpus"] = RESOURCES["summarize-corpus"][:4] + (0, True)
    summarize_default = RAY_HEAD if summarize_on_ray else ""
    s_kw = {"gpus_per_actor": float(SUMMARIZE_GPUS)} if summarize_on_ray else {}

    @dsl.pipeline(name="resume-loop",
                  description=f"ReSuMe: GRPO summarizer + retriever adaptation, up to {max_iterations} "
                              "iterations with early stopping, then MLflow registration.")
    def resume_pipeline(
        config_path: str = "configs/demo.yaml",
        overrides: list = None,
        data_path: str = "",
        summarizer_model: str = "",
        retriever_model: str = "",
        grpo_max_steps: int = 0,
        grpo_learning_rate: float = 0.0,
        finetune_max_steps: int = 0,
        finetune_learning_rate: float = 0.0,
        ray_address: str = RAY_HEAD,
        summarize_ray_address: str = summarize_default,
        summarize_actors: int = 1,
        shared_dir: str = SHARED_MOUNT,
    ):
        """Parameters: config file (in the image) + KEY=VALUE overrides; data, models and the main
        hyperparameters (''/0 keeps the config's value); where the Ray stages run ('' = in the task's
        pod, 'local' = in-process Ray, 'http://<head>:8265' = KubeRay job); the shared volume path."""
        cfg_task = _setup(resolve_config(
            config_path=config_path, overrides=overrides, data_path=data_path,
            summarizer_model=summarizer_model, retriever_model=retriever_model,
            grpo_max_steps=grpo_max_steps, grpo_learning_rate=grpo_learning_rate,
            finetune_max_steps=finetune_max_steps, finetune_learning_rate=finetune_learning_rate),
            "resolve-config", "resolve-config")
        common = {"config": cfg_task.outputs["config"], "data": cfg_task.outputs["data"]}
        # The MLflow parent run: its id goes to the uncached tasks only (see the module docstring).
        run_task = _setup(start_run(config=cfg_task.outputs["config"], kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                                    kfp_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER), "start-run", "start-run")
        parent_run_id = run_task.outputs["Output"]

        # Baseline: g_0 over full documents (test). Iteration 0: S_0 = f_0's summaries, g_0 over S_0
        # on dev (the early-stopping reference of iteration 1) and test (the Fixed Summary system).
        baseline = _setup(evaluate(split="test", iteration=0, **common), "evaluate", "baseline-evaluate-test")
        s0 = _setup(summarize_corpus(iteration=0, ray_address=summarize_ray_address, num_actors=summarize_actors,
                                     shared_dir=shared_dir, **s_kw, **common),
                    "summarize-corpus", "summarize-corpus-iter0", resources=res, shared=True)
        it0 = {"dev": _setup(evaluate(summaries=s0.outputs["summaries"], split="dev", iteration=0, **common),
                             "evaluate", "evaluate-dev-iter0"),
               "test": _setup(evaluate(summaries=s0.outputs["summaries"], split="test", iteration=0, **common),
                              "evaluate", "fixed-summary-evaluate-test")}

        def iteration(t: int, prev: dict | None) -> dict:
            prev = prev or {}
            f_kw = {"summarizer_in": prev["summarizer"]} if prev else {}
            g_kw = {"retriever_in": prev["retriever"]} if prev else {}
            g = _setup(grpo_train(iteration=t, ray_address=ray_address, shared_dir=shared_dir, **f_kw, **g_kw,
                                  **common),
                       "grpo-train", f"grpo-train-iter{t}", shared=True)
            s = _setup(summarize_corpus(summarizer_in=g.outputs["model"], iteration=t,
                                        ray_address=summarize_ray_address, num_actors=summarize_actors,
                                        shared_dir=shared_dir, **s_kw, **g_kw, **common),
                       "summarize-corpus", f"summarize-corpus-iter{t}", resources=res, shared=True)
            f = _setup(retriever_finetune(summaries=s.outputs["summaries"], iteration=t, nproc=finetune_gpus,
                                          **g_kw, **common),
                       "retriever-finetune", f"retriever-finetune-iter{t}", resources=res)
            # DDP (NCCL) and DataLoader workers need more than a container's default 64 MiB /dev/shm.
            kubernetes.empty_dir_mount(f, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                                       size_limit=SHM_SIZE)
            ev = {split: _setup(evaluate(retriever_in=f.outputs["model"], summaries=s.outputs["summaries"],
                                         split=split, iteration=t, **common),
                                "evaluate", f"evaluate-{split}-iter{t}")
                  for split in ("dev", "test")}
            return {"summarizer": g.outputs["model"], "grpo_metrics": g.outputs["metrics"],
                    "summaries": s.outputs["summaries"], "retriever": f.outputs["model"],
                    "dev": ev["dev"], "test": ev["test"]}

        def register(t: int, it: dict) -> None:
            _setup(register_model(summarizer=it["summarizer"], retriever=it["retriever"],
                                  summaries=it["summaries"], eval_test=it["test"].outputs["eval_dir"],
                                  eval_dev=it["dev"].outputs["eval_dir"], grpo_metrics=it["grpo_metrics"],
                                  baseline_eval=baseline.outputs["eval_dir"],
                                  fixed_summary_eval=it0["test"].outputs["eval_dir"], iteration=t,
                                  parent_run_id=parent_run_id, **common),
                   "register-model", f"register-model-iter{t}")

        def loop(t: int, prev: dict | None) -> None:
            it = iteration(t, prev)
            if t == max_iterations:
                register(t, it)
                return
            c_kw = {"prev_grpo_metrics": prev["grpo_metrics"]} if prev else {}
            prev_dev = (prev or it0)["dev"].outputs["metrics"]
            c = _setup(should_continue(config=common["config"], grpo_metrics=it["grpo_metrics"],
                                       eval_metrics=it["dev"].outputs["metrics"], prev_eval_metrics=prev_dev,
                                       iteration=t, parent_run_id=parent_run_id, **c_kw),
                       "should-continue", f"should-continue-iter{t}")
            with dsl.If(c.output == True, name=f"iteration-{t + 1}"):  # noqa: E712 - a KFP condition
                loop(t + 1, it)
            with dsl.Else(name=f"stop-after-{t}"):
                register(t, it)

        loop(1, None)

    return resume_pipeline


resume_pipeline = build_pipeline()


def compile_pipeline(out: str | Path, max_iterations: int = MAX_ITERATIONS,
                     finetune_gpus: int = FINETUNE_GPUS, summarize_on_ray: bool = SUMMARIZE_ON_RAY) -> Path:
    compiler.Compiler().compile(build_pipeline(max_iterations, finetune_gpus, summarize_on_ray), str(out))
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="compile the ReSuMe KFP pipeline")
    p.add_argument("--out", default=str(ROOT / "pipelines" / "resume_pipeline.yaml"))
    p.add_argument("--max-iterations", type=int, default=MAX_ITERATIONS,
                   help="iterations unrolled at compile time (KFP v2 has no while loop)")
    p.add_argument("--finetune-gpus", type=int, default=FINETUNE_GPUS,
                   help="GPUs of the retriever-finetune task = torchrun --nproc_per_node")
    p.add_argument("--summarize-on-ray", action="store_true",
                   help="summarize-corpus submits to the KubeRay cluster by default and its pod requests no GPU")
    args = p.parse_args(argv)
    out = compile_pipeline(args.out, args.max_iterations, args.finetune_gpus, args.summarize_on_ray)
    print(f"compiled {out} (image {os.environ.get('RESUME_IMAGE', 'default')}, "
          f"{args.max_iterations} iterations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
