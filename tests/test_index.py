"""FAISS index tests: flat == NumPy brute force, IVF/HNSW plausible recall, save/load, DocIndex."""

from __future__ import annotations

import numpy as np
import pytest

from resume.config import EvalConfig
from resume.errors import ResumeError
from resume.index import DocIndex, build_index, ivf_nlist, load_index, save_index, search

pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return unit(rng.standard_normal((3000, 32))), unit(rng.standard_normal((50, 32)))


def brute_force(docs, queries, k):
    s = queries @ docs.T                                       # (nq, n)
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, idx, axis=1), idx


def recall_at_k(approx_idx, exact_idx) -> float:
    k = exact_idx.shape[1]
    return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(approx_idx, exact_idx)]))


def test_flat_equals_numpy_brute_force(data):
    docs, queries = data
    index = build_index(docs, "flat", gpu=False)
    scores, idx = search(index, queries, 20)
    bs, bi = brute_force(docs, queries, 20)
    assert scores.dtype == np.float32 and idx.dtype == np.int64 and idx.shape == (50, 20)
    np.testing.assert_allclose(scores, bs, rtol=1e-5, atol=1e-5)
    assert recall_at_k(idx, bi) == 1.0
    assert np.all(np.diff(scores, axis=1) <= 1e-7)             # best first


@pytest.mark.parametrize("kind, opts, floor", [("ivf", {"nlist": 16, "nprobe": 4}, 0.5),
                                               ("hnsw", {"hnsw_m": 16, "ef_search": 64}, 0.8)])
def test_approximate_indexes_plausible_recall(data, kind, opts, floor):
    docs, queries = data
    index = build_index(docs, kind, gpu=False, **opts)
    _, idx = search(index, queries, 10)
    _, exact = brute_force(docs, queries, 10)
    r = recall_at_k(idx, exact)
    assert floor <= r <= 1.0, f"{kind} recall@10 {r}"


def test_ivf_nprobe_all_lists_is_exact(data):
    docs, queries = data
    index = build_index(docs, "ivf", nlist=8, nprobe=8, gpu=False)
    _, idx = search(index, queries, 10)
    assert recall_at_k(idx, brute_force(docs, queries, 10)[1]) == 1.0


def test_ivf_nlist_clamped_for_small_corpora():
    assert ivf_nlist(100, 1024) == 2 and ivf_nlist(10, 1024) == 1 and ivf_nlist(10**6, 1024) == 1024
    rng = np.random.default_rng(1)
    docs = unit(rng.standard_normal((20, 8)))
    index = build_index(docs, "ivf", nlist=1024, nprobe=32, gpu=False)
    assert index.nlist == 1 and index.nprobe == 1
    scores, idx = search(index, docs[:3], 5)
    assert list(idx[:, 0]) == [0, 1, 2]


def test_k_larger_than_corpus_and_empty():
    docs = unit(np.random.default_rng(2).standard_normal((5, 4)))
    scores, idx = search(build_index(docs, gpu=False), docs, 100)
    assert idx.shape == (5, 5)
    scores, idx = search(build_index(np.zeros((0, 4), np.float32), gpu=False), docs, 10)
    assert idx.shape == (5, 0) and scores.dtype == np.float32 and idx.dtype == np.int64


def test_bad_inputs():
    with pytest.raises(ResumeError, match="index kind"):
        build_index(np.zeros((2, 2), np.float32), "lsh")
    with pytest.raises(ValueError, match="2-D"):
        build_index(np.zeros(4, np.float32))
    with pytest.raises(ResumeError, match="not found"):
        load_index("/nonexistent/index.faiss")


def test_save_load_roundtrip(tmp_path, data):
    docs, queries = data
    for kind in ("flat", "ivf", "hnsw"):
        index = build_index(docs, kind, nlist=16, nprobe=4, gpu=False)
        save_index(index, tmp_path / f"{kind}.faiss")
        loaded = load_index(tmp_path / f"{kind}.faiss")
        a, b = search(index, queries, 10), search(loaded, queries, 10)
        np.testing.assert_array_equal(a[1], b[1])


def test_doc_index_ids_add_save_load(tmp_path, data):
    docs, queries = data
    ids = [f"d{i}" for i in range(len(docs))]
    di = DocIndex.build(ids[:2000], docs[:2000], "flat", gpu=False)
    di.add(ids[2000:], docs[2000:])
    assert len(di) == 3000 and di.dim == 32
    hits = di.search(queries, 5)
    _, exact = brute_force(docs, queries, 5)
    assert [[d for d, _ in h] for h in hits] == [[ids[j] for j in row] for row in exact]
    assert all(isinstance(s, float) for _, s in hits[0])
    with pytest.raises(ResumeError, match="already present"):
        di.add(["d1"], docs[:1])
    di.save(tmp_path / "idx")
    back = DocIndex.load(tmp_path / "idx")
    assert back.ids == di.ids and back.search(queries, 5) == hits
    with pytest.raises(ResumeError, match="not found"):
        DocIndex.load(tmp_path / "nope")


def test_doc_index_from_config(data):
    docs, queries = data
    ids = [str(i) for i in range(len(docs))]
    for kind in ("flat", "ivf", "hnsw"):
        di = DocIndex.from_config(ids, docs, EvalConfig(index=kind, nlist=16, nprobe=16, gpu=False))
        assert di.kind == kind and len(di.search(queries[:2], 10)[0]) == 10


def test_gpu_true_without_gpu_is_a_clear_error():
    import faiss

    if faiss.get_num_gpus() > 0:
        pytest.skip("a GPU is present")
    with pytest.raises(ResumeError, match="no GPU"):
        build_index(np.zeros((2, 2), np.float32), gpu=True)
