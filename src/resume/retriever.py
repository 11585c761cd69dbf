"""The dense retriever g: encoding, and contrastive fine-tuning (InfoNCE, DDP under torchrun).

    from resume.retriever import Encoder
    enc = Encoder("all-minilm-l6-v2", cfg.retriever)            # any HF encoder dir / hub id / short name
    doc_emb = enc.encode_docs(texts)                             # (n, dim) float32, L2-normalised
    resume retriever-finetune --config configs/tiny.yaml --out runs/ft          # nproc from finetune.nproc
    torchrun --standalone --nproc_per_node 2 -m resume.retriever --config-json runs/ft/finetune_config.json \\
        --data data/cranfield --split train --init-model tiny-encoder --out runs/ft   # what nproc > 1 launches

Encoding: tokenise a chunk of texts once (no padding), sort it by token length, run batches padded to
their own longest sequence under `torch.inference_mode`, pool (attention-masked mean, Contriever-style,
or CLS) in fp32, optionally L2-normalise, and write each row back at its original position. On GPU the
weights are bf16 (`retriever.dtype: auto`).

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

import argparse
import hashlib
import json
import logging
import math
import os
import random
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from resume.config import ResumeConfig, RetrieverConfig, from_dict
from resume.errors import DataError, ResumeError
from resume.io import atomic_write_json, iter_jsonl
from resume.run_dir import corpus_summaries

log = logging.getLogger(__name__)

ENCODER_META = "resume_encoder.json"  # pooling / normalize / max_length / prefixes of a saved encoder
ENCODE_CHUNK = 32768  # texts tokenised and length-sorted together (bounds memory on 8.8M-passage corpora)
FIXED_BATCH = 64  # pairs in the fixed batch whose loss is reported before and after fine-tuning
MAX_GRAD_NORM = 1.0  # gradient clipping, as the HF Trainer default
CHECKPOINTS = "checkpoints"
TRAIN_STATE = "train_state.json"
TRAIN_LOG = "train_log.jsonl"


# ================================================================================================ encoding


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Sentence embeddings from token states, in fp32. hidden (batch, seq, dim), mask (batch, seq) -> (batch, dim).

    `mean`: average of the non-padding token states (Contriever, sentence-transformers mean pooling);
    `cls`: the first token's state (sequences are padded on the right).
    """
    hidden = hidden.float()
    if mode == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def _read_meta(path: str | Path) -> dict[str, Any]:
    f = Path(path) / ENCODER_META
    if not f.is_file():
        return {}
    try:
        meta = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ResumeError(f"{f}: unreadable encoder settings ({e}); delete the file or re-save the model") from None
    return meta if isinstance(meta, dict) else {}


