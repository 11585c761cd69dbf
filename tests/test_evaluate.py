"""Runs, qrels and metrics (trec_eval semantics via pytrec_eval), significance tests, evaluate stage."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import pytrec_eval

from resume.cli import main
from resume.config import ResumeConfig
from resume.errors import DataError, ResumeError
from resume.evaluate import (
    compute_metrics,
    evaluate_retrieval,
    judged_queries,
    paired_test,
    per_query_metrics,
    read_qrels_any,
    read_trec_run,
    trec_order,
    write_trec_run,
)

# ------------------------------------------------------------------------------------ helpers


def random_case(seed: int, n_queries: int = 40):
    """Graded qrels and a run with many score ties, doc ids of mixed lengths and case."""
    rng = np.random.default_rng(seed)
    pool = [f"{p}{i}" for p in ("d", "D", "doc") for i in range(700)]
    qrels, run = {}, {}
    for qi in range(n_queries):
        q = f"q{qi}"
        judged = rng.choice(len(pool), size=int(rng.integers(1, 12)), replace=False)
        grades = rng.integers(0, 4, size=len(judged))
        if qi % 9 == 0:
            grades[:] = 0                                  # judged, nothing relevant
        qrels[q] = {pool[j]: int(g) for j, g in zip(judged, grades)}
        if qi % 7 == 3:
            continue                                       # judged query missing from the run
        n = int(rng.integers(1, 1500))
        docs = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
        scores = np.round(rng.random(len(docs)) * 40) / 40  # 41 distinct scores: ties everywhere
        run[q] = {pool[d]: float(s) for d, s in zip(docs, scores)}
        # Retrieve some judged docs, often inside the top tie groups (where doc-id order decides).
        for j in judged[:3]:
            run[q][pool[j]] = float(rng.choice([1.0, 0.975, 0.95, 0.5]))
    run["unjudged"] = {"d1": 1.0}                          # in the run, not in the qrels
    return qrels, run


def write_qrels_tsv(path, qrels):
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{g}" for q, docs in qrels.items() for d, g in docs.items()]
    path.write_text("\n".join(lines) + "\n")


def write_qrels_trec(path, qrels):
    path.write_text("".join(f"{q} 0 {d} {g}\n" for q, docs in qrels.items() for d, g in docs.items()))


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------------------ ordering / files


def test_trec_order_matches_pytrec_eval_ties():
    # trec_eval breaks score ties by doc id descending: the relevant "a" ranks after "c" and "b".
    qrels = {"q": {"a": 1}}
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"})
    assert ev.evaluate({"q": {"a": 1.0, "b": 1.0, "c": 1.0}})["q"]["recip_rank"] == pytest.approx(1 / 3)
    assert [d for d, _ in trec_order({"a": 1.0, "b": 1.0, "c": 1.0, "z": 0.5})] == ["c", "b", "a", "z"]
    assert [d for d, _ in trec_order({"a": 1.0, "aa": 1.0, "B": 1.0})] == ["aa", "a", "B"]
    # The same through our metrics, with the relevant doc pushed out of the top 10 by ties.
    run = {"q": {f"x{i}": 1.0 for i in range(10)} | {"a": 1.0}}   # "x*" > "a": a is 11th
    assert compute_metrics(qrels, run)["mrr@10"] == 0.0
    run = {"q": {f"0{i}": 1.0 for i in range(10)} | {"a": 1.0}}   # "a" > "0*": a is 1st
    assert compute_metrics(qrels, run)["mrr@10"] == 1.0


def test_write_read_run_roundtrip(tmp_path):
    run = {"q2": {"b": 0.5, "a": 0.5, "c": 0.9, "d": 1 / 3}, "q1": {"x": -1.25}}
    path = tmp_path / "run.trec"
    assert write_trec_run(path, run, tag="t1") == 5
    lines = path.read_text().splitlines()
    assert lines[0] == "q1 Q0 x 1 -1.25 t1"
    assert [ln.split()[2] for ln in lines[1:]] == ["c", "b", "a", "d"]
    assert [ln.split()[3] for ln in lines[1:]] == ["1", "2", "3", "4"]
    back = read_trec_run(path)
    assert back == run and back["q2"]["d"] == 1 / 3          # full precision: no new ties
    write_trec_run(tmp_path / "again.trec", back, tag="t1")
    assert (tmp_path / "again.trec").read_text() == path.read_text()


def test_write_run_rejects_bad_ids_atomically(tmp_path):
    path = tmp_path / "run.trec"
    with pytest.raises(ResumeError, match="whitespace"):
        write_trec_run(path, {"q1": {"a": 1.0}, "q 2": {"b": 1.0}})
    with pytest.raises(ResumeError, match="not finite"):
        write_trec_run(path, {"q1": {"a": float("nan")}})
    assert list(tmp_path.iterdir()) == []


def test_read_run_errors(tmp_path):
    bad = tmp_path / "bad.trec"
    bad.write_text("q1 Q0 d1 1 0.5 tag\nq1 Q0 d2 2 0.4\n")
    with pytest.raises(DataError, match=r"bad.trec:2: expected 6 columns"):
        read_trec_run(bad)
    bad.write_text("q1 Q0 d1 1 high tag\n")
    with pytest.raises(DataError, match="not a number"):
        read_trec_run(bad)
    bad.write_text("q1 Q0 d1 1 0.5 t\nq1 Q0 d1 2 0.4 t\n")
    with pytest.raises(DataError, match="twice"):
        read_trec_run(bad)
    with pytest.raises(DataError, match="not found"):
        read_trec_run(tmp_path / "missing.trec")


def test_read_qrels_any_formats(tmp_path):
    qrels = {"1": {"10": 2, "11": 0}, "2": {"12": 1}}
    write_qrels_tsv(tmp_path / "beir.tsv", qrels)
    write_qrels_trec(tmp_path / "qrels.trec", qrels)
    (tmp_path / "noheader.tsv").write_text("1\t10\t2\n1\t11\t0\n2\t12\t1\n")
    for name in ("beir.tsv", "qrels.trec", "noheader.tsv"):
        assert read_qrels_any(tmp_path / name) == qrels
    (tmp_path / "bad.tsv").write_text("query-id\tcorpus-id\tscore\n1\t10\thigh\n")
    with pytest.raises(DataError, match="bad.tsv:2: relevance grade"):
        read_qrels_any(tmp_path / "bad.tsv")
    (tmp_path / "mixed.tsv").write_text("1 10 1\n1 0 11 1\n")
    with pytest.raises(DataError, match="mixed.tsv:2: expected 3 columns"):
        read_qrels_any(tmp_path / "mixed.tsv")
    (tmp_path / "empty.tsv").write_text("query-id\tcorpus-id\tscore\n")
    with pytest.raises(DataError, match="no judgements"):
        read_qrels_any(tmp_path / "empty.tsv")


# ------------------------------------------------------------------------------------ metrics vs pytrec_eval


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_pytrec_eval_on_random_runs_with_ties(seed, tmp_path, capsys):
    qrels, run = random_case(seed)
    judged = judged_queries(qrels)
    assert 0 < len(judged) < len(qrels)
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100,1000", "P.10",
                                                "success." + ",".join(map(str, range(1, 11)))})
    full = ev.evaluate(run)
    # Reference truncation written independently: sort by (-score, doc id bytes descending).
    top10 = {}
    for q, docs in run.items():
        order = sorted(docs, key=lambda d: d.encode(), reverse=True)
        order = sorted(order, key=lambda d: -docs[d])[:10]
        top10[q] = {d: docs[d] for d in order}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)

    per_q = per_query_metrics(qrels, run)
    assert sorted(per_q) == judged
    for q in judged:
        if q not in run:
            assert per_q[q] == {"mrr@10": 0.0, "ndcg@10": 0.0, "recall@100": 0.0, "recall@1000": 0.0}
            continue
        assert per_q[q]["mrr@10"] == pytest.approx(rr[q]["recip_rank"], abs=1e-12)
        # Independent check on the FULL run with trec_eval's own ordering: MRR@10 from success@1..10.
        succ = [full[q][f"success_{k}"] for k in range(1, 11)]
        first = next((k for k, s in enumerate(succ, start=1) if s > 0), None)
        assert per_q[q]["mrr@10"] == pytest.approx(1 / first if first else 0.0, abs=1e-12)
        assert (per_q[q]["mrr@10"] > 0) == (full[q]["P_10"] > 0)
        assert per_q[q]["ndcg@10"] == pytest.approx(full[q]["ndcg_cut_10"], abs=1e-12)
        assert per_q[q]["recall@100"] == pytest.approx(full[q]["recall_100"], abs=1e-12)
        assert per_q[q]["recall@1000"] == pytest.approx(full[q]["recall_1000"], abs=1e-12)

    expected = {
        "mrr@10": sum(rr[q]["recip_rank"] for q in judged if q in rr) / len(judged),
        "ndcg@10": sum(full[q]["ndcg_cut_10"] for q in judged if q in full) / len(judged),
        "recall@100": sum(full[q]["recall_100"] for q in judged if q in full) / len(judged),
        "recall@1000": sum(full[q]["recall_1000"] for q in judged if q in full) / len(judged),
    }
    metrics = compute_metrics(qrels, run)
    assert metrics == pytest.approx(expected, abs=1e-12)
    assert list(metrics) == ["mrr@10", "ndcg@10", "recall@100", "recall@1000"]

    # The CLI, in-process, on files (run written and read back, qrels in both formats).
    write_trec_run(tmp_path / "run.trec", run)
    write_qrels_tsv(tmp_path / "qrels.tsv", qrels)
    write_qrels_trec(tmp_path / "qrels.trec", qrels)
    for qfile in ("qrels.tsv", "qrels.trec"):
        code, out, err = run_cli(capsys, "metrics", "--qrels", str(tmp_path / qfile), "--run",
                                 str(tmp_path / "run.trec"))
        assert code == 0, err
        assert json.loads(out) == pytest.approx(expected, abs=1e-12)


def test_graded_ndcg_and_recall_cutoffs():
    qrels = {"q": {"a": 3, "b": 1, "c": 0}}
    run = {"q": {"b": 3.0, "a": 2.0, "c": 1.0}}
    ideal = 3 + 1 / np.log2(3)
    got = 1 + 3 / np.log2(3)
    assert compute_metrics(qrels, run)["ndcg@10"] == pytest.approx(got / ideal)
    deep = {"q": {f"z{i:04d}": 2.0 - i / 2000 for i in range(1200)} | {"a": 1.0, "b": 2.0 - 150 / 2000 - 1e-9}}
    m = compute_metrics(qrels, deep)
    assert m["recall@100"] == 0.0 and m["recall@1000"] == 0.5


def test_averaging_convention_missing_and_unjudged_queries():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}
    run = {"q1": {"a": 1.0}, "q3": {"c": 1.0}, "q9": {"a": 1.0}}
    # q2 (judged, relevant, not run) counts as 0; q3 (no relevant doc) and q9 (not judged) are left out.
    assert compute_metrics(qrels, run) == {"mrr@10": 0.5, "ndcg@10": 0.5, "recall@100": 0.5, "recall@1000": 0.5}
    with pytest.raises(ResumeError, match="no query in the qrels has a relevant"):
        compute_metrics({"q3": {"c": 0}}, run)


def test_cli_metrics_bad_input_exit_2(tmp_path, capsys):
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq\ta\t1\n")
    (tmp_path / "run.trec").write_text("q Q0 a 1\n")
    code, out, err = run_cli(capsys, "metrics", "--qrels", str(tmp_path / "qrels.tsv"), "--run",
                             str(tmp_path / "run.trec"))
    assert code == 2 and err.startswith("error: ") and "run.trec:1" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------ significance


def test_paired_test():
    rng = np.random.default_rng(0)
    a = {f"q{i}": {"ndcg@10": float(v)} for i, v in enumerate(rng.random(60))}
    b = {q: {"ndcg@10": v["ndcg@10"] + 0.1 + 0.02 * rng.standard_normal()} for q, v in a.items()}
    res = paired_test(a, b, "ndcg@10", n_permutations=2000)
    assert res["n"] == 60 and res["mean_diff"] == pytest.approx(0.1, abs=0.01)
    assert res["p_value"] < 1e-10 and res["p_permutation"] == pytest.approx(1 / 2001)
    from scipy import stats

    qs = sorted(a)
    ref = stats.ttest_rel([b[q]["ndcg@10"] for q in qs], [a[q]["ndcg@10"] for q in qs])
    assert res["p_value"] == pytest.approx(ref.pvalue) and res["t"] == pytest.approx(ref.statistic)
    same = paired_test(a, a, "ndcg@10")
    assert same["p_value"] == 1.0 and same["p_permutation"] == 1.0 and same["mean_diff"] == 0.0
    # Plain {qid: value} inputs, partial overlap, exact permutation for small n.
    x = {"q1": 0.1, "q2": 0.5, "q3": 0.3, "q4": 0.2, "only_a": 1.0}
    y = {"q1": 0.2, "q2": 0.4, "q3": 0.6, "q4": 0.3}
    r = paired_test(x, y, "any")
    assert (r["n"], r["n_only_a"], r["n_only_b"]) == (4, 1, 0)
    # diffs 0.1, -0.1, 0.3, 0.1 (sum 0.4): sign flips with |sum| >= 0.4 are +-(0.3 + two or three
    # of the 0.1s with a plus): 2 x (1 + 3) = 8 of 16.
    assert r["p_permutation"] == pytest.approx(8 / 16)
    assert paired_test({"q": 1.0}, {"q": 0.0}, "m")["p_value"] is None


def test_per_query_metrics_feed_paired_test():
    qrels, run = random_case(5)
    better = {q: dict(docs) for q, docs in run.items()}
    for q, docs in qrels.items():
        for d, g in docs.items():
            if g > 0 and q in better:
                better[q][d] = 10.0
    res = paired_test(per_query_metrics(qrels, run), per_query_metrics(qrels, better), "mrr@10")
    assert res["mean_diff"] > 0 and res["p_value"] < 0.01


# ------------------------------------------------------------------------------------ evaluate stage


class HashEncoder:
    """Bag-of-words hashed into 64 dims: queries find documents sharing their words."""

    dim = 64

    def _emb(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().replace(".", " ").split():
                out[i, zlib.crc32(w.encode()) % self.dim] += 1.0
        n = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(n > 0, n, 1)

    def encode_queries(self, texts):
        return self._emb(list(texts))

    def encode_docs(self, texts):
        return self._emb(list(texts))

    def count_tokens(self, texts):
        return [len(t.split()) for t in texts]


@pytest.fixture()
def beir_dir(tmp_path):
    d = tmp_path / "beir"
    (d / "qrels").mkdir(parents=True)
    topics = ["wing lift", "heat flux", "shock wave", "boundary layer", "jet noise", "plate buckling"]
    corpus = [{"_id": f"d{i}", "title": t, "text": f"study of {t} number {i}"} for i, t in enumerate(topics)]
    (d / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    queries = [{"_id": f"q{i}", "text": t} for i, t in enumerate(topics)]
    (d / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\td{i}\t{1 + i % 2}\n" for i in range(4)))
    (d / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq4\td4\t1\nq5\td5\t1\n")
    return d


def test_evaluate_retrieval_full_documents_and_summaries(beir_dir, tmp_path):
    pytest.importorskip("resume.data")
    cfg = ResumeConfig()
    cfg.evaluate.k = 10
    out = tmp_path / "eval"
    m = evaluate_retrieval(cfg, data_dir=beir_dir, split="test", retriever="hash", out_dir=out,
                           encoder=HashEncoder())
    assert m == {"mrr@10": 1.0, "ndcg@10": 1.0, "recall@100": 1.0, "recall@1000": 1.0}
    assert json.loads((out / "metrics.json").read_text()) == m
    assert sorted(json.loads((out / "per_query.json").read_text())) == ["q0", "q1", "q2", "q3"]
    info = json.loads((out / "eval_info.json").read_text())
    assert info["n_docs"] == 6 and info["n_queries"] == 4
    run = read_trec_run(out / "run.trec")
    assert sorted(run) == ["q0", "q1", "q2", "q3"] and all(len(v) == 6 for v in run.values())
    assert compute_metrics(read_qrels_any(beir_dir / "qrels" / "test.tsv"), run) == m

    # Summaries swap the texts: summaries that carry the wrong topic break retrieval.
    rows = [{"_id": f"d{i}", "summary": s} for i, s in
            enumerate(["heat flux", "wing lift", "shock wave", "boundary layer", "", "plate"])]
    texts = tmp_path / "summaries.jsonl"
    texts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    m2 = evaluate_retrieval(cfg, data_dir=beir_dir, split="test", retriever="hash", texts=texts,
                            out_dir=tmp_path / "eval2", encoder=HashEncoder())
    assert m2["mrr@10"] < 1.0 and m2["recall@100"] == 1.0

    texts.write_text(json.dumps({"_id": "d0", "summary": "x"}) + "\n")
    with pytest.raises(DataError, match="have no summary"):
        evaluate_retrieval(cfg, data_dir=beir_dir, split="test", retriever="hash", texts=texts,
                           out_dir=tmp_path / "eval3", encoder=HashEncoder())
    # the one policy of every summaries reader (resume.run_dir.read_summaries): a summary is a string
    texts.write_text("".join(json.dumps(r | ({"summary": None} if r["_id"] == "d4" else {})) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"summaries.jsonl:5: \"summary\" is NoneType; expected a string"):
        evaluate_retrieval(cfg, data_dir=beir_dir, split="test", retriever="hash", texts=texts,
                           out_dir=tmp_path / "eval3", encoder=HashEncoder())
    assert not (tmp_path / "eval3" / "metrics.json").exists()
    with pytest.raises(DataError, match="split 'dev' not found"):
        evaluate_retrieval(cfg, data_dir=beir_dir, split="dev", retriever="hash", out_dir=tmp_path / "e4",
                           encoder=HashEncoder())


def test_eval_info_paths_inside_the_run_dir_are_relative_and_resolve_after_a_move(beir_dir, tmp_path):
    """eval_info.json of an eval dir inside a run directory holds no absolute path of this machine: the paths
    inside the run directory as `./...` (relative to it, as results.json), the run directory relative to the
    eval dir; `read_eval_info` resolves them where the run directory is now. Paths outside the run directory
    and hub ids stay as given, and so does everything written without a run directory."""
    import shutil

    from resume.evaluate import read_eval_info

    pytest.importorskip("resume.data")
    cfg = ResumeConfig()
    cfg.evaluate.k = 10
    run = tmp_path / "run"
    shutil.copytree(beir_dir, run / "data")
    (run / "iter_01").mkdir()
    texts = _summaries(run / "iter_01" / "summaries.jsonl", {f"d{i}": f"summary {i}" for i in range(6)})
    g1 = run / "iter_01" / "retriever"
    ev = dict(split="test", encoder=HashEncoder(), run_dir=run)
    evaluate_retrieval(cfg, data_dir=run / "data", retriever=str(g1), texts=texts, out_dir=run / "iter_01" / "eval",
                       **ev)
    raw = (run / "iter_01" / "eval" / "eval_info.json").read_text()
    info = json.loads(raw)
    assert (info["run_dir"], info["data_dir"], info["retriever"], info["texts"]) == \
        ("../..", "./data", "./iter_01/retriever", "./iter_01/summaries.jsonl")
    assert str(tmp_path) not in raw
    # outside the run directory (the source data) and a hub id: as given
    evaluate_retrieval(cfg, data_dir=beir_dir, retriever="org/encoder", out_dir=run / "baseline" / "eval_test", **ev)
    base = json.loads((run / "baseline" / "eval_test" / "eval_info.json").read_text())
    assert (base["data_dir"], base["retriever"], base["texts"]) == (str(beir_dir), "org/encoder", None)

    moved = tmp_path / "elsewhere" / "run-copy"
    shutil.move(run, moved)
    got = read_eval_info(moved / "iter_01" / "eval")
    assert (got["run_dir"], got["data_dir"], got["retriever"], got["texts"]) == \
        (str(moved), str(moved / "data"), str(moved / "iter_01" / "retriever"),
         str(moved / "iter_01" / "summaries.jsonl"))
    assert Path(got["texts"]).is_file() and got["mode"] == "summary" and got["n_docs"] == 6
    assert read_eval_info(moved / "baseline" / "eval_test")["data_dir"] == str(beir_dir)

    # no run directory (`resume evaluate --out`, the KFP component): written and read as given
    evaluate_retrieval(cfg, data_dir=beir_dir, retriever=str(g1), out_dir=tmp_path / "plain", split="test",
                       encoder=HashEncoder())
    plain = read_eval_info(tmp_path / "plain")
    assert "run_dir" not in plain and plain["retriever"] == str(g1) and plain["data_dir"] == str(beir_dir)
    (tmp_path / "plain" / "eval_info.json").write_text("[1]")
    with pytest.raises(DataError, match=r"eval_info.json: expected a JSON object"):
        read_eval_info(tmp_path / "plain")
    with pytest.raises(DataError, match=r"eval_info.json: not found"):
        read_eval_info(tmp_path / "nowhere")


class NoisyCopyEncoder:
    """Documents: a random unit vector per text (seeded by its crc32, no ties). A query `near <doc text>`: that
    document's vector plus noise, so each query has one clear nearest document and many close runners-up."""

    dim = 32

    def _vec(self, text: str) -> np.ndarray:
        return np.random.default_rng(zlib.crc32(text.encode())).standard_normal(self.dim)

    def _unit(self, rows) -> np.ndarray:
        x = np.array(rows, dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def encode_docs(self, texts):
        return self._unit([self._vec(t) for t in texts])

    def encode_queries(self, texts):
        return self._unit([self._vec(t.removeprefix("near ")) + 0.8 * self._vec(t) for t in texts])


def test_evaluate_retrieval_approximate_index(tmp_path):
    """`evaluate.index` reaches the index evaluate_retrieval builds: on 800 documents (16 IVF lists; ivf_nlist keeps
    39+ documents per list) IVF probing one list misses some of flat's top 10, probing all 16 gives flat's run."""
    pytest.importorskip("resume.data")
    d = tmp_path / "beir"
    (d / "qrels").mkdir(parents=True)
    docs = [f"document {i}" for i in range(800)]
    (d / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                                            for i, t in enumerate(docs)))
    (d / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"near {docs[i * 20]}"}) + "\n"
                                             for i in range(40)))
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\td{i * 20}\t1\n" for i in range(40)))

    def ranked(kind: str, **opts) -> tuple[dict, dict]:
        cfg = ResumeConfig()
        cfg.evaluate.index, cfg.evaluate.k, cfg.evaluate.gpu = kind, 10, False
        for k, v in opts.items():
            setattr(cfg.evaluate, k, v)
        out = tmp_path / f"{kind}-{opts}"
        m = evaluate_retrieval(cfg, data_dir=d, split="test", retriever="noisy", out_dir=out,
                               encoder=NoisyCopyEncoder())
        assert json.loads((out / "eval_info.json").read_text())["index"] == kind
        run = read_trec_run(out / "run.trec")
        return m, {q: sorted(hits, key=hits.get, reverse=True) for q, hits in run.items()}

    m_flat, flat = ranked("flat")
    m_one, one_list = ranked("ivf", nlist=16, nprobe=1)
    m_all, all_lists = ranked("ivf", nlist=16, nprobe=16)
    assert all_lists == flat and m_all == m_flat
    missed = sum(len(set(flat[q]) - set(one_list[q])) for q in flat)
    assert missed > 0, "IVF with one probed list returned flat's exact top 10: is the IVF index built at all?"
    assert m_flat["mrr@10"] > 0.9  # the noisy copy finds its document
    m_hnsw, hnsw = ranked("hnsw", hnsw_m=16, ef_search=64)
    assert sum(len(set(flat[q]) & set(hnsw[q])) for q in flat) >= 0.8 * 10 * len(flat)


