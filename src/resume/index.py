"""FAISS indexes over embeddings: exact inner product by default, IVF or HNSW for large corpora.

    from resume.index import DocIndex
    idx = DocIndex.build(doc_ids, doc_emb, kind="flat")      # or DocIndex.from_config(ids, emb, cfg.evaluate)
    hits = idx.search(query_emb, k=10)                        # [[(doc_id, score), ...] per query]
    idx.save("runs/x/index"); DocIndex.load("runs/x/index")

With L2-normalised embeddings inner product is cosine similarity. `flat` (IndexFlatIP) is exact;
`ivf` (IndexIVFFlat, inner product, trained on the corpus; nlist is clamped to the corpus so small
collections still train) and `hnsw` (IndexHNSWFlat, inner product) are approximate. `auto` (the
`EvalConfig` default) is `flat` below `AUTO_MIN_DOCS` vectors and `AUTO_KIND` from there on
(`choose_kind`); the defaults below were chosen from bench/bench_scaling.py (bench/scaling.json): on
real MiniLM embeddings tiled to 10k-1M they keep recall@100 >= 0.99 of exact search. GPU FAISS is
used when it is installed and sees a GPU (`faiss.get_num_gpus() > 0`) unless `gpu=False`; indexes are
always saved in their CPU form.

Two views of one collection (each document indexed as its full text and as its summary, row i = the same
doc id in both) are searched with `FusedIndex`: each view's top k, then `fuse_scores` over the union:

    fused = FusedIndex(doc_view, summary_view, fusion="score", weight=0.7)   # or fusion="rrf", rrf_k=60
    hits = fused.search(query_emb, k=10)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from resume.errors import ResumeError
from resume.io import atomic_path, atomic_write_json

KINDS = ("flat", "ivf", "hnsw")
CHOICES = KINDS + ("auto",)  # what EvalConfig.index accepts
FUSIONS = ("score", "rrf")


def _faiss():
    import faiss

    return faiss


def _as_f32(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, dim), got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def gpu_available(gpu: bool | str = "auto") -> bool:
    """True when GPU FAISS should be used: `gpu` is not False and FAISS sees at least one GPU."""
    if gpu is False:
        return False
    faiss = _faiss()
    n = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if gpu is True and n == 0:
        raise ResumeError("evaluate.gpu is true but FAISS sees no GPU (faiss-cpu installed, or no device); "
                          "set evaluate.gpu: auto or false")
    return n > 0


_GPU_RES: list[Any] = []  # one shared StandardGpuResources, kept alive for the process


def _to_gpu(index):
    faiss = _faiss()
    if not _GPU_RES:
        _GPU_RES.append(faiss.StandardGpuResources())
    nprobe = getattr(index, "nprobe", None)
    index = faiss.index_cpu_to_gpu(_GPU_RES[0], 0, index)
    if nprobe is not None and hasattr(index, "nprobe"):
        index.nprobe = nprobe
    return index


# Defaults (mirrored by EvalConfig; tests/test_index_auto.py checks that they agree). Measured in
# bench/scaling.json: see bench/README.md "How search cost grows".
AUTO_MIN_DOCS = 100_000     # `auto`: flat below this many vectors, AUTO_KIND from here on
AUTO_KIND = "ivf"
NLIST_PER_SQRT_N = 2        # IVF: nlist = 2 * sqrt(n) lists by default (clamped by ivf_nlist)
NPROBE = 64
TRAIN_POINTS_PER_LIST = 64  # IVF k-means sample: at most 64 vectors per list (FAISS's own cap is 256)
HNSW_M = 32
EF_SEARCH = 4096
EF_CONSTRUCTION = 40        # FAISS's default; 100 gave no better recall in bench_scaling at 2.5x the build


def choose_kind(kind: str, n: int, min_docs: int = AUTO_MIN_DOCS) -> str:
    """The index kind to build for `n` vectors: `kind` itself, or for `auto` flat below `min_docs` vectors
    and `AUTO_KIND` from `min_docs` on."""
    if kind == "auto":
        return AUTO_KIND if n >= min_docs else "flat"
    if kind not in KINDS:
        raise ResumeError(f"index kind {kind!r}: expected one of {', '.join(CHOICES)}")
    return kind


def ivf_nlist(n: int, nlist: int | None = None) -> int:
    """The number of IVF lists for `n` vectors: `nlist` (None = NLIST_PER_SQRT_N * sqrt(n)), clamped so each
    list gets about 39+ training points (FAISS warns below that): in [1, n // 39]."""
    if nlist is None:
        nlist = round(NLIST_PER_SQRT_N * float(np.sqrt(max(n, 0))))
    return max(1, min(nlist, n // 39))


def build_index(emb: np.ndarray, kind: str = "flat", *, nlist: int | None = None, nprobe: int = NPROBE,
                hnsw_m: int = HNSW_M, ef_search: int = EF_SEARCH, ef_construction: int = EF_CONSTRUCTION,
                auto_min_docs: int = AUTO_MIN_DOCS, gpu: bool | str = "auto", seed: int = 0):
    """A FAISS inner-product index over `emb` (n, dim) float32. Options follow `EvalConfig` (`kind` `auto`:
    see `choose_kind`; nlist None: see `ivf_nlist`)."""
    faiss = _faiss()
    emb = _as_f32(emb, "emb")
    n, dim = emb.shape
    kind = choose_kind(kind, n, auto_min_docs)
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, ivf_nlist(n, nlist), faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST
        if n == 0:
            raise ResumeError("an IVF index needs at least one vector to train on")
        index.train(emb)
        index.nprobe = min(nprobe, index.nlist)
    else:
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
    if kind != "hnsw" and gpu_available(gpu):  # HNSW has no GPU implementation in FAISS
        index = _to_gpu(index)
    if n:
        index.add(emb)
    return index


def search(index, queries_emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by inner product: (scores float32 (nq, k'), indices int64 (nq, k')), k' = min(k, ntotal).

    Rows are sorted by score descending; FAISS pads missing hits (approximate indexes) with index -1.
    """
    q = _as_f32(queries_emb, "queries_emb")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, index.ntotal)
    if k == 0 or q.shape[0] == 0:
        return np.zeros((q.shape[0], 0), np.float32), np.zeros((q.shape[0], 0), np.int64)
    scores, idx = index.search(q, k)
    return scores.astype(np.float32, copy=False), idx.astype(np.int64, copy=False)


def _to_cpu(index):
    faiss = _faiss()
    if hasattr(faiss, "index_gpu_to_cpu") and "Gpu" in type(index).__name__:
        return faiss.index_gpu_to_cpu(index)
    return index


def save_index(index, path: str | Path) -> None:
    """Write the index (its CPU form) atomically."""
    faiss = _faiss()
    with atomic_path(path) as tmp:
        faiss.write_index(_to_cpu(index), str(tmp))


def load_index(path: str | Path, gpu: bool | str = False):
    """Read an index written by `save_index` (on the GPU when `gpu` allows and one is present)."""
    faiss = _faiss()
    if not Path(path).is_file():
        raise ResumeError(f"{path}: index file not found")
    index = faiss.read_index(str(path))
    if "HNSW" not in type(index).__name__ and gpu_available(gpu):
        index = _to_gpu(index)
    return index


class DocIndex:
    """A FAISS index plus the doc ids of its rows: search returns doc ids, `add` appends documents.

    Doc ids must be unique; adding an id that is already there raises (remove-and-re-add is not
    supported by every FAISS index kind, so the serving code rebuilds for updates).
    """

    def __init__(self, ids: list[str], index, kind: str = "flat"):
        if len(ids) != index.ntotal:
            raise ValueError(f"{len(ids)} ids for an index of {index.ntotal} vectors")
        self.ids = [str(i) for i in ids]
        self._pos = {d: i for i, d in enumerate(self.ids)}
        if len(self._pos) != len(self.ids):
            raise ResumeError("DocIndex: duplicate doc ids")
        self.index = index
        self.kind = kind

    @classmethod
    def build(cls, ids: list[str], emb: np.ndarray, kind: str = "flat", **opts: Any) -> DocIndex:
        """`kind` may be `auto` (see `choose_kind`); `.kind` is the kind built."""
        emb = _as_f32(emb, "emb")
        if len(ids) != emb.shape[0]:
            raise ValueError(f"{len(ids)} ids for {emb.shape[0]} embeddings")
        kind = choose_kind(kind, emb.shape[0], opts.get("auto_min_docs", AUTO_MIN_DOCS))
        return cls(list(ids), build_index(emb, kind, **opts), kind)

    @classmethod
    def from_config(cls, ids: list[str], emb: np.ndarray, cfg) -> DocIndex:
        """Build from an `EvalConfig` (index, auto_min_docs, nlist, nprobe, hnsw_m, ef_search, ef_construction,
        gpu)."""
        return cls.build(ids, emb, cfg.index, nlist=cfg.nlist, nprobe=cfg.nprobe, hnsw_m=cfg.hnsw_m,
                         ef_search=cfg.ef_search, ef_construction=cfg.ef_construction,
                         auto_min_docs=cfg.auto_min_docs, gpu=cfg.gpu)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._pos

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def add(self, ids: list[str], emb: np.ndarray) -> None:
        """Append documents (an IVF index must already be trained, which `build` does)."""
        emb = _as_f32(emb, "emb")
        ids = [str(i) for i in ids]
        if len(ids) != emb.shape[0]:
            raise ValueError(f"{len(ids)} ids for {emb.shape[0]} embeddings")
        dup = [i for i in ids if i in self._pos]
        if dup or len(set(ids)) != len(ids):
            raise ResumeError(f"DocIndex.add: doc ids already present or repeated: {(dup or ids)[:5]}")
        if emb.shape[0]:
            self.index.add(emb)
        for i in ids:
            self._pos[i] = len(self.ids)
            self.ids.append(i)

    def search_arrays(self, queries_emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return search(self.index, queries_emb, k)

    def search(self, queries_emb: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """Per query, up to k (doc_id, score) pairs, best first (padding hits with index -1 dropped)."""
        return id_hits(self.ids, *search(self.index, queries_emb, k))

    def reconstruct(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors of `rows` (int array), (len(rows), dim) float32, exactly as indexed (flat and
        HNSW keep them as they are; IVF-flat too, through a direct map made on first use). CPU indexes."""
        rows = np.ascontiguousarray(rows, dtype=np.int64).reshape(-1)
        if not len(rows):
            return np.zeros((0, self.dim), np.float32)
        ivf = _faiss().try_extract_index_ivf(self.index)
        if ivf is not None and ivf.direct_map.no():
            ivf.make_direct_map()
        return self.index.reconstruct_batch(rows)

    def save(self, path: str | Path) -> None:
        """Write `<path>/index.faiss` and `<path>/ids.json`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_index(self.index, path / "index.faiss")
        atomic_write_json(path / "ids.json", {"kind": self.kind, "ids": self.ids})

    @classmethod
    def load(cls, path: str | Path, gpu: bool | str = False) -> DocIndex:
        path = Path(path)
        meta_path = path / "ids.json"
        if not meta_path.is_file():
            raise ResumeError(f"{meta_path}: not found (expected a directory written by DocIndex.save)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        return cls(meta["ids"], load_index(path / "index.faiss", gpu=gpu), meta.get("kind", "flat"))


def id_hits(ids: list[str], scores: np.ndarray, rows: np.ndarray) -> list[list[tuple[str, float]]]:
    """Per query, the (doc_id, score) pairs of `search`-style arrays, best first, padding rows (-1) dropped."""
    return [[(ids[j], s) for s, j in zip(srow, irow) if j >= 0] for srow, irow in zip(scores.tolist(), rows.tolist())]


# ------------------------------------------------------------------------------------ two views, fused


def _take(vectors: Any, rows: np.ndarray) -> np.ndarray:
    return np.asarray(vectors(rows) if callable(vectors) else vectors[rows], dtype=np.float32)


def check_fusion(fusion: str, weight: float | None, rrf_k: int = 60) -> None:
    """Raise ResumeError unless `fusion` is known and, for score fusion, `weight` is in [0, 1]."""
    if fusion not in FUSIONS:
        raise ResumeError(f"fusion {fusion!r}: expected one of {', '.join(FUSIONS)}")
    if fusion == "score" and (weight is None or not 0.0 <= weight <= 1.0):
        raise ResumeError(f"score fusion needs a document weight in [0, 1], got {weight!r} (choose it on the dev "
                          "split: resume.evaluate.choose_fusion_weight, `resume evaluate --choose-weight-on dev`)")
    if rrf_k < 0:
        raise ResumeError(f"rrf_k {rrf_k!r}: expected a non-negative integer")


def fuse_scores(queries_emb: np.ndarray, doc_rows: np.ndarray, summary_rows: np.ndarray, *, fusion: str = "score",
                weight: float | None = None, rrf_k: int = 60, doc_vectors: Any = None, summary_vectors: Any = None,
                k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fuse the hits of two aligned views (row i = the same document in both) into one ranking per query.

    queries_emb (nq, dim); doc_rows (nq, a), summary_rows (nq, b): each view's hits, best first, padded
    with -1 (what `search` returns). The candidates of a query are the union of its two lists.
    `score`: weight * cos(q, document) + (1 - weight) * cos(q, summary), both inner products computed
        exactly for every candidate from `doc_vectors` / `summary_vectors` ((n, dim) arrays, or callables
        rows -> (len(rows), dim) such as `DocIndex.reconstruct`), so a candidate found by one view only still
        gets its exact score in the other; weight 1 is the document view's ranking, 0 the summary view's.
    `rrf`: sum over the two lists of 1 / (rrf_k + rank), rank from 1; a list that misses a candidate adds 0.
    Returns (scores float32 (nq, k'), rows int64 (nq, k')), k' = min(k, the largest union) (k None = all),
    best first, ties by row ascending, short rows padded with -inf / -1.
    """
    check_fusion(fusion, weight, rrf_k)
    q = _as_f32(queries_emb, "queries_emb")
    doc_rows, summary_rows = np.asarray(doc_rows, np.int64), np.asarray(summary_rows, np.int64)
    if doc_rows.ndim != 2 or summary_rows.ndim != 2 or not len(q) == len(doc_rows) == len(summary_rows):
        raise ValueError(f"{len(q)} queries, doc_rows {doc_rows.shape}, summary_rows {summary_rows.shape}: "
                         "expected one row of hits per query in each view")
    if fusion == "score" and (doc_vectors is None or summary_vectors is None):
        raise ValueError("score fusion needs doc_vectors and summary_vectors")
    ranked: list[tuple[np.ndarray, np.ndarray]] = []
    for qv, d_hits, s_hits in zip(q, doc_rows, summary_rows):
        d_hits, s_hits = d_hits[d_hits >= 0], s_hits[s_hits >= 0]
        cand = np.union1d(d_hits, s_hits)  # sorted, unique
        if fusion == "score":
            w = np.float32(weight)
            fused = w * (_take(doc_vectors, cand) @ qv) + (np.float32(1) - w) * (_take(summary_vectors, cand) @ qv)
        else:
            fused = np.zeros(len(cand), np.float64)
            for hits in (d_hits, s_hits):
                fused[np.searchsorted(cand, hits)] += 1.0 / (rrf_k + np.arange(1, len(hits) + 1))
        order = np.lexsort((cand, -fused))[:k]
        ranked.append((fused[order], cand[order]))
    width = max((len(r) for _, r in ranked), default=0)
    scores = np.full((len(q), width), -np.inf, np.float32)
    rows = np.full((len(q), width), -1, np.int64)
    for i, (s, r) in enumerate(ranked):
        scores[i, :len(r)], rows[i, :len(r)] = s, r
    return scores, rows


class FusedIndex:
    """Two aligned `DocIndex` views of the same documents, the full text and the summary (same ids in the
    same row order): each view is searched at k and the hits are fused by `fuse_scores`.

    doc_vectors / summary_vectors: the indexed embeddings when the caller holds them (else they are read
    back from the indexes with `DocIndex.reconstruct`, which needs CPU indexes).
    """

    def __init__(self, documents: DocIndex, summaries: DocIndex, *, fusion: str = "score",
                 weight: float | None = None, rrf_k: int = 60, doc_vectors: np.ndarray | None = None,
                 summary_vectors: np.ndarray | None = None):
        if documents.ids != summaries.ids:
            raise ResumeError("FusedIndex: the document and summary views must hold the same ids in the same order")
        check_fusion(fusion, weight, rrf_k)
        self.documents, self.summaries = documents, summaries
        self.fusion, self.weight, self.rrf_k = fusion, weight, rrf_k
        self._vectors = (documents.reconstruct if doc_vectors is None else doc_vectors,
                         summaries.reconstruct if summary_vectors is None else summary_vectors)

    @property
    def ids(self) -> list[str]:
        return self.summaries.ids

    @property
    def kind(self) -> str:
        """The index kind of the two views (both are built from the same options and size)."""
        return self.summaries.kind

    def __len__(self) -> int:
        return len(self.summaries)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self.summaries

    @property
    def dim(self) -> int:
        return self.summaries.dim

    def candidates(self, queries_emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(document-view rows, summary-view rows), each (nq, k') best first: the input of `fuse`."""
        return self.documents.search_arrays(queries_emb, k)[1], self.summaries.search_arrays(queries_emb, k)[1]

    def fuse(self, queries_emb: np.ndarray, candidates: tuple[np.ndarray, np.ndarray], k: int, *,
             weight: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`fuse_scores` over `candidates`, with this index's fusion (`weight` overrides its weight)."""
        return fuse_scores(queries_emb, *candidates, fusion=self.fusion, rrf_k=self.rrf_k, k=k,
                           weight=self.weight if weight is None else weight, doc_vectors=self._vectors[0],
                           summary_vectors=self._vectors[1])

    def search_arrays(self, queries_emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.fuse(queries_emb, self.candidates(queries_emb, k), k)

    def search(self, queries_emb: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """Per query, up to k (doc_id, fused score) pairs, best first."""
        return id_hits(self.ids, *self.search_arrays(queries_emb, k))

    def add(self, ids: list[str], doc_emb: np.ndarray, summary_emb: np.ndarray) -> None:
        """Append documents to both views (only when the vectors are read back from the indexes)."""
        if not all(callable(v) for v in self._vectors):
            raise ResumeError("FusedIndex.add: this index was given fixed vector arrays; rebuild it instead")
        doc_emb, summary_emb = _as_f32(doc_emb, "doc_emb"), _as_f32(summary_emb, "summary_emb")
        if doc_emb.shape != summary_emb.shape:
            raise ValueError(f"doc_emb {doc_emb.shape} and summary_emb {summary_emb.shape} differ in shape")
        self.documents.add(ids, doc_emb)
        self.summaries.add(ids, summary_emb)
