"""resume.retriever: encoding equals sentence-transformers, contrastive fine-tuning under torchrun, resume.

    .venv/bin/pytest tests/test_retriever.py -q              # fast suite
    .venv/bin/pytest tests/test_retriever.py -q -m slow      # MiniLM parity, torchrun kill + resume
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from resume import retriever as R
from resume.cli import main as cli_main
from resume.config import load_config
from resume.data import BeirDataset, doc_text, read_corpus
from resume.errors import DataError, ResumeError

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "cranfield"
TINY = ROOT / "configs" / "tiny.yaml"


def tiny_cfg(*overrides: str):
    return load_config(TINY, list(overrides))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is several times faster than two."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    docs = [doc_text(d) for _, d in zip(range(40), read_corpus(DATA / "corpus.jsonl"))]
    return docs + ["", "lift", "boundary layer " * 200]  # empty, one token, far over max_length


@pytest.fixture(scope="module")
def tiny_encoder():
    return R.Encoder("tiny-encoder", tiny_cfg().retriever, device="cpu")


def _st_reference(path: str, max_seq_length: int, pooling: str = "mean", normalize: bool = True):
    """A SentenceTransformer assembled from modules over the same HF dir (the reference implementation)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer

    tr = Transformer(path, max_seq_length=max_seq_length)
    dim = tr.auto_model.config.hidden_size
    modules = [tr, Pooling(dim, pooling)] + ([Normalize()] if normalize else [])
    return SentenceTransformer(modules=modules, device="cpu")


# ------------------------------------------------------------------------------------------- encoding


def test_encode_matches_sentence_transformers_tiny(tiny_encoder, texts):
    ours = tiny_encoder.encode_docs(texts, batch_size=8)
    ref = _st_reference(tiny_encoder.path, tiny_encoder.max_length).encode(texts, batch_size=8,
                                                                          convert_to_numpy=True)
    assert ours.dtype == np.float32 and ours.shape == (len(texts), tiny_encoder.dim)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_encode_restores_order_whatever_the_batching(tiny_encoder, texts):
    full = tiny_encoder.encode_docs(texts)
    one_by_one = np.concatenate([tiny_encoder.encode_docs([t]) for t in texts])
    np.testing.assert_allclose(full, one_by_one, atol=1e-5, rtol=0)  # padding never leaks into the pooling
    np.testing.assert_allclose(tiny_encoder.encode_docs(texts, batch_size=7), full, atol=1e-5, rtol=0)
    assert tiny_encoder.encode_docs([]).shape == (0, tiny_encoder.dim)


def test_cls_pooling_without_normalisation_matches_the_model(texts):
    cfg = tiny_cfg("retriever.pooling=cls", "retriever.normalize=false").retriever
    enc = R.Encoder("tiny-encoder", cfg, device="cpu")
    ours = enc.encode_queries(texts[:5])
    with torch.no_grad():
        feats = enc.tokenizer(texts[:5], padding=True, truncation=True, max_length=cfg.max_length,
                              return_tensors="pt")
        ref = enc.model(**feats).last_hidden_state[:, 0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)
    ref_st = _st_reference(enc.path, cfg.max_length, pooling="cls", normalize=False).encode(texts[:5])
    np.testing.assert_allclose(ours, ref_st, atol=1e-4, rtol=0)


def test_count_tokens_has_no_special_tokens_and_no_truncation(tiny_encoder, texts):
    counts = tiny_encoder.count_tokens(texts)
    assert counts[-3:] == [0, 1, 400]  # "", "lift", "boundary layer " * 200 (past max_length 64)
    assert counts[0] == len(tiny_encoder.tokenizer.tokenize(texts[0]))
    assert tiny_encoder.count_tokens([]) == []


