"""Start a KServe `ModelServer` for the retriever or the summarizer (what `resume serve` runs).

    resume serve retriever --model runs/demo/bundle --http-port 8080 --grpc-port 0
    resume serve retriever --model runs/demo --index-mode fused      # the run's fused index, its own weight
    resume serve summarizer --model models:/resume-summarizer@champion --http-port 8080

kserve 0.21 binds REST on 0.0.0.0 and gRPC on [::] (there is no host option); `grpc_port=0` (or None)
disables gRPC. The models are loaded before the server starts listening, so the port (and the
readiness endpoints `/v2/health/ready`, `/v1/models/<name>`) only answer once everything is loaded.
kserve puts no limit on the request body: `BodySizeLimit` answers 413 above `max_body_bytes`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from resume.errors import ConfigError
from resume.serving.protocol import import_kserve

log = logging.getLogger("kserve")  # kserve configures this logger's handlers
KINDS = ("retriever", "summarizer")


class BodySizeLimit:
    """ASGI middleware: reject request bodies over `max_bytes` with 413 and a JSON `{"error": ...}`.

    Checks Content-Length first; bodies without it (chunked) are read up to the limit and replayed.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send, what: str, status: int = 413) -> None:
        body = json.dumps({"error": f"{what}; the limit is {self.max_bytes} bytes (--max-body-bytes)"}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return await self._reject(send, f"invalid Content-Length {length[:20]!r}", 400)
            if n > self.max_bytes:
                return await self._reject(send, f"request body is {n} bytes")
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":  # client went away
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._reject(send, f"request body is over {size} bytes")
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def set_torch_threads(threads: int | None = None) -> int:
    import os

    import torch

    if threads is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = max(1, cores - 1)
    if threads < 1:
        raise ConfigError(f"serve: threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return threads


def _customise_rest_server(*, host: str | None, timing: bool) -> None:
    """Adapt kserve 0.21's RESTServer: listen on `host` (it hard-codes 0.0.0.0 in its uvicorn.Config) and,
    with `timing=False`, leave out its TimingMiddleware: two getrusage() calls and a log record per request
    whose only output is the kserve.trace log (about a third of the event loop's time per request under
    load). kserve's other middlewares (the access-log format) are added as usual."""
    import kserve.model_server as ms

    base = getattr(ms.RESTServer, "_resume_base", ms.RESTServer)  # idempotent: one subclass of kserve's class

    class _RESTServer(base):
        _resume_base = base

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if host:
                self.config.host = host

        def _add_middlewares(self, app):
            if timing:
                return super()._add_middlewares(app)
            from timing_asgi import TimingMiddleware

            add = app.add_middleware
            app.add_middleware = lambda cls, *a, **kw: None if cls is TimingMiddleware else add(cls, *a, **kw)
            try:
                return super()._add_middlewares(app)
            finally:
                del app.add_middleware  # the instance attribute; the class method shows through again

    ms.RESTServer = _RESTServer


def check_models(kind: str, *, model: str, max_batch_size: int = 32, max_wait_ms: float = 2.0, max_k: int = 1000,
                 max_chars: int = 20_000, dtype: str | None = None, index_mode: str | None = None,
                 fusion_weight: float | None = None) -> None:
    """The argument checks of `build_models`, before anything loads (ConfigError naming the argument)."""
    if kind not in KINDS:
        raise ConfigError(f"serve: kind {kind!r}; expected one of {', '.join(KINDS)}")
    if max_batch_size < 1 or max_wait_ms < 0 or max_k < 1 or max_chars < 1:
        raise ConfigError(f"serve: max_batch_size ({max_batch_size}), max_k ({max_k}) and max_chars ({max_chars}) "
                          f"must be >= 1 and max_wait_ms ({max_wait_ms}) >= 0")
    if dtype is not None:
        from resume.models import torch_dtype

        torch_dtype(dtype)  # a ConfigError naming the accepted values
    if kind != "retriever" and (index_mode is not None or fusion_weight is not None):
        raise ConfigError("serve: --index-mode and --fusion-weight are for the retriever")
    if kind == "retriever":
        from resume.serving.loading import check_retriever_source

        check_retriever_source(model, mode=index_mode, fusion_weight=fusion_weight)


def build_models(kind: str, *, model: str, name: str | None = None, summarizer: str | None = None,
                 config: Any = None, device: str | None = None, max_batch_size: int = 32, max_wait_ms: float = 2.0,
                 max_k: int = 1000, max_chars: int = 20_000, allow_add: bool = True, dtype: str | None = None,
                 index_mode: str | None = None, fusion_weight: float | None = None) -> list:
    """The kserve models for `kind`, loaded (ready). Retriever: [retriever, <name>-add] (or just the
    retriever when `allow_add` is False). Summarizer: [summarizer].
    index_mode / fusion_weight (retriever): the index of a run directory's bundle (see `RetrieverModel`)."""
    check_models(kind, model=model, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_k=max_k,
                 max_chars=max_chars, dtype=dtype, index_mode=index_mode, fusion_weight=fusion_weight)
    name = name or f"resume-{kind}"
    if kind == "retriever":
        from resume.serving.retriever import RetrieverModel
        from resume.serving.summarizer import SummaryGenerator

        gen = SummaryGenerator(summarizer, config, device=device) if summarizer else None
        m = RetrieverModel(name, model, device=device, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                           max_k=max_k, max_doc_chars=max_chars, summarizer=gen, allow_add=allow_add, dtype=dtype,
                           index_mode=index_mode, fusion_weight=fusion_weight)
        m.load()
        log.info("%s ready: %d documents, dim %d, micro-batch <= %d / %.1f ms%s", name, m.n_docs,
                 m.bundle.index.dim, max_batch_size, max_wait_ms, f"; adds summarised by {summarizer}" if gen else "")
        return [m, m.add_model()] if allow_add else [m]
    from resume.serving.summarizer import SummarizerModel

    m = SummarizerModel(name, model, cfg=config, device=device, max_chars=max_chars, dtype=dtype)
    m.load()
    log.info("%s ready: %s", name, m.generator.model_ref)
    return [m]


def serve(kind: str, *, model: str, http_port: int = 8080, grpc_port: int | None = 8081, name: str | None = None,
          summarizer: str | None = None, config: Any = None, device: str | None = None, max_batch_size: int = 32,
          max_wait_ms: float = 2.0, max_k: int = 1000, max_body_bytes: int = 1_000_000, max_chars: int = 20_000,
          allow_add: bool = True, host: str | None = None, access_log: bool = True,
          threads: int | None = None, dtype: str | None = None, index_mode: str | None = None,
          fusion_weight: float | None = None) -> None:
    """Load the model(s) and serve them until SIGTERM/SIGINT (blocks).

    host: REST bind address (kserve 0.21 always binds 0.0.0.0; e.g. `127.0.0.1` keeps a local server
    private). access_log: uvicorn's access line and kserve's timing lines per request (off also drops
    kserve's timing middleware). dtype: weights dtype (`auto`: bf16 on GPU, fp32 on CPU; `bfloat16` pays
    on CPUs with AMX/AVX512-BF16, see bench/README.md) of the retriever's encoder, or of the summarizer
    (overrides summarizer.dtype of its config).
    threads: torch intra-op threads; default: the usable cores minus one (at least 1), which leaves a
    core to the event loop that parses requests while a micro-batch runs.
    index_mode / fusion_weight: the retriever's index when `model` is a run directory (see `RetrieverModel`).
    """
    check_models(kind, model=model, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_k=max_k,
                 max_chars=max_chars, dtype=dtype, index_mode=index_mode, fusion_weight=fusion_weight)
    for what, port in (("http_port", http_port), ("grpc_port", grpc_port or 1)):
        if not 0 < int(port) < 65536:
            raise ConfigError(f"serve: {what} {port} is not a TCP port (1..65535)")
    if max_body_bytes < 1:
        raise ConfigError(f"serve: max_body_bytes must be >= 1, got {max_body_bytes}")
    set_torch_threads(threads)
    kserve = import_kserve()
    _customise_rest_server(host=host, timing=access_log)
    if not access_log:
        logging.getLogger("uvicorn.access").disabled = True
        logging.getLogger("kserve.trace").disabled = True
    # the server object first: it configures kserve's logging, so the loading messages show
    server = kserve.ModelServer(http_port=http_port, grpc_port=grpc_port or 8081, enable_grpc=bool(grpc_port),
                                workers=1, enable_latency_logging=False)
    models = build_models(kind, model=model, name=name, summarizer=summarizer, config=config, device=device,
                          max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_k=max_k, max_chars=max_chars,
                          allow_add=allow_add, dtype=dtype, index_mode=index_mode, fusion_weight=fusion_weight)
    from kserve.model_server import app

    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    server.start(models)