def test_cli_evaluate_with_tiny_encoder(beir_dir, tmp_path, capsys):
    pytest.importorskip("resume.data")
    pytest.importorskip("resume.retriever")
    code, out, err = run_cli(capsys, "evaluate", "--data", str(beir_dir), "--split", "test", "--retriever",
                             "tiny-encoder", "--set", "evaluate.k=10", "--set", "device=cpu", "--out",
                             str(tmp_path / "ev"))
    if code == 2 and "tiny-encoder" in err:
        pytest.skip(f"tiny-encoder unavailable: {err}")
    assert code == 0, err
    m = json.loads(out)
    assert set(m) == {"mrr@10", "ndcg@10", "recall@100", "recall@1000"} and m["recall@100"] == 1.0
    assert (tmp_path / "ev" / "run.trec").is_file()
    assert "working set" not in err  # the default config samples nothing
    # a config with a working set (e.g. a run's config.yaml reused on another dataset) says so on stderr
    code, out, err = run_cli(capsys, "evaluate", "--data", str(beir_dir), "--split", "test", "--retriever",
                             "tiny-encoder", "--set", "evaluate.k=10", "--set", "device=cpu",
                             "--set", "data.max_eval_queries=1", "--out", str(tmp_path / "ev1"))
    assert code == 0, err
    assert "note: the config selects a working set (data.max_eval_queries=1): 1 queries over" in err
    assert "--set data.max_eval_queries=null evaluates the whole split" in err
    assert json.loads(out).keys() == m.keys()


