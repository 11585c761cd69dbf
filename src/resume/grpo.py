"""GRPO training of the summarizer f with the frozen retriever g as reward model (grpo-train).

    resume grpo-train --config configs/demo.yaml --out runs/demo/iter_01/summarizer
    resume grpo-train --config configs/tiny.yaml --set grpo.launcher=ray --out /tmp/grpo   # Ray Train

Dataset (`build_grpo_dataset`): one row per training document with at least one positive query in
the train split (`data.train_split`, after the config's working set): `prompt` (the chat-formatted
string of `resume.summarizer.build_prompt`, so training and corpus summarisation see the same prompt),
`doc_id`, `document`, `pos_query_ids`, `neg_query_ids` (`resume.rewards.sample_negatives`,
`reward.num_negatives`, seeded by `reward.seed`; empty for the "w/o negative queries" ablation).
`grpo.max_train_docs` caps the rows (seeded sample by `grpo.seed`). `grpo.judge_docs` training documents
(`judge_doc_ids`, a seeded sample, at most half of them) are held out of GRPO altogether: the fixed judge
(`resume.quality.fixed_judge`) scores every iteration's summaries of them with g_0, so rounds compare on
documents no round has trained on.

Reward: `resume.rewards.RetrievalReward` over the FROZEN retriever of the previous iteration; its
query and document embeddings are encoded once before training (the retriever does not change during
a round), so each reward call encodes only the completions. TRL calls it with the dataset columns
repeated per generation.

Training: TRL's `GRPOTrainer` (1.16). `grpo.*` maps onto its `GRPOConfig`: `beta` is the KL
coefficient (beta > 0 loads a reference model: the model is passed as a local path, which TRL needs
for that), `loss_type`, `num_generations`; per_device_train_batch_size x gradient_accumulation_steps
x world size = completions per optimiser step (the paper's batch 128). On CPU `use_cpu=True`, fp32.
The trainer is `resume.shared_prompt.SharedPromptGRPOTrainer` (`grpo.share_prompt`, on by default): TRL's,
with each group's prompt run once in the rollouts and the loss; the same log-probabilities and gradients.
`grpo.rollout_dtype: bfloat16` samples the rollouts from a bf16 copy of the policy refreshed after every
optimiser step (`resume.shared_prompt.low_precision_rollouts`); the loss and the optimiser stay fp32.

Live metrics: with a run named in `MLFLOW_RUN_ID` and a tracking URI in `MLFLOW_TRACKING_URI` (set by
`resume.tracking.live_grpo` under `resume run`, injected into each task by KFP >= 2.17's MLflow
integration), or an active MLflow run in this process (a KFP component's run), rank 0 logs each logged
step's reward and its parts to that run while training (`MlflowRewardCallback`: `grpo/<reward_log key>` at
step `RESUME_GRPO_STEP_OFFSET` + global step, the names `resume.tracking` replays the reward log under). Not
transformers' own MLflowCallback (`report_to="mlflow"`): it logs asynchronously, writes every
TrainingArguments field and the model config as params into the run, uses TRL's raw names with per-round
steps, and starts/ends the fluent run itself. Without a tracking URI nothing is logged; a failed write is a
warning (the reward log is replayed afterwards).

Output (`out_dir`): the HF model dir (weights, config, tokenizer with its chat template),
`reward_log.jsonl` (one row per optimiser step: reward mean/std, structure, retrieval, delta and
summary length means, separator rate, loss, kl), `trainer_state.json`, and TRL checkpoints under
`out_dir/checkpoints` every `grpo.save_steps` steps. A rerun resumes from the last checkpoint.

Launchers: `grpo.launcher: local` trains in-process; `ray` wraps the same function in a Ray Train
`TorchTrainer` (`ScalingConfig(num_workers, use_gpu)`, gloo on CPU / NCCL on GPU). `grpo.ray_address`
None/`local` starts Ray on this machine (and shuts it down after); `auto` or `ray://head:10001` joins a
cluster (KubeRay). The rank-0 worker writes the model into `out_dir`, so on a multi-node cluster
`out_dir` must be on storage shared by the workers and the driver (a PVC / NFS mount on KubeRay);
Ray's own run records go to `<out_dir>/ray_results` (set `RunConfig.storage_path` to shared storage).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any

from resume.config import ResumeConfig, from_dict
from resume.errors import ResumeError

REWARD_LOG = "reward_log.jsonl"
REWARD_INPUTS_LOG = "reward_inputs.jsonl"

# TRL log keys -> reward_log.jsonl keys
_LOG_KEYS = {
    "reward": "reward_mean",
    "reward_std": "reward_std",
    "reward_parts/structure": "structure_mean",
    "reward_parts/retrieval": "retrieval_mean",
    "reward_parts/delta": "delta_mean",
    "reward_parts/n_tokens": "length_mean",
    "reward_parts/separator_rate": "separator_rate",
    "loss": "loss",
    "kl": "kl",
    "learning_rate": "learning_rate",
    "completions/mean_length": "completion_length_mean",
}


# ------------------------------------------------------------------------------------------ dataset


def train_positives(ds, split: str) -> dict[str, list[str]]:
    """doc id -> sorted positive query ids (qrels score > 0) of the split."""
    pos: dict[str, set[str]] = {}
    for qid, rels in ds.qrels.get(split, {}).items():
        if qid not in ds.queries:
            continue
        for did, score in rels.items():
            if score > 0 and did in ds.corpus:
                pos.setdefault(did, set()).add(qid)
    return {d: sorted(q) for d, q in pos.items()}


def build_grpo_dataset(cfg: ResumeConfig, ds, tokenizer, *, split: str | None = None) -> list[dict[str, Any]]:
    """Rows {prompt, doc_id, document, pos_query_ids, neg_query_ids} (see the module docstring).

    `ds` is a `resume.data.BeirDataset` (already the working set); `tokenizer` the summarizer's.
    Deterministic: documents in corpus order, negatives from `reward.seed`, the cap from `grpo.seed`.
    """
    import numpy as np

    from resume.data import doc_text
    from resume.rewards import sample_negatives
    from resume.summarizer import build_prompt

    split = split or cfg.data.train_split
    if split not in ds.qrels:
        raise ResumeError(f"{ds.path}: no qrels for split {split!r} (have: {', '.join(sorted(ds.qrels)) or 'none'})")
    pos = train_positives(ds, split)
    held_out = set(judge_doc_ids(cfg, ds, split))
    doc_ids = [d for d in ds.corpus if d in pos and d not in held_out]
    if not doc_ids:
        raise ResumeError(f"{ds.path}: no document has a positive query in split {split!r}; GRPO needs some")
    cap = cfg.grpo.max_train_docs
    if cap is not None and cap < len(doc_ids):
        keep = set(random.Random(cfg.grpo.seed).sample(doc_ids, cap))
        doc_ids = [d for d in doc_ids if d in keep]
    train_qids = sorted({q for q in ds.qrels[split] if q in ds.queries})
    rng = np.random.default_rng(cfg.reward.seed)
    strip_bos = _adds_bos(tokenizer)
    rows = []
    for d in doc_ids:
        text = doc_text(ds.corpus[d])
        prompt = build_prompt(tokenizer, text, cfg)
        if strip_bos and prompt.startswith(tokenizer.bos_token):
            prompt = prompt[len(tokenizer.bos_token):]  # TRL tokenizes string prompts with special tokens
        neg = (sample_negatives(train_qids, pos[d], cfg.reward.num_negatives, rng)
               if cfg.reward.use_negatives else [])
        rows.append({"prompt": prompt, "doc_id": d, "document": text, "pos_query_ids": pos[d],
                     "neg_query_ids": [str(q) for q in neg]})
    return rows


def judge_doc_ids(cfg: ResumeConfig, ds, split: str | None = None) -> list[str]:
    """The training documents held out of GRPO for the fixed judge: `grpo.judge_docs` of the documents
    with a positive query in the train split (at most half of them), a sample seeded by `grpo.seed`,
    in corpus order."""
    pos = train_positives(ds, split or cfg.data.train_split)
    docs = [d for d in ds.corpus if d in pos]
    k = min(cfg.grpo.judge_docs, len(docs) // 2)
    if k <= 0:
        return []
    keep = set(random.Random(f"judge-{cfg.grpo.seed}").sample(docs, k))
    return [d for d in docs if d in keep]


def _adds_bos(tokenizer) -> bool:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("x")["input_ids"]
    return bool(ids) and ids[0] == bos


def to_hf_dataset(rows: list[dict[str, Any]]):
    from datasets import Dataset, Features, Value

    try:
        from datasets import List as _List

        str_list = _List(Value("string"))
    except ImportError:  # datasets < 4
        from datasets import Sequence

        str_list = Sequence(Value("string"))
    feats = Features({"prompt": Value("string"), "doc_id": Value("string"), "document": Value("string"),
                      "pos_query_ids": str_list, "neg_query_ids": str_list})
    return Dataset.from_list(rows, features=feats)


# ------------------------------------------------------------------------------------------- reward


class LoggedReward:
    """Calls the retrieval reward; optionally records the ids it received (one JSON line per completion)."""

    def __init__(self, reward, record_path: str | Path | None = None):
        self.reward = reward
        self.record_path = Path(record_path) if record_path else None
        self.__name__ = getattr(reward, "__name__", "retrieval_reward")

    def __call__(self, prompts=None, completions=None, completion_ids=None, **kwargs) -> list[float]:
        out = self.reward(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
        if self.record_path is not None:
            rank = int(os.environ.get("RANK", "0"))
            step = getattr(kwargs.get("trainer_state"), "global_step", None)
            with open(self.record_path, "a", encoding="utf-8") as f:
                for i in range(len(completions)):
                    f.write(json.dumps({"rank": rank, "step": step, "doc_id": kwargs["doc_id"][i],
                                        "pos_query_ids": list(kwargs["pos_query_ids"][i]),
                                        "neg_query_ids": list(kwargs["neg_query_ids"][i]),
                                        "reward": out[i]}) + "\n")
        return out


def make_reward(cfg: ResumeConfig, ds, rows: list[dict[str, Any]], retriever: str, device: str):
    """RetrievalReward over the frozen retriever, with every needed query/doc embedding cached now."""
    from resume.data import doc_text
    from resume.retriever import Encoder
    from resume.rewards import RetrievalReward
    from resume.summarizer import reasoning_prefix

    encoder = Encoder(retriever, cfg.retriever, device=device)
    docs = {r["doc_id"]: doc_text(ds.corpus[r["doc_id"]]) for r in rows}
    qids = sorted({q for r in rows for q in (*r["pos_query_ids"], *r["neg_query_ids"])})
    train_qids = sorted(q for q in ds.qrels.get(cfg.data.train_split, {}) if q in ds.queries)
    titles = ({d: str(ds.corpus[d].get("title") or "") for d in docs} if cfg.reward.summary_title else None)
    reward = RetrievalReward(encoder, ds.queries, docs, cfg.reward, separator=cfg.summarizer.separator,
                             train_query_ids=train_qids, prefix=reasoning_prefix(cfg), titles=titles)
    reward.warm(doc_ids=list(docs), query_ids=qids)
    return reward


# ------------------------------------------------------------------------------------------ training


def _log_row(state, logs: dict[str, Any]) -> dict[str, Any]:
    """One reward_log.jsonl row of TRL's logs at a logging step."""
    row = {"step": state.global_step}
    for k, v in _LOG_KEYS.items():
        if k in logs:
            row[v] = logs[k]
    return row