def test_save_reloads_identically_and_loads_in_sentence_transformers(tmp_path, texts):
    from sentence_transformers import SentenceTransformer

    cfg = tiny_cfg("retriever.query_prefix='query: '", "retriever.pooling=cls").retriever
    enc = R.Encoder("tiny-encoder", cfg, device="cpu")
    saved = enc.save(tmp_path / "enc")
    meta = json.loads((Path(saved) / R.ENCODER_META).read_text())
    assert meta["pooling"] == "cls" and meta["query_prefix"] == "query: " and meta["max_length"] == 64
    again = R.Encoder(saved, tiny_cfg().retriever, device="cpu")  # the saved settings win over the defaults
    assert (again.pooling, again.query_prefix) == ("cls", "query: ")
    np.testing.assert_array_equal(again.encode_queries(texts[:6]), enc.encode_queries(texts[:6]))
    st = SentenceTransformer(saved, device="cpu")
    np.testing.assert_allclose(st.encode(texts[:6], prompt_name="query"), enc.encode_queries(texts[:6]),
                               atol=1e-4, rtol=0)
    np.testing.assert_allclose(st.encode(texts[:6]), enc.encode_docs(texts[:6]), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_encode_matches_sentence_transformers_minilm(texts):
    from sentence_transformers import SentenceTransformer

    enc = R.Encoder("all-minilm-l6-v2", load_config(None).retriever, device="cpu")
    ours = enc.encode_docs(texts, batch_size=16)
    ref = SentenceTransformer(enc.path, device="cpu").encode(texts, batch_size=16, convert_to_numpy=True)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------------ loss and data


def test_info_nce_is_cross_entropy_over_cosine_with_exclusions():
    g = torch.Generator().manual_seed(0)
    q, d = torch.randn(3, 8, generator=g), torch.randn(5, 8, generator=g)
    pos = torch.tensor([0, 1, 2])
    cos = torch.nn.functional.cosine_similarity(q[:, None], d[None], dim=-1) / 0.05
    expected = -torch.log_softmax(cos, dim=1)[torch.arange(3), pos].mean()
    torch.testing.assert_close(R.info_nce(q, d, pos, 0.05), expected)
    exclude = torch.zeros(3, 5, dtype=torch.bool)
    exclude[0, 4] = True  # column 4 is another positive of query 0: not a negative
    cos[0, 4] = float("-inf")
    expected = -torch.log_softmax(cos, dim=1)[torch.arange(3), pos].mean()
    torch.testing.assert_close(R.info_nce(q, d, pos, 0.05, exclude), expected)


def test_info_nce_is_mnrl_but_for_the_false_negative_mask(tiny_encoder):
    """Issue #14: our loss IS sentence-transformers' MultipleNegativesRankingLoss (scale = 1 / temperature,
    pairs + one hard negative per query) until a column is excluded; that mask is the only difference."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    mnrl = MultipleNegativesRankingLoss(_st_reference(tiny_encoder.path, tiny_encoder.max_length), scale=1 / 0.05)
    g = torch.Generator().manual_seed(0)
    q, d_pos, d_neg = (torch.randn(4, 8, generator=g) for _ in range(3))
    d_pos[2] = q[0] + 0.3 * torch.randn(8, generator=g)  # query 2's positive is also relevant to query 0
    theirs = mnrl.compute_loss_from_embeddings([q, d_pos, d_neg], None)
    pos = torch.arange(4)
    ours = R.info_nce(q, torch.cat([d_pos, d_neg]), pos, 0.05)
    torch.testing.assert_close(ours, theirs)
    exclude = torch.zeros(4, 8, dtype=torch.bool)
    exclude[0, 2] = True  # ...so it is a false negative for query 0, which our loop masks
    masked = R.info_nce(q, torch.cat([d_pos, d_neg]), pos, 0.05, exclude)
    assert masked < theirs - 1e-4  # MNRL keeps the column in query 0's softmax denominator
    logits = mnrl.similarity_fct(q, torch.cat([d_pos, d_neg])) * mnrl.scale  # MNRL's own logits, masked by hand
    torch.testing.assert_close(masked, torch.nn.functional.cross_entropy(logits.masked_fill(exclude, -torch.inf), pos))


def _toy_ds() -> BeirDataset:
    corpus = {d: {"title": f"t{d}", "text": f"text {d}"} for d in ("a", "b", "c", "d")}
    qrels = {"train": {"q1": {"a": 2, "b": 0}, "q2": {"c": 1, "d": 3}}}
    return BeirDataset(corpus=corpus, queries={"q1": "one", "q2": "two"}, qrels=qrels, path="toy")


def test_load_texts_and_training_pairs(tmp_path):
    ds = _toy_ds()
    full = R.load_texts(ds, None)
    assert full["a"] == "ta. text a"
    assert R.training_pairs(ds, "train", full) == [("one", "ta. text a"), ("two", "tc. text c"),
                                                   ("two", "td. text d")]  # score 0 is not a positive
    summaries = tmp_path / "summaries.jsonl"
    summaries.write_text("\n".join(json.dumps({"_id": d, "summary": f"sum {d}", "n_tokens": 2})
                                   for d in ("a", "c", "zzz")) + "\n")
    with pytest.raises(DataError, match=r"2 of 4 corpus documents have no summary \(e.g. \['b', 'd'\]\)"):
        R.load_texts(ds, summaries)  # the one policy of every summaries reader (resume.run_dir.corpus_summaries)
    summaries.write_text("\n".join(json.dumps({"_id": d, "summary": f"sum {d}", "n_tokens": 2})
                                   for d in ("a", "b", "c", "d", "zzz")) + "\n")
    texts = R.load_texts(ds, summaries)
    assert texts == {"a": "sum a", "b": "sum b", "c": "sum c", "d": "sum d"}  # unknown ids ignored
    assert R.training_pairs(ds, "train", texts) == [("one", "sum a"), ("two", "sum c"), ("two", "sum d")]
    with pytest.raises(DataError, match="no qrels for split"):
        R.training_pairs(ds, "dev", texts)
    summaries.write_text('{"_id": "a", "summary": null}\n')
    with pytest.raises(DataError, match=r"summaries.jsonl:1: \"summary\" is NoneType"):
        R.load_texts(ds, summaries)
    summaries.write_text('{"_id": "a", "summary": "x"}\nnot json\n')
    with pytest.raises(DataError, match="not valid JSON Lines"):
        R.load_texts(ds, summaries)
    with pytest.raises(DataError, match="summaries file not found"):
        R.load_texts(ds, tmp_path / "missing.jsonl")


def test_both_views_pair_each_judgement_with_its_summary_and_its_document(tmp_path):
    """finetune.views: both (issue #11): every positive judgement gives a summary pair and a document pair."""
    ds = _toy_ds()
    summaries = tmp_path / "summaries.jsonl"
    summaries.write_text("\n".join(json.dumps({"_id": d, "summary": f"sum {d}"}) for d in "abcd") + "\n")
    texts = R.load_texts(ds, summaries, "both")
    assert texts["a"] == "sum a" and texts["a" + R.DOC_VIEW] == "ta. text a" and len(texts) == 8
    assert R.training_pairs(ds, "train", texts) == [
        ("one", "sum a"), ("one", "ta. text a"), ("two", "sum c"), ("two", "tc. text c"),
        ("two", "sum d"), ("two", "td. text d")]
    assert R.load_texts(ds, None, "both") == R.load_texts(ds, None)  # full documents: one view only
    with pytest.raises(ValueError, match="views"):
        R.load_texts(ds, summaries, "docs")


def test_finetune_on_both_views_trains_on_both(tmp_path):
    """The both-view round sees twice the pairs, and both views of a query's positive are kept out of its
    negatives (the summary of a relevant document is not a negative for its document pair)."""
    from resume.data import load_beir, select_working_set

    kw = {"data_dir": DATA, "split": "train", "init_model": "tiny-encoder"}
    ds = select_working_set(load_beir(DATA), tiny_cfg().data)
    summaries = tmp_path / "summaries.jsonl"
    summaries.write_text("\n".join(json.dumps({"_id": d, "summary": f"summary of {d}"}) for d in ds.corpus) + "\n")
    one = R.finetune_retriever(tiny_cfg("finetune.max_steps=2"), texts=str(summaries), out_dir=tmp_path / "one", **kw)
    two = R.finetune_retriever(tiny_cfg("finetune.max_steps=2", "finetune.views=both"), texts=str(summaries),
                               out_dir=tmp_path / "two", **kw)
    n_one = json.loads((tmp_path / "one" / R.TRAIN_STATE).read_text())["pairs"]
    n_two = json.loads((tmp_path / "two" / R.TRAIN_STATE).read_text())["pairs"]
    assert n_one > 0 and n_two == 2 * n_one
    with pytest.raises(AssertionError):
        _assert_same_weights(one, two)
    run = R.train._Run(tiny_cfg("finetune.views=both"), data_dir=DATA, split="train", init_path="unused",
                       texts_path=str(summaries), out_dir=tmp_path / "run")
    for qid, keys in run.positives.items():
        docs = {k.split(R.DOC_VIEW)[0] for k in keys}
        assert keys == docs | {d + R.DOC_VIEW for d in docs}  # both views of every positive
        assert {run.tid[k] for k in keys} == run.pos_tids[qid]


# ---------------------------------------------------------------------------------------- fine-tuning


def _state(model_dir: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(model_dir) / "model.safetensors"))


def _assert_same_weights(a: str | Path, b: str | Path) -> None:
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs"


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / R.TRAIN_LOG).read_text().splitlines()]


