"""The dense retriever g: encoding, and contrastive fine-tuning (InfoNCE, DDP under torchrun).

    from resume.retriever import Encoder
    enc = Encoder("all-minilm-l6-v2", cfg.retriever)            # any HF encoder dir / hub id / short name
    doc_emb = enc.encode_docs(texts)                             # (n, dim) float32, L2-normalised
    resume retriever-finetune --config configs/tiny.yaml --out runs/ft          # nproc from finetune.nproc
    torchrun --standalone --nproc_per_node 2 -m resume.retriever --config-json runs/ft/finetune_config.json \\
        --data data/cranfield --split train --init-model tiny-encoder --out runs/ft   # what nproc > 1 launches

One module per job; every name other code uses is imported here, so `from resume.retriever import ...` works:

    encoder  `Encoder` (pooling, normalisation, length-sorted batched encoding) and `save_encoder`
             (HF dir + resume_encoder.json + sentence-transformers files); how encoding works
    pairs    the texts the retriever sees (`load_texts`), (query, relevant document) pairs (`training_pairs`),
             `mine_hard_negatives`
    loss     `info_nce` (InfoNCE with the false-negative mask) and the all_gather that keeps its gradient
    train    one fine-tuning process, a torchrun rank or the only one (`train_worker`): DDP, checkpoints,
             resume; the layout of a fine-tuning `out_dir`
    launch   `finetune_retriever`: in this process (finetune.nproc 1) or under torchrun (nproc > 1)
    worker   `main`, the command line of a torchrun worker (`python -m resume.retriever`, through `__main__`)
"""

from __future__ import annotations

# `X as X`: private names that tests and bench/ reach through the package
from resume.retriever.encoder import ENCODE_CHUNK, ENCODER_META, Encoder, pool, save_encoder
from resume.retriever.launch import finetune_retriever
from resume.retriever.loss import _GatherWithGrad as _GatherWithGrad
from resume.retriever.loss import info_nce
from resume.retriever.pairs import DOC_VIEW, load_texts, mine_hard_negatives, training_pairs
from resume.retriever.pairs import _pair_ids as _pair_ids
from resume.retriever.train import (
    CHECKPOINTS,
    FIXED_BATCH,
    MAX_GRAD_NORM,
    TRAIN_LOG,
    TRAIN_STATE,
    train_worker,
)
from resume.retriever.train import _latest_checkpoint as _latest_checkpoint
from resume.retriever.train import _params_sha256 as _params_sha256
from resume.retriever.worker import main

__all__ = [
    "ENCODER_META", "ENCODE_CHUNK", "FIXED_BATCH", "MAX_GRAD_NORM", "CHECKPOINTS", "TRAIN_STATE", "TRAIN_LOG",
    "Encoder", "pool", "save_encoder", "DOC_VIEW", "load_texts", "training_pairs", "mine_hard_negatives", "info_nce",
    "train_worker", "finetune_retriever", "main",
]