def mlflow_target() -> tuple[str, str] | None:
    """(tracking URI, run id) live GRPO metrics go to, or None (see the module docstring): MLFLOW_RUN_ID,
    else this process's active MLflow run; only with a tracking URI configured (MLFLOW_TRACKING_URI, or
    set in-process with mlflow.set_tracking_uri)."""
    uri, run_id = os.environ.get("MLFLOW_TRACKING_URI"), os.environ.get("MLFLOW_RUN_ID")
    if "mlflow" in sys.modules:  # only ask MLflow if something imported it (an active run needs that)
        import mlflow

        active = mlflow.active_run()
        if not run_id and active is not None:
            run_id = active.info.run_id
        if not uri and mlflow.is_tracking_uri_set():
            uri = mlflow.get_tracking_uri()
    return (uri, run_id) if uri and run_id else None


def _mlflow_callback(uri: str, run_id: str, offset: int):
    from transformers import TrainerCallback

    class MlflowRewardCallback(TrainerCallback):
        """Logs each logging step's reward_log row to an MLflow run as it happens (rank 0)."""

        def __init__(self):
            self.client = None
            self.failed = False

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or "reward" not in logs or self.failed:
                return
            import math
            import time

            from mlflow.entities import Metric
            from mlflow.tracking import MlflowClient

            now, step = int(time.time() * 1000), offset + state.global_step
            metrics = [Metric(f"grpo/{k}", float(v), now, step) for k, v in _log_row(state, logs).items()
                       if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
                       and math.isfinite(float(v))]
            try:
                self.client = self.client or MlflowClient(tracking_uri=uri)
                self.client.log_batch(run_id, metrics=metrics, synchronous=True)
            except Exception as e:  # noqa: BLE001 - tracking must not stop training; the replay fills in
                self.failed = True
                print(f"warning: live GRPO metrics to MLflow run {run_id} at {uri} stopped: "
                      f"{type(e).__name__}: {e}", file=sys.stderr)

    return MlflowRewardCallback()