def test_finetune_in_process_resumes_bit_identically(tmp_path, monkeypatch):
    """nproc 1, with hard negatives: a run that dies after step 3 (checkpoint at 2) resumes to the same weights."""
    cfg = tiny_cfg("finetune.max_steps=5", "finetune.checkpoint_steps=2", "finetune.hard_negatives=1")
    kw = {"data_dir": DATA, "split": "train", "init_model": "tiny-encoder"}
    ref = R.finetune_retriever(cfg, out_dir=tmp_path / "ref", **kw)

    def die(step: int) -> None:
        if step == 3:
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(R.train, "_after_step", die)
    out = tmp_path / "crash"
    with pytest.raises(KeyboardInterrupt):
        R.finetune_retriever(cfg, out_dir=out, **kw)
    assert [p.name for p in (out / R.CHECKPOINTS).iterdir()] == ["step_2"]
    assert not (out / "model").exists() and len(_log(out)) == 3
    monkeypatch.setattr(R.train, "_after_step", lambda step: None)
    got = R.finetune_retriever(cfg, out_dir=out, **kw)
    _assert_same_weights(ref, got)
    assert _log(out) == _log(tmp_path / "ref")
    assert not (out / R.CHECKPOINTS).exists()
    state = json.loads((out / R.TRAIN_STATE).read_text())
    assert state["completed"] and state["steps"] == 5 and state["world_size"] == 1

    negatives = json.loads((out / "hard_negatives.json").read_text())
    pairs = _train_pairs()
    assert set(negatives) == {q for q, _ in pairs}
    for qid, negs in negatives.items():
        assert len(negs) == 1 and not set(negs) & {d for q, d in pairs if q == qid}  # never a positive

    before = (out / "model" / "model.safetensors").stat().st_mtime_ns
    assert R.finetune_retriever(cfg, out_dir=out, **kw) == got  # finished: returns without training again
    assert (out / "model" / "model.safetensors").stat().st_mtime_ns == before
    with pytest.raises(ResumeError, match="other settings"):
        R.finetune_retriever(tiny_cfg("finetune.max_steps=4"), out_dir=out, **kw)