# ------------------------------------------------------------------------------------ index modes


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _topk(q, emb, k):
    return np.argsort(-(q @ emb.T), axis=1, kind="stable")[:, :k]


def test_fuse_scores_weight_extremes_are_the_single_views():
    from resume.index import fuse_scores

    rng = np.random.default_rng(3)
    docs, summ, q = (_unit(rng.standard_normal((n, 16))) for n in (40, 40, 6))
    d_rows, s_rows = _topk(q, docs, 8), _topk(q, summ, 8)
    for w, emb in ((1.0, docs), (0.0, summ)):
        scores, rows = fuse_scores(q, d_rows, s_rows, weight=w, doc_vectors=docs, summary_vectors=summ)
        for i in range(len(q)):
            union = np.union1d(d_rows[i], s_rows[i])
            cos = emb[union] @ q[i]
            assert rows[i][rows[i] >= 0].tolist() == union[np.argsort(-cos, kind="stable")].tolist()
            assert np.allclose(scores[i][rows[i] >= 0], np.sort(cos)[::-1], atol=1e-6)
        # the top 8 is exactly the single view's own top 8
        assert rows[:, :8].tolist() == (d_rows if w == 1.0 else s_rows).tolist()
    # in between: exact cosines of both views for every candidate, also those only one view found
    scores, rows = fuse_scores(q, d_rows, s_rows, weight=0.3, doc_vectors=docs, summary_vectors=summ, k=5)
    assert rows.shape == (6, 5)
    for i in range(len(q)):
        expect = 0.3 * (docs[rows[i]] @ q[i]) + 0.7 * (summ[rows[i]] @ q[i])
        assert np.allclose(scores[i], expect, atol=1e-6) and np.all(np.diff(scores[i]) <= 0)
    with pytest.raises(ResumeError, match=r"weight in \[0, 1\]"):
        fuse_scores(q, d_rows, s_rows, weight=1.5, doc_vectors=docs, summary_vectors=summ)


