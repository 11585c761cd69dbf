"""`evaluate.index: auto` (the default): flat below `auto_min_docs` vectors, an approximate index from there on;
explicit flat/ivf/hnsw unchanged; the EvalConfig defaults mirror resume.index's and bench/scaling.json."""

from __future__ import annotations

import json
from typing import get_args, get_type_hints

import numpy as np
import pytest

from resume import index as ix
from resume.config import ConfigError, EvalConfig, load_config
from resume.errors import ResumeError
from resume.index import DocIndex, FusedIndex, build_index, choose_kind, ivf_nlist, search

pytestmark = pytest.mark.usefixtures("one_faiss_thread")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((3000, 32)).astype(np.float32)
    queries = rng.standard_normal((40, 32)).astype(np.float32)
    return (docs / np.linalg.norm(docs, axis=1, keepdims=True),
            queries / np.linalg.norm(queries, axis=1, keepdims=True))


def test_choose_kind_threshold():
    assert EvalConfig().index == "auto"
    assert choose_kind("auto", ix.AUTO_MIN_DOCS - 1) == "flat"
    assert choose_kind("auto", ix.AUTO_MIN_DOCS) == ix.AUTO_KIND != "flat"
    assert choose_kind("auto", 0) == "flat"
    assert choose_kind("auto", 50, min_docs=50) == ix.AUTO_KIND and choose_kind("auto", 49, min_docs=50) == "flat"
    for kind in ix.KINDS:  # explicit kinds are kept whatever the size
        assert choose_kind(kind, 10) == kind and choose_kind(kind, 10**8) == kind
    with pytest.raises(ResumeError, match="index kind 'lsh'.*auto"):
        choose_kind("lsh", 10)


def test_eval_config_defaults_mirror_index_module():
    cfg = EvalConfig()
    assert cfg.auto_min_docs == ix.AUTO_MIN_DOCS and cfg.nlist is None and cfg.nprobe == ix.NPROBE
    assert cfg.hnsw_m == ix.HNSW_M and cfg.ef_search == ix.EF_SEARCH and cfg.ef_construction == ix.EF_CONSTRUCTION
    assert set(get_args(get_type_hints(EvalConfig)["index"])) == set(ix.CHOICES)


def test_default_nlist_grows_with_sqrt_n():
    assert ivf_nlist(10**6) == 2000 and ivf_nlist(100_000) == 632 and ivf_nlist(10_000) == 200
    assert ivf_nlist(100) == 2 and ivf_nlist(0) == 1  # clamped to n // 39 (at least 1)
    assert ivf_nlist(10**6, 1024) == 1024  # an explicit nlist is kept (clamped only)


def test_auto_is_flat_and_exact_below_the_threshold(data):
    docs, queries = data
    ids = [f"d{i}" for i in range(len(docs))]
    di = DocIndex.from_config(ids, docs, EvalConfig(gpu=False))  # defaults: auto, 3000 << auto_min_docs
    assert di.kind == "flat" and type(di.index).__name__ == "IndexFlatIP"
    exact = np.argsort(-(queries @ docs.T), axis=1, kind="stable")[:, :10]
    assert [[d for d, _ in h] for h in di.search(queries, 10)] == [[ids[j] for j in row] for row in exact]


def test_auto_is_approximate_from_the_threshold(data, tmp_path):
    docs, queries = data
    ids = [str(i) for i in range(len(docs))]
    di = DocIndex.from_config(ids, docs, EvalConfig(auto_min_docs=len(docs), gpu=False))
    assert di.kind == ix.AUTO_KIND and "IVF" in type(di.index).__name__
    assert di.index.nlist == ivf_nlist(len(docs)) and di.index.nprobe == min(ix.NPROBE, di.index.nlist)
    di.save(tmp_path / "idx")  # the built kind, not `auto`, is what a saved index records
    assert json.loads((tmp_path / "idx" / "ids.json").read_text())["kind"] == ix.AUTO_KIND
    assert DocIndex.load(tmp_path / "idx").kind == ix.AUTO_KIND
    below = DocIndex.from_config(ids, docs, EvalConfig(auto_min_docs=len(docs) + 1, gpu=False))
    assert below.kind == "flat"
    # build_index takes `auto` too (the serving bundle passes evaluate.index straight through)
    assert type(build_index(docs, "auto", gpu=False)).__name__ == "IndexFlatIP"
    assert "IVF" in type(build_index(docs, "auto", auto_min_docs=100, gpu=False)).__name__