def _train_pairs() -> list[tuple[str, str]]:
    from resume.data import load_beir, select_working_set

    ds = select_working_set(load_beir(DATA), tiny_cfg().data)
    return R._pair_ids(ds, "train", R.load_texts(ds, None))


DDP_STEPS = ("finetune.nproc=2", "finetune.max_steps=10", "finetune.checkpoint_steps=2")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    """One uninterrupted 2-rank torchrun fine-tuning (gloo, CPU) shared by the tests below."""
    out = tmp_path_factory.mktemp("ddp") / "ft"
    R.finetune_retriever(tiny_cfg(*DDP_STEPS), data_dir=DATA, split="train", init_model="tiny-encoder",
                         out_dir=out)
    return out


def test_finetune_under_torchrun_two_ranks(ddp_run):
    from resume.models import resolve_model

    state = json.loads((ddp_run / R.TRAIN_STATE).read_text())
    assert state["completed"] and state["world_size"] == 2 and state["steps"] == 10
    hashes = state["param_sha256_per_rank"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]  # DDP kept the ranks in lockstep
    loss = state["fixed_batch_loss"]
    assert loss["after"] < loss["before"] - 0.1, loss  # it learned
    assert [r["step"] for r in _log(ddp_run)] == list(range(1, 11))
    init, final = _state(Path(resolve_model("tiny-encoder"))), _state(ddp_run / "model")
    changed = [k for k in final if not torch.equal(final[k], init[k])]
    assert len(changed) >= len(final) - 2, "most parameters should have moved"
    assert not (ddp_run / R.CHECKPOINTS).exists()
    enc = R.Encoder(str(ddp_run / "model"), tiny_cfg().retriever, device="cpu")
    assert R._params_sha256(enc.model) == hashes[0]  # the saved model is what the ranks held