def test_fuse_scores_rrf_by_hand():
    from resume.index import fuse_scores

    q = np.zeros((1, 4), np.float32)
    # document view ranks 0 then 1; summary view ranks 2 then 0 (-1 = padding)
    scores, rows = fuse_scores(q, [[0, 1, -1]], [[2, 0, -1]], fusion="rrf", rrf_k=60)
    assert rows.tolist() == [[0, 2, 1]]
    assert np.allclose(scores, [[1 / 61 + 1 / 62, 1 / 61, 1 / 62]])
    scores, rows = fuse_scores(q, [[1, 0]], [[0, 1]], fusion="rrf", rrf_k=0)  # a tie: the lower row first
    assert rows.tolist() == [[0, 1]] and scores[0, 0] == scores[0, 1] == np.float32(1.5)


class LongEncoder(HashEncoder):
    """HashEncoder with a window: max_length 12 and a tokenizer adding 2 special tokens -> 10 words."""

    max_length = 12

    class tokenizer:  # noqa: N801
        @staticmethod
        def num_special_tokens_to_add(pair=False):
            return 2


def test_long_only_texts_picks_summaries_of_overflowing_docs_only():
    from resume.evaluate import doc_window, long_only_texts

    docs = {"a": "w " * 10, "b": "w " * 11, "c": "short one"}
    summ = {"a": "sa", "b": "sb", "c": "sc"}
    assert doc_window(LongEncoder()) == 10
    texts, long = long_only_texts(LongEncoder(), docs, summ)
    assert long == ["b"] and texts == {"a": docs["a"], "b": "sb", "c": "short one"}


