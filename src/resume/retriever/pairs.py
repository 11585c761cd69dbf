"""Training data: the texts the retriever sees, (query, relevant document) pairs, hard-negative mining."""

from __future__ import annotations

from pathlib import Path

import torch

from resume.errors import DataError
from resume.retriever.encoder import Encoder
from resume.run_dir import corpus_summaries

# Key of a document's full-text view beside its summary when the retriever trains on both views
# (`finetune.views: both`). BEIR ids are single tokens of a JSONL field; a NUL cannot come from one.
DOC_VIEW = "\x00doc"


def load_texts(ds, texts_path: str | Path | None, views: str = "summary") -> dict[str, str]:
    """text key -> the text the retriever sees, for the documents of `ds` (a `BeirDataset`).

    `texts_path` None: the full documents (`resume.data.doc_text`), keyed by doc id. Otherwise a
    summaries.jsonl, read by `resume.run_dir.corpus_summaries` (the one policy of every reader: every
    document of `ds` needs a string summary; ids outside `ds.corpus` are ignored; the last row of a
    repeated id wins), keyed by doc id; with `views="both"` each document's full text is added under
    `doc id + DOC_VIEW`, so every (query, relevant document) judgement gives two training pairs.
    """
    from resume.data import doc_text

    if views not in ("summary", "both"):
        raise ValueError(f"views: expected 'summary' or 'both', got {views!r}")
    if texts_path is None:
        return {did: doc_text(doc) for did, doc in ds.corpus.items()}
    texts = corpus_summaries(ds.corpus, texts_path)
    if views == "both":
        texts.update({did + DOC_VIEW: doc_text(doc) for did, doc in ds.corpus.items()})
    return texts


def _pair_ids(ds, split: str, texts: dict[str, str]) -> list[tuple[str, str]]:
    """(query id, text key) pairs of `split` (score > 0), in a fixed order: for each judgement, the
    document's key when it has a text, then its full-text view's key (`DOC_VIEW`) when it has one."""
    if split not in ds.qrels:
        raise DataError(ds.path or "dataset", None, f"no qrels for split {split!r} (have {sorted(ds.qrels)})")
    return [(qid, key) for qid, docs in ds.qrels[split].items() if qid in ds.queries
            for did, score in docs.items() if score > 0
            for key in (did, did + DOC_VIEW) if key in texts]


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