@pytest.mark.parametrize("kind, name", [("flat", "IndexFlatIP"), ("ivf", "IndexIVFFlat"), ("hnsw", "IndexHNSWFlat")])
def test_explicit_kinds_still_work(data, kind, name):
    docs, queries = data
    ids = [str(i) for i in range(len(docs))]
    di = DocIndex.from_config(ids, docs, EvalConfig(index=kind, gpu=False))  # default nlist/nprobe/efSearch
    assert di.kind == kind and type(di.index).__name__ == name
    _, rows = search(di.index, queries, 10)
    exact = np.argsort(-(queries @ docs.T), axis=1)[:, :10]
    rec = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(rows, exact)])
    assert rec >= (1.0 if kind == "flat" else 0.8), rec
    if kind == "hnsw":
        assert di.index.hnsw.efSearch == ix.EF_SEARCH and di.index.hnsw.efConstruction == ix.EF_CONSTRUCTION


def test_fused_index_reports_the_built_kind(data):
    docs, _ = data
    ids = [str(i) for i in range(len(docs))]
    a = DocIndex.from_config(ids, docs, EvalConfig(gpu=False))
    b = DocIndex.from_config(ids, docs[::-1].copy(), EvalConfig(gpu=False))
    assert FusedIndex(a, b, fusion="rrf").kind == "flat"


def test_config_files_and_overrides(repo_root):
    assert load_config(repo_root / "configs" / "tiny.yaml").evaluate.index == "auto"
    assert load_config(repo_root / "configs" / "paper.yaml").evaluate.index == "flat"  # explicit: kept
    cfg = load_config(repo_root / "configs" / "tiny.yaml", ["evaluate.index=hnsw", "evaluate.nlist=256",
                                                            "evaluate.auto_min_docs=5000"])
    assert (cfg.evaluate.index, cfg.evaluate.nlist, cfg.evaluate.auto_min_docs) == ("hnsw", 256, 5000)
    for bad, msg in [("evaluate.nlist=0", "evaluate.nlist"), ("evaluate.auto_min_docs=0", "evaluate.auto_min_docs"),
                     ("evaluate.ef_search=0", "evaluate.ef_search"), ("evaluate.index=lsh", "'auto'")]:
        with pytest.raises(ConfigError, match=msg):
            load_config(repo_root / "configs" / "tiny.yaml", [bad])


def test_committed_benchmark_matches_the_defaults(repo_root):
    """bench/scaling.json (bench/bench_scaling.py) measured the defaults EvalConfig has now, and they met
    recall@100 >= 0.99 of exact search at every size it ran."""
    path = repo_root / "bench" / "scaling.json"
    if not path.is_file():
        pytest.skip("bench/scaling.json not written yet")
    res = json.loads(path.read_text())
    cfg = EvalConfig()
    d = res["defaults"]
    assert (d["index"], d["auto_min_docs"], d["nprobe"], d["hnsw_m"], d["ef_search"], d["ef_construction"]) == (
        cfg.index, cfg.auto_min_docs, cfg.nprobe, cfg.hnsw_m, cfg.ef_search, cfg.ef_construction)
    assert d["auto_kind_above"] == ix.AUTO_KIND
    assert [r["n"] for r in res["sizes"]] == [10_000, 100_000, 1_000_000]
    for r in res["sizes"]:
        assert r["ivf"]["nlist"] == ivf_nlist(r["n"]) and r["ivf"]["recall_at_100"] >= 0.99
        assert r["hnsw"]["recall_at_100"] >= 0.99
    assert res["defaults_meet_recall_0_99"] is True
