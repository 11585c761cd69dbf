"""One fine-tuning process (`train_worker`): a rank under torchrun (DDP) or the only process, with
checkpoints and resume.

Fine-tuning layout (`out_dir`):

    out_dir/model/               the fine-tuned encoder (HF dir + resume_encoder.json + sentence-transformers
                                 files); this path is what `finetune_retriever` returns
    out_dir/train_log.jsonl      one row per optimiser step from rank 0: step, epoch, loss, lr, grad_norm
    out_dir/train_state.json     written last: completed, steps, world size, fixed-batch loss before/after,
                                 parameter hash of every rank, run signature
    out_dir/finetune_config.json the resolved config handed to torchrun (nproc > 1)
    out_dir/hard_negatives.json  mined once with the initial retriever (only when finetune.hard_negatives > 0)
    out_dir/checkpoints/step_N/  every finetune.checkpoint_steps: state.pt (model, optimizer, scheduler, the
                                 RNG state of every rank, step) + trainer_state.json; written to a temporary
                                 folder and renamed; only the newest is kept, and the folder is removed when
                                 the run completes (the final model + train_state.json replace it).

A rerun with the same settings resumes from the newest checkpoint and ends with the same weights as an
uninterrupted run (bit-identical on CPU); a rerun of a completed run returns at once. A different setting
(world size, batch size, data, init model...) in an out_dir that holds checkpoints is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from resume.config import ResumeConfig
from resume.errors import DataError, ResumeError
from resume.io import atomic_write_json, iter_jsonl
from resume.retriever.encoder import ENCODER_META, Encoder, save_encoder
from resume.retriever.loss import _GatherWithGrad, info_nce
from resume.retriever.pairs import _pair_ids, load_texts, mine_hard_negatives

log = logging.getLogger(__name__)

FIXED_BATCH = 64  # pairs in the fixed batch whose loss is reported before and after fine-tuning
MAX_GRAD_NORM = 1.0  # gradient clipping, as the HF Trainer default
CHECKPOINTS = "checkpoints"
TRAIN_STATE = "train_state.json"
TRAIN_LOG = "train_log.jsonl"


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _after_step(step: int) -> None:
    """Called after every optimiser step (and its checkpoint); a seam for crash tests."""


def _signature(cfg: ResumeConfig, *, data_dir, split, init_path, texts_path, world: int) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed (anything that changes the data order or the math)."""
    ft = dict(cfg.finetune.__dict__)
    ft.pop("checkpoint_steps")
    ft.pop("nproc")
    ret = dict(cfg.retriever.__dict__)
    ret.pop("batch_size")
    texts_size = Path(texts_path).stat().st_size if texts_path else None
    return {"finetune": ft, "retriever": ret, "data": dict(cfg.data.__dict__), "data_dir": str(Path(data_dir).resolve()),
            "split": split, "init_model": str(init_path), "texts": str(Path(texts_path).resolve()) if texts_path else None,
            "texts_size": texts_size, "world_size": world, "device": cfg.device}


def _latest_checkpoint(root: Path) -> Path | None:
    if not root.is_dir():
        return None
    done = [(int(p.name[5:]), p) for p in root.iterdir()
            if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit() and (p / "state.pt").is_file()]
    return max(done)[1] if done else None


