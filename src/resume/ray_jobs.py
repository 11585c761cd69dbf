"""Ray drivers used by the Kubeflow components: GRPO as a Ray job, corpus summarisation on Ray Data.

    python -m resume.ray_jobs summarize --config configs/tiny.yaml --summarizer tiny-causal-lm \\
        --out runs/x/summaries.jsonl --ray-address local

Two jobs, one module:

* `submit_job(address, entrypoint, ...)`: run a shell entrypoint (`resume grpo-train ...`) on a Ray
  cluster through Ray's job-submission HTTP API (the KubeRay head service, `http://<head-svc>:8265`),
  stream its logs, and raise `ResumeError` when the job does not succeed. With a submission id (the
  KFP components derive it from the task, `resume.kfp_ops.task_work_name`), a retried task attaches to
  its earlier attempt's job while that one still runs, or submits `<id>-r<n>` after it failed. SIGTERM
  (what Kubernetes sends a pod it deletes) stops the job with `JobSubmissionClient.stop_job` and exits
  with status 143.
* Work directories `<shared_dir>/ray-jobs/<run>/<task>-iter<NN>-<hash>` on the shared volume hold a
  job's inputs, checkpoints and outputs. They are deterministic per task, so a retry resumes from what
  the killed attempt left; the component deletes its own once its outputs are in its artifacts
  (`remove_work_dir`); what failed runs leave is removed by age with
  `python -m resume.ray_jobs prune --shared-dir /mnt/resume --older-than-days 7`.
* `summarize_corpus_ray(cfg, ...)`: the same `summaries.jsonl` as `resume.summarizer.summarize_corpus`
  (same rows, same order, same cache), with generation spread over Ray Data actors
  (`map_batches` over a callable class that loads the model once per actor and runs the library's
  per-batch generation on each of the library's planned batches; vLLM when summarizer.backend=vllm).
  Cached documents are skipped before the job; new completions go into the cache; the library's
  `summarize_corpus` then writes `summaries.jsonl` from the cache.

A Ray address of `local` (or `None`) starts Ray in this process (tests use it); `auto` joins the
cluster this process runs in; `ray://head:10001` uses Ray Client.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from resume.errors import ResumeError

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


# ------------------------------------------------------------------------------------ job submission


def _default_client(address: str):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)


MAX_RESUBMITS = 10  # <id>, <id>-r1, ... <id>-r9: one per attempt of a task whose job ended badly


def _existing_status(client, job_id: str) -> str | None:
    """The status of job `job_id`, or None when the cluster has no such job (Ray raises RuntimeError)."""
    try:
        return str(client.get_job_status(job_id))
    except RuntimeError:
        return None


def submit_job(address: str, entrypoint: str | list[str], *, runtime_env: dict | None = None,
               metadata: dict[str, str] | None = None, submission_id: str | None = None,
               log=print, poll_s: float = 2.0, client=None, reuse_succeeded=None, before_submit=None) -> str:
    """Submit `entrypoint` to the Ray cluster at `address`, stream its logs, return the job id.

    Raises ResumeError when the job ends FAILED or STOPPED (the last log lines are in the message).
    With `submission_id` (deterministic per KFP task), an earlier attempt's job is found: one still
    PENDING/RUNNING is attached to (not submitted twice), one that ended FAILED/STOPPED is followed
    by `<submission_id>-r<n>`, one that SUCCEEDED is returned as is when `reuse_succeeded()` says
    its outputs are still there. `before_submit()` runs only when a new job is submitted (never while
    an earlier attempt's job still runs). While waiting, SIGTERM stops the job (`stop_job`) and exits 143.
    `client` is injectable for tests (anything with submit_job / tail_job_logs / get_job_status /
    get_job_logs / stop_job).
    """
    if isinstance(entrypoint, list):
        entrypoint = shlex.join(entrypoint)
    client = client or _default_client(address)
    job_id = None
    if submission_id:
        for n in range(MAX_RESUBMITS):
            sid = submission_id if n == 0 else f"{submission_id}-r{n}"
            status = _existing_status(client, sid)
            if status is None:
                submission_id = sid
                break
            if status in ("PENDING", "RUNNING"):
                log(f"[ray] {sid} is still {status} (submitted by an earlier attempt of this task): attaching")
                job_id = sid
                break
            if status == "SUCCEEDED" and reuse_succeeded is not None and reuse_succeeded():
                log(f"[ray] {sid} SUCCEEDED in an earlier attempt of this task: reusing its output")
                return sid
            log(f"[ray] {sid} ended {status} in an earlier attempt of this task")
        else:
            raise ResumeError(f"{MAX_RESUBMITS} Ray jobs {submission_id}[-r<n>] already ended; not submitting more")
    if job_id is None:
        if before_submit is not None:
            before_submit()
        job_id = client.submit_job(entrypoint=entrypoint, submission_id=submission_id,
                                   runtime_env=runtime_env, metadata=metadata)
        log(f"[ray] submitted {job_id} to {address}: {entrypoint}")
    status = wait_for_job(client, job_id, log=log, poll_s=poll_s)
    if status != "SUCCEEDED":
        tail = "\n".join(str(client.get_job_logs(job_id)).splitlines()[-20:])
        raise ResumeError(f"Ray job {job_id} at {address} ended {status}: {entrypoint}\n{tail}")
    log(f"[ray] {job_id} SUCCEEDED")
    return job_id


def wait_for_job(client, job_id: str, *, log=print, poll_s: float = 2.0) -> str:
    """Stream the job's logs and poll it until it ends; return its final status.

    A task's pod is deleted with SIGTERM (a terminated run, a preempted node, a KFP retry of a hung
    task): then the job this process submitted would run on with nobody waiting for it, holding the
    cluster's GPUs. So while waiting, SIGTERM stops it with `client.stop_job` and exits with 143
    (128 + SIGTERM). The handler is installed only in the main thread (where Python delivers signals).
    """
    import asyncio
    import signal
    import threading

    def _stop_and_exit(signum, frame):  # noqa: ARG001 - signal handler signature
        log(f"[ray] {signal.Signals(signum).name}: stopping Ray job {job_id}")
        try:
            client.stop_job(job_id)
        except Exception as e:  # noqa: BLE001 - exiting anyway; the message says why the job may still run
            log(f"[ray] could not stop {job_id}: {e}")
        raise SystemExit(128 + signum)

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _stop_and_exit)

    async def _tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            log(chunk.rstrip("\n"))

    try:
        try:
            asyncio.run(_tail())
        except Exception as e:  # noqa: BLE001 - log streaming is best effort; the status decides
            log(f"[ray] log streaming stopped: {e}")
        status = str(client.get_job_status(job_id))
        while status not in TERMINAL:
            time.sleep(poll_s)
            status = str(client.get_job_status(job_id))
        return status
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def is_remote(address: str | None) -> bool:
    """True for a job-submission address (http(s)://...:8265); False for local / auto / ray://."""
    return bool(address) and str(address).startswith(("http://", "https://"))


def init_ray(address: str | None, num_cpus: int | None = None):
    """Start (`local`/None) or join (`auto`, `ray://...`) Ray; returns the ray module."""
    import ray

    if not ray.is_initialized():
        if address in (None, "", "local"):
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True,
                     configure_logging=False)
        else:
            ray.init(address=address)
    return ray


