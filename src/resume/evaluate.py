"""Runs and metrics: TREC run files, qrels, MRR@10 / NDCG@10 / R@100 / R@1000 via pytrec_eval.

    resume metrics --qrels data/cranfield/qrels/test.tsv --run runs/base/run.trec
    resume evaluate --config configs/demo.yaml --split test --retriever all-minilm-l6-v2 --out runs/base
    resume evaluate --texts S.jsonl --mode fused --choose-weight-on dev --split test --out runs/fused

Index modes (`EvalConfig.mode`): `summary` (each document indexed as its summary; with no summaries, as its
full text: the Baseline), `fused` (both views, fused by score or RRF, `resume.index.FusedIndex`),
`long_only` (the summary only for documents longer than the retriever's window). `EvalConfig.summary_title`
(beyond the paper): each summary is indexed after its document's title, in every mode.

Conventions (trec_eval semantics, stated once here and tested in tests/test_evaluate.py):

- Ranking order: score descending, ties broken by doc id DESCENDING (byte-wise), which is the order
  trec_eval (and so pytrec_eval) imposes when it reads a run: it ignores the rank column and sorts by
  (score desc, docno desc). Run files are written in exactly that order with ranks 1..n, and scores
  are written with full float precision (`repr`), so reading a run back changes no tie.
- MRR@10: pytrec_eval's `recip_rank` has no cutoff, so each query's run is first truncated to its top
  10 in the order above; this equals trec_eval's reciprocal rank of the first relevant doc within rank 10.
- NDCG@10: trec_eval `ndcg_cut_10` with graded gains (gain = the qrels grade, linear, as trec_eval).
- Recall@100 / @1000: trec_eval `recall_100`, `recall_1000`. Relevant = grade >= 1.
- Averaging: the mean over the queries of the qrels that have at least one relevant document. A query
  missing from the run (or with an empty run) scores 0 (like `trec_eval -c`); queries in the run but
  not in the qrels are ignored; queries whose judgements are all non-relevant are left out (every
  measure is 0 or undefined for them). Plain trec_eval would instead average over the queries present
  in both files; with a complete run the two agree.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from resume import run_dir as rd
from resume.errors import DataError, ResumeError
from resume.io import atomic_path, atomic_write_json
from resume.run_dir import METRICS, PRIMARY_METRIC, corpus_summaries

_FULL_MEASURES = {"ndcg_cut.10", "recall.100,1000"}
_KEYS = {"ndcg@10": "ndcg_cut_10", "recall@100": "recall_100", "recall@1000": "recall_1000"}

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


# ------------------------------------------------------------------------------------ ordering


def _key(item: tuple[str, float]) -> tuple[float, str]:
    return item[1], item[0]


def trec_order(scores: Mapping[str, float] | Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """(doc_id, score) pairs in trec_eval order: score descending, then doc id descending.

    trec_eval compares doc ids with strcmp on their bytes; Python compares str by code point, which
    for UTF-8 is the same order.
    """
    items = scores.items() if isinstance(scores, Mapping) else scores
    return sorted(((str(d), float(s)) for d, s in items), key=_key, reverse=True)


def truncate_run(run: Mapping[str, Mapping[str, float]], k: int) -> Run:
    """Each query's top k in trec_eval order."""
    return {q: dict(heapq.nlargest(k, ((str(d), float(s)) for d, s in docs.items()), key=_key))
            for q, docs in run.items()}


# ------------------------------------------------------------------------------------ run files


_SPACE = re.compile(r"\s")


def _check_token(value: str, what: str) -> str:
    value = str(value)
    if not value or _SPACE.search(value):
        raise ResumeError(f"{what} {value!r} cannot be written to a TREC file (empty or contains whitespace)")
    return value