def _params_sha256(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# Why a hand-written loop rather than sentence-transformers' trainer + (Cached)MultipleNegativesRankingLoss
# with gather_across_devices (which computes the same InfoNCE): (1) resume must be bit-identical to an
# uninterrupted run under plain torchrun, which needs the exact data position (DistributedSampler seed +
# epoch + batch index), every rank's RNG state and the optimizer/scheduler in one atomically renamed
# checkpoint, and a refusal to resume a checkpoint taken with other settings; (2) in-batch negatives here
# drop the columns that are another positive of the same query or the same text as the positive (graded
# qrels give Cranfield queries about 8 relevant documents; duplicated abstracts exist), which the ST losses
# cannot express; (3) no `datasets`/`accelerate` materialisation or start-up cost per rank. The loop stays
# small: DDP for the gradients, one autograd all_gather for the negatives, AdamW + linear warmup.
class _Run:
    """One fine-tuning process (a rank under torchrun, or the only process). See the module docstring."""

    def __init__(self, cfg: ResumeConfig, *, data_dir, split, init_path, texts_path, out_dir):
        import torch.distributed as dist

        from resume.data import load_beir, select_working_set
        from resume.models import pick_device

        self.cfg, self.ft, self.out = cfg, cfg.finetune, Path(out_dir)
        self.world, self.rank = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0)
        self.local_rank = _env_int("LOCAL_RANK", 0)
        self.distributed = self.world > 1
        device = pick_device(cfg.device)
        if device.startswith("cuda"):
            if self.distributed and self.local_rank >= torch.cuda.device_count():
                raise ResumeError(f"finetune.nproc: {self.world} processes on this node but only "
                                  f"{torch.cuda.device_count()} GPU(s); set finetune.nproc <= the GPU count")
            if self.distributed or device == "cuda":  # set_device needs an index (found on an H200: "cuda" fails)
                device = f"cuda:{self.local_rank}"
            torch.cuda.set_device(device)
        self.device = device
        self.owns_group = False
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=timedelta(minutes=60))
            self.owns_group = True
        self.signature = _signature(cfg, data_dir=data_dir, split=split, init_path=init_path,
                                    texts_path=texts_path, world=self.world)
        self.init_path, self.texts_path = init_path, texts_path

        ds = select_working_set(load_beir(data_dir), cfg.data)
        self.texts = load_texts(ds, texts_path, self.ft.views)
        self.queries = ds.queries
        self.pairs = _pair_ids(ds, split, self.texts)
        self.positives: dict[str, set[str]] = {}
        for q, d in self.pairs:
            self.positives.setdefault(q, set()).add(d)
        need = self.ft.batch_size * self.world
        if len(self.pairs) < need:
            raise DataError(data_dir, None, f"split {split!r} has {len(self.pairs)} (query, relevant document) "
                            f"pairs with a text; one step needs batch_size x nproc = {need}")
        # Each distinct text gets an integer id: two columns with the same text are the same candidate.
        text_ids: dict[str, int] = {}
        self.tid = {d: text_ids.setdefault(t, len(text_ids)) for d, t in self.texts.items()}
        self.pos_tids = {q: {self.tid[d] for d in ds_} for q, ds_ in self.positives.items()}
        self.steps_per_epoch = len(self.pairs) // need
        self.total = self.ft.max_steps or self.ft.epochs * self.steps_per_epoch
        self.warmup = math.ceil(self.ft.warmup_ratio * self.total)

    # --------------------------------------------------------------------------------------- helpers

    def _barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def _autocast(self):
        """fp32 master weights; bf16 autocast on CUDA unless retriever.dtype is float32 (float16 also trains
        in bf16: fp16 would need loss scaling)."""
        if self.device.startswith("cuda") and self.cfg.retriever.dtype != "float32":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _hard_negatives(self, encoder: Encoder) -> dict[str, list[str]]:
        path = self.out / "hard_negatives.json"
        if self.rank == 0 and not path.is_file():
            t0 = time.time()
            queries = {q: self.queries[q] for q in self.positives}
            neg = mine_hard_negatives(encoder, queries, self.texts, self.positives, self.ft.hard_negatives)
            atomic_write_json(path, neg)
            log.info("mined %d hard negatives for %d queries in %.1fs", self.ft.hard_negatives, len(neg),
                     time.time() - t0)
        self._barrier()
        neg = json.loads(path.read_text(encoding="utf-8"))
        if any(len(v) != self.ft.hard_negatives for v in neg.values()) or set(neg) != set(self.positives):
            raise ResumeError(f"{path} was mined with other settings; delete it and rerun")
        return neg

    def _batch_loss(self, encoder: Encoder, model, idx: Sequence[int], gather: bool) -> torch.Tensor:
        """InfoNCE of the local batch `idx` against the docs of every rank (gathered with gradient)."""
        batch = [self.pairs[i] for i in idx]
        docs = [d for _, d in batch] + [n for q, _ in batch for n in self.hard.get(q, ())]
        with self._autocast():
            q = encoder._embed(encoder.features([self.queries[q] for q, _ in batch], encoder.query_prefix), model)
            d = encoder._embed(encoder.features([self.texts[x] for x in docs], encoder.doc_prefix), model)
        q, d = q.float(), d.float()  # (B, dim), (B * (1 + hard_negatives), dim)
        tids = torch.tensor([self.tid[x] for x in docs], device=d.device)
        offset = 0
        if gather and self.distributed:
            import torch.distributed as dist

            d = _GatherWithGrad.apply(d)  # (world * B * (1 + h), dim), gradient flows back to every rank
            parts = [torch.empty_like(tids) for _ in range(self.world)]
            dist.all_gather(parts, tids)
            offset = self.rank * tids.numel()
            tids = torch.cat(parts)
        pos = torch.arange(len(batch), device=d.device) + offset
        # A column is not a negative for a query when its text is one of that query's positives.
        exclude = torch.stack([torch.isin(tids, torch.tensor(sorted(self.pos_tids[qid]), device=tids.device))
                               for qid, _ in batch])  # (B, n_cols)
        exclude[torch.arange(len(batch), device=d.device), pos] = False
        return info_nce(q, d, pos, self.ft.temperature, exclude)

    def _fixed_batch_loss(self, encoder: Encoder) -> float:
        """Loss (eval mode, no gradient, no gathering) on a fixed seeded sample of pairs."""
        idx = random.Random(self.ft.seed).sample(range(len(self.pairs)), min(FIXED_BATCH, len(self.pairs)))
        was = encoder.model.training
        encoder.model.eval()
        with torch.no_grad():
            loss = self._batch_loss(encoder, encoder.model, idx, gather=False).item()
        encoder.model.train(was)
        return loss

    # ------------------------------------------------------------------------------------- checkpoints

    def _save_checkpoint(self, step: int, model, opt, sched, before: float) -> None:
        import torch.distributed as dist

        rng = {"cpu": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(self.device) if self.device.startswith("cuda") else None}
        rngs = [rng]
        if self.distributed:
            rngs = [None] * self.world
            dist.all_gather_object(rngs, rng)
        if self.rank == 0:
            root = self.out / CHECKPOINTS
            root.mkdir(parents=True, exist_ok=True)
            final = root / f"step_{step}"
            tmp = root / f".tmp-step_{step}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            epoch, batch = divmod(step, self.steps_per_epoch)
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "rng": rngs, "step": step, "epoch": epoch, "batch_in_epoch": batch,
                     "fixed_batch_loss_before": before, "signature": json.dumps(self.signature, sort_keys=True)}
            torch.save(state, tmp / "state.pt")
            atomic_write_json(tmp / "trainer_state.json", {"step": step, "epoch": epoch, "batch_in_epoch": batch,
                                                          "total_steps": self.total, "signature": self.signature})
            os.replace(tmp, final)
            for p in root.iterdir():  # keep only the newest complete checkpoint
                if p != final:
                    shutil.rmtree(p, ignore_errors=True)

    def _load_checkpoint(self, path: Path, model, opt, sched) -> tuple[int, float]:
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        if json.loads(state["signature"]) != self.signature:
            raise ResumeError(f"{path}: checkpoint of a run with other settings (data, model, batch size, world "
                              f"size...); use another --out or delete {self.out / CHECKPOINTS}")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        rng = state["rng"][self.rank]
        torch.set_rng_state(rng["cpu"])
        if rng["cuda"] is not None and self.device.startswith("cuda"):
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        return int(state["step"]), float(state["fixed_batch_loss_before"])

    # ------------------------------------------------------------------------------------------- train

    def train(self) -> str:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel
        from torch.utils.data import DistributedSampler
        from transformers import get_linear_schedule_with_warmup

        model_dir = self.out / "model"
        t0 = time.time()
        encoder = Encoder(self.init_path, self.cfg.retriever, device=self.device, dtype="float32")
        self.hard: dict[str, list[str]] = self._hard_negatives(encoder) if self.ft.hard_negatives > 0 else {}
        model = encoder.model
        pooler = getattr(model, "pooler", None)
        if pooler is not None:  # unused under our pooling: no gradient, and DDP would flag it
            pooler.requires_grad_(False)
        model.train()
        ddp = model
        if self.distributed:
            import inspect

            # Buffers (position ids) never change: no per-forward sync (the kwarg was renamed in torch 2.13).
            sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(
                DistributedDataParallel.__init__).parameters else "broadcast_buffers")
            ddp = DistributedDataParallel(model, device_ids=[self.local_rank] if self.device.startswith("cuda")
                                          else None, **{sync: False})
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
        groups = [{"params": [p for n, p in params if not n.endswith(no_decay)], "weight_decay": self.ft.weight_decay},
                  {"params": [p for n, p in params if n.endswith(no_decay)], "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=self.ft.learning_rate)
        sched = get_linear_schedule_with_warmup(opt, self.warmup, self.total)

        torch.manual_seed(self.ft.seed + self.rank)  # dropout differs per rank, reproducibly
        if self.device.startswith("cuda"):
            torch.cuda.manual_seed(self.ft.seed + self.rank)
        ckpt = _latest_checkpoint(self.out / CHECKPOINTS)
        log_path = self.out / TRAIN_LOG
        if ckpt is not None:
            step, before = self._load_checkpoint(ckpt, model, opt, sched)
            if self.rank == 0:
                log.info("resuming from %s (step %d of %d)", ckpt, step, self.total)
                rows = [r for r in iter_jsonl(log_path) if r.get("step", 0) <= step] if log_path.is_file() else []
                from resume.io import write_jsonl

                write_jsonl(log_path, rows)
        else:
            step = 0
            before = self._fixed_batch_loss(encoder) if self.rank == 0 else float("nan")
            if self.rank == 0:
                log_path.parent.mkdir(parents=True, exist_ok=True)
                log_path.write_text("", encoding="utf-8")
        if self.rank == 0:
            log.info("fine-tuning %s: %d pairs, %d steps (%d per epoch), global batch %d x %d ranks, device %s",
                     self.init_path, len(self.pairs), self.total, self.steps_per_epoch, self.ft.batch_size,
                     self.world, self.device)

        sampler = DistributedSampler(self.pairs, num_replicas=self.world, rank=self.rank, shuffle=True,
                                     seed=self.ft.seed, drop_last=True)
        B, epoch, order = self.ft.batch_size, -1, []
        every = max(1, self.total // 20)
        logf = open(log_path, "a", encoding="utf-8") if self.rank == 0 else None  # noqa: SIM115
        try:
            while step < self.total:
                e, k = divmod(step, self.steps_per_epoch)
                if e != epoch:
                    sampler.set_epoch(e)
                    order, epoch = list(sampler), e
                loss = self._batch_loss(encoder, ddp, order[k * B:(k + 1) * B], gather=True)
                loss.backward()
                gnorm = torch.nn.utils.clip_grad_norm_([p for _, p in params], MAX_GRAD_NORM)
                lr = sched.get_last_lr()[0]
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                val = loss.detach()
                if self.distributed:
                    dist.all_reduce(val)
                    val = val / self.world
                if logf is not None:
                    logf.write(json.dumps({"step": step, "epoch": e, "loss": round(val.item(), 6), "lr": lr,
                                           "grad_norm": round(float(gnorm), 6)}) + "\n")
                    logf.flush()
                    if step % every == 0 or step == self.total:
                        log.info("step %d/%d loss %.4f lr %.2e", step, self.total, val.item(), lr)
                if step % self.ft.checkpoint_steps == 0 and step < self.total:
                    self._save_checkpoint(step, model, opt, sched, before)
                _after_step(step)
        finally:
            if logf is not None:
                logf.close()

        hashes = [_params_sha256(model)]
        if self.distributed:
            hashes = [None] * self.world
            dist.all_gather_object(hashes, _params_sha256(model))
        if self.rank == 0:
            if len(set(hashes)) != 1:
                raise RuntimeError(f"ranks ended with different parameters: {hashes}")
            after = self._fixed_batch_loss(encoder)
            save_encoder(model, encoder.tokenizer, model_dir, pooling=encoder.pooling, normalize=encoder.normalize,
                         max_length=encoder.max_length, query_prefix=encoder.query_prefix,
                         doc_prefix=encoder.doc_prefix)
            atomic_write_json(self.out / TRAIN_STATE, {
                "completed": True, "steps": self.total, "world_size": self.world, "pairs": len(self.pairs),
                "hard_negatives": self.ft.hard_negatives, "fixed_batch_loss": {"before": before, "after": after},
                "param_sha256_per_rank": hashes, "seconds": round(time.time() - t0, 2), "model": str(model_dir),
                "signature": self.signature})
            shutil.rmtree(self.out / CHECKPOINTS, ignore_errors=True)
            log.info("fixed-batch loss %.4f -> %.4f; model: %s", before, after, model_dir)
        self._barrier()
        return str(model_dir)

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _completed(out: Path, signature: dict[str, Any]) -> bool:
    state_file = out / TRAIN_STATE
    if not state_file.is_file() or not (out / "model" / ENCODER_META).is_file():
        return False
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if not state.get("completed"):
        return False
    if state.get("signature") != json.loads(json.dumps(signature)):
        raise ResumeError(f"{out} holds a finished fine-tuning run with other settings; use another --out or "
                          f"delete {state_file}")
    return True


def train_worker(cfg: ResumeConfig, *, data_dir, split: str, init_model: str, texts: str | None, out_dir) -> str:
    """Fine-tune in this process: one rank of a torchrun job (WORLD_SIZE > 1) or the only process."""
    from resume.models import resolve_model

    init_path = resolve_model(init_model)
    out = Path(out_dir)
    world = _env_int("WORLD_SIZE", 1)
    sig = _signature(cfg, data_dir=data_dir, split=split, init_path=init_path, texts_path=texts, world=world)
    if _completed(out, sig):
        if _env_int("RANK", 0) == 0:
            shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
            log.info("%s: fine-tuning already complete", out)
        return str(out / "model")
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(cfg, data_dir=data_dir, split=split, init_path=init_path, texts_path=texts, out_dir=out)
    try:
        return run.train()
    finally:
        run.close()