def grpo_entrypoint(*, config: str, data: str, summarizer: str, retriever: str, out: str) -> list[str]:
    """The Ray job's entrypoint for grpo-train: the project CLI in the project image."""
    return ["resume", "grpo-train", "--config", config, "--data", data, "--summarizer", summarizer,
            "--retriever", retriever, "--out", out]


def summarize_entrypoint(*, config: str, data: str, summarizer: str, retriever: str, out: str,
                         num_actors: int = 1, gpus_per_actor: float = 0.0) -> list[str]:
    """The Ray job's entrypoint for summarisation on Ray Data (driver runs on the head, joins with auto)."""
    return ["python", "-m", "resume.ray_jobs", "summarize", "--config", config, "--data", data,
            "--summarizer", summarizer, "--retriever", retriever, "--out", out, "--ray-address", "auto",
            "--num-actors", str(num_actors), "--gpus-per-actor", str(gpus_per_actor)]


def _stage_in(src: str, work: Path, name: str) -> str:
    """Copy a local file/dir into the shared work dir; model names (not paths) pass through unchanged."""
    import shutil

    p = Path(src)
    if not p.exists():
        return src
    dst = work / name
    if p.is_dir():
        shutil.copytree(p, dst, dirs_exist_ok=True)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dst)
    return str(dst)


