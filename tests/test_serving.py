"""Serving: the retriever bundle, real `resume serve` processes (kserve ModelServer) on free loopback ports,
the MLflow registry by alias, the micro-batcher, and the summarizer predictor.

    .venv/bin/pytest tests/test_serving.py -x -q
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from resume.config import load_config
from resume.serving.bundle import build_retriever_bundle, bundle_from_run_dir, load_bundle, read_bundle_meta
from resume.serving.process import ServerProcess, free_port, wait_http

N_DOCS = 40
MAX_K = 20
MAX_BODY = 20_000
NAME = "resume-retriever"


def _doc_text(d: dict) -> str:
    return f"{d['title']}. {d['text']}".strip() if d.get("title") else d["text"].strip()


@pytest.fixture(scope="module")
def texts(cranfield_dir) -> dict[str, str]:
    out = {}
    with open(cranfield_dir / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            out[d["_id"]] = _doc_text(d)[:600]
            if len(out) == N_DOCS:
                break
    return out


@pytest.fixture(scope="module")
def queries(cranfield_dir) -> list[str]:
    with open(cranfield_dir / "queries.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line, _ in zip(f, range(6))]


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, texts) -> Path:
    cfg = load_config(None, ["retriever.model=tiny-encoder", "retriever.max_length=64"])
    return build_retriever_bundle(tmp_path_factory.mktemp("bundle") / "bundle", retriever="tiny-encoder", texts=texts,
                                  cfg=cfg, device="cpu")


@pytest.fixture(scope="module")
def library(bundle_dir):
    """The same bundle loaded in the test process: the reference ranking."""
    return load_bundle(bundle_dir, device="cpu")


@pytest.fixture(scope="module")
def server(bundle_dir):
    """The default service (no --allow-add, no model repository), gRPC on 127.0.0.1 too."""
    srv = ServerProcess(["serve", "retriever", "--model", str(bundle_dir), "--device", "cpu", "--max-k", str(MAX_K),
                         "--max-body-bytes", str(MAX_BODY), "--no-access-log"], grpc=True)
    with srv:
        yield srv


def _lib_search(library, qs: list[str], k: int) -> list[list[tuple[str, float]]]:
    return library.index.search(library.encoder.encode_queries(qs), k)


def _predict(url: str, body, **kw) -> httpx.Response:
    return httpx.post(f"{url}/v1/models/{NAME}:predict", json=body, timeout=30, **kw)


# ------------------------------------------------------------------------------------------- bundle


def test_bundle_format(bundle_dir, texts):
    meta = read_bundle_meta(bundle_dir)
    assert meta["format"] == "resume-retriever-bundle" and meta["format_version"] == 1
    assert meta["n_docs"] == N_DOCS and meta["dim"] == 32 and meta["index"]["kind"] == "flat"
    assert meta["retriever"]["max_length"] == 64 and meta["retriever"]["pooling"] == "mean"
    assert (bundle_dir / "retriever" / "config.json").is_file()
    assert (bundle_dir / "index" / "index.faiss").is_file()
    rows = [json.loads(x) for x in (bundle_dir / "docs.jsonl").read_text().splitlines()]
    ids = json.loads((bundle_dir / "index" / "ids.json").read_text())["ids"]
    assert [r["_id"] for r in rows] == ids == list(texts)
    assert all(r["summary"] == texts[r["_id"]] for r in rows)
    # no temporary directories left next to it
    assert [p.name for p in bundle_dir.parent.iterdir()] == ["bundle"]


def test_bundle_index_follows_every_index_setting(tmp_path, texts):
    """The served index is built with the evaluate config's own settings (as `evaluate` builds it): `index:
    auto` switches to IVF at `auto_min_docs`, not at the library's default threshold."""
    import faiss

    cfg = load_config(None, ["retriever.model=tiny-encoder", "retriever.max_length=64", "evaluate.index=auto",
                             f"evaluate.auto_min_docs={len(texts)}"])
    out = build_retriever_bundle(tmp_path / "b", retriever="tiny-encoder", texts=texts, cfg=cfg, device="cpu")
    index = load_bundle(out, device="cpu").index.index
    assert isinstance(faiss.downcast_index(index), faiss.IndexIVFFlat), type(index)


def test_bundle_from_run_dir_and_bad_input(tmp_path, bundle_dir, texts):
    from resume.errors import DataError, ModelError
    from resume.serving.loading import resolve_retriever_source

    run = tmp_path / "run"
    it = run / "iter_02"
    (it / "retriever").mkdir(parents=True)
    import shutil

    shutil.copytree(bundle_dir / "retriever", it / "retriever" / "model")  # finetune layout: retriever/model/
    (run / "iter_01").mkdir()  # an older, unfinished iteration is skipped
    rows = [{"_id": k, "summary": v[:80], "completion": "x", "n_tokens": 3} for k, v in list(texts.items())[:10]]
    (it / "summaries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = bundle_from_run_dir(run, tmp_path / "b", cfg=load_config(None, ["retriever.max_length=64"]))
    meta = read_bundle_meta(out)
    assert meta["n_docs"] == 10 and meta["source"]["summaries"].endswith("iter_02/summaries.jsonl")
    # registry artifacts (pyfunc layout: <model>/artifacts/bundle/) are searched for the bundle
    nested = tmp_path / "dl" / "artifacts"
    nested.mkdir(parents=True)
    shutil.copytree(out, nested / "bundle")
    assert resolve_retriever_source(tmp_path / "dl") == nested / "bundle"
    with pytest.raises(ModelError, match="neither a retriever bundle"):  # no wide search of local dirs
        resolve_retriever_source(tmp_path)
    with pytest.raises(ModelError, match="neither a retriever bundle"):
        resolve_retriever_source(tmp_path / "dl" / "artifacts" / "bundle" / "index")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "1", "summary": "a"}\n\n{"_id": "2", "summary": 3}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:3: \"summary\" is int; expected a string"):
        build_retriever_bundle(tmp_path / "nope", retriever=str(bundle_dir / "retriever"), texts=bad)
    assert not (tmp_path / "nope").exists()


def test_bundle_reads_summaries_as_evaluate_does(tmp_path, bundle_dir, cranfield_dir):
    """serving's bundle path reads summaries.jsonl through the run directory's one reader: a bad row is the
    same DataError (file and line) as `resume evaluate` gives for that file, and a repeated id is indexed
    with its last row, as evaluate indexes it."""
    import shutil

    from resume.errors import DataError
    from resume.evaluate import evaluate_retrieval

    run = tmp_path / "run"
    shutil.copytree(bundle_dir / "retriever", run / "iter_01" / "retriever")
    summaries = run / "iter_01" / "summaries.jsonl"
    cfg = load_config(None, ["retriever.model=tiny-encoder", "retriever.max_length=64", "device=cpu"])
    for bad_row, line in (('{"_id": "3", "summary": null}', 4), ('{"_id": "3", "summary": "x"', 4),
                          ('{"summary": "no id"}', 4)):
        summaries.write_text('{"_id": "1", "summary": "a"}\n\n{"_id": "2", "summary": "b"}\n' + bad_row + "\n")
        errors = []
        for build in (lambda: bundle_from_run_dir(run, tmp_path / "b", cfg=cfg),
                      lambda: build_retriever_bundle(tmp_path / "b", retriever=str(bundle_dir / "retriever"),
                                                     texts=summaries, cfg=cfg),
                      lambda: evaluate_retrieval(cfg, data_dir=cranfield_dir, split="test", retriever="unused",
                                                 texts=summaries, out_dir=tmp_path / "eval", encoder=object())):
            with pytest.raises(DataError) as e:
                build()
            errors.append((e.value.path, e.value.line, str(e.value)))
        assert errors[0] == errors[1] == errors[2], errors
        assert errors[0][:2] == (str(summaries), line) and str(errors[0][2]).startswith(f"{summaries}:{line}: ")
        assert not (tmp_path / "b").exists() and not (tmp_path / "eval").exists()
    summaries.write_text('{"_id": "1", "summary": "first"}\n{"_id": "2", "summary": "b"}\n'
                         '{"_id": "1", "summary": "last"}\n')
    out = bundle_from_run_dir(run, tmp_path / "b", cfg=cfg)
    rows = [json.loads(x) for x in (out / "docs.jsonl").read_text().splitlines()]
    assert rows == [{"_id": "1", "summary": "last"}, {"_id": "2", "summary": "b"}]


# -------------------------------------------------------------------------------------- micro-batcher


def _times_ten(calls: list[list[int]], error: Exception, delay: float = 0.0):
    """A batch function for `MicroBatcher`: records each batch in `calls`, raises `error` for a batch that
    holds -1, else returns i * 10 per item (after `delay` seconds)."""

    def fn(items):
        calls.append(list(items))
        if -1 in items:
            raise error
        time.sleep(delay)
        return [i * 10 for i in items]

    return fn


def test_micro_batcher_batches_and_survives_errors():
    from resume.serving.batching import MicroBatcher

    calls: list[list[int]] = []
    fn = _times_ten(calls, ValueError("boom"), delay=0.01)

    async def main(max_bs):
        b = MicroBatcher(fn, max_batch_size=max_bs, max_wait_ms=5)
        res = await asyncio.gather(*(b.submit(i) for i in range(20)))
        with pytest.raises(ValueError, match="boom"):
            await b.submit(-1)
        after = await b.submit(7)  # the worker keeps going after a failed batch
        b.close()
        return res, after, b

    res, after, b = asyncio.run(main(8))
    assert res == [i * 10 for i in range(20)] and after == 70
    assert max(len(c) for c in calls) == 8 and b.mean_batch_size > 1
    calls.clear()
    res, _, b = asyncio.run(main(1))
    assert res == [i * 10 for i in range(20)] and all(len(c) == 1 for c in calls)


def test_micro_batcher_one_bad_item_fails_alone():
    """A batch that fails is retried item by item: only the item that fails by itself gets the error."""
    from resume.serving.batching import MicroBatcher

    calls: list[list[int]] = []
    fn = _times_ten(calls, TypeError("bad item"))

    async def main():
        b = MicroBatcher(fn, max_batch_size=8, max_wait_ms=20)
        res = await asyncio.gather(*(b.submit(i) for i in [1, 2, -1, 3]), return_exceptions=True)
        b.close()
        return res

    res = asyncio.run(main())
    assert res[:2] == [10, 20] and res[3] == 30, res
    assert isinstance(res[2], TypeError) and "bad item" in str(res[2])
    assert calls == [[1, 2, -1, 3], [1], [2], [-1], [3]]  # one batch, then each item alone


def test_micro_batcher_waits_only_as_the_load_asks():
    """A lone request goes at once (no `max_wait_ms`); after a batch of 4, a batch waits for 4 and leaves
    as soon as they are in (well before `max_wait_ms`), or with fewer at `max_wait_ms`."""
    from resume.serving.batching import MicroBatcher

    calls: list[list[int]] = []
    fn = _times_ten(calls, ValueError("unused"))

    async def main():
        b = MicroBatcher(fn, max_batch_size=8, max_wait_ms=400)
        loop = asyncio.get_running_loop()
        t = loop.time()
        assert await b.submit(1) == 10
        lone = loop.time() - t
        assert await asyncio.gather(*(b.submit(i) for i in range(4))) == [0, 10, 20, 30]  # queued together

        async def late(i: int, delay: float) -> int:
            await asyncio.sleep(delay)
            return await b.submit(i)

        t = loop.time()
        wave = await asyncio.gather(late(5, 0.0), late(6, 0.0), late(7, 0.05), late(8, 0.1))
        waited = loop.time() - t
        t = loop.time()
        await b.submit(9)  # the load of late is 4: this one waits for company until max_wait_ms
        alone = loop.time() - t
        b.close()
        return lone, wave, waited, alone

    lone, wave, waited, alone = asyncio.run(main())
    assert lone < 0.2, lone                            # no wait for a lone request
    assert wave == [50, 60, 70, 80] and calls[2] == [5, 6, 7, 8], calls  # one batch for the whole wave
    assert 0.09 < waited < 0.35, waited                # left when the 4th came, not at max_wait_ms
    assert 0.35 < alone and calls[3] == [9], (alone, calls)  # waited max_wait_ms, then went alone


def test_serving_dtype_override(bundle_dir, library, queries):
    """`--dtype` reaches the encoder (queries only: the index is the bundle's), and a bad value fails before
    anything loads, naming the accepted values."""
    import torch

    from resume.errors import ConfigError
    from resume.serving.server import build_models

    with pytest.raises(ConfigError, match="'auto', 'native', 'float32', 'bfloat16', 'float16'"):
        build_models("retriever", model=str(bundle_dir / "nope"), dtype="int8")
    m, _ = build_models("retriever", model=str(bundle_dir), device="cpu", allow_add=False, dtype="bfloat16")
    try:
        assert next(m.bundle.encoder.model.parameters()).dtype == torch.bfloat16
        assert next(library.encoder.model.parameters()).dtype == torch.float32  # the bundle's own default
        emb = m.bundle.encoder.encode_queries(queries)
        assert emb.dtype == np.float32 and emb.shape == (len(queries), library.index.dim)
        assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-3)
        assert np.abs(emb - library.encoder.encode_queries(queries)).max() < 0.05  # bf16 rounding, same model
    finally:
        m.stop()


def test_no_access_log_drops_kserve_timing_middleware(monkeypatch):
    """Without the access log, kserve's TimingMiddleware (whose only output is the kserve.trace log) is left
    out of the app; with it, kserve's middlewares are added as before. The host override still applies."""
    import fastapi
    import kserve.model_server as ms
    from timing_asgi import TimingMiddleware

    from resume.serving.server import _customise_rest_server

    kserve_cls = ms.RESTServer
    monkeypatch.setattr(ms, "RESTServer", kserve_cls)  # restored after the test

    def middlewares(timing: bool) -> list:
        _customise_rest_server(host="127.0.0.1", timing=timing)
        assert ms.RESTServer.__mro__[1] is kserve_cls  # one subclass of kserve's class, however often it runs
        server = object.__new__(ms.RESTServer)
        server.access_log_format = None
        app = fastapi.FastAPI()
        server._add_middlewares(app)
        assert "add_middleware" not in vars(app)  # the temporary filter is gone
        return [m.cls for m in app.user_middleware]

    assert TimingMiddleware in middlewares(timing=True)
    assert TimingMiddleware not in middlewares(timing=False)


# ------------------------------------------------------------------------------------ real server: v1/v2


def test_server_ranking_matches_library(server, library, queries):
    import kserve

    k = 5
    expected = _lib_search(library, queries, k)
    # raw HTTP, v1 (objects and bare strings)
    r = _predict(server.url, {"instances": [{"query": q, "k": k} for q in queries[:3]] + queries[3:]})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    for q, p, exp in zip(queries, preds, expected):
        kk = k if q in queries[:3] else 10
        assert p["doc_ids"][:k] == [d for d, _ in exp], q
        assert np.allclose(p["scores"][:k], [s for _, s in exp], atol=1e-5)
        assert len(p["doc_ids"]) == kk and p["summaries"][0] == library.texts[library.index.ids.index(p["doc_ids"][0])]

    async def with_kserve_client():
        v1 = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v1", retries=0, timeout=30))
        v2 = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v2", retries=0, timeout=30))
        r1 = await v1.infer(server.url, {"instances": [{"query": queries[0], "k": k}]}, model_name=NAME)
        req = kserve.InferRequest(model_name=NAME, infer_inputs=[
            kserve.InferInput("query", [len(queries)], "BYTES", list(queries))], parameters={"k": k})
        r2 = await v2.infer(server.url, req, model_name=NAME)
        return r1, r2

    r1, r2 = asyncio.run(with_kserve_client())
    assert r1["predictions"][0]["doc_ids"] == [d for d, _ in expected[0]]
    ids = r2.get_output_by_name("doc_ids")
    assert ids.shape == [len(queries), k]
    got = [[x.decode() if isinstance(x, bytes) else x for x in row] for row in ids.as_numpy().tolist()]
    assert got == [[d for d, _ in exp] for exp in expected]
    assert np.allclose(r2.get_output_by_name("scores").as_numpy(), [[s for _, s in e] for e in expected], atol=1e-5)
    # readiness and metadata endpoints of kserve
    assert httpx.get(f"{server.url}/v1/models/{NAME}").json()["ready"] is True
    assert httpx.get(f"{server.url}/v2/models/{NAME}/ready").status_code == 200


def test_server_concurrent_requests_are_batched(server, library, queries):
    expected = [[d for d, _ in row] for row in _lib_search(library, queries, 3)]

    async def burst():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
            rs = await asyncio.gather(*(c.post(f"/v1/models/{NAME}:predict",
                                               json={"instances": [{"query": queries[i % len(queries)], "k": 3}]})
                                        for i in range(24)))
            return [r.json()["predictions"][0]["doc_ids"] for r in rs]

    got = asyncio.run(burst())
    assert got == [expected[i % len(queries)] for i in range(24)]
    # one request with many instances is one micro-batch: the batch-size histogram shows a batch > 1
    assert _predict(server.url, {"instances": [{"query": q, "k": 3} for q in queries * 3]}).status_code == 200
    metrics = httpx.get(f"{server.url}/metrics").text
    counts = {line.split('le="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line.startswith("resume_batch_size_bucket") and "resume-retriever-batcher" in line}
    assert counts["+Inf"] > counts["1.0"], counts  # at least one batch with more than one query


def test_server_embed_model(server, library, queries):
    """`<name>-embed` returns the vectors the search uses (the library's own query embeddings), in v1 and
    v2, and rejects what is not a query with 400 naming the instance."""
    url = f"{server.url}/v1/models/{NAME}-embed:predict"
    expected = library.encoder.encode_queries(queries)
    r = httpx.post(url, json={"instances": [{"query": q} for q in queries[:3]] + queries[3:]}, timeout=30)
    assert r.status_code == 200, r.text
    got = np.array(r.json()["predictions"], np.float32)
    assert got.shape == (len(queries), library.index.dim)
    assert np.allclose(got, expected, atol=1e-5)
    assert len(r.content) < 16 * got.size  # float32's shortest form, not float64's 17 digits
    # v2: BYTES query -> FP32 embedding [n, dim]
    r = httpx.post(f"{server.url}/v2/models/{NAME}-embed/infer", timeout=30, json={"inputs": [
        {"name": "query", "datatype": "BYTES", "shape": [2], "data": queries[:2]}]})
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    assert out["name"] == "embedding" and out["datatype"] == "FP32" and out["shape"] == [2, library.index.dim]
    assert np.allclose(np.array(out["data"], np.float32).reshape(2, -1), expected[:2], atol=1e-5)
    for body, msg in [({"instances": [{"query": "lift", "k": 3}]}, "instances[0]: unknown field 'k'"),
                      ({"instances": [5]}, "instances[0]: expected a query string"),
                      ({"instances": [{"query": "  "}]}, "instances[0].query: empty query"),
                      ({"instances": [{"text": "lift"}]}, "unknown field 'text'")]:
        r = httpx.post(url, json=body, timeout=30)
        assert r.status_code == 400 and msg in r.json()["error"], (body, r.text)
    assert httpx.get(f"{server.url}/v1/models/{NAME}-embed").json()["ready"] is True


def test_searches_and_embeddings_share_a_micro_batch(bundle_dir, library, queries):
    """Concurrent searches and embedding requests go through one batcher: a batch that mixes both answers
    each as if it were alone (hits for k > 0, the query vector for the embed model)."""
    from resume.serving.retriever import RetrieverModel

    m = RetrieverModel(NAME, str(bundle_dir), device="cpu", max_batch_size=64, max_wait_ms=50)
    m.load()
    emb_model = m.embed_model()

    async def mixed():
        return await asyncio.gather(m.search([(q, 3) for q in queries]),
                                    emb_model.predict({"instances": list(queries)}))

    try:
        hits, emb = asyncio.run(mixed())
        n_batches, n_items = m.batcher.n_batches, m.batcher.n_items
    finally:
        m.stop()
    assert n_items == 2 * len(queries) and n_batches == 1  # one forward pass served both kinds
    assert [[d for d, _, _ in row] for row in hits] == [[d for d, _ in row] for row in _lib_search(library, queries, 3)]
    assert np.allclose(emb["predictions"], library.encoder.encode_queries(queries), atol=1e-5)
    assert emb_model.ready


LONG = "x" * (MAX_BODY + 10)
BAD_V1 = [
    ({"instances": [{"k": 3}]}, 400, "missing field 'query'"),
    ({"instances": [{"query": 5}]}, 400, "instances[0].query: expected a string, got integer"),
    ({"instances": [{"query": ["a"]}]}, 400, "expected a string, got list"),
    ({"instances": [{"query": "   "}]}, 400, "empty query"),
    ({"instances": [{"query": "lift", "k": 0}]}, 400, "instances[0].k: must be an integer in 1..20"),
    ({"instances": [{"query": "lift", "k": -3}]}, 400, "got -3"),
    ({"instances": [{"query": "lift", "k": MAX_K + 1}]}, 400, "must be an integer in 1..20"),
    ({"instances": [{"query": "lift", "k": "5"}]}, 400, "k: expected an integer, got string"),
    ({"instances": [{"query": "lift", "kk": 5}]}, 400, "unknown field 'kk'"),
    ({"instances": "lift"}, 400, "be a list"),  # kserve checks this one itself
    ({"instances": []}, 400, '"instances" is empty'),
    ({"queries": ["lift"]}, 400, 'missing field "instances"'),
    ([1, 2], 400, "must be a JSON object"),
    ({"instances": [LONG]}, 413, f"the limit is {MAX_BODY} bytes"),
]


@pytest.mark.parametrize("body,status,message", BAD_V1, ids=[m[:30] for _, _, m in BAD_V1])
def test_server_bad_v1_requests(server, body, status, message):
    r = _predict(server.url, body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_server_bad_requests_other(server, queries):
    url = server.url
    # invalid JSON, with and without a JSON content type
    r = httpx.post(f"{url}/v1/models/{NAME}:predict", content=b'{"instances": [', timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "Unrecognized request format" in r.json()["error"]
    r = httpx.post(f"{url}/v1/models/{NAME}:predict", content=b"{not json", timeout=30,
                   headers={"content-type": "text/plain"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = httpx.post(f"{url}/v2/models/{NAME}/infer", content=b"{not json", timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON decode error" in r.text
    # unknown model name, v1 and v2
    r = httpx.post(f"{url}/v1/models/nope:predict", json={"instances": ["lift"]}, timeout=30)
    assert r.status_code == 404 and "nope does not exist" in r.json()["error"]
    r = httpx.post(f"{url}/v2/models/nope/infer", timeout=30,
                   json={"inputs": [{"name": "query", "datatype": "BYTES", "shape": [1], "data": ["x"]}]})
    assert r.status_code == 404
    # v2: wrong datatype, unknown input, missing input, bad k, empty query, oversized chunked body

    def v2(inputs, **params):
        return httpx.post(f"{url}/v2/models/{NAME}/infer", json={"inputs": inputs, "parameters": params}, timeout=30)

    q = {"name": "query", "datatype": "BYTES", "shape": [1], "data": ["lift"]}
    for resp, msg in [
        (v2([{**q, "datatype": "INT32", "data": [1]}]), "datatype must be BYTES"),
        (v2([q, {"name": "top", "datatype": "INT32", "shape": [1], "data": [1]}]), "unknown input 'top'"),
        (v2([{"name": "k", "datatype": "INT32", "shape": [1], "data": [3]}]), "missing input 'query'"),
        (v2([q], k=0), "k: must be an integer in 1..20"),
        (v2([q], k=10**6), "must be an integer in 1..20"),
        (v2([{**q, "data": [""]}]), "query[0]: empty query"),
        (v2([{**q, "shape": [2]}]), "does not match"),
    ]:
        assert resp.status_code == 400, resp.text
        assert msg in resp.json()["error"]

    def chunks():
        yield b'{"instances": ["'
        for _ in range(MAX_BODY // 1000 + 1):
            yield b"y" * 1000
        yield b'"]}'

    r = httpx.post(f"{url}/v1/models/{NAME}:predict", content=chunks(), timeout=30)
    assert r.status_code == 413
    # the server still answers
    r = _predict(url, {"instances": [{"query": queries[0], "k": 2}]})
    assert r.status_code == 200 and len(r.json()["predictions"][0]["doc_ids"]) == 2


def _grpc_query(pb, name: str, queries: list, k: int = 3):
    """A v2 ModelInferRequest of BYTES queries (str, or raw bytes to send as they are)."""
    return pb.ModelInferRequest(model_name=name, inputs=[pb.ModelInferRequest.InferInputTensor(
        name="query", datatype="BYTES", shape=[len(queries)],
        contents=pb.InferTensorContents(bytes_contents=[q if isinstance(q, bytes) else q.encode() for q in queries]))],
        parameters={"k": pb.InferParameter(int64_param=k)})


SURROGATE_V1 = b'{"instances": [{"query": "\\ud800 x", "k": 3}]}'  # a JSON escape of a lone surrogate
SURROGATE_V2 = b'{"inputs": [{"name": "query", "datatype": "BYTES", "shape": [2], "data": ["lift", "\\ud800 x"]}]}'


def test_one_client_cannot_break_the_server(server, library, queries):
    """Concurrent clients on 127.0.0.1: good v1 / v2 / gRPC queries mixed with every bad kind (lone surrogates
    in v1 and v2, repository unload/load over REST and gRPC, adds without --allow-add, the malformed bodies
    of BAD_V1): no good request fails, every bad one gets a 4xx (gRPC: its client-error code), the model
    stays loaded and live, and the client errors are logged as one line each, with no traceback."""
    import grpc

    expected = {q: [d for d, _ in row] for q, row in zip(queries, _lib_search(library, queries, 3))}
    url, name = server.url, NAME
    json_ct, text_ct = {"content-type": "application/json"}, {"content-type": "text/plain"}
    v2_add = {"inputs": [{"name": "_id", "datatype": "BYTES", "shape": [1], "data": ["../../etc/passwd"]},
                         {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}
    # (method, path, kwargs, expected status)
    bad_http = [
        ("POST", f"/v1/models/{name}:predict", {"content": SURROGATE_V1, "headers": json_ct}, 400),
        ("POST", f"/v1/models/{name}:predict", {"content": SURROGATE_V1, "headers": text_ct}, 400),
        ("POST", f"/v2/models/{name}/infer", {"content": SURROGATE_V2, "headers": json_ct}, 400),
        ("POST", f"/v2/repository/models/{name}/unload", {}, 403),
        ("POST", f"/v2/repository/models/{name}/load", {}, 403),
        ("POST", f"/v1/models/{name}-add:predict", {"json": {"instances": [{"_id": "../../etc/passwd",
                                                                          "text": "x"}]}}, 404),
        ("POST", f"/v2/models/{name}-add/infer", {"json": v2_add}, 404),
        *[("POST", f"/v1/models/{name}:predict", {"json": body}, status) for body, status, _ in BAD_V1],
    ]
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    bad_grpc = [  # (method, request, expected code)
        ("RepositoryModelUnload", pb.RepositoryModelUnloadRequest(model_name=name), grpc.StatusCode.PERMISSION_DENIED),
        ("RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name=name), grpc.StatusCode.PERMISSION_DENIED),
        ("ModelInfer", _grpc_query(pb, name, ["lift", b"\xed\xa0\x80 x"]), grpc.StatusCode.INVALID_ARGUMENT),
        ("ModelInfer", _grpc_query(pb, f"{name}-add", ["x"]), grpc.StatusCode.NOT_FOUND),
    ]
    good: list[tuple[str, bool]] = []
    bad: list[tuple[str, object, object]] = []
    rounds = 6

    async def good_client(c: httpx.AsyncClient, stub, offset: int):
        for i in range(rounds * 4):
            q = queries[(i + offset) % len(queries)]
            kind = ("v1", "v2", "grpc")[(i + offset) % 3]
            try:
                if kind == "v1":
                    r = await c.post(f"/v1/models/{name}:predict", json={"instances": [{"query": q, "k": 3}]})
                    ok = r.status_code == 200 and r.json()["predictions"][0]["doc_ids"] == expected[q]
                elif kind == "v2":
                    r = await c.post(f"/v2/models/{name}/infer", json={"inputs": [
                        {"name": "query", "datatype": "BYTES", "shape": [1], "data": [q]}], "parameters": {"k": 3}})
                    ok = r.status_code == 200 and r.json()["outputs"][0]["data"] == expected[q]
                else:
                    resp = await stub.ModelInfer(_grpc_query(pb, name, [q]), timeout=20)
                    ok = [x.decode() for x in resp.outputs[0].contents.bytes_contents] == expected[q]
            except (httpx.HTTPError, grpc.RpcError) as e:
                ok = False
                kind = f"{kind}: {e!r}"
            good.append((kind, ok))

    async def bad_client(c: httpx.AsyncClient, stub):
        for _ in range(rounds):
            for method, path, kw, status in bad_http:
                try:
                    r = await c.request(method, path, **kw)
                    bad.append((path, status, r.status_code))
                except httpx.HTTPError as e:
                    bad.append((path, status, repr(e)))
            for method, req, code in bad_grpc:
                try:
                    await getattr(stub, method)(req, timeout=20)
                    bad.append((method, code, "OK"))
                except grpc.RpcError as e:
                    bad.append((method, code, e.code()))

    async def main():  # the gRPC channel belongs to this event loop
        async with grpc.aio.insecure_channel(server.grpc_target) as channel, \
                httpx.AsyncClient(base_url=url, timeout=60) as c:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            await asyncio.gather(*(good_client(c, stub, i) for i in range(6)), *(bad_client(c, stub) for _ in range(3)))

    asyncio.run(main())
    failed = [g for g in good if not g[1]]
    assert len(good) == 6 * rounds * 4 and not failed, failed[:5]
    wrong = [b for b in bad if b[1] != b[2]]
    assert len(bad) == 3 * rounds * (len(bad_http) + len(bad_grpc)) and not wrong, wrong[:5]
    # still loaded, ready and live; liveness would say otherwise (see test_run_dir_server_...)
    assert httpx.get(f"{url}/v2/models/{name}/ready").status_code == 200
    assert httpx.get(f"{url}/v2/health/live").json() == {"live": True}
    r = _predict(url, {"instances": [{"query": queries[0], "k": 3}]})
    assert r.status_code == 200 and r.json()["predictions"][0]["doc_ids"] == expected[queries[0]]
    # the messages name the problem
    r = httpx.post(f"{url}/v2/models/{name}/infer", content=SURROGATE_V2, headers=json_ct)
    assert "query[1]: not valid Unicode text: a lone surrogate" in r.json()["error"]
    r = httpx.post(f"{url}/v2/repository/models/{name}/unload")
    assert "--enable-model-repository" in r.json()["error"]
    # client errors: one WARNING line each, no traceback in the log; gRPC listens where --host says
    log = server.log()
    assert f"Starting gRPC server on 127.0.0.1:{server.grpc_port} " in log
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
    assert log.count("-> 400: ") >= 3 * rounds * 3 and "PermissionDenied" in log


def test_run_dir_server_adds_cap_liveness_and_cleanup(tmp_path, bundle_dir):
    """`--allow-add` turns the add model on, with `--max-added-docs` as its cap and ids checked; with
    `--enable-model-repository` an unload is possible, and liveness then fails (the kubelet restarts the
    pod). The run directory's bundle lives in a `resume-bundle-*` temporary directory that is gone once
    the server has stopped."""
    run = _fused_run(tmp_path / "run", bundle_dir)
    tmp = tmp_path / "tmp"  # the server's own temp directory, so other processes' files do not count
    tmp.mkdir()
    with ServerProcess(["serve", "retriever", "--model", str(run), "--device", "cpu", "--no-access-log",
                        "--allow-add", "--max-added-docs", "2", "--enable-model-repository"],
                       env={"TMPDIR": str(tmp)}) as srv:
        assert [p.name.startswith("resume-bundle-") for p in tmp.iterdir()] == [True]  # the start-up bundle
        url = srv.url
        add = f"{url}/v1/models/{NAME}-add:predict"
        text = "magnetohydrodynamic scramjet inlet unstart under ablation"
        r = httpx.post(add, json={"instances": [{"_id": "new-1", "text": text}]}, timeout=30)
        assert r.status_code == 200, r.text
        p = r.json()["predictions"][0]
        assert p["_id"] == "new-1" and p["summary"] == text and p["summarized"] is False and p["n_docs"] == 13
        top = _predict(url, {"instances": [{"query": text, "k": 1}]}).json()["predictions"][0]
        assert top["doc_ids"] == ["new-1"] and top["summaries"] == [text]
        for doc, msg in [({"_id": "new-1", "text": "again"}, "already indexed"),
                         ({"_id": "new-2"}, "missing field 'text'"),
                         ({"_id": "../../etc/passwd", "text": "x"}, "is not a document id"),
                         ({"_id": "a b", "text": "x"}, "no spaces, slashes or control characters"),
                         ({"_id": "ok", "text": "\ud800"}, "lone surrogate")]:
            # ASCII JSON (\ud800 escaped); as text/plain it is parsed by the predictor, whose checks answer
            r = httpx.post(add, content=json.dumps({"instances": [doc]}), timeout=30,
                           headers={"content-type": "text/plain"})
            assert r.status_code == 400 and msg in r.json()["error"], (doc, r.text)
        r = httpx.post(f"{url}/v2/models/{NAME}-add/infer", timeout=30, json={"inputs": [
            {"name": "_id", "datatype": "BYTES", "shape": [1], "data": ["new-3"]},
            {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["cryogenic propellant sloshing"]}]})
        assert r.status_code == 200, r.text
        top = _predict(url, {"instances": [{"query": "cryogenic propellant sloshing", "k": 1}]}).json()
        assert top["predictions"][0]["doc_ids"] == ["new-3"]
        r = httpx.post(add, json={"instances": [{"_id": "new-4", "text": "one too many"}]}, timeout=30)
        assert r.status_code == 400 and "at most 2 added documents (--max-added-docs)" in r.json()["error"]
        # the model repository extension, asked for: an unload works, and liveness reports it
        assert httpx.get(f"{url}/v2/health/live").status_code == 200
        r = httpx.post(f"{url}/v2/repository/models/{NAME}/unload", timeout=30)
        assert r.status_code == 200, r.text
        assert _predict(url, {"instances": ["lift"]}).status_code == 404
        assert httpx.get(f"{url}/v2/health/live").status_code == 503
        assert "WARNING" in srv.log() and "Traceback" not in srv.log().split("unload")[0]
    assert srv.proc.returncode is not None
    assert not list(tmp.iterdir()), list(tmp.iterdir())  # no resume-bundle-* left


def test_failed_start_leaves_no_bundle_directory(tmp_path, bundle_dir, monkeypatch):
    """A run directory whose bundling fails (its encoder cannot be read) leaves no temporary directory,
    whether `resolve_retriever_source` makes it or `RetrieverModel.load` does."""
    import tempfile

    from resume.errors import ResumeError
    from resume.serving.loading import resolve_retriever_source
    from resume.serving.retriever import RetrieverModel

    run = _fused_run(tmp_path / "run", bundle_dir)
    (run / "iter_01" / "retriever" / "model" / "config.json").write_text("{not json")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    with pytest.raises((ResumeError, OSError, ValueError)):
        resolve_retriever_source(run)
    assert not list(tmp.iterdir())
    with pytest.raises((ResumeError, OSError, ValueError)):
        RetrieverModel("r", str(run), device="cpu").load()
    assert not list(tmp.iterdir())


def test_grpc_address_follows_host():
    from resume.serving.server import grpc_address

    assert grpc_address(None, 8081) == "[::]:8081"  # kserve's default: every interface
    assert grpc_address("127.0.0.1", 8081) == "127.0.0.1:8081"
    assert grpc_address("::1", 9) == "[::1]:9" and grpc_address("[::1]", 9) == "[::1]:9"


def test_bundle_paths_stay_inside_the_bundle(tmp_path, bundle_dir):
    import shutil

    from resume.errors import ModelError

    for field, value in [("retriever", {"dir": "../outside"}), ("index", {"dir": "/etc"}), ("docs", "../../x.jsonl")]:
        b = tmp_path / f"b-{field}"
        shutil.copytree(bundle_dir, b)
        meta = json.loads((b / "bundle.json").read_text())
        meta[field] = {**meta[field], **value} if isinstance(value, dict) else value
        (b / "bundle.json").write_text(json.dumps(meta))
        with pytest.raises(ModelError, match="points outside the bundle"):
            load_bundle(b, device="cpu")


# ------------------------------------------------------------------------------------ MLflow registry


@pytest.fixture()
def mlflow_server(tmp_path):
    port = free_port()
    store = tmp_path / "mlflow"
    store.mkdir()
    exe = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen([str(exe), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
                             "--artifacts-destination", str(store / "artifacts"), "--serve-artifacts"],
                            stdout=open(tmp_path / "mlflow.log", "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own process group: uvicorn + job runner children
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=120, proc=proc, log=tmp_path / "mlflow.log")
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_registry_roundtrip_sqlite(bundle_dir, tmp_path, monkeypatch):
    """log_retriever_bundle -> models:/resume-retriever@champion -> the same bundle (no server process)."""
    from resume.errors import ModelError
    from resume.serving.loading import log_retriever_bundle, resolve_retriever_source

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    reg = log_retriever_bundle(bundle_dir, tracking_uri=uri, artifact_location=(tmp_path / "art").as_uri())
    assert reg["model_uri"] == "models:/resume-retriever@champion" and reg["version"] == "1"
    reg2 = log_retriever_bundle(bundle_dir, tracking_uri=uri)  # a second version takes the alias
    assert reg2["version"] == "2"
    local = resolve_retriever_source("models:/resume-retriever@champion")
    assert read_bundle_meta(local)["n_docs"] == N_DOCS
    assert (local / "docs.jsonl").read_text() == (bundle_dir / "docs.jsonl").read_text()
    with pytest.raises(ModelError, match="models:/resume-retriever@nope: cannot download"):
        resolve_retriever_source("models:/resume-retriever@nope")


@pytest.mark.slow
def test_serve_from_mlflow_registry_alias(mlflow_server, bundle_dir, library, queries, tmp_path, monkeypatch):
    from resume.serving.loading import download_model_uri, log_retriever_bundle

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    reg = log_retriever_bundle(bundle_dir, tracking_uri=mlflow_server, experiment="serving-test")  # server-side artifacts
    assert reg["model_uri"] == "models:/resume-retriever@champion" and reg["version"] == "1"
    local = download_model_uri("models:/resume-retriever@champion", dst_path=tmp_path / "dl")
    assert read_bundle_meta(local)["n_docs"] == N_DOCS
    env = {"MLFLOW_TRACKING_URI": mlflow_server}
    with ServerProcess(["serve", "retriever", "--model", "models:/resume-retriever@champion", "--device", "cpu",
                        "--no-access-log", "--read-only"], env=env, grpc=True) as srv:
        r = _predict(srv.url, {"instances": [{"query": q, "k": 4} for q in queries]})
        assert r.status_code == 200, r.text
        expected = _lib_search(library, queries, 4)
        assert [p["doc_ids"] for p in r.json()["predictions"]] == [[d for d, _ in e] for e in expected]
        # the same over gRPC (v2), k as a request parameter
        import kserve

        async def grpc_call():
            client = kserve.InferenceGRPCClient(url=srv.grpc_target, timeout=30)
            req = kserve.InferRequest(model_name=NAME, parameters={"k": 4}, infer_inputs=[
                kserve.InferInput("query", [len(queries)], "BYTES", list(queries))])
            return await client.infer(req)

        ids = asyncio.run(grpc_call()).get_output_by_name("doc_ids").as_numpy().tolist()
        assert [[x.decode() for x in row] for row in ids] == [[d for d, _ in e] for e in expected]
        # --read-only: no add model
        r = httpx.post(f"{srv.url}/v1/models/{NAME}-add:predict", json={"instances": [{"_id": "a", "text": "b"}]})
        assert r.status_code == 404
    # a missing alias is a one-line error and exit code 2, not a traceback
    p = subprocess.run([sys.executable, "-m", "resume.cli", "serve", "retriever", "--model",
                        "models:/resume-retriever@nope", "--http-port", str(free_port()), "--grpc-port", "0"],
                       env={**os.environ, **env}, capture_output=True, text=True, timeout=180)
    assert p.returncode == 2 and p.stderr.strip().startswith("error: models:/resume-retriever@nope"), p.stderr
    assert "Traceback" not in p.stderr


# ---------------------------------------------------------------------------------------- summarizer


@pytest.fixture(scope="module")
def tiny_cfg():
    return load_config(None, ["summarizer.model=tiny-causal-lm", "summarizer.max_new_tokens=12",
                              "summarizer.max_doc_tokens=64", "summarizer.batch_size=4", "device=cpu"])


def test_summarizer_predictor_in_process(tiny_cfg):
    from kserve import InferInput, InferRequest
    from kserve.errors import InvalidInput

    from resume.serving.summarizer import SummarizerModel, reasoning_of

    assert reasoning_of("<think>plan</think> the summary", "</think>") == "plan"
    assert reasoning_of("no separator", "</think>") is None
    m = SummarizerModel("resume-summarizer", "tiny-causal-lm", cfg=tiny_cfg, device="cpu", max_chars=500)
    assert m.load() and m.ready

    async def run():
        out1 = await m.predict({"instances": [{"document": "wing flutter at transonic speed"},
                                              {"document": "shock wave boundary layer", "return_reasoning": True}]})
        req = InferRequest(model_name="resume-summarizer", infer_inputs=[
            InferInput("document", [2], "BYTES", ["wing flutter at transonic speed", "heat transfer"])],
            parameters={"return_reasoning": True})
        out2 = await m.predict(req)
        errors = []
        for bad in ({"instances": [{"document": "x" * 501}]}, {"instances": [{"doc": "x"}]},
                    {"instances": [{"document": "x", "return_reasoning": "yes"}]}, {"instances": [{"document": ""}]}):
            with pytest.raises(InvalidInput) as e:
                await m.predict(bad)
            errors.append(str(e.value))
        m.stop()
        return out1, out2, errors

    out1, out2, errors = asyncio.run(run())
    p0, p1 = out1["predictions"]
    assert isinstance(p0["summary"], str) and "reasoning" not in p0 and "reasoning" in p1
    assert "</think>" not in p0["summary"]
    assert out2.get_output_by_name("summary").data[0] == p0["summary"]  # greedy: same text for the same document
    assert out2.get_output_by_name("reasoning") is not None
    assert "501 characters; at most 500" in errors[0] and "unknown field 'doc'" in errors[1]
    assert "expected true or false" in errors[2] and "empty document" in errors[3]


def test_retriever_adds_are_summarised(bundle_dir, tiny_cfg):
    from resume.serving.retriever import RetrieverModel
    from resume.serving.summarizer import SummaryGenerator

    gen = SummaryGenerator("tiny-causal-lm", tiny_cfg, device="cpu")
    m = RetrieverModel("r", str(bundle_dir), device="cpu", summarizer=gen)
    m.load()

    async def run():
        added = await m.add_model().predict({"instances": [{"_id": "s-1", "text": "supersonic inlet buzz"}]})
        expect = (await gen.summarize(["supersonic inlet buzz"]))[0]["summary"]
        hits = await m.predict({"instances": [{"query": expect or "x", "k": 1}]})
        m.stop()
        gen.close()
        return added, expect, hits

    added, expect, hits = asyncio.run(run())
    p = added["predictions"][0]
    assert p["summarized"] is True and p["summary"] == expect and p["n_docs"] == N_DOCS + 1
    assert "s-1" in hits["predictions"][0]["doc_ids"]


@pytest.mark.slow
def test_summarizer_server_process(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("summarizer:\n  max_new_tokens: 12\n  max_doc_tokens: 64\n")
    with ServerProcess(["serve", "summarizer", "--model", "tiny-causal-lm", "--config", str(cfg), "--device", "cpu",
                        "--max-chars", "1000", "--no-access-log"]) as srv:
        r = httpx.post(f"{srv.url}/v1/models/resume-summarizer:predict", timeout=60,
                       json={"instances": ["lift of a wing", {"document": "drag", "return_reasoning": True}]})
        assert r.status_code == 200, r.text
        assert len(r.json()["predictions"]) == 2 and "reasoning" in r.json()["predictions"][1]
        r = httpx.post(f"{srv.url}/v1/models/resume-summarizer:predict", json={"instances": ["x" * 1001]})
        assert r.status_code == 400 and "at most 1000" in r.json()["error"]


# ------------------------------------------------------------------------------------ fused bundles


@pytest.mark.parametrize("fusion", ["score", "rrf"])
def test_fused_bundle_answers(tmp_path, texts, queries, fusion):
    from resume.serving.retriever import RetrieverModel

    cfg = load_config(None, ["retriever.model=tiny-encoder", "retriever.max_length=64"])
    summaries = {d: t[:120] for d, t in texts.items()}
    path = build_retriever_bundle(tmp_path / "fused", retriever="tiny-encoder", texts=summaries, cfg=cfg,
                                  device="cpu", documents=texts, mode="fused", fusion=fusion,
                                  fusion_weight=0.5 if fusion == "score" else None)
    meta = read_bundle_meta(path)
    assert meta["format_version"] == 2 and (meta["mode"], meta["fusion"]) == ("fused", fusion)
    assert meta["fusion_weight"] == (0.5 if fusion == "score" else None)
    assert meta["rrf_k"] == (60 if fusion == "rrf" else None)
    assert (path / "doc_index" / "index.faiss").is_file()
    rows = [json.loads(x) for x in (path / "documents.jsonl").read_text().splitlines()]
    assert {r["_id"]: r["text"] for r in rows} == texts
    library = load_bundle(path, device="cpu")
    assert library.mode == "fused" and library.index.ids == list(texts)

    m = RetrieverModel("r", str(path), device="cpu")
    m.load()
    ids = list(texts)
    doc_queries = [texts[ids[3]], texts[ids[17]]]

    async def run():
        top = await m.predict({"instances": [{"query": q, "k": 1} for q in doc_queries]})
        many = await m.predict({"instances": [{"query": q, "k": 5} for q in queries]})
        added = await m.add_model().predict({"instances": [{"_id": "new-1", "text": "cryogenic propellant sloshing"}]})
        new = await m.predict({"instances": [{"query": "cryogenic propellant sloshing", "k": 1}]})
        m.stop()
        return top, many, added, new

    top, many, added, new = asyncio.run(run())
    assert [p["doc_ids"] for p in top["predictions"]] == [[ids[3]], [ids[17]]]
    assert [p["summaries"] for p in top["predictions"]] == [[summaries[ids[3]]], [summaries[ids[17]]]]
    expected = library.index.search(library.encoder.encode_queries(queries), 5)  # the same fuse_scores
    for p, exp in zip(many["predictions"], expected):
        assert p["doc_ids"] == [d for d, _ in exp] and np.allclose(p["scores"], [s for _, s in exp], atol=1e-5)
    assert added["predictions"][0]["n_docs"] == N_DOCS + 1 and new["predictions"][0]["doc_ids"] == ["new-1"]


def test_fused_bundle_needs_documents_and_a_weight(tmp_path, texts):
    from resume.errors import ConfigError, ResumeError

    cfg = load_config(None, ["retriever.model=tiny-encoder"])
    few = dict(list(texts.items())[:3])
    with pytest.raises(ResumeError, match="needs the full documents"):
        build_retriever_bundle(tmp_path / "a", retriever="tiny-encoder", texts=few, cfg=cfg.retriever, mode="fused",
                               fusion_weight=0.5)
    with pytest.raises(ResumeError, match=r"weight in \[0, 1\]"):
        build_retriever_bundle(tmp_path / "b", retriever="tiny-encoder", texts=few, cfg=cfg, documents=few,
                               mode="fused")
    with pytest.raises(ConfigError, match="fusion_weight"):
        build_retriever_bundle(tmp_path / "c", retriever="tiny-encoder", texts=few, cfg=cfg, documents=few,
                               mode="fused", fusion_weight=1.5)
    with pytest.raises(ResumeError, match="have no document"):
        build_retriever_bundle(tmp_path / "d", retriever="tiny-encoder", texts=few, cfg=cfg,
                               documents=dict(list(few.items())[:2]), mode="fused", fusion_weight=0.5)
    assert not any(p.name[0] in "abcd" for p in tmp_path.iterdir())


def test_bundle_without_mode_loads_as_summary(tmp_path, bundle_dir, library, queries):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(bundle_dir, old)
    meta = json.loads((old / "bundle.json").read_text())
    assert meta["mode"] == "summary" and meta["documents"] is None
    for key in ("mode", "fusion", "fusion_weight", "rrf_k", "documents"):  # as written before modes existed
        del meta[key]
    (old / "bundle.json").write_text(json.dumps(meta))
    b = load_bundle(old, device="cpu")
    assert b.mode == "summary" and type(b.index).__name__ == "DocIndex"
    assert _lib_search(b, queries, 3) == _lib_search(library, queries, 3)


def test_long_only_bundle_and_adds(tmp_path, texts):
    from resume.serving.retriever import RetrieverModel

    cfg = load_config(None, ["retriever.model=tiny-encoder", "retriever.max_length=32"])
    few = dict(list(texts.items())[:4])
    few[next(iter(few))] = "short document"  # fits the 32-token window: indexed as itself
    path = build_retriever_bundle(tmp_path / "lo", retriever="tiny-encoder", texts={d: f"summary {d}" for d in few},
                                  cfg=cfg, device="cpu", documents=few, mode="long_only")
    meta = read_bundle_meta(path)
    assert meta["mode"] == "long_only" and meta["documents"] is None and meta["fusion"] is None
    b = load_bundle(path, device="cpu")
    ids = list(few)
    assert b.texts == ["short document"] + [f"summary {d}" for d in ids[1:]]
    m = RetrieverModel("r", str(path), device="cpu")
    m.load()
    added = asyncio.run(m.add_model().predict({"instances": [{"_id": "n1", "text": "tiny"}, {"_id": "n2",
                                                                                             "text": "word " * 40}]}))
    m.stop()
    # no summarizer: the summary of an added document is its text, whatever its length
    assert [p["summary"] for p in added["predictions"]] == ["tiny", "word " * 40]


# ---------------------------------------------------------------------- a run's fused index (--index-mode)


def _fused_run(root: Path, bundle_dir: Path, weight: float | None = 0.3, *sets: str) -> Path:
    """A run directory as `resume run` leaves it: iter_01 (retriever + summaries), the materialised working
    set `data/`, config.yaml and results.json (with `systems.iterative_fused.fusion` unless weight is None)."""
    import shutil

    from _loop_fakes import write_tiny_beir

    from resume.config import dump_config

    it = root / "iter_01"
    it.mkdir(parents=True)
    shutil.copytree(bundle_dir / "retriever", it / "retriever" / "model")
    write_tiny_beir(root / "data")
    (it / "summaries.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "summary": f"summary {i}"}) + "\n"
                                                for i in range(12)))
    dump_config(load_config(None, ["retriever.max_length=64", "data.path=/nonexistent", *sets]),
                root / "config.yaml")
    systems = {} if weight is None else {"iterative_fused": {"fusion": {"weight": weight, "chosen_on": "dev"}}}
    (root / "results.json").write_text(json.dumps({"systems": systems}))  # no `final`: iter_NN is scanned
    return root


@pytest.fixture
def no_model_loads(monkeypatch):
    """Fail the test if an encoder is loaded (the checks must come first)."""
    import resume.retriever

    def boom(*a, **kw):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(resume.retriever.Encoder, "__init__", boom)


def test_run_dir_serves_its_fused_index(tmp_path, bundle_dir):

    from resume.errors import ConfigError
    from resume.serving.loading import resolve_retriever_source
    from resume.serving.server import build_models

    run = _fused_run(tmp_path / "run", bundle_dir)
    m, _ = build_models("retriever", model=str(run), device="cpu", allow_add=False, index_mode="fused")
    try:
        meta = m.bundle.meta
        assert (m.bundle.mode, meta["fusion"], meta["fusion_weight"]) == ("fused", "score", 0.3)
        assert type(m.bundle.index).__name__ == "FusedIndex" and m.bundle.index.weight == 0.3
        assert meta["source"]["documents"] == str(run / "data")  # the working set, not config's data.path
        docs = [json.loads(x) for x in (m.bundle.path / "documents.jsonl").read_text().splitlines()]
        assert docs[3] == {"_id": "d3", "text": "T3. text of document 3"}  # resume.data.doc_text
        assert m.bundle.texts[3] == "summary 3"
    finally:
        m.stop()
    assert not m.bundle.path.parent.exists()  # the start-up bundle's temporary directory went with stop()
    # --fusion-weight overrides the run's; bundle.json records it
    out = bundle_from_run_dir(run, tmp_path / "b", mode="fused", fusion_weight=0.8)
    meta = read_bundle_meta(out)
    assert (meta["mode"], meta["fusion_weight"], meta["format_version"]) == ("fused", 0.8, 2)
    # a built bundle is served as built; an index mode or weight that contradicts it is refused
    assert resolve_retriever_source(out, mode="fused", fusion_weight=0.8) == out
    with pytest.raises(ConfigError, match="a fused bundle, not summary"):
        resolve_retriever_source(out, mode="summary")
    with pytest.raises(ConfigError, match="fusion weight is 0.8, not 0.3"):
        resolve_retriever_source(out, fusion_weight=0.3)
    # the default stays the run config's evaluate.mode (summary)
    assert read_bundle_meta(bundle_from_run_dir(run, tmp_path / "s"))["mode"] == "summary"


def test_run_dir_serves_its_titled_index(tmp_path, bundle_dir, capsys):
    """--summary-title: each summary indexed after its document's title (from the run's working set), as the
    run's iterative_titled systems; a titled fused index takes iterative_titled_fused's weight; a built
    bundle records it, and a titled index takes no added documents (checked before anything loads)."""
    from resume.errors import ConfigError
    from resume.serving.loading import resolve_retriever_source
    from resume.serving.server import build_models, check_models

    run = _fused_run(tmp_path / "run", bundle_dir)
    m, _ = build_models("retriever", model=str(run), device="cpu", allow_add=False, summary_title=True)
    try:
        assert m.bundle.texts[3] == "T3. summary 3" and m.bundle.meta["summary_title"] is True
        assert m.bundle.meta["source"]["documents"] == str(run / "data")
        assert m.bundle.mode == "summary"
    finally:
        m.stop()
    plain = read_bundle_meta(bundle_from_run_dir(run, tmp_path / "plain"))
    assert plain["summary_title"] is False
    # a titled fused index: the weight the run chose for iterative_titled_fused, not iterative_fused's
    results = json.loads((run / "results.json").read_text())
    results["systems"]["iterative_titled_fused"] = {"fusion": {"weight": 0.6, "chosen_on": "dev"}}
    (run / "results.json").write_text(json.dumps(results))
    out = bundle_from_run_dir(run, tmp_path / "tf", mode="fused", summary_title=True)
    meta = read_bundle_meta(out)
    assert (meta["mode"], meta["fusion_weight"], meta["summary_title"]) == ("fused", 0.6, True)
    assert json.loads((out / "docs.jsonl").read_text().splitlines()[0])["summary"] == "T0. summary 0"
    assert read_bundle_meta(bundle_from_run_dir(run, tmp_path / "f", mode="fused"))["fusion_weight"] == 0.3
    # a built bundle is served as built
    assert resolve_retriever_source(out, summary_title=True) == out
    with pytest.raises(ConfigError, match="a bundle with summary_title, not without"):
        resolve_retriever_source(out, summary_title=False)
    with pytest.raises(ConfigError, match="add request carries no title"):
        resolve_retriever_source(out, allow_add=True)
    # refused before loading: adding to a titled index, from the flag or from the run's config
    capsys.readouterr()  # the bundling above wrote progress bars
    assert "add request carries no title" in _serve_error(capsys, "retriever", "--model", str(run),
                                                             "--summary-title", "--allow-add")
    titled_cfg = _fused_run(tmp_path / "run2", bundle_dir, 0.3, "evaluate.summary_title=true")
    with pytest.raises(ConfigError, match="add request carries no title"):
        check_models("retriever", model=str(titled_cfg), allow_add=True)
    check_models("retriever", model=str(titled_cfg))  # serving it read-only is fine
    check_models("retriever", model=str(titled_cfg), allow_add=True, summary_title=False)  # or untitled, with adds
    assert "are for the retriever" in _serve_error(capsys, "summarizer", "--model", str(run), "--summary-title")
    assert "are for the retriever" in _serve_error(capsys, "summarizer", "--model", str(run), "--no-summary-title")


def _serve_error(capsys, *argv: str) -> str:
    from resume.cli import main

    assert main(["serve", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_serve_index_mode_checks_before_loading(tmp_path, bundle_dir, capsys, no_model_loads):
    from resume.serving.server import check_models

    run = _fused_run(tmp_path / "run", bundle_dir, None)
    msg = _serve_error(capsys, "retriever", "--model", str(run), "--index-mode", "fused")
    assert str(run / "results.json") in msg and "--fusion-weight" in msg and "iterative_fused" in msg
    check_models("retriever", model=str(run), index_mode="fused", fusion_weight=0.5)  # given: fine
    # a run whose config says evaluate.mode: fused (and no weight anywhere) fails the same way by default
    fused_cfg = _fused_run(tmp_path / "run2", bundle_dir, None, "evaluate.mode=fused")
    assert "--fusion-weight" in _serve_error(capsys, "retriever", "--model", str(fused_cfg))
    assert "is for the fused index" in _serve_error(capsys, "retriever", "--model", str(run), "--index-mode",
                                                    "summary", "--fusion-weight", "0.5")
    assert "fusion_weight" in _serve_error(capsys, "retriever", "--model", str(run), "--index-mode", "fused",
                                           "--fusion-weight", "1.5")
    assert "a summary bundle, not fused" in _serve_error(capsys, "retriever", "--model", str(bundle_dir),
                                                         "--index-mode", "fused")
    assert "are for the retriever" in _serve_error(capsys, "summarizer", "--model", str(run), "--index-mode",
                                                   "fused")
    with pytest.raises(SystemExit):
        _serve_error(capsys, "retriever", "--model", str(run), "--index-mode", "both")


# ------------------------------------------------------------------------------------ the shipped manifests


def test_kserve_manifests_are_hardened():
    """Every InferenceService runs under the Pod Security Standard "restricted" (non-root, no privilege
    escalation, all capabilities dropped, the RuntimeDefault seccomp profile), the project image with a
    read-only root file system and writable emptyDirs; the retriever is read-only (no add model) with
    kserve's model repository extension off. Container security contexts pass the Kubernetes schema."""
    import kubernetes_validate
    import yaml

    from resume.cli import build_parser

    docs = [(p.name, d) for p in sorted((Path(__file__).parents[1] / "manifests" / "kserve").glob("*.yaml"))
            for d in yaml.safe_load_all(p.read_text(encoding="utf-8")) if d and d["kind"] == "InferenceService"]
    assert len(docs) == 3
    for where, doc in docs:
        pred = doc["spec"]["predictor"]
        pod = pred["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        container = pred["containers"][0] if "containers" in pred else pred["model"]
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}, where
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {
            "securityContext": pod, "volumes": pred.get("volumes", []), "containers": [
                {"name": "c", "image": "x", "securityContext": sc, "volumeMounts": container.get("volumeMounts", [])}]}},
            "1.30.0", strict=True)
        if "containers" in pred:  # the project image: nothing writable but the emptyDirs
            assert sc["readOnlyRootFilesystem"] is True, where
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in pred["volumes"]}
            assert {"/tmp", "/home/resume/.cache"} <= set(mounts), where
            assert all("emptyDir" in volumes[n] for n in mounts.values()), where
            args = build_parser().parse_args(container["args"])
            assert args.enable_model_repository is False, where
            if args.kind == "retriever":
                assert args.read_only is True and args.allow_add is False, where