def _reward_log_callback(path: Path):
    from transformers import TrainerCallback

    class RewardLogCallback(TrainerCallback):
        """Appends one row per logged step (TRL's reward + the reward parts) to reward_log.jsonl."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or "reward" not in logs:
                return
            row = _log_row(state, logs)
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())

    return RewardLogCallback()


def _trim_log(path: Path, max_step: int) -> None:
    """Drop rows logged after the checkpoint we resume from (they will be logged again)."""
    if not path.exists():
        return
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("step", 0) <= max_step:
            rows.append(line)
    from resume.io import atomic_write_text

    atomic_write_text(path, "".join(x + "\n" for x in rows))


def trl_config(cfg: ResumeConfig, out_dir: Path, device: str, extra: dict[str, Any] | None = None):
    """TRL GRPOConfig from `cfg.grpo` (see the module docstring for the mapping)."""
    from trl import GRPOConfig

    g = cfg.grpo
    on_gpu = device.startswith("cuda")
    bf16 = (on_gpu and cfg.summarizer.dtype in ("auto", "native", "bfloat16")) if g.bf16 is None else g.bf16
    kwargs: dict[str, Any] = dict(
        output_dir=str(out_dir / "checkpoints"),
        use_cpu=not on_gpu,
        bf16=bf16,
        fp16=on_gpu and cfg.summarizer.dtype == "float16" and not bf16,
        learning_rate=g.learning_rate,
        max_steps=g.max_steps,
        beta=g.beta,
        loss_type=g.loss_type,
        scale_rewards=g.scale_rewards,
        mask_truncated_completions=g.mask_truncated_completions,
        per_device_train_batch_size=g.per_device_train_batch_size,
        gradient_accumulation_steps=g.gradient_accumulation_steps,
        num_generations=g.num_generations,
        max_completion_length=g.max_completion_length,
        temperature=g.temperature,
        top_p=g.top_p,
        logging_steps=g.logging_steps,
        save_strategy="steps",
        save_steps=g.save_steps,
        save_total_limit=2,
        gradient_checkpointing=g.gradient_checkpointing,
        seed=g.seed,
        data_seed=g.seed,
        report_to="none",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=None,
        model_init_kwargs={"dtype": "bfloat16" if on_gpu and cfg.summarizer.dtype in ("auto", "native", "bfloat16")
                           else "float32"},
    )
    kwargs.update(extra or {})
    return GRPOConfig(**kwargs)


def train_local(cfg: ResumeConfig, *, data_dir: str | Path, summarizer: str, retriever: str,
                out_dir: str | Path, trl_args: dict[str, Any] | None = None,
                record_reward_inputs: bool = False, callbacks: list | None = None,
                reward_wrapper: Any = None) -> str:
    """The training function (one process; under Ray Train one per worker).

    callbacks: extra `TrainerCallback`s; reward_wrapper: `f(reward) -> reward function` applied to the
    retrieval reward (benchmarks time it this way). Both in-process only.
    """
    import torch
    from transformers.trainer_utils import get_last_checkpoint
    from trl import GRPOTrainer

    from resume.data import load_beir, select_working_set
    from resume.models import load_tokenizer, pick_device, resolve_model
    from resume.shared_prompt import SharedPromptGRPOTrainer, low_precision_rollouts

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    if cfg.grpo.launcher == "ray" and not cfg.grpo.use_gpu:
        device = "cpu"
    if device == "cpu":
        from resume.summarizer import set_cpu_threads

        set_cpu_threads()
        if cfg.grpo.cpu_malloc == "retain":
            from resume.models.cpu_malloc import retain_freed_memory

            retain_freed_memory()
    torch.manual_seed(cfg.grpo.seed)

    ds = select_working_set(load_beir(data_dir), cfg.data)
    model_dir = resolve_model(summarizer)  # a local path: TRL needs one for the reference model (beta > 0)
    tokenizer = load_tokenizer(summarizer)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = build_grpo_dataset(cfg, ds, tokenizer)
    rank = int(os.environ.get("RANK", "0"))
    record = out_dir / REWARD_INPUTS_LOG if record_reward_inputs else None
    reward = LoggedReward(make_reward(cfg, ds, rows, retriever, "cpu" if device == "cpu" else device), record)
    if reward_wrapper is not None:
        reward = reward_wrapper(reward)

    args = trl_config(cfg, out_dir, device, trl_args)
    last = get_last_checkpoint(args.output_dir) if Path(args.output_dir).is_dir() else None
    log_path = out_dir / REWARD_LOG
    if rank == 0:
        if last is None:
            log_path.unlink(missing_ok=True)
            if record:
                record.unlink(missing_ok=True)
        else:
            _trim_log(log_path, int(Path(last).name.rsplit("-", 1)[-1]))
    target = mlflow_target() if rank == 0 else None
    live = [_mlflow_callback(*target, int(os.environ.get("RESUME_GRPO_STEP_OFFSET") or 0))] if target else []
    trainer_cls = SharedPromptGRPOTrainer if cfg.grpo.share_prompt else GRPOTrainer
    trainer = trainer_cls(model=str(model_dir), reward_funcs=[reward], args=args,
                        train_dataset=to_hf_dataset(rows), processing_class=tokenizer,
                        callbacks=[_reward_log_callback(log_path), *live, *(callbacks or [])])
    if cfg.grpo.rollout_dtype != "policy":
        low_precision_rollouts(trainer, getattr(torch, cfg.grpo.rollout_dtype))
    trainer.train(resume_from_checkpoint=last)
    trainer.save_model(str(out_dir))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out_dir))
        trainer.state.save_to_json(str(out_dir / "trainer_state.json"))
        # The checkpoints only serve a crash mid-training; once the final model is saved they are dead
        # weight (about 1.6 GB per round for SmolLM2 with optimizer state), so drop them.
        shutil.rmtree(args.output_dir, ignore_errors=True)
    return str(out_dir)


def _ray_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: rebuild the config and run `train_local` on this worker."""
    cfg = from_dict(ResumeConfig, config["cfg"])
    train_local(cfg, data_dir=config["data_dir"], summarizer=config["summarizer"], retriever=config["retriever"],
                out_dir=config["out_dir"], trl_args=config.get("trl_args"),
                record_reward_inputs=config.get("record_reward_inputs", False))