def write_trec_run(path: str | Path, run: Mapping[str, Mapping[str, float]], tag: str = "resume") -> int:
    """Write `qid Q0 docid rank score tag` lines atomically, queries in sorted order, docs in trec_eval
    order (score desc, doc id desc), ranks from 1. Returns the number of lines."""
    tag = _check_token(tag, "run tag")
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for qid in sorted(run, key=str):
            q = _check_token(qid, "query id")
            ranked = trec_order(run[qid])
            for did, score in ranked:
                if not math.isfinite(score):
                    raise ResumeError(f"query {q}, doc {did}: score {score!r} is not finite")
                if not did or _SPACE.search(did):
                    _check_token(did, "doc id")
            f.writelines([f"{q} Q0 {did} {rank} {score!r} {tag}\n"
                          for rank, (did, score) in enumerate(ranked, start=1)])
            n += len(ranked)
    return n


def read_trec_run(path: str | Path) -> Run:
    """Read a TREC run (`qid Q0 docid rank score tag`); the rank column is ignored, as by trec_eval."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "run file not found")
    run: Run = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in _utf8_lines(f, path):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise DataError(path, lineno, f"expected 6 columns `qid Q0 docid rank score tag`, got {len(parts)}")
            qid, _, did, _, score, _ = parts
            try:
                value = float(score)
            except ValueError:
                raise DataError(path, lineno, f"score {score!r} is not a number") from None
            if not math.isfinite(value):
                raise DataError(path, lineno, f"score {score!r} is not finite")
            docs = run.setdefault(qid, {})
            if did in docs:
                raise DataError(path, lineno, f"doc {did} appears twice for query {qid}")
            docs[did] = value
    return run


def read_qrels_any(path: str | Path, *, conflicts: list | None = None) -> Qrels:
    """Qrels from a BEIR tsv (`query-id corpus-id score`, header optional) or a TREC qrels file
    (`qid iter docid grade`), detected from the column count. A repeated pair keeps its last grade;
    `conflicts` (a list) receives (line, qid, docid, old grade, new grade) for each that changes it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "qrels file not found")
    qrels: Qrels = {}
    fmt: str | None = None
    with open(path, encoding="utf-8") as f:
        for lineno, line in _utf8_lines(f, path):
            parts = line.split()
            if not parts:
                continue
            if fmt is None:
                if len(parts) == 3:
                    fmt = "beir"
                    if not _is_int(parts[2]):  # header line
                        continue
                elif len(parts) == 4:
                    fmt = "trec"
                else:
                    raise DataError(path, lineno, f"expected 3 columns (BEIR `query-id corpus-id score`) or 4 "
                                                  f"(TREC `qid iter docid grade`), got {len(parts)}")
            want = 3 if fmt == "beir" else 4
            if len(parts) != want:
                raise DataError(path, lineno, f"expected {want} columns ({fmt} qrels), got {len(parts)}")
            qid, did, grade = (parts[0], parts[1], parts[2]) if fmt == "beir" else (parts[0], parts[2], parts[3])
            if not _is_int(grade):
                raise DataError(path, lineno, f"relevance grade {grade!r} is not an integer")
            judged = qrels.setdefault(qid, {})
            if conflicts is not None and judged.get(did, int(float(grade))) != int(float(grade)):
                conflicts.append((lineno, qid, did, judged[did], int(float(grade))))
            judged[did] = int(float(grade))
    if not qrels:
        raise DataError(path, None, "no judgements found")
    return qrels


def _utf8_lines(f, path: Path):
    """(line number, line) of a text file opened as UTF-8; a DataError naming the file when it is not
    UTF-8 (e.g. a binary file)."""
    lineno = 0
    try:
        for lineno, line in enumerate(f, start=1):
            yield lineno, line
    except UnicodeDecodeError as e:
        where = f" after line {lineno}" if lineno else ""
        raise DataError(path, None, f"not UTF-8 text ({e.reason}{where}); expected a text file") from None


def _is_int(s: str) -> bool:
    try:
        v = float(s)
    except ValueError:
        return False
    return math.isfinite(v) and v == int(v)


# ------------------------------------------------------------------------------------ metrics


def judged_queries(qrels: Mapping[str, Mapping[str, int]]) -> list[str]:
    """Queries with at least one relevant (grade >= 1) document, sorted: the averaging set."""
    return sorted(q for q, docs in qrels.items() if any(int(r) >= 1 for r in docs.values()))


