"""`Encoder`: a Hugging Face encoder with pooling, normalisation and fast batched encoding; `save_encoder`
writes one that `Encoder` and sentence-transformers both reload.

Encoding: tokenise a chunk of texts once (no padding), sort it by token length, run batches padded to
their own longest sequence under `torch.inference_mode`, pool (attention-masked mean, Contriever-style,
or CLS) in fp32, optionally L2-normalise, and write each row back at its original position. On GPU the
weights are bf16 (`retriever.dtype: auto`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from resume.config import RetrieverConfig
from resume.errors import ResumeError

log = logging.getLogger(__name__)

ENCODER_META = "resume_encoder.json"  # pooling / normalize / max_length / prefixes of a saved encoder
ENCODE_CHUNK = 32768  # texts tokenised and length-sorted together (bounds memory on 8.8M-passage corpora)


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
