"""The retriever predictor: query -> top-k documents over the summary index (a `kserve.Model`).

The bundle's mode decides what is searched (see `resume.serving.bundle`): the summary index, or for a
`fused` bundle the document and summary views, fused by `resume.index.FusedIndex` exactly as
`resume evaluate --mode fused` does; responses are the same (`summaries` = the summary view's texts).

    resume serve retriever --model runs/demo/bundle --http-port 8080
    curl -s localhost:8080/v1/models/resume-retriever:predict -d '{"instances": [{"query": "boundary layer", "k": 3}]}'

`load()` resolves `--model` (bundle, run directory or `models:/resume-retriever@champion`, see
`resume.serving.loading`), loads the encoder, the FAISS index and the indexed texts, encodes one
warm-up query, and only then sets `self.ready = True`.

Protocols (both on the same model name):
- v1: `{"instances": [{"query": "...", "k": 10}, "a bare query string", ...]}` ->
  `{"predictions": [{"doc_ids": [...], "scores": [...], "summaries": [...]}, ...]}`.
- v2: BYTES input `query` (shape [n] or [n, 1]); optional `k` as a one-element INT input or a request
  parameter -> outputs `doc_ids` (BYTES [n, k]), `scores` (FP32 [n, k]), `summaries` (BYTES [n, k]).

Concurrent queries (of one request or of many) go through a `MicroBatcher`: one encoder forward pass
and one FAISS search per batch.

Embeddings only: a second model, `<name>-embed` (always on; read-only), returns the query embeddings the
search uses, through the same micro-batches (a batch may mix searches and embeddings: one forward pass):
- v1: `{"instances": ["a query", {"query": "..."}]}` -> `{"predictions": [[0.01, ...], ...]}` (one vector
  of the index's dimension per instance); v2: BYTES input `query` -> FP32 output `embedding` [n, dim].

Adding documents without a restart (opt-in: `resume serve --allow-add`; `build_models` registers the add
model only then): a second model, `<name>-add`, shares the index:
- v1: `{"instances": [{"_id": "new-1", "text": "..."}]}` -> `{"predictions": [{"_id", "summary", "summarized",
  "n_docs"}]}`; v2: BYTES inputs `_id` and `text` of the same length.
The text is summarised first when the service was started with `--summarizer`, then encoded and
appended to the index on the batcher's thread (so it is serialised with searches): once the response
is back, the id is searchable. Additions live in memory (they are lost on restart; rebuild the
bundle to keep them, and they are on one replica only), an existing `_id` is rejected with 400, an `_id`
must be letters, digits and `._:@+#=-` (no spaces, slashes or control characters), and at most
`max_added_docs` documents are added over the server's life (then 400 naming the cap).

A run directory (or an MLflow URI) is bundled / downloaded at `load()` into a temporary directory
(`resume-bundle-*` in the system's temp directory), removed by `stop()` (kserve stops its models at
shutdown), when `load()` fails, or at the latest when the interpreter exits.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from resume.serving.batching import MicroBatcher
from resume.serving.protocol import (
    InferRequest,
    InvalidInput,
    check_fields,
    check_int,
    check_text,
    import_kserve,
    short,
    type_name,
    v1_instances,
    v2_check_inputs,
    v2_scalar,
    v2_strings,
)

kserve = import_kserve()
InferOutput = kserve.InferOutput
InferResponse = kserve.InferResponse

QUERY_FIELDS = ("query", "k")
EMBED_FIELDS = ("query",)
ADD_FIELDS = ("_id", "text")
DOC_ID_RE = re.compile(r"[\w.:@+#=-]+")  # an added document's id: no spaces, slashes or control characters


class RetrieverModel(kserve.Model):
    """Dense retrieval over a bundle. Options:

    source: bundle dir, run dir, or MLflow URI. device: encoder device (`None` = the encoder's default).
    dtype: encoder weights dtype (`None` = the bundle's retriever.dtype; the index is used as built).
    max_batch_size / max_wait_ms: micro-batching (1 disables it). default_k, max_k (k is also capped by
    the number of indexed documents), max_query_chars, max_instances (per request). encode_batch_size:
    queries per encoder forward pass inside a micro-batch (they are length-sorted first; default 8 on
    CPU, where less padding pays, the bundle's batch_size on GPU).
    summarizer: a `SummaryGenerator` (or a source string for one) used to summarise added documents.
    allow_add: recorded for the server, which registers the `<name>-add` model (`add_model()`) only then.
    max_added_docs: how many documents `add_documents` accepts over the model's life.
    index_mode / fusion_weight: the index of a run directory's bundle (`summary`, `fused`, `long_only`;
    default the run's `evaluate.mode`, and for `fused` the run's own weight); a built bundle must agree.
    summary_title: each summary indexed after its document's title (default the run's
    `evaluate.summary_title`); such an index takes no added documents (an add request carries no title).
    """

    def __init__(self, name: str, source: str, *, device: str | None = None, max_batch_size: int = 32,
                 max_wait_ms: float = 8.0, default_k: int = 10, max_k: int = 1000, max_query_chars: int = 2000,
                 max_doc_chars: int = 100_000, max_instances: int = 256, summarizer: Any = None,
                 allow_add: bool = False, encode_batch_size: int | None = None, dtype: str | None = None,
                 index_mode: str | None = None, fusion_weight: float | None = None, max_added_docs: int = 1000,
                 summary_title: bool | None = None):
        super().__init__(name)
        self.source = source
        self.device = device
        self.dtype = dtype
        self.index_mode, self.fusion_weight, self.summary_title = index_mode, fusion_weight, summary_title
        self.max_batch_size, self.max_wait_ms = max_batch_size, max_wait_ms
        self.default_k, self.max_k = default_k, max_k
        self.max_query_chars, self.max_doc_chars, self.max_instances = max_query_chars, max_doc_chars, max_instances
        self.summarizer = summarizer
        self.allow_add = allow_add
        self.max_added_docs = max_added_docs
        self.n_added = 0
        self.encode_batch_size = encode_batch_size
        self.bundle = None
        self.batcher: MicroBatcher | None = None
        self._work_dir: tempfile.TemporaryDirectory | None = None

    # ---------------------------------------------------------------------------------------- load

    def load(self) -> bool:
        try:
            return self._load()
        except BaseException:
            self._remove_work_dir()
            raise

    def _load(self) -> bool:
        from resume.serving.bundle import load_bundle
        from resume.serving.loading import resolve_retriever_source

        # a run directory is bundled (an MLflow URI downloaded) here; an unused one is removed at once
        self._work_dir = tempfile.TemporaryDirectory(prefix="resume-bundle-")
        path = resolve_retriever_source(self.source, device=self.device, mode=self.index_mode,
                                        fusion_weight=self.fusion_weight, work_dir=self._work_dir.name,
                                        summary_title=self.summary_title, allow_add=self.allow_add)
        if not path.resolve().is_relative_to(Path(self._work_dir.name).resolve()):
            self._remove_work_dir()
        self.bundle = load_bundle(path, device=self.device, dtype=self.dtype)
        enc = self.bundle.encoder
        enc.encode_queries(["warm-up query"])  # first call pays lazy initialisation
        if self.encode_batch_size is None:  # CPU: length-sorted passes of 8 pad less than one pass of 32
            self.encode_batch_size = 8 if str(enc.device) == "cpu" else enc.batch_size
        self.batcher = MicroBatcher(self._search_batch, max_batch_size=self.max_batch_size,
                                    max_wait_ms=self.max_wait_ms, name=f"{self.name}-batcher")
        if isinstance(self.summarizer, str):
            from resume.serving.summarizer import SummaryGenerator

            self.summarizer = SummaryGenerator(self.summarizer)
        if self.summarizer is not None and not self.summarizer.loaded:
            self.summarizer.load()
        self.ready = True
        return self.ready

    def _remove_work_dir(self) -> None:
        if self._work_dir is not None:
            self._work_dir.cleanup()
            self._work_dir = None

    def stop(self):
        if self.batcher is not None:
            self.batcher.close()
        self._remove_work_dir()
        super().stop()

    @property
    def n_docs(self) -> int:
        return len(self.bundle.index)

    @property
    def k_limit(self) -> int:
        return max(1, min(self.max_k, self.n_docs))

    def _k(self, v: Any, where: str) -> int:
        why = f" (max_k {self.max_k}, index size {self.n_docs})"
        return check_int(v, where, 1, self.k_limit, why)

    # ------------------------------------------------------------------------------ search (batched)

    def _search_batch(self, items: list[tuple[str, int]]) -> list[Any]:
        """Runs on the batcher thread: encode all queries once, search once at the largest k. An item with
        k = 0 asks for its query's embedding (a float32 vector, the `<name>-embed` model) instead of hits."""
        b = self.bundle
        emb = b.encoder.encode_queries([q for q, _ in items], batch_size=self.encode_batch_size)  # (n, dim)
        rows = [r for r, (_, k) in enumerate(items) if k > 0]
        out: list[Any] = list(emb)
        if rows:
            scores, idx = b.index.search_arrays(emb[rows], max(items[r][1] for r in rows))  # (len(rows), kmax)
            for r, srow, irow in zip(rows, scores, idx):
                k = items[r][1]
                out[r] = [(b.index.ids[j], float(s), b.texts[j]) for s, j in zip(srow[:k], irow[:k]) if j >= 0]
        return out

    async def search(self, queries: list[tuple[str, int]]) -> list[list[tuple[str, float, str]]]:
        return list(await asyncio.gather(*(self.batcher.submit(q) for q in queries)))

    async def embed(self, queries: list[str]) -> np.ndarray:
        """The queries' embeddings (n, dim), float32, through the same micro-batches as searches."""
        return np.stack(await asyncio.gather(*(self.batcher.submit((q, 0)) for q in queries)))

    # ----------------------------------------------------------------------------------- protocols

    def _v1_queries(self, payload: Any, fields: tuple[str, ...]) -> list[tuple[str, dict, str]]:
        """v1 instances (query strings or objects with `fields`, `query` required), checked: (query, the
        instance as an object, where it is in the request) each."""
        out = []
        for i, inst in enumerate(v1_instances(payload, max_instances=self.max_instances)):
            where = f"instances[{i}]"
            if isinstance(inst, str):
                inst = {"query": inst}
            if not isinstance(inst, dict):
                shape = ", ".join(f'"{f}": ...' for f in fields)
                raise InvalidInput(f"{where}: expected a query string or an object {{{shape}}}, "
                                   f"got {type_name(inst)} {short(inst)}")
            if "add" in inst:
                raise InvalidInput(f"{where}: documents are added through the model {self.name}-add "
                                   f'({{"instances": [{{"_id": ..., "text": ...}}]}})')
            check_fields(inst, where, fields)
            if "query" not in inst:
                raise InvalidInput(f"{where}: missing field 'query'")
            out.append((check_text(inst["query"], f"{where}.query", max_chars=self.max_query_chars, what="query"),
                        inst, where))
        return out

    def _parse_v1(self, payload: Any) -> list[tuple[str, int]]:
        return [(q, self._k(inst.get("k", self.default_k), f"{where}.k"))
                for q, inst, where in self._v1_queries(payload, QUERY_FIELDS)]

    def _parse_v2(self, req: InferRequest) -> tuple[list[tuple[str, int]], int]:
        v2_check_inputs(req, QUERY_FIELDS)
        qs = v2_strings(req, "query", max_items=self.max_instances)
        k = self._k(v2_scalar(req, "k", self.default_k), "k")
        out = [(check_text(q, f"query[{i}]", max_chars=self.max_query_chars, what="query"), k)
               for i, q in enumerate(qs)]
        return out, k

    async def predict(self, payload: dict | InferRequest, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> dict | InferResponse:
        if isinstance(payload, InferRequest):
            queries, k = self._parse_v2(payload)
            hits = await self.search(queries)
            n = len(hits)
            ids = np.full((n, k), "", dtype=object)
            scores = np.zeros((n, k), dtype=np.float32)
            texts = np.full((n, k), "", dtype=object)
            for r, row in enumerate(hits):  # approximate indexes may return fewer than k: padded with ""/0
                for c, (d, s, t) in enumerate(row):
                    ids[r, c], scores[r, c], texts[r, c] = d, s, t
            outputs = [InferOutput("doc_ids", [n, k], "BYTES", ids.reshape(-1).tolist()),
                       InferOutput("scores", [n, k], "FP32", scores.reshape(-1).tolist()),
                       InferOutput("summaries", [n, k], "BYTES", texts.reshape(-1).tolist())]
            return InferResponse(response_id=payload.id or str(uuid.uuid4()), model_name=self.name,
                                 infer_outputs=outputs)
        hits = await self.search(self._parse_v1(payload))
        return {"predictions": [{"doc_ids": [h[0] for h in row], "scores": [h[1] for h in row],
                                 "summaries": [h[2] for h in row]} for row in hits]}

    # ------------------------------------------------------------------------------- adding documents

    def _has(self, doc_id: str) -> bool:
        return doc_id in self.bundle.index

    def _add_batch(self, ids: list[str], documents: list[str], summaries: list[str]) -> tuple[int, list[str]]:
        """Runs on the batcher thread (serialised with searches): encode and append, as the bundle's mode
        indexes a document (`fused`: both views; `long_only`: the summary only when the document overflows).
        Returns (index size, the texts the summary view got)."""
        b = self.bundle
        dup = [i for i in ids if self._has(i)]
        if dup:  # re-checked here: a concurrent request may have added it since `add_documents` looked
            raise InvalidInput(f"_id {dup[0]!r} is already indexed; ids must be new")
        self._check_cap(len(ids))  # and the cap, for the same reason
        if b.mode == "long_only":
            from resume.evaluate import long_only_texts

            chosen = long_only_texts(b.encoder, dict(zip(ids, documents)), dict(zip(ids, summaries)))[0]
            summaries = [chosen[i] for i in ids]
        emb = b.encoder.encode_docs(summaries)  # (n, dim)
        if b.mode == "fused":
            b.index.add(ids, emb if documents == summaries else b.encoder.encode_docs(documents), emb)
        else:
            b.index.add(ids, emb)
        b.texts.extend(summaries)
        self.n_added += len(ids)
        return len(b.index), summaries

    def _check_cap(self, n: int) -> None:
        if self.n_added + n > self.max_added_docs:
            raise InvalidInput(f"{n} document(s) to add, {self.n_added} added already: the server accepts at most "
                               f"{self.max_added_docs} added documents (--max-added-docs); rebuild the bundle to "
                               "index more")

    async def add_documents(self, docs: list[tuple[str, str]]) -> list[dict[str, Any]]:
        self._check_cap(len(docs))  # before any summarising
        ids = [d for d, _ in docs]
        seen: set[str] = set()
        for i, d in enumerate(ids):
            if d in seen:
                raise InvalidInput(f"instances[{i}]._id: {d!r} appears twice in the request")
            if self._has(d):
                raise InvalidInput(f"instances[{i}]._id: {d!r} is already indexed; ids must be new")
            seen.add(d)
        documents = [t for _, t in docs]
        summarized = self.summarizer is not None
        texts = [r["summary"] for r in await self.summarizer.summarize(documents)] if summarized else documents
        n, texts = await self.batcher.run(lambda: self._add_batch(ids, documents, texts))
        return [{"_id": d, "summary": t, "summarized": summarized, "n_docs": n} for d, t in zip(ids, texts)]

    def _parse_add_v1(self, payload: Any) -> list[tuple[str, str]]:
        out = []
        for i, inst in enumerate(v1_instances(payload, max_instances=self.max_instances)):
            where = f"instances[{i}]"
            if not isinstance(inst, dict):
                raise InvalidInput(f'{where}: expected an object {{"_id": ..., "text": ...}}, got {type_name(inst)}')
            check_fields(inst, where, ADD_FIELDS)
            for f in ADD_FIELDS:
                if f not in inst:
                    raise InvalidInput(f"{where}: missing field {f!r}")
            out.append(self._check_doc(inst["_id"], inst["text"], where))
        return out

    def _check_doc(self, doc_id: Any, text: Any, where: str) -> tuple[str, str]:
        if isinstance(doc_id, int) and not isinstance(doc_id, bool):
            doc_id = str(doc_id)
        doc_id = check_text(doc_id, f"{where}._id", max_chars=256, what="_id").strip()
        if not DOC_ID_RE.fullmatch(doc_id):
            raise InvalidInput(f"{where}._id: {short(doc_id)} is not a document id: use letters, digits and "
                               "._:@+#=- only (no spaces, slashes or control characters)")
        text = check_text(text, f"{where}.text", max_chars=self.max_doc_chars, what="text")
        return doc_id, text

    def add_model(self) -> RetrieverAddModel:
        return RetrieverAddModel(f"{self.name}-add", self)

    def embed_model(self) -> RetrieverEmbedModel:
        return RetrieverEmbedModel(f"{self.name}-embed", self)


class _RetrieverCompanion(kserve.Model):
    """A second model name over the same `RetrieverModel` (its bundle and micro-batcher); ready exactly
    when the retriever is."""

    def __init__(self, name: str, retriever: RetrieverModel):
        super().__init__(name)
        self.retriever = retriever
        self.ready = retriever.ready

    def load(self) -> bool:
        self.ready = self.retriever.ready
        return self.ready

    async def healthy(self) -> bool:
        return self.retriever.ready


class RetrieverEmbedModel(_RetrieverCompanion):
    """`<name>-embed`: queries in (v1 instances: strings or {"query": ...}; v2 BYTES `query`), their
    embeddings out (v1 `predictions`: one list of floats per instance; v2 FP32 `embedding` [n, dim]): the
    vectors the retriever searches with, for clients that search or cache on their side."""

    async def predict(self, payload: dict | InferRequest, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> dict | InferResponse:
        r = self.retriever
        if isinstance(payload, InferRequest):
            v2_check_inputs(payload, EMBED_FIELDS)
            qs = [check_text(q, f"query[{i}]", max_chars=r.max_query_chars, what="query")
                  for i, q in enumerate(v2_strings(payload, "query", max_items=r.max_instances))]
            emb = await r.embed(qs)
            return InferResponse(response_id=payload.id or str(uuid.uuid4()), model_name=self.name, infer_outputs=[
                InferOutput("embedding", list(emb.shape), "FP32", emb.reshape(-1).tolist())])
        # the float32 array itself: kserve answers v1 with orjson (OPT_SERIALIZE_NUMPY), which writes each value's
        # shortest float32 form; `.tolist()` would widen to float64 and write ~17 digits (75 % more bytes)
        return {"predictions": await r.embed([q for q, _, _ in r._v1_queries(payload, EMBED_FIELDS)])}


class RetrieverAddModel(_RetrieverCompanion):
    """`<name>-add`: documents in (v1 instances {"_id", "text"} or v2 BYTES `_id` + `text`), appended to
    the retriever's index; ready exactly when the retriever is."""

    async def predict(self, payload: dict | InferRequest, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> dict | InferResponse:
        r = self.retriever
        if isinstance(payload, InferRequest):
            v2_check_inputs(payload, ADD_FIELDS)
            ids = v2_strings(payload, "_id", max_items=r.max_instances)
            texts = v2_strings(payload, "text", max_items=r.max_instances)
            if len(ids) != len(texts):
                raise InvalidInput(f"inputs '_id' ({len(ids)} items) and 'text' ({len(texts)} items) differ in length")
            docs = [r._check_doc(d, t, f"[{i}]") for i, (d, t) in enumerate(zip(ids, texts))]
            res = await r.add_documents(docs)
            n = len(res)
            outputs = [InferOutput("_id", [n], "BYTES", [x["_id"] for x in res]),
                       InferOutput("summary", [n], "BYTES", [x["summary"] for x in res]),
                       InferOutput("n_docs", [1], "INT64", [res[-1]["n_docs"]])]
            return InferResponse(response_id=payload.id or str(uuid.uuid4()), model_name=self.name,
                                 infer_outputs=outputs)
        return {"predictions": await r.add_documents(r._parse_add_v1(payload))}