def _summaries(path, rows):
    path.write_text("".join(json.dumps({"_id": d, "summary": s}) + "\n" for d, s in rows.items()))
    return path


WRONG = {"d0": "heat flux", "d1": "wing lift", "d2": "shock wave", "d3": "boundary layer", "d4": "x", "d5": "plate"}


def test_evaluate_fused_modes(beir_dir, tmp_path):
    pytest.importorskip("resume.data")
    cfg = ResumeConfig()
    cfg.evaluate.k = 10
    texts = _summaries(tmp_path / "s.jsonl", WRONG)
    ev = dict(data_dir=beir_dir, split="test", retriever="hash", encoder=HashEncoder())
    base = evaluate_retrieval(cfg, out_dir=tmp_path / "base", **ev)
    summ = evaluate_retrieval(cfg, texts=texts, out_dir=tmp_path / "summ", **ev)
    assert base["mrr@10"] == 1.0 and summ["mrr@10"] < 1.0
    with pytest.raises(ResumeError, match="needs summaries"):
        evaluate_retrieval(cfg, mode="fused", fusion_weight=0.5, out_dir=tmp_path / "x", **ev)
    with pytest.raises(ResumeError, match=r"weight in \[0, 1\]"):
        evaluate_retrieval(cfg, texts=texts, mode="fused", out_dir=tmp_path / "x", **ev)
    assert not (tmp_path / "x").exists()
    for w, ref in ((1.0, "base"), (0.0, "summ")):
        m = evaluate_retrieval(cfg, texts=texts, mode="fused", fusion_weight=w, out_dir=tmp_path / f"w{w}", **ev)
        assert m == (base if ref == "base" else summ)
        run, ref_run = read_trec_run(tmp_path / f"w{w}" / "run.trec"), read_trec_run(tmp_path / ref / "run.trec")
        assert {q: trec_order(d)[:3] == trec_order(ref_run[q])[:3] for q, d in run.items()} == dict.fromkeys(run, True)
    info = json.loads((tmp_path / "w1.0" / "eval_info.json").read_text())
    assert (info["mode"], info["fusion"], info["fusion_weight"]) == ("fused", "score", 1.0)
    cfg.evaluate.fusion = "rrf"
    m = evaluate_retrieval(cfg, texts=texts, mode="fused", out_dir=tmp_path / "rrf", **ev)
    info = json.loads((tmp_path / "rrf" / "eval_info.json").read_text())
    assert (info["fusion"], info["fusion_weight"], info["rrf_k"]) == ("rrf", None, 60) and m["recall@100"] == 1.0
    base_info = json.loads((tmp_path / "base" / "eval_info.json").read_text())
    assert (base_info["mode"], base_info["fusion"], base_info["fusion_weight"]) == ("summary", None, None)


