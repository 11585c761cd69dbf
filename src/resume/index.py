"""FAISS indexes over embeddings: exact inner product by default, IVF or HNSW for large corpora.

    from resume.index import DocIndex
    idx = DocIndex.build(doc_ids, doc_emb, kind="flat")      # or DocIndex.from_config(ids, emb, cfg.evaluate)
    hits = idx.search(query_emb, k=10)                        # [[(doc_id, score), ...] per query]
    idx.save("runs/x/index"); DocIndex.load("runs/x/index")

With L2-normalised embeddings inner product is cosine similarity. `flat` (IndexFlatIP) is exact;
`ivf` (IndexIVFFlat, inner product, trained on the corpus; nlist is clamped to the corpus so small
collections still train) and `hnsw` (IndexHNSWFlat, inner product) are approximate. GPU FAISS is
used when it is installed and sees a GPU (`faiss.get_num_gpus() > 0`) unless `gpu=False`; indexes are
always saved in their CPU form.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from resume.errors import ResumeError
from resume.io import atomic_path, atomic_write_json

KINDS = ("flat", "ivf", "hnsw")


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


def ivf_nlist(n: int, nlist: int) -> int:
    """Clamp `nlist` so each list gets about 39+ training points (FAISS warns below that): in [1, n // 39]."""
    return max(1, min(nlist, n // 39))


def build_index(emb: np.ndarray, kind: str = "flat", *, nlist: int = 1024, nprobe: int = 32, hnsw_m: int = 32,
                ef_search: int = 128, ef_construction: int = 200, gpu: bool | str = "auto", seed: int = 0):
    """A FAISS inner-product index over `emb` (n, dim) float32. Options follow `EvalConfig`."""
    faiss = _faiss()
    if kind not in KINDS:
        raise ResumeError(f"index kind {kind!r}: expected one of {', '.join(KINDS)}")
    emb = _as_f32(emb, "emb")
    n, dim = emb.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, ivf_nlist(n, nlist), faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
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
        emb = _as_f32(emb, "emb")
        if len(ids) != emb.shape[0]:
            raise ValueError(f"{len(ids)} ids for {emb.shape[0]} embeddings")
        return cls(list(ids), build_index(emb, kind, **opts), kind)

    @classmethod
    def from_config(cls, ids: list[str], emb: np.ndarray, cfg) -> DocIndex:
        """Build from an `EvalConfig` (index, nlist, nprobe, hnsw_m, ef_search, gpu)."""
        return cls.build(ids, emb, cfg.index, nlist=cfg.nlist, nprobe=cfg.nprobe, hnsw_m=cfg.hnsw_m,
                         ef_search=cfg.ef_search, gpu=cfg.gpu)

    def __len__(self) -> int:
        return len(self.ids)

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
        scores, idx = search(self.index, queries_emb, k)
        ids = self.ids
        return [[(ids[j], s) for s, j in zip(srow, irow) if j >= 0]
                for srow, irow in zip(scores.tolist(), idx.tolist())]

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