@pytest.mark.slow
def test_torchrun_run_killed_after_a_checkpoint_resumes_to_the_same_weights(ddp_run, tmp_path):
    import psutil

    out = tmp_path / "ft"
    cfg = tiny_cfg(*DDP_STEPS)
    kw = {"data_dir": DATA, "split": "train", "init_model": "tiny-encoder", "out_dir": out}
    errors: list[BaseException] = []

    def launch() -> None:
        try:
            R.finetune_retriever(cfg, **kw)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    thread = threading.Thread(target=launch)
    thread.start()
    deadline = time.time() + 240
    while time.time() < deadline and thread.is_alive() and R._latest_checkpoint(out / R.CHECKPOINTS) is None:
        time.sleep(0.01)
    assert thread.is_alive(), f"run ended before a checkpoint could be seen: {errors}"
    for p in psutil.Process().children(recursive=True):  # torchrun and its two workers: kill -9 each
        p.kill()
    thread.join(60)
    assert errors and isinstance(errors[0], ResumeError), errors
    assert not (out / R.TRAIN_STATE).exists() and R._latest_checkpoint(out / R.CHECKPOINTS) is not None

    R.finetune_retriever(cfg, **kw)  # the rerun resumes from the newest checkpoint
    _assert_same_weights(ddp_run / "model", out / "model")
    assert _log(out) == _log(ddp_run)


@pytest.mark.slow
def test_torchrun_worker_error_becomes_one_resume_error(tmp_path):
    with pytest.raises(ResumeError, match="no qrels for split 'nosuch'") as e:
        R.finetune_retriever(tiny_cfg("finetune.nproc=2"), data_dir=DATA, split="nosuch",
                             init_model="tiny-encoder", out_dir=tmp_path / "ft")
    assert "\n" not in str(e.value) and "Traceback" not in str(e.value)


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_retriever_finetune(tmp_path, capsys):
    args = ["retriever-finetune", "--config", str(TINY), "--data", str(DATA), "--set", "finetune.max_steps=1"]
    assert cli_main(args + ["--out", str(tmp_path / "ft")]) == 0
    assert capsys.readouterr().out.strip().endswith(str(tmp_path / "ft" / "model"))
    assert cli_main(args + ["--out", str(tmp_path / "x"), "--texts", str(tmp_path / "nope.jsonl")]) == 2
    assert "error: " in capsys.readouterr().err
    summaries = tmp_path / "summaries.jsonl"  # fine-tuning on summaries instead of full documents
    summaries.write_text("".join(json.dumps({"_id": d["_id"], "summary": " ".join(d["text"].split()[:12])}) + "\n"
                                 for d in read_corpus(DATA / "corpus.jsonl")))
    assert cli_main(args + ["--out", str(tmp_path / "s"), "--texts", str(summaries)]) == 0
    assert json.loads((tmp_path / "s" / R.TRAIN_STATE).read_text())["signature"]["texts"] == str(summaries)