WORK_ROOT = "ray-jobs"


def work_dir(shared_dir: str, work_name: str) -> Path:
    """`<shared_dir>/ray-jobs/<work_name>` (work_name: `resume.kfp_ops.task_work_name`)."""
    if not work_name or Path(work_name).is_absolute() or ".." in Path(work_name).parts:
        raise ResumeError(f"work_name {work_name!r} must be a relative path below {shared_dir}/{WORK_ROOT}")
    return Path(shared_dir) / WORK_ROOT / work_name


def remove_work_dir(shared_dir: str, work_name: str) -> None:
    """Delete a task's work directory once its outputs are in its artifacts (and its run's dir when empty)."""
    import shutil

    work = work_dir(shared_dir, work_name)
    shutil.rmtree(work, ignore_errors=True)
    parent = work.parent
    while parent != Path(shared_dir) / WORK_ROOT and parent.is_dir():
        try:
            parent.rmdir()  # only when empty: other tasks of the run may still be working
        except OSError:
            break
        parent = parent.parent


def prune_work_dirs(shared_dir: str, older_than_s: float, *, now: float | None = None) -> list[Path]:
    """Delete the task work directories under `<shared_dir>/ray-jobs` not modified for `older_than_s`.

    Successful tasks delete their own; what is left belongs to tasks whose retries ran out. Keep them
    as long as the run may be retried from the KFP UI (a retry resumes from them), then prune."""
    import shutil

    root = Path(shared_dir) / WORK_ROOT
    now = time.time() if now is None else now
    removed = []
    for task_dir in sorted(p for p in root.glob("*/*") if p.is_dir()):
        newest = max((f.stat().st_mtime for f in task_dir.rglob("*")), default=task_dir.stat().st_mtime)
        if now - max(newest, task_dir.stat().st_mtime) > older_than_s:
            shutil.rmtree(task_dir, ignore_errors=True)
            removed.append(task_dir)
    for run_dir in root.glob("*"):
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
    return removed


def run_stage_on_cluster(address: str, *, stage: str, shared_dir: str, work_name: str, cfg, data_dir: str,
                         summarizer: str, retriever: str, dest: str, client=None, log=print, **kw) -> str:
    """Run `stage` (`grpo-train` or `summarize`) as a Ray job; inputs and outputs go through `shared_dir`.

    The KubeRay pods and the KFP task pod mount the same volume at `shared_dir` (manifests/storage):
    in the task's work dir `<shared_dir>/ray-jobs/<work_name>` go the stage config (`cfg`, written as
    YAML with data.path = the staged data and, for GRPO, grpo.launcher=ray joining the cluster), the
    data dir and the input models; the job writes its output there (GRPO: TRL checkpoints too, so a
    retried task's job resumes from them), and the output is copied to `dest` (the KFP output
    artifact). The Ray submission id is `resume-<work_name>` (see `submit_job` for what a retry
    finds). The work dir is kept: the caller removes it (`remove_work_dir`) once its task is done.
    Returns `dest`.
    """
    import copy
    import shutil

    from resume.config import dump_config

    if not shared_dir:
        raise ResumeError(f"{stage} on the Ray cluster {address} needs shared_dir: a volume mounted in both "
                          "the pipeline pod and the Ray pods (see manifests/storage/pvc.yaml)")
    work = work_dir(shared_dir, work_name)
    work.mkdir(parents=True, exist_ok=True)
    data = _stage_in(data_dir, work, "data")
    cfg = copy.deepcopy(cfg)
    cfg.data.path = data
    if stage == "grpo-train":  # inside the cluster: Ray Train workers on the GPU worker group
        cfg.grpo.launcher, cfg.grpo.ray_address = "ray", "auto"
    dump_config(cfg, work / "config.yaml")
    args = {"config": str(work / "config.yaml"), "data": data,
            "summarizer": _stage_in(summarizer, work, "summarizer"),
            "retriever": _stage_in(retriever, work, "retriever")}
    before_submit = None
    if stage == "grpo-train":
        out = work / "out"
        entry = grpo_entrypoint(**args, out=str(out))

        def before_submit() -> None:  # a new job resumes from the last complete checkpoint of a killed one
            from resume.kfp_ops import drop_incomplete_checkpoints

            for ckpt in drop_incomplete_checkpoints(out / "checkpoints"):
                log(f"[ray] dropped {ckpt}, half-written when an earlier job was stopped")

    elif stage == "summarize":
        out = work / "summaries.jsonl"
        entry = summarize_entrypoint(**args, out=str(out), **kw)
    else:
        raise ResumeError(f"unknown Ray stage {stage!r}; expected grpo-train or summarize")
    submit_job(address, entry, client=client, log=log, submission_id="resume-" + work_name.replace("/", "-"),
               metadata={"stage": stage, "work_dir": str(work)}, reuse_succeeded=out.exists,
               before_submit=before_submit)
    if out.is_dir():
        shutil.copytree(out, dest, dirs_exist_ok=True)
    else:
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(out, dest)
    return dest