class Encoder:
    """A Hugging Face encoder with pooling, normalisation and fast batched encoding.

    name_or_path: anything `resume.models.resolve_model` accepts (short name, local dir, hub id).
    cfg: pooling / normalize / max_length / prefixes / batch_size / dtype. A directory written by `save`
        carries `resume_encoder.json`; its pooling, normalize and prefixes win over `cfg` (the model was
        trained with them), max_length and batch_size come from `cfg`.
    device: `None` = CUDA when visible, else CPU. dtype: overrides `cfg.dtype` (training loads fp32).

    Attributes: .model (AutoModel, eval mode), .tokenizer, .dim, .device, .pooling, .normalize, .max_length.
    """

    def __init__(self, name_or_path: str, cfg: RetrieverConfig, device: str | None = None, *,
                 dtype: str | None = None):
        from resume.models import load_encoder, pick_device, resolve_model

        self.path = resolve_model(name_or_path)
        meta = _read_meta(self.path)
        self.pooling: str = meta.get("pooling", cfg.pooling)
        self.normalize: bool = bool(meta.get("normalize", cfg.normalize))
        self.query_prefix: str = meta.get("query_prefix", cfg.query_prefix)
        self.doc_prefix: str = meta.get("doc_prefix", cfg.doc_prefix)
        for key in ("pooling", "normalize", "query_prefix", "doc_prefix"):
            if key in meta and meta[key] != getattr(cfg, key):
                log.warning("%s: %s=%r from %s overrides retriever.%s=%r", self.path, key, meta[key],
                            ENCODER_META, key, getattr(cfg, key))
        if self.pooling not in ("mean", "cls"):
            raise ResumeError(f"{self.path}/{ENCODER_META}: pooling {self.pooling!r}; expected 'mean' or 'cls'")
        self.batch_size = cfg.batch_size
        self.device = pick_device(device or "auto")
        self.model, self.tokenizer = load_encoder(self.path, dtype=dtype or cfg.dtype, device=self.device)
        limits = [getattr(self.model.config, "max_position_embeddings", None),
                  getattr(self.tokenizer, "model_max_length", None)]
        limit = min((x for x in limits if isinstance(x, int) and 0 < x < 1_000_000), default=cfg.max_length)
        if cfg.max_length > limit:
            log.warning("%s: retriever.max_length %d > the model's limit %d; using %d", self.path, cfg.max_length,
                        limit, limit)
        self.max_length = min(cfg.max_length, limit)
        self.dim: int = int(getattr(self.model.config, "hidden_size", 0)
                            or self.model.get_input_embeddings().embedding_dim)
        self._pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._type_ids = "token_type_ids" in getattr(self.tokenizer, "model_input_names", ())

    # ------------------------------------------------------------------------------------- public API

    def encode_queries(self, texts: Sequence[str], *, batch_size: int | None = None,
                       show_progress: bool | None = False) -> np.ndarray:
        """(n, dim) float32 embeddings of queries (`query_prefix` prepended)."""
        return self.encode(texts, prefix=self.query_prefix, batch_size=batch_size, show_progress=show_progress)

    def encode_docs(self, texts: Sequence[str], *, batch_size: int | None = None,
                    show_progress: bool | None = None) -> np.ndarray:
        """(n, dim) float32 embeddings of documents or summaries (`doc_prefix` prepended)."""
        return self.encode(texts, prefix=self.doc_prefix, batch_size=batch_size, show_progress=show_progress)

    def encode(self, texts: Sequence[str], *, prefix: str = "", batch_size: int | None = None,
               show_progress: bool | None = False) -> np.ndarray:
        """(n, dim) float32 embeddings in input order: length-sorted batches, padded to their own longest."""
        from tqdm.auto import tqdm

        texts = list(texts)
        bs = batch_size or self.batch_size
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        was_training = self.model.training
        self.model.eval()
        bar = tqdm(total=len(texts), desc="encode", unit="text", disable=None if show_progress is None
                   else not show_progress, leave=False)
        try:
            with torch.inference_mode():
                for start in range(0, len(texts), ENCODE_CHUNK):
                    ids = self._token_ids([prefix + t for t in texts[start:start + ENCODE_CHUNK]])
                    order = np.argsort(-np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids)),
                                       kind="stable")  # longest first: an OOM shows up at once
                    for b in range(0, len(order), bs):
                        idx = order[b:b + bs]
                        emb = self._embed(self._collate([ids[i] for i in idx]))  # (batch, dim)
                        out[start + idx] = emb.cpu().numpy()
                        bar.update(len(idx))
        finally:
            bar.close()
            self.model.train(was_training)
        return out

    def count_tokens(self, texts: Iterable[str]) -> list[int]:
        """Token counts under this encoder's tokenizer, without special tokens and without truncation."""
        texts = list(texts)
        if not texts:
            return []
        ids = self.tokenizer(texts, add_special_tokens=False, truncation=False, return_attention_mask=False,
                             return_token_type_ids=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]

    def save(self, out_dir: str | Path) -> str:
        """Write an HF dir (+ `resume_encoder.json`, + sentence-transformers files) atomically; returns it."""
        return save_encoder(self.model, self.tokenizer, out_dir, pooling=self.pooling, normalize=self.normalize,
                            max_length=self.max_length, query_prefix=self.query_prefix,
                            doc_prefix=self.doc_prefix)

    def features(self, texts: Sequence[str], prefix: str = "") -> dict[str, torch.Tensor]:
        """Tokenised batch on the model's device, padded to its longest sequence (training path)."""
        enc = self.tokenizer([prefix + t for t in texts], padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items()}

    def __repr__(self) -> str:
        return (f"Encoder({self.path!r}, pooling={self.pooling}, normalize={self.normalize}, "
                f"max_length={self.max_length}, dim={self.dim}, device={self.device})")

    # ------------------------------------------------------------------------------------- internals

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=self.max_length,
                              return_attention_mask=False, return_token_type_ids=False, verbose=False)["input_ids"]

    def _collate(self, ids: list[list[int]]) -> dict[str, torch.Tensor]:
        """Right-padded tensors for one batch, padded to the batch's longest sequence."""
        width = max(len(x) for x in ids)
        input_ids = np.full((len(ids), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for i, x in enumerate(ids):
            input_ids[i, :len(x)] = x
            mask[i, :len(x)] = 1
        feats = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
        if self._type_ids:
            feats["token_type_ids"] = torch.zeros_like(feats["input_ids"])
        non_blocking = self.device.startswith("cuda")
        return {k: v.to(self.device, non_blocking=non_blocking) for k, v in feats.items()}

    def _embed(self, feats: dict[str, torch.Tensor], model: torch.nn.Module | None = None) -> torch.Tensor:
        """(batch, dim) fp32 embeddings; `model` lets training pass its DDP wrapper."""
        out = (model or self.model)(**feats)
        emb = pool(out[0], feats["attention_mask"], self.pooling)
        return F.normalize(emb, p=2, dim=-1) if self.normalize else emb


def save_encoder(model, tokenizer, out_dir: str | Path, *, pooling: str, normalize: bool, max_length: int,
                 query_prefix: str = "", doc_prefix: str = "") -> str:
    """Save an encoder so that `Encoder(out_dir, cfg)` and `SentenceTransformer(out_dir)` reload it identically.

    Written into a temporary sibling folder and swapped into place, so a crash leaves the old dir or none.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model = getattr(model, "module", model)  # unwrap DDP
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    dim = int(model.config.hidden_size)
    meta = {"format": 1, "pooling": pooling, "normalize": normalize, "max_length": max_length,
            "query_prefix": query_prefix, "doc_prefix": doc_prefix}
    (tmp / ENCODER_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    # sentence-transformers layout (the long-standing format every version reads): Transformer -> Pooling
    # (-> Normalize), max_seq_length, and the prefixes as the `query` / `document` prompts.
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
        (tmp / "2_Normalize").mkdir(exist_ok=True)
    (tmp / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    (tmp / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_length, "do_lower_case": False}, indent=2) + "\n", encoding="utf-8")
    (tmp / "1_Pooling").mkdir(exist_ok=True)
    (tmp / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": dim, "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False}, indent=2) + "\n", encoding="utf-8")
    (tmp / "config_sentence_transformers.json").write_text(json.dumps({
        "prompts": {"query": query_prefix, "document": doc_prefix}, "default_prompt_name": None,
        "similarity_fn_name": "cosine" if normalize else "dot"}, indent=2) + "\n", encoding="utf-8")
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return str(out)


# ============================================================================================ training data


def load_texts(ds, texts_path: str | Path | None) -> dict[str, str]:
    """doc id -> the text the retriever sees, for the documents of `ds` (a `BeirDataset`).

    `texts_path` None: the full documents (`resume.data.doc_text`). Otherwise a summaries.jsonl, read by
    `resume.run_dir.corpus_summaries` (the one policy of every reader: every document of `ds` needs a
    string summary; ids outside `ds.corpus` are ignored; the last row of a repeated id wins).
    """
    from resume.data import doc_text

    if texts_path is None:
        return {did: doc_text(doc) for did, doc in ds.corpus.items()}
    return corpus_summaries(ds.corpus, texts_path)


def _pair_ids(ds, split: str, texts: dict[str, str]) -> list[tuple[str, str]]:
    """(query id, positive doc id) pairs of `split` (score > 0), in a fixed order, with a text for the doc."""
    if split not in ds.qrels:
        raise DataError(ds.path or "dataset", None, f"no qrels for split {split!r} (have {sorted(ds.qrels)})")
    return [(qid, did) for qid, docs in ds.qrels[split].items() if qid in ds.queries
            for did, score in docs.items() if score > 0 and did in texts]


def training_pairs(ds, split: str, texts: dict[str, str]) -> list[tuple[str, str]]:
    """(query text, text of a relevant document) for every judgement of `split` with score > 0."""
    return [(ds.queries[q], texts[d]) for q, d in _pair_ids(ds, split, texts)]


def mine_hard_negatives(encoder: Encoder, queries: dict[str, str], texts: dict[str, str],
                        positives: dict[str, set[str]], k: int) -> dict[str, list[str]]:
    """qid -> the k highest-scoring doc ids under `encoder` that are not positives (nor the same text as one).

    Exact inner-product search in blocks of queries (fine for working sets; a FAISS index is the tool for
    millions of documents). A query with fewer than k candidates repeats them cyclically.
    """
    dids = list(texts)
    doc_emb = torch.from_numpy(encoder.encode_docs([texts[d] for d in dids]))  # (n_docs, dim)
    qids = sorted(queries)
    q_emb = torch.from_numpy(encoder.encode_queries([queries[q] for q in qids]))  # (n_q, dim)
    out: dict[str, list[str]] = {}
    depth = min(len(dids), k + max((len(p) for p in positives.values()), default=0) + 16)
    for start in range(0, len(qids), 1024):
        top = torch.topk(q_emb[start:start + 1024] @ doc_emb.T, depth, dim=1).indices  # (block, depth)
        for row, qid in zip(top.tolist(), qids[start:start + 1024]):
            pos_texts = {texts[d] for d in positives.get(qid, ()) if d in texts}
            cands = [dids[j] for j in row if dids[j] not in positives.get(qid, ()) and texts[dids[j]] not in pos_texts]
            if not cands:
                cands = [d for d in dids if d not in positives.get(qid, ()) and texts[d] not in pos_texts][:k]
            if not cands:
                raise DataError(getattr(encoder, "path", "texts"), None,
                                f"query {qid}: no document left to use as a hard negative")
            out[qid] = [cands[i % len(cands)] for i in range(k)]
    return out


# ================================================================================================== loss


def info_nce(q: torch.Tensor, d: torch.Tensor, pos: torch.Tensor, temperature: float,
             exclude: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE over cosine similarities: mean over queries of CE(softmax(cos(q, d) / temperature), pos).

    q (n_q, dim) queries; d (n_d, dim) candidate docs (positives and negatives of every rank); pos (n_q,) the
    column of each query's positive; exclude (n_q, n_d) True = drop the column for that query (another
    positive of the same query, or the same text as it: not a negative).
    """
    logits = F.normalize(q, dim=-1) @ F.normalize(d, dim=-1).T / temperature  # (n_q, n_d)
    if exclude is not None:
        logits = logits.masked_fill(exclude, float("-inf"))
    return F.cross_entropy(logits, pos)


# ============================================================================================== training


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward gives each rank the SUM over ranks of the gradient of its slice.

    Every rank's loss depends on every rank's docs, so this (not "gather, then put the local tensor back",
    which drops the other ranks' terms) makes the DDP-averaged gradient exactly that of the mean loss over
    the global batch. (torch.distributed.nn.functional.all_gather does the same but is deprecated.)
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


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
        self.texts = load_texts(ds, texts_path)
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


# ================================================================================================ launch


def finetune_retriever(cfg: ResumeConfig, *, data_dir, split: str, init_model: str, texts: str | None = None,
                       out_dir) -> str:
    """Contrastive fine-tuning of `init_model` on (training query, text of a relevant document) pairs.

    texts: summaries.jsonl ({"_id", "summary"}), None = full documents. Returns `out_dir/model`.
    finetune.nproc > 1 launches `torchrun --standalone --nproc_per_node N -m resume.retriever ...` (its output
    is streamed; a failure raises ResumeError with the last lines); 1 runs in this process without DDP.
    """
    from resume.models import resolve_model

    out = Path(out_dir)
    init_path = resolve_model(init_model)  # resolve (and build/convert) once, before any rank starts
    if texts is not None and not Path(texts).is_file():
        raise DataError(texts, None, "summaries file not found; expected a summaries.jsonl from `resume summarize`")
    nproc = cfg.finetune.nproc
    if nproc == 1 or _env_int("WORLD_SIZE", 1) > 1:
        return train_worker(cfg, data_dir=data_dir, split=split, init_model=init_path, texts=texts, out_dir=out)

    out.mkdir(parents=True, exist_ok=True)
    cfg_json = out / "finetune_config.json"
    atomic_write_json(cfg_json, cfg.to_dict())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "resume.retriever", "--config-json", str(cfg_json), "--data", str(data_dir), "--split", split,
           "--init-model", init_path, "--out", str(out)]
    if texts is not None:
        cmd += ["--texts", str(texts)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    tail: deque[str] = deque(maxlen=25)
    rank_error = None  # the first `[rank N] error: ...` line (a ResumeError inside a worker)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            tail.append(line.rstrip("\n"))
            if rank_error is None and "] error: " in line:
                rank_error = line.split("] error: ", 1)[1].strip()
        rc = proc.wait()
    except BaseException:
        proc.terminate()  # torchrun stops its workers on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    if rc != 0:
        if rank_error is not None:
            raise ResumeError(rank_error)
        raise ResumeError(f"retriever fine-tuning under torchrun failed (exit code {rc}); last output:\n    "
                          + "\n    ".join(tail))
    return str(out / "model")


def main(argv: list[str] | None = None) -> int:
    """Entry point of each torchrun worker (`python -m resume.retriever --help`)."""
    ap = argparse.ArgumentParser(prog="python -m resume.retriever", description=main.__doc__)
    ap.add_argument("--config-json", required=True, help="resolved config (ResumeConfig.to_dict() as JSON)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--init-model", required=True)
    ap.add_argument("--texts")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    rank = _env_int("RANK", 0)
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(message)s", stream=sys.stdout)
    try:
        cfg = from_dict(ResumeConfig, json.loads(Path(args.config_json).read_text(encoding="utf-8")))
        train_worker(cfg, data_dir=args.data, split=args.split, init_model=args.init_model, texts=args.texts,
                     out_dir=args.out)
    except ResumeError as e:
        print(f"[rank {rank}] error: {e}", file=sys.stdout, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