def test_evaluate_long_only(beir_dir, tmp_path):
    pytest.importorskip("resume.data")
    rows = [json.loads(x) for x in (beir_dir / "corpus.jsonl").read_text().splitlines()]
    rows[1]["text"] = rows[3]["text"] = "a long abstract " * 5  # 15 words + title: over the 10-word window
    (beir_dir / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = ResumeConfig()
    cfg.evaluate.k = 10
    texts = _summaries(tmp_path / "s.jsonl", {f"d{i}": f"summary {i}" for i in range(6)})
    evaluate_retrieval(cfg, data_dir=beir_dir, split="test", retriever="hash", texts=texts, mode="long_only",
                       out_dir=tmp_path / "lo", encoder=LongEncoder())
    info = json.loads((tmp_path / "lo" / "eval_info.json").read_text())
    assert info["mode"] == "long_only" and info["n_summary_docs"] == 2 and info["window_tokens"] == 10
    run = read_trec_run(tmp_path / "lo" / "run.trec")
    assert trec_order(run["q0"])[0][0] == "d0"  # a short document keeps its full text (q0 = its title)
    with pytest.raises(ResumeError, match="needs summaries"):
        evaluate_retrieval(cfg, data_dir=beir_dir, split="test", retriever="hash", mode="long_only",
                           out_dir=tmp_path / "lo2", encoder=LongEncoder())


def test_choose_fusion_weight_argmax_and_ties_toward_the_document(beir_dir, tmp_path):
    pytest.importorskip("resume.data")
    from resume.evaluate import CachingEncoder, choose_fusion_weight

    # documents point at the wrong topic, summaries at the right one: low weights win, several tie
    rows = [json.loads(x) for x in (beir_dir / "corpus.jsonl").read_text().splitlines()]
    for r, topic in zip(rows, ["heat flux", "wing lift", "shock wave", "boundary layer", "x", "y"]):
        r["title"], r["text"] = "", topic
    (beir_dir / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    texts = _summaries(tmp_path / "s.jsonl", {r["_id"]: q for r, q in zip(rows, [
        "wing lift", "heat flux", "shock wave", "boundary layer", "jet noise", "plate buckling"])})
    cfg = ResumeConfig()
    cfg.evaluate.k = 10

    class Counting(HashEncoder):
        calls = 0

        def encode_docs(self, texts):
            Counting.calls += 1
            return super().encode_docs(texts)

    enc = CachingEncoder(Counting())
    res = choose_fusion_weight(cfg, data_dir=beir_dir, split="test", retriever="hash", texts=texts, encoder=enc)
    curve = res["curve"]
    assert sorted(curve) == [i / 10 for i in range(11)] and Counting.calls == 2  # two views, encoded once
    best = max(curve.values())
    tied = [w for w, v in curve.items() if v == best]
    assert len(tied) >= 2 and res["weight"] == max(tied) < 1.0 and res["value"] == best
    assert curve[1.0] < best and res["metric"] == "mrr@10"
    res2 = choose_fusion_weight(cfg, data_dir=beir_dir, split="test", retriever="hash", texts=texts, encoder=enc,
                                grid=(0.0, 1.0), metric="ndcg@10")
    assert Counting.calls == 2 and res2["weight"] == 0.0  # the cache served the same views again
    with pytest.raises(ResumeError, match="grid"):
        choose_fusion_weight(cfg, data_dir=beir_dir, split="test", retriever="hash", texts=texts, grid=(2.0,),
                             encoder=enc)


def test_config_index_title_and_mode_apply_to_summaries_only():
    """`evaluate.summary_title: true` (and `evaluate.mode`) in a config is the index of summaries; the
    Baseline's full documents ignore it, while an explicit request without summaries is an error; an explicit
    False turns the title off."""
    from dataclasses import replace

    from resume.evaluate import eval_config

    base = ResumeConfig()
    cfg = replace(base, evaluate=replace(base.evaluate, summary_title=True))
    assert eval_config(cfg).summary_title is False                      # full documents: nothing to title
    assert eval_config(cfg, texts="s.jsonl").summary_title is True      # summaries: the config's default
    assert eval_config(cfg, texts="s.jsonl", summary_title=False).summary_title is False
    assert eval_config(base, texts="s.jsonl").summary_title is False
    with pytest.raises(ResumeError, match="needs summaries"):
        eval_config(base, summary_title=True)
    # the config's index mode the same way: a fused config evaluates the Baseline's documents alone
    fused = replace(cfg, evaluate=replace(cfg.evaluate, mode="fused", fusion_weight=0.5))
    assert eval_config(fused).mode == "summary"
    assert eval_config(fused, texts="s.jsonl").mode == "fused"
    with pytest.raises(ResumeError, match="needs summaries"):
        eval_config(fused, mode="fused")


def test_cli_evaluate_mode_arguments_checked_before_loading(beir_dir, tmp_path, capsys):
    texts = _summaries(tmp_path / "s.jsonl", WRONG)
    common = ("evaluate", "--data", str(tmp_path / "no-data"), "--retriever", "no-such-model", "--out",
              str(tmp_path / "ev"))
    for extra, message in (
            (("--texts", str(texts), "--mode", "fused", "--fusion-weight", "1.5"), "evaluate.fusion_weight: invalid value 1.5"),
            (("--texts", str(texts), "--mode", "fused", "--fusion-weight", "nan"), "evaluate.fusion_weight"),
            (("--texts", str(texts), "--mode", "fused"), "score fusion needs a document weight"),
            (("--mode", "fused", "--fusion-weight", "0.5"), "needs summaries (--texts)"),
            (("--summary-title",), "summary_title (--summary-title) puts each document's title before its summary: it needs summaries"),
            (("--texts", str(texts), "--mode", "fused", "--fusion-weight", "0.5", "--choose-weight-on", "dev"),
             "exclude each other"),
            (("--texts", str(texts), "--mode", "fused", "--fusion", "rrf", "--choose-weight-on", "dev"),
             "--mode fused --fusion score")):
        code, out, err = run_cli(capsys, *common, *extra)
        assert code == 2 and err.startswith("error: ") and message in err, (extra, err)
        assert "no-such-model" not in err and "no-data" not in err
    assert not (tmp_path / "ev").exists()


def test_cli_evaluate_fused_choose_weight_with_tiny_encoder(beir_dir, tmp_path, capsys):
    pytest.importorskip("resume.retriever")
    texts = _summaries(tmp_path / "s.jsonl", WRONG)
    out = tmp_path / "ev"
    code, stdout, err = run_cli(capsys, "evaluate", "--data", str(beir_dir), "--split", "test", "--retriever",
                                "tiny-encoder", "--set", "evaluate.k=10", "--set", "device=cpu", "--texts",
                                str(texts), "--mode", "fused", "--choose-weight-on", "train", "--out", str(out))
    if code == 2 and "tiny-encoder" in err:
        pytest.skip(f"tiny-encoder unavailable: {err}")
    assert code == 0, err
    assert set(json.loads(stdout)) == {"mrr@10", "ndcg@10", "recall@100", "recall@1000"}
    choice = json.loads((out / "fusion_weight.json").read_text())
    assert choice["split"] == "train" and len(choice["curve"]) == 11 and "fusion weight on train" in err
    info = json.loads((out / "eval_info.json").read_text())
    assert info["mode"] == "fused" and info["fusion_weight"] == choice["weight"]
    assert info["summary_title"] is False
    # the same with each summary after its title: the weight is chosen, and the test split run, on titled texts
    out2 = tmp_path / "ev-titled"
    code, stdout, err = run_cli(capsys, "evaluate", "--data", str(beir_dir), "--split", "test", "--retriever",
                                "tiny-encoder", "--set", "evaluate.k=10", "--set", "device=cpu", "--texts",
                                str(texts), "--mode", "fused", "--choose-weight-on", "train", "--summary-title",
                                "--out", str(out2))
    assert code == 0, err
    info2 = json.loads((out2 / "eval_info.json").read_text())
    assert info2["summary_title"] is True and info2["fusion_weight"] == json.loads(
        (out2 / "fusion_weight.json").read_text())["weight"]