# --------------------------------------------------------------------------------- Ray Data summaries


class _Generator:
    """Ray Data callable class: loads the summarizer once per actor; one planned batch per call.

    Each input row is one batch of `summarize_corpus`'s plan (same documents together, same padding),
    so the completions are the ones the in-process path would produce.
    """

    def __init__(self, cfg_dict: dict, model: str, device: str):
        from resume.config import ResumeConfig, from_dict

        self.cfg = from_dict(ResumeConfig, cfg_dict)
        s = self.cfg.summarizer
        self.llm = None
        if s.backend == "vllm":
            from vllm import LLM, SamplingParams

            from resume.summarizer import vllm_dtype

            self.llm = LLM(model=model, dtype=vllm_dtype(s.dtype), seed=0)
            self.params = SamplingParams(
                temperature=0.0, max_tokens=s.max_new_tokens,
                skip_special_tokens=s.separator not in self.llm.get_tokenizer().all_special_tokens)
        else:
            from resume.models import load_causal_lm

            self.model, self.tokenizer = load_causal_lm(model, dtype=s.dtype, device=device)
            self.model.eval()

    def __call__(self, batch: dict) -> dict:
        s = self.cfg.summarizer
        out: dict[str, list] = {"key": [], "_id": [], "completion": [], "n_new_tokens": [], "finished": []}
        for prompts, keys, ids in zip(batch["prompts"], batch["keys"], batch["ids"]):
            prompts = [str(p) for p in prompts]
            if self.llm is not None:
                outs = self.llm.generate(prompts, self.params)
                texts, counts = [o.outputs[0].text for o in outs], [len(o.outputs[0].token_ids) for o in outs]
                fins = [o.outputs[0].finish_reason == "stop" for o in outs]
            else:
                from resume.summarizer import generate_prompts

                texts, counts, fins = generate_prompts(self.model, self.tokenizer, prompts, s.max_new_tokens,
                                                       s.separator, return_finished=True,
                                                       no_repeat_ngram_size=s.no_repeat_ngram_size)
            out["key"] += [str(k) for k in keys]
            out["_id"] += [str(i) for i in ids]
            out["completion"] += list(texts)
            out["n_new_tokens"] += [int(c) for c in counts]
            out["finished"] += [bool(f) for f in fins]
        return out


class _DtypeOnly:
    """Stands in for the loaded model when every key is cached: summarize_corpus only reads its dtype."""

    def __init__(self, dtype):
        self.dtype = dtype

    def parameters(self):
        yield self