_PROPAGATE_ENV = ("RESUME_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE",
                  "TOKENIZERS_PARALLELISM",
                  # live GRPO metrics from the rank-0 worker (credentials stay out of Ray's runtime env)
                  "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "RESUME_GRPO_STEP_OFFSET")


def _abs_if_path(x: str) -> str:
    return str(Path(x).resolve()) if Path(x).exists() else x


def train_ray(cfg: ResumeConfig, *, data_dir: str | Path, summarizer: str, retriever: str, out_dir: str | Path,
              trl_args: dict[str, Any] | None = None, record_reward_inputs: bool = False) -> str:
    """Run `train_local` on Ray Train workers (TorchTrainer); returns out_dir."""
    try:
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer
    except ImportError:
        raise ResumeError("grpo.launcher is 'ray' but ray[train] is not installed; `pip install 'ray[train]'` "
                          "or set grpo.launcher=local") from None
    g = cfg.grpo
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    started = False
    if not ray.is_initialized():
        env = {k: os.environ[k] for k in _PROPAGATE_ENV if k in os.environ}
        if g.ray_address in (None, "local"):
            ray.init(num_cpus=max(2, g.num_workers), include_dashboard=False, log_to_driver=True,
                     runtime_env={"env_vars": env})
        else:
            ray.init(address=g.ray_address, runtime_env={"env_vars": env})
        started = True
    try:
        loop_config = {"cfg": cfg.to_dict(), "data_dir": _abs_if_path(str(data_dir)),
                       "summarizer": _abs_if_path(summarizer), "retriever": _abs_if_path(retriever),
                       "out_dir": str(out_dir), "trl_args": trl_args, "record_reward_inputs": record_reward_inputs}
        trainer = TorchTrainer(
            _ray_worker,
            train_loop_config=loop_config,
            scaling_config=ScalingConfig(num_workers=g.num_workers, use_gpu=g.use_gpu,
                                         resources_per_worker={"GPU": 1} if g.use_gpu else {"CPU": 1}),
            torch_config=TorchConfig(backend="nccl" if g.use_gpu else "gloo"),
            run_config=RunConfig(name="grpo", storage_path=str(out_dir / "ray_results")),
        )
        result = trainer.fit()
        if getattr(result, "error", None) is not None:
            raise ResumeError(f"Ray Train GRPO failed: {result.error}")
    finally:
        if started:
            ray.shutdown()
    return str(out_dir)


def grpo_train(cfg: ResumeConfig, *, data_dir: str | Path, summarizer: str, retriever: str,
               out_dir: str | Path, trl_args: dict[str, Any] | None = None,
               record_reward_inputs: bool = False, **local_kwargs: Any) -> str:
    """GRPO-train `summarizer` with `retriever` (frozen) as reward model; returns `out_dir`.

    trl_args: extra TRL `GRPOConfig` fields (e.g. `{"use_vllm": True}`), applied last.
    record_reward_inputs: also write `reward_inputs.jsonl` (doc_id, pos/neg query ids, reward per
    completion as the reward function received them), for tests and debugging.
    local_kwargs: `callbacks` / `reward_wrapper` of `train_local` (in-process launcher only).
    """
    if cfg.grpo.launcher == "ray":
        if local_kwargs:
            raise ResumeError(f"grpo_train: {', '.join(local_kwargs)} only work with grpo.launcher=local")
        return train_ray(cfg, data_dir=data_dir, summarizer=summarizer, retriever=retriever, out_dir=out_dir,
                         trl_args=trl_args, record_reward_inputs=record_reward_inputs)
    return train_local(cfg, data_dir=data_dir, summarizer=summarizer, retriever=retriever, out_dir=out_dir,
                       trl_args=trl_args, record_reward_inputs=record_reward_inputs, **local_kwargs)
