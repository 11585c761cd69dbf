"""Start a KServe `ModelServer` for the retriever or the summarizer (what `resume serve` runs).

    resume serve retriever --model runs/demo/bundle --http-port 8080 --grpc-port 0
    resume serve retriever --model runs/demo --index-mode fused      # the run's fused index, its own weight
    resume serve summarizer --model models:/resume-summarizer@champion --http-port 8080

What this adds to kserve 0.21's `ModelServer` (through small subclasses of its REST and gRPC server
classes, `_customise_rest_server` / `_customise_grpc_server`, and its dataplane's `live`):
- bind addresses: kserve binds REST on 0.0.0.0 and gRPC on [::]; `host` binds both where it says.
  `grpc_port=0` (or None) disables gRPC.
- the Model Repository extension (`POST /v2/repository/models/<name>/load|unload`, gRPC
  `RepositoryModelLoad|Unload`) is off unless `model_repository=True`: a client could otherwise unload
  the served model for good (kserve cannot load it back); REST answers 403, gRPC PERMISSION_DENIED.
- liveness (`/v2/health/live`, gRPC `ServerLive`) fails (503 / live=false) when a model the server was
  started with is not loaded any more, so the kubelet restarts the container.
- client errors (400, 404, 403) are logged as one WARNING line each, not an ERROR with a traceback.
- a request body limit: `BodySizeLimit` answers 413 above `max_body_bytes` (kserve has none).
The models are loaded before the server starts listening, so the port (and the readiness endpoints
`/v2/health/ready`, `/v1/models/<name>`) only answer once everything is loaded.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from resume.errors import ConfigError
from resume.serving.protocol import import_kserve

log = logging.getLogger("kserve")  # kserve configures this logger's handlers
KINDS = ("retriever", "summarizer")
REPOSITORY_OFF = ("the model repository extension (load/unload) is off on this server; start it with "
                  "--enable-model-repository to allow it")


def one_line(text: object, limit: int = 300) -> str:
    """`text` on one line, at most `limit` characters (for a log record of a client's error)."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[:limit] + "..."


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


def _client_error_handler(status: int):
    """A FastAPI exception handler: `status` and `{"error": <message>}`, logged as one WARNING line (kserve's
    own handlers log every client error as an ERROR with its traceback)."""
    from fastapi.responses import JSONResponse

    async def handler(request, exc):
        log.warning("%s %s -> %d: %s", request.method, request.url.path, status, one_line(exc))
        return JSONResponse(status_code=status, content={"error": str(exc)})

    return handler


def _customise_rest_server(*, host: str | None, timing: bool, model_repository: bool = False) -> None:
    """Adapt kserve 0.21's RESTServer: listen on `host` (it hard-codes 0.0.0.0 in its uvicorn.Config); with
    `timing=False`, leave out its TimingMiddleware: two getrusage() calls and a log record per request
    whose only output is the kserve.trace log (about a third of the event loop's time per request under
    load); kserve's other middlewares (the access-log format) are added as usual. Client errors are
    logged as one line (`_client_error_handler`). Without `model_repository`, the repository routes
    (`/v2/repository/...`) answer 403 and touch no model."""
    import kserve.model_server as ms
    from kserve.errors import InvalidInput, ModelNotFound

    base = getattr(ms.RESTServer, "_resume_base", ms.RESTServer)  # idempotent: one subclass of kserve's class

    class _RESTServer(base):
        _resume_base = base

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if host:
                self.config.host = host

        def _register_endpoints(self, app):
            if not model_repository:  # routes match in order: this one comes before kserve's load/unload
                forbidden = _client_error_handler(403)

                async def repository_off(request):  # a plain Starlette endpoint: it takes the request
                    return await forbidden(request, REPOSITORY_OFF)

                app.add_route("/v2/repository/{rest:path}", repository_off, include_in_schema=False,
                              methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
            super()._register_endpoints(app)

        def _add_exception_handlers(self, app):
            super()._add_exception_handlers(app)
            app.add_exception_handler(InvalidInput, _client_error_handler(400))
            app.add_exception_handler(ModelNotFound, _client_error_handler(404))

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


def grpc_address(host: str | None, port: int) -> str:
    """The gRPC bind address for `host` (kserve's `[::]` when None; IPv6 literals in brackets)."""
    if not host:
        host = "[::]"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def _customise_grpc_server(*, host: str | None, model_repository: bool = False) -> None:
    """Adapt kserve 0.21's GRPCServer: bind on `host` (it hard-codes `[::]`), answer the repository calls
    with PERMISSION_DENIED unless `model_repository`, and log client errors (INVALID_ARGUMENT, NOT_FOUND) as
    one WARNING line. `start` is kserve's own, but for those three choices."""
    from concurrent import futures

    import kserve.model_server as ms
    from grpc import StatusCode, aio
    from grpc_interceptor.exceptions import PermissionDenied
    from kserve.errors import InvalidInput, ModelNotFound
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
    from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
    from kserve.protocol.grpc.servicer import InferenceServicer

    base = getattr(ms.GRPCServer, "_resume_base", ms.GRPCServer)

    class _Servicer(InferenceServicer):
        async def RepositoryModelLoad(self, request, context):
            if not model_repository:
                raise PermissionDenied(REPOSITORY_OFF)
            return await super().RepositoryModelLoad(request, context)

        async def RepositoryModelUnload(self, request, context):
            if not model_repository:
                raise PermissionDenied(REPOSITORY_OFF)
            return await super().RepositoryModelUnload(request, context)

    client_errors = {InvalidInput: StatusCode.INVALID_ARGUMENT, ModelNotFound: StatusCode.NOT_FOUND}

    class _Errors(ExceptionToStatusInterceptor):
        async def handle_exception(self, ex, request_or_iterator, context, method_name):
            code = next((c for cls, c in client_errors.items() if isinstance(ex, cls)), None)
            if code is not None or isinstance(ex, PermissionDenied):
                log.warning("gRPC %s -> %s: %s", method_name, type(ex).__name__, one_line(ex))
            if code is not None:
                await context.abort(code, ex.reason)
            return await super().handle_exception(ex, request_or_iterator, context, method_name)

    class _GRPCServer(base):
        _resume_base = base

        async def start(self, max_workers):
            self._server = aio.server(
                futures.ThreadPoolExecutor(max_workers=max_workers),
                interceptors=(LoggingInterceptor(), _Errors()),
                options=[("grpc.max_send_message_length", self._kwargs.get("grpc_max_send_message_length")),
                         ("grpc.max_receive_message_length", self._kwargs.get("grpc_max_receive_message_length"))])
            grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
                _Servicer(self._data_plane, self._model_repository_extension), self._server)
            address = grpc_address(host, self._port)
            self._server.add_insecure_port(address)
            log.info("Starting gRPC server on %s with %d workers", address, max_workers)
            await self._server.start()
            await self._server.wait_for_termination()

    ms.GRPCServer = _GRPCServer


def _liveness(server, names: list[str]) -> None:
    """Make the server's liveness (REST `/v2/health/live`, gRPC `ServerLive`) report the models it was
    started with: not live (503 / live=false) once one of them is gone or not ready, so that the kubelet's
    liveness probe restarts the container. kserve's own answers `alive` whatever the models' state."""

    async def live() -> dict[str, str]:
        for name in names:
            model = server.registered_models.get_model(name)
            if model is None or not await model.healthy():
                return {"status": f"model {name} is not loaded"}
        return {"status": "alive"}

    server.dataplane.live = live


def check_models(kind: str, *, model: str, max_batch_size: int = 32, max_wait_ms: float = 8.0, max_k: int = 1000,
                 max_chars: int = 20_000, dtype: str | None = None, index_mode: str | None = None,
                 fusion_weight: float | None = None, allow_add: bool = False, max_added_docs: int = 1000,
                 summary_title: bool | None = None) -> None:
    """The argument checks of `build_models`, before anything loads (ConfigError naming the argument)."""
    if kind not in KINDS:
        raise ConfigError(f"serve: kind {kind!r}; expected one of {', '.join(KINDS)}")
    if max_batch_size < 1 or max_wait_ms < 0 or max_k < 1 or max_chars < 1:
        raise ConfigError(f"serve: max_batch_size ({max_batch_size}), max_k ({max_k}) and max_chars ({max_chars}) "
                          f"must be >= 1 and max_wait_ms ({max_wait_ms}) >= 0")
    if allow_add and kind != "retriever":
        raise ConfigError("serve: --allow-add is for the retriever (the summarizer has no index to add to)")
    if max_added_docs < 1:
        raise ConfigError(f"serve: max_added_docs (--max-added-docs) must be >= 1, got {max_added_docs}")
    if dtype is not None:
        from resume.models import torch_dtype

        torch_dtype(dtype)  # a ConfigError naming the accepted values
    if kind != "retriever" and (index_mode is not None or fusion_weight is not None or summary_title is not None):
        raise ConfigError("serve: --index-mode, --fusion-weight and --summary-title are for the retriever")
    from resume.serving.bundle import refuse_add_to_titled

    refuse_add_to_titled("serve --summary-title", titled=bool(summary_title), allow_add=allow_add)  # before a download
    if kind == "retriever":
        from resume.serving.loading import check_retriever_source

        check_retriever_source(model, mode=index_mode, fusion_weight=fusion_weight, summary_title=summary_title,
                               allow_add=allow_add)


def build_models(kind: str, *, model: str, name: str | None = None, summarizer: str | None = None,
                 config: Any = None, device: str | None = None, max_batch_size: int = 32, max_wait_ms: float = 8.0,
                 max_k: int = 1000, max_chars: int = 20_000, allow_add: bool = False, max_added_docs: int = 1000,
                 dtype: str | None = None, index_mode: str | None = None, fusion_weight: float | None = None,
                 summary_title: bool | None = None) -> list:
    """The kserve models for `kind`, loaded (ready). Retriever: [retriever, <name>-embed], plus <name>-add
    when `allow_add` (at most `max_added_docs` documents added). Summarizer: [summarizer].
    index_mode / fusion_weight / summary_title (retriever): the index of a run directory's bundle (see
    `RetrieverModel`)."""
    check_models(kind, model=model, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_k=max_k,
                 max_chars=max_chars, dtype=dtype, index_mode=index_mode, fusion_weight=fusion_weight,
                 allow_add=allow_add, max_added_docs=max_added_docs, summary_title=summary_title)
    name = name or f"resume-{kind}"
    if kind == "retriever":
        from resume.serving.retriever import RetrieverModel
        from resume.serving.summarizer import SummaryGenerator

        gen = SummaryGenerator(summarizer, config, device=device) if summarizer else None
        m = RetrieverModel(name, model, device=device, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                           max_k=max_k, max_doc_chars=max_chars, summarizer=gen, allow_add=allow_add, dtype=dtype,
                           index_mode=index_mode, fusion_weight=fusion_weight, max_added_docs=max_added_docs,
                           summary_title=summary_title)
        m.load()
        log.info("%s ready: %d documents, dim %d, micro-batch <= %d / %.1f ms%s", name, m.n_docs,
                 m.bundle.index.dim, max_batch_size, max_wait_ms, f"; adds summarised by {summarizer}" if gen else "")
        if not allow_add:
            return [m, m.embed_model()]
        log.warning("%s-add is on (--allow-add): any client that reaches this port can add up to %d documents; "
                    "they live in this replica's memory only", name, max_added_docs)
        return [m, m.embed_model(), m.add_model()]
    from resume.serving.summarizer import SummarizerModel

    m = SummarizerModel(name, model, cfg=config, device=device, max_chars=max_chars, dtype=dtype)
    m.load()
    log.info("%s ready: %s", name, m.generator.model_ref)
    return [m]


def serve(kind: str, *, model: str, http_port: int = 8080, grpc_port: int | None = 8081, name: str | None = None,
          summarizer: str | None = None, config: Any = None, device: str | None = None, max_batch_size: int = 32,
          max_wait_ms: float = 8.0, max_k: int = 1000, max_body_bytes: int = 1_000_000, max_chars: int = 20_000,
          allow_add: bool = False, max_added_docs: int = 1000, model_repository: bool = False,
          host: str | None = None, access_log: bool = True, threads: int | None = None, dtype: str | None = None,
          index_mode: str | None = None, fusion_weight: float | None = None, summary_title: bool | None = None
          ) -> None:
    """Load the model(s) and serve them until SIGTERM/SIGINT (blocks); the models are stopped (and a bundle
    built at start-up removed) when the server returns.

    host: REST and gRPC bind address (kserve 0.21 binds 0.0.0.0 and [::]; e.g. `127.0.0.1` keeps a local
    server private). allow_add: the retriever's `<name>-add` model (off by default), at most
    `max_added_docs` documents. model_repository: kserve's load/unload routes (off by default, see the
    module doc). access_log: uvicorn's access line and kserve's timing lines per request (off also drops
    kserve's timing middleware). dtype: weights dtype (`auto`: bf16 on GPU, fp32 on CPU; `native`: bf16
    also on CPUs with AMX/AVX512-BF16; `bfloat16` pays only on such CPUs, see bench/README.md) of the
    retriever's encoder, or of the summarizer (overrides summarizer.dtype of its config).
    threads: torch intra-op threads; default: the usable cores minus one (at least 1), which leaves a
    core to the event loop that parses requests while a micro-batch runs.
    index_mode / fusion_weight / summary_title: the retriever's index when `model` is a run directory (see
    `RetrieverModel`).
    """
    check_models(kind, model=model, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_k=max_k,
                 max_chars=max_chars, dtype=dtype, index_mode=index_mode, fusion_weight=fusion_weight,
                 allow_add=allow_add, max_added_docs=max_added_docs, summary_title=summary_title)
    for what, port in (("http_port", http_port), ("grpc_port", grpc_port or 1)):
        if not 0 < int(port) < 65536:
            raise ConfigError(f"serve: {what} {port} is not a TCP port (1..65535)")
    if max_body_bytes < 1:
        raise ConfigError(f"serve: max_body_bytes must be >= 1, got {max_body_bytes}")
    set_torch_threads(threads)
    kserve = import_kserve()
    _customise_rest_server(host=host, timing=access_log, model_repository=model_repository)
    _customise_grpc_server(host=host, model_repository=model_repository)
    if not access_log:
        logging.getLogger("uvicorn.access").disabled = True
        logging.getLogger("kserve.trace").disabled = True
    # the server object first: it configures kserve's logging, so the loading messages show
    server = kserve.ModelServer(http_port=http_port, grpc_port=grpc_port or 8081, enable_grpc=bool(grpc_port),
                                workers=1, enable_latency_logging=False)
    models = build_models(kind, model=model, name=name, summarizer=summarizer, config=config, device=device,
                          max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_k=max_k, max_chars=max_chars,
                          allow_add=allow_add, max_added_docs=max_added_docs, dtype=dtype, index_mode=index_mode,
                          fusion_weight=fusion_weight, summary_title=summary_title)
    try:
        from kserve.model_server import app

        app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
        _liveness(server, [m.name for m in models])
        server.start(models)
    finally:  # kserve's SIGTERM handler unloads (stops) them too; stopping twice is harmless
        for m in models:
            m.stop()