def summarize_corpus_ray(cfg, *, data_dir: str, model: str, retriever: str, out_path: str,
                         ray_address: str | None = "local", num_actors: int = 1,
                         num_gpus_per_actor: float = 0.0, doc_ids=None) -> dict:
    """`summarize_corpus` with generation on Ray Data: same summaries.jsonl, same cache.

    1. Plan as the library does (working set, prompts, content keys, length-sorted batches) and skip
       the batches whose keys are all cached.
    2. Ray Data: one row per pending batch, `map_batches` over `_Generator` actors (model loaded
       once per actor, `num_actors` of them, `num_gpus_per_actor` GPUs each; vLLM when
       summarizer.backend=vllm).
    3. Append the new completions to `<out>.cache.jsonl` (the library's format), then let
       `resume.summarizer.summarize_corpus` write summaries.jsonl from the cache (no generation left).
    """
    import resume.summarizer as S
    from resume.models import load_tokenizer, model_fingerprint, pick_device, resolve_model, torch_dtype

    s = cfg.summarizer
    model_dir = resolve_model(model)
    device = "cuda" if num_gpus_per_actor > 0 else pick_device(cfg.device)
    dtype = torch_dtype(s.dtype, device)
    tok = load_tokenizer(model, padding_side="left")
    docs = S.corpus_docs(cfg, data_dir, doc_ids)
    settings = S.generation_settings(cfg, dtype)  # the library's cache-key settings, so keys cannot drift
    fingerprint = model_fingerprint(model)
    prompts = [S.build_prompt(tok, text, cfg) for _, text in docs]
    keys = [S.content_key(fingerprint, p, settings) for p in prompts]
    cache_file = S.cache_path_for(out_path)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache, _ = S.read_cache(cache_file)
    lengths = [len(x) for x in tok(prompts, add_special_tokens=False)["input_ids"]]
    todo = [b for b in S.plan_batches(lengths, s.batch_size) if any(keys[i] not in cache for i in b)]

    generated = 0
    if todo:
        ray = init_ray(ray_address)
        items = [{"batch": n, "ids": [docs[i][0] for i in b], "prompts": [prompts[i] for i in b],
                  "keys": [keys[i] for i in b]} for n, b in enumerate(todo)]
        ds = ray.data.from_items(items, override_num_blocks=min(len(items), max(1, 4 * num_actors)))
        out = ds.map_batches(_Generator, batch_size=1, concurrency=num_actors,
                             num_gpus=num_gpus_per_actor or None,
                             fn_constructor_kwargs={"cfg_dict": cfg.to_dict(), "model": model_dir, "device": device})
        rows = []
        for row in out.iter_rows():
            if row["key"] in cache:
                continue
            r = {"key": str(row["key"]), "_id": str(row["_id"]), "completion": str(row["completion"]),
                 "n_new_tokens": int(row["n_new_tokens"]), "finished": bool(row["finished"])}
            cache[r["key"]] = r
            rows.append(r)
        S.append_cache(cache_file, rows)
        generated = len(rows)
    missing = [docs[i][0] for i, k in enumerate(keys) if k not in cache]
    if missing:
        raise ResumeError(f"Ray Data summarisation left {len(missing)} document(s) without a completion, "
                          f"e.g. {missing[:3]}")
    stand_in = None if s.backend == "vllm" else _DtypeOnly(dtype)
    stats = S.summarize_corpus(cfg, data_dir=data_dir, model=model, retriever=retriever, out_path=out_path,
                               doc_ids=doc_ids, loaded=(stand_in, tok), progress=False)
    stats = dict(stats)
    stats.update({"n_generated": generated, "backend": f"ray_data/{s.backend}", "ray_actors": num_actors})
    return stats


# ------------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m resume.ray_jobs", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summarize", help="summarise a corpus on Ray Data")
    s.add_argument("--config", "-c")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--data")
    s.add_argument("--summarizer")
    s.add_argument("--retriever")
    s.add_argument("--out", required=True)
    s.add_argument("--ray-address", default="auto")
    s.add_argument("--num-actors", type=int, default=1)
    s.add_argument("--gpus-per-actor", type=float, default=0.0)
    pr = sub.add_parser("prune", help="delete task work dirs under <shared-dir>/ray-jobs left by failed runs")
    pr.add_argument("--shared-dir", required=True)
    pr.add_argument("--older-than-days", type=float, default=7.0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "prune":
        for path in prune_work_dirs(args.shared_dir, args.older_than_days * 86400):
            print(f"removed {path}")
        return 0
    from resume.config import load_config

    try:
        cfg = load_config(args.config, args.set)
        stats = summarize_corpus_ray(
            cfg, data_dir=args.data or cfg.data.path, model=args.summarizer or cfg.summarizer.model,
            retriever=args.retriever or cfg.retriever.model, out_path=args.out, ray_address=args.ray_address,
            num_actors=args.num_actors, num_gpus_per_actor=args.gpus_per_actor)
    except ResumeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(stats, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