def per_query_metrics(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]
                      ) -> dict[str, dict[str, float]]:
    """{qid: {"mrr@10", "ndcg@10", "recall@100", "recall@1000"}} for every judged query (0 if not run)."""
    import pytrec_eval

    qids = judged_queries(qrels)
    if not qids:
        raise ResumeError("no query in the qrels has a relevant document (grade >= 1); nothing to evaluate")
    q = {qid: {str(d): int(r) for d, r in qrels[qid].items()} for qid in qids}
    r = {qid: {str(d): float(s) for d, s in run[qid].items()} for qid in qids if run.get(qid)}
    full = pytrec_eval.RelevanceEvaluator(q, _FULL_MEASURES).evaluate(r) if r else {}
    top10 = pytrec_eval.RelevanceEvaluator(q, {"recip_rank"}).evaluate(truncate_run(r, 10)) if r else {}
    out: dict[str, dict[str, float]] = {}
    for qid in qids:
        row = {"mrr@10": float(top10.get(qid, {}).get("recip_rank", 0.0))}
        row.update({m: float(full.get(qid, {}).get(key, 0.0)) for m, key in _KEYS.items()})
        out[qid] = row
    return out


def aggregate(per_query: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over the queries given."""
    if not per_query:
        raise ResumeError("no queries to average")
    return {m: float(np.mean([row[m] for row in per_query.values()])) for m in METRICS}


def compute_metrics(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]
                    ) -> dict[str, float]:
    """{"mrr@10", "ndcg@10", "recall@100", "recall@1000"}: means over the judged queries (module doc)."""
    return aggregate(per_query_metrics(qrels, run))


def _values(per_query: Mapping[str, Any], metric: str) -> dict[str, float]:
    return {q: float(v[metric] if isinstance(v, Mapping) else v) for q, v in per_query.items()}


def paired_test(a_per_query: Mapping[str, Any], b_per_query: Mapping[str, Any], metric: str = PRIMARY_METRIC, *,
                n_permutations: int = 10000, seed: int = 0) -> dict[str, Any]:
    """Paired significance of b vs a on `metric` over the queries both have.

    `a_per_query` / `b_per_query`: `per_query_metrics` outputs ({qid: {metric: value}}) or {qid: value}.
    Returns n, mean_a, mean_b, mean_diff (b - a), t and p_value (two-sided paired t-test,
    scipy.stats.ttest_rel) and p_permutation (two-sided sign-flip randomisation test on the per-query
    differences: exact for n <= 16, else `n_permutations` seeded draws with the +1 correction).
    Zero-variance differences give p = 1 when they are all 0 and p = 0 otherwise.
    """
    from scipy import stats

    a, b = _values(a_per_query, metric), _values(b_per_query, metric)
    qids = sorted(set(a) & set(b))
    n = len(qids)
    x = np.array([a[q] for q in qids], dtype=np.float64)
    y = np.array([b[q] for q in qids], dtype=np.float64)
    d = y - x
    res: dict[str, Any] = {
        "metric": metric, "n": n, "n_only_a": len(set(a) - set(b)), "n_only_b": len(set(b) - set(a)),
        "mean_a": float(x.mean()) if n else None, "mean_b": float(y.mean()) if n else None,
        "mean_diff": float(d.mean()) if n else None, "t": None, "p_value": None, "p_permutation": None,
    }
    if n < 2:
        return res
    if np.allclose(d, d[0]):
        res["p_value"] = res["p_permutation"] = 1.0 if abs(d[0]) < 1e-15 else 0.0
        return res
    t = stats.ttest_rel(y, x)
    res["t"], res["p_value"] = float(t.statistic), float(t.pvalue)
    obs = abs(d.mean())
    if n <= 16:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))  # (2^n, n)
        res["p_permutation"] = float(np.mean(np.abs(signs @ d / n) >= obs - 1e-12))
    else:
        rng = np.random.default_rng(seed)
        hits = 0
        for start in range(0, n_permutations, 1000):
            m = min(1000, n_permutations - start)
            signs = rng.choice((-1.0, 1.0), size=(m, n))
            hits += int(np.sum(np.abs(signs @ d / n) >= obs - 1e-12))
        res["p_permutation"] = (hits + 1) / (n_permutations + 1)
    return res


# ------------------------------------------------------------------------------------ evaluate stage


def load_index_texts(ds: Any, texts: str | Path | None, *, title: bool = False) -> dict[str, str]:
    """doc id -> text to index: the summaries of `texts` (a summaries.jsonl, read by
    `resume.run_dir.corpus_summaries`: every corpus document needs one), each after its document's title
    when `title` (`resume.lead.join_title`), or the full document (`resume.data.doc_text`) when `texts` is
    None."""
    from resume.data import doc_text
    from resume.lead import join_title

    if texts is None:
        return {d: doc_text(doc) for d, doc in ds.corpus.items()}
    summaries = corpus_summaries(ds.corpus, texts)
    if not title:
        return summaries
    return {d: join_title(ds.corpus[d].get("title") or "", s) for d, s in summaries.items()}


MODES = ("summary", "fused", "long_only")
WEIGHT_GRID = tuple(i / 10 for i in range(11))  # 0.0, 0.1, ..., 1.0


def doc_window(encoder: Any) -> int:
    """Document tokens a retriever reads: its `max_length` minus the special tokens its tokenizer adds
    ([CLS] and [SEP] for BERT-style encoders; 0 for an encoder without a `tokenizer`)."""
    tok = getattr(encoder, "tokenizer", None)
    return int(encoder.max_length) - (tok.num_special_tokens_to_add(pair=False) if tok is not None else 0)


def long_only_texts(encoder: Any, documents: Mapping[str, str], summaries: Mapping[str, str]
                    ) -> tuple[dict[str, str], list[str]]:
    """(doc id -> index text, ids that got their summary) for `long_only`: the summary for each document that
    overflows the retriever's window (`encoder.count_tokens` of doc_prefix + document, no special tokens,
    > `doc_window(encoder)`), else the document itself."""
    ids = list(documents)
    prefix = getattr(encoder, "doc_prefix", "")
    window = doc_window(encoder)
    counts = encoder.count_tokens([prefix + documents[d] for d in ids])
    long = [d for d, n in zip(ids, counts) if n > window]
    chosen = set(long)
    return {d: summaries[d] if d in chosen else documents[d] for d in ids}, long


def eval_config(cfg, *, mode: str | None = None, fusion: str | None = None, fusion_weight: float | None = None,
                texts: Any = None, weight_later: bool = False, summary_title: bool | None = None):
    """`cfg.evaluate` with these overrides (None = keep), checked before any model loads: an asked-for mode
    other than `summary` needs `texts`, and so does an asked-for `summary_title` (the config's own mode and
    title apply where summaries are indexed: without `texts`, the full documents, they are `summary` and
    off); score fusion needs a weight in [0, 1] (unless `weight_later`: chosen on dev)."""
    from dataclasses import replace

    from resume.index import check_fusion

    e = cfg.evaluate
    ecfg = replace(e, mode=(e.mode if texts is not None else "summary") if mode is None else mode,
                   fusion=e.fusion if fusion is None else fusion,
                   fusion_weight=e.fusion_weight if fusion_weight is None else fusion_weight,
                   summary_title=(e.summary_title and texts is not None) if summary_title is None
                   else bool(summary_title))
    if ecfg.mode not in MODES:
        raise ResumeError(f"evaluate mode {ecfg.mode!r}: expected one of {', '.join(MODES)}")
    if ecfg.mode != "summary" and texts is None:
        raise ResumeError(f"evaluate mode {ecfg.mode!r} needs summaries (--texts): without them every document "
                          "would be fused with, or replaced by, itself; use mode 'summary' for the Baseline")
    if ecfg.summary_title and texts is None:
        raise ResumeError("summary_title (--summary-title) puts each document's title before its summary: it "
                          "needs summaries (--texts); the full documents (the Baseline) already begin with their title")
    if ecfg.mode == "fused" and not (weight_later and ecfg.fusion == "score"):
        check_fusion(ecfg.fusion, ecfg.fusion_weight, ecfg.rrf_k)
    return ecfg


def _split_queries(ds: Any, data_dir: str | Path, split: str) -> tuple[Qrels, list[str]]:
    if split not in ds.qrels:
        raise DataError(Path(data_dir) / "qrels", None, f"split {split!r} not found; available: {sorted(ds.qrels)}")
    qrels = ds.qrels[split]
    qids = [q for q in sorted(qrels) if q in ds.queries]
    if not qids:
        raise DataError(Path(data_dir), None, f"no query of split {split!r} is in queries.jsonl")
    return qrels, qids


def load_encoder(cfg, retriever: str) -> Any:
    """`resume.retriever.Encoder` of `retriever` with `cfg.retriever` on `cfg.device`."""
    from resume.retriever import Encoder

    return Encoder(retriever, cfg.retriever, device=None if cfg.device == "auto" else cfg.device)


class CachingEncoder:
    """An encoder whose `encode_docs` computes each list of texts once (choose the weight on dev, then
    evaluate on test: the document and summary views are the same). Everything else is passed through."""

    def __init__(self, encoder: Any):
        self.encoder = encoder
        self._docs: dict[tuple[str, ...], np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.encoder, name)

    def encode_docs(self, texts: Iterable[str]) -> np.ndarray:
        key = tuple(texts)
        if key not in self._docs:
            self._docs[key] = np.asarray(self.encoder.encode_docs(list(key)), dtype=np.float32)
        return self._docs[key]


def build_eval_index(ecfg, encoder: Any, documents: Mapping[str, str] | None, summaries: Mapping[str, str] | None
                     ) -> tuple[Any, dict[str, Any]]:
    """(index, info) for `ecfg.mode` over the documents and/or their summaries (same ids, same order): a
    `DocIndex` of the summaries (of the documents when `summaries` is None), a `FusedIndex` of both views,
    or a `DocIndex` of the `long_only_texts` (info: n_summary_docs). Each view is encoded once with
    `encoder.encode_docs`."""
    from resume.index import DocIndex, FusedIndex

    ids = list(documents if documents is not None else summaries)

    def view(texts: Mapping[str, str]) -> tuple[DocIndex, np.ndarray]:
        emb = np.asarray(encoder.encode_docs([texts[d] for d in ids]), dtype=np.float32)
        return DocIndex.from_config(ids, emb, ecfg), emb

    if ecfg.mode == "fused":
        (doc_index, doc_emb), (sum_index, sum_emb) = view(documents), view(summaries)
        return FusedIndex(doc_index, sum_index, fusion=ecfg.fusion, weight=ecfg.fusion_weight, rrf_k=ecfg.rrf_k,
                          doc_vectors=doc_emb, summary_vectors=sum_emb), {}
    if ecfg.mode == "long_only":
        texts, long = long_only_texts(encoder, documents, summaries)
        return view(texts)[0], {"n_summary_docs": len(long), "window_tokens": doc_window(encoder)}
    return view(documents if summaries is None else summaries)[0], {}


def evaluate_retrieval(cfg, *, data_dir: str | Path, split: str, retriever: str, texts: str | Path | None = None,
                       out_dir: str | Path, encoder: Any = None, mode: str | None = None,
                       fusion_weight: float | None = None, summary_title: bool | None = None,
                       run_dir: str | Path | None = None) -> dict[str, float]:
    """Index the texts with FAISS, search `split`'s queries at `cfg.evaluate.k`, and write `run.trec`,
    `metrics.json`, `per_query.json` and `eval_info.json` into `out_dir` (each atomically). Returns the
    metrics dict.

    What is indexed follows `mode` (None = `cfg.evaluate.mode`, see `EvalConfig`): `summary` indexes the
    summaries of `texts` (summaries.jsonl), or the full documents when `texts` is None (the Baseline);
    `fused` and `long_only` need `texts`. `fusion_weight` (None = `cfg.evaluate.fusion_weight`) is the
    document view's weight in score fusion. `summary_title` (None = `cfg.evaluate.summary_title`): each
    summary after its document's title (`load_index_texts`). `encoder`: any object with `encode_queries` / `encode_docs`
    (and `count_tokens` + `max_length` for `long_only`; default `resume.retriever.Encoder` of `retriever`).
    `run_dir`: the run directory `out_dir` lies in (`resume run` passes it), so that eval_info.json holds the
    paths inside it relative (`write_eval_info`). Works on any BEIR-layout directory; the data working set
    follows `cfg.data`.
    """
    from resume.data import load_beir, select_working_set

    ecfg = eval_config(cfg, mode=mode, fusion_weight=fusion_weight, texts=texts, summary_title=summary_title)
    t0 = time.perf_counter()
    ds = select_working_set(load_beir(data_dir), cfg.data)
    qrels, qids = _split_queries(ds, data_dir, split)
    summaries = None if texts is None else load_index_texts(ds, texts, title=ecfg.summary_title)
    documents = load_index_texts(ds, None) if summaries is None or ecfg.mode != "summary" else None
    encoder = encoder if encoder is not None else load_encoder(cfg, retriever)
    t1 = time.perf_counter()
    index, view_info = build_eval_index(ecfg, encoder, documents, summaries)
    q_emb = np.asarray(encoder.encode_queries([ds.queries[q] for q in qids]), dtype=np.float32)
    t2 = time.perf_counter()
    hits = index.search(q_emb, ecfg.k)
    run = {q: dict(h) for q, h in zip(qids, hits)}
    t3 = time.perf_counter()
    per_query = per_query_metrics(qrels, run)
    metrics = aggregate(per_query)
    t4 = time.perf_counter()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_trec_run(out / "run.trec", run, tag=_tag(retriever))
    atomic_write_json(out / "per_query.json", per_query)
    fused = ecfg.mode == "fused"
    write_eval_info(out, {
        "data_dir": str(data_dir), "split": split, "retriever": str(retriever),
        "texts": None if texts is None else str(texts), "n_docs": len(ds.corpus), "n_queries": len(qids),
        "n_judged_queries": len(per_query), "index": index.kind, "k": ecfg.k, "mode": ecfg.mode,
        "fusion": ecfg.fusion if fused else None,
        "fusion_weight": ecfg.fusion_weight if fused and ecfg.fusion == "score" else None,
        "rrf_k": ecfg.rrf_k if fused and ecfg.fusion == "rrf" else None, "summary_title": ecfg.summary_title,
        **view_info,
        "seconds": {"load": t1 - t0, "encode": t2 - t1, "search": t3 - t2, "metrics": t4 - t3},
    }, run_dir=run_dir)
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


# The keys of eval_info.json whose values are paths (`retriever`: or a hub id / model name).
EVAL_INFO_PATH_KEYS = frozenset({"data_dir", "retriever", "texts"})


def write_eval_info(eval_dir: str | Path, info: dict[str, Any], *, run_dir: str | Path | None = None) -> Path:
    """Write <eval_dir>/eval_info.json (atomically); returns its path.

    When `eval_dir` lies inside the run directory `run_dir`, the paths of `info` inside the run directory
    are written as in every run file (`resume.run_dir.run_relative`: `./<path relative to the run
    directory>`), and `run_dir` records where the run directory is, relative to `eval_dir` (`../..` for
    `<run>/iter_01/eval`), so the file resolves on its own wherever the run directory is moved or copied
    (`read_eval_info`). Paths outside the run directory, hub ids, and every path when `run_dir` is None
    (`resume evaluate`, the KFP component) are written as given."""
    out = Path(eval_dir)
    if run_dir is not None:
        root, here = os.path.abspath(run_dir), os.path.abspath(out)
        if here == root or here.startswith(root + os.sep):
            info = {**rd.run_relative(info, root, keys=EVAL_INFO_PATH_KEYS),
                    "run_dir": Path(os.path.relpath(root, here)).as_posix()}
    path = out / rd.EVAL_INFO
    atomic_write_json(path, info)
    return path


def read_eval_info(eval_dir: str | Path) -> dict[str, Any]:
    """<eval_dir>/eval_info.json with its paths resolved (`write_eval_info`): the `./...` paths against
    the run directory it records (`run_dir`, relative to `eval_dir`; returned absolute). A file without
    `run_dir` (written outside a run directory, or before paths were relative) is returned as written.
    Raises DataError for a missing file or one that is not a JSON object."""
    path = Path(eval_dir) / rd.EVAL_INFO
    if not path.is_file():
        raise DataError(path, None, "not found; `resume evaluate` (or `resume run`) writes it into each eval dir")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(path, e.lineno, f"not valid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise DataError(path, None, "not UTF-8 text") from None
    if not isinstance(info, dict):
        raise DataError(path, None, f"expected a JSON object, got {type(info).__name__}")
    rel = info.get("run_dir")
    if rel is None:
        return info
    if not isinstance(rel, str) or os.path.isabs(rel):
        raise DataError(path, None, f"run_dir: {rel!r}; expected the run directory relative to {Path(eval_dir)}")
    root = os.path.normpath(os.path.join(os.path.abspath(eval_dir), rel))
    return {**rd.resolve_run_paths(info, root, keys=EVAL_INFO_PATH_KEYS), "run_dir": root}


def choose_fusion_weight(cfg, *, data_dir: str | Path, split: str, retriever: str, texts: str | Path,
                         grid: Iterable[float] = WEIGHT_GRID, metric: str = "mrr@10", encoder: Any = None,
                         summary_title: bool | None = None) -> dict[str, Any]:
    """The document weight of score fusion that maximises `metric` on `split` (the dev split).

    Both views and the queries are encoded once and each view searched once at `cfg.evaluate.k`; each weight
    of `grid` then only re-fuses those candidates. Ties go to the larger document weight (the system closer
    to the Baseline). `summary_title` as `evaluate_retrieval`'s. Returns {"weight", "metric", "value", "split", "curve": {weight: value}}.
    """
    from resume.data import load_beir, select_working_set
    from resume.index import id_hits

    grid = sorted({float(w) for w in grid}, reverse=True)
    if not grid or not all(0.0 <= w <= 1.0 for w in grid):
        raise ResumeError(f"fusion weight grid {grid}: expected one or more numbers in [0, 1]")
    if metric not in METRICS:
        raise ResumeError(f"metric {metric!r}: expected one of {', '.join(METRICS)}")
    ecfg = eval_config(cfg, mode="fused", fusion="score", fusion_weight=grid[0], texts=texts,
                       summary_title=summary_title)
    ds = select_working_set(load_beir(data_dir), cfg.data)
    qrels, qids = _split_queries(ds, data_dir, split)
    documents, summaries = load_index_texts(ds, None), load_index_texts(ds, texts, title=ecfg.summary_title)
    encoder = encoder if encoder is not None else load_encoder(cfg, retriever)
    index, _ = build_eval_index(ecfg, encoder, documents, summaries)
    q_emb = np.asarray(encoder.encode_queries([ds.queries[q] for q in qids]), dtype=np.float32)
    candidates = index.candidates(q_emb, ecfg.k)
    curve: dict[float, float] = {}
    for w in grid:
        hits = id_hits(index.ids, *index.fuse(q_emb, candidates, ecfg.k, weight=w))
        curve[w] = aggregate(per_query_metrics(qrels, {q: dict(h) for q, h in zip(qids, hits)}))[metric]
    best = max(grid, key=lambda w: (curve[w], w))  # equal values: the larger document weight
    return {"weight": best, "metric": metric, "value": curve[best], "split": split,
            "curve": {w: curve[w] for w in sorted(curve)}}


def _tag(name: Any) -> str:
    tag = "".join(c if c.isalnum() or c in "-_.:" else "_" for c in Path(str(name)).name)
    return tag or "resume"
