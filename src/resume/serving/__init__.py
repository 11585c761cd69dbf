"""KServe predictors for the retriever (query -> top-k documents) and the summarizer (document -> summary).

    resume serve retriever --model runs/demo --http-port 8080        # or a bundle dir, or models:/resume-retriever@champion
    resume serve summarizer --model runs/demo --http-port 8081 --grpc-port 0

Light at import: kserve, torch and mlflow are imported when a server or a bundle is built. See
docs/serving.md for the bundle format and the v1/v2 request formats.
"""

from __future__ import annotations

from typing import Any

from resume.serving.bundle import build_retriever_bundle, bundle_from_run_dir, load_bundle
from resume.serving.loading import download_model_uri, log_retriever_bundle, register_dir

__all__ = ["serve", "build_retriever_bundle", "bundle_from_run_dir", "load_bundle", "download_model_uri",
           "log_retriever_bundle", "register_dir"]


def serve(kind: str, *, model: str, http_port: int = 8080, grpc_port: int | None = 8081, name: str | None = None,
          summarizer: str | None = None, **options: Any) -> None:
    """Serve `kind` (`retriever` | `summarizer`) from `model` with kserve.ModelServer (blocks).

    grpc_port 0/None disables gRPC. options: config, device, max_batch_size, max_wait_ms, max_k,
    max_body_bytes, max_chars, allow_add, max_added_docs, model_repository, host (see
    `resume.serving.server.serve`).
    """
    from resume.serving.server import serve as _serve

    _serve(kind, model=model, http_port=http_port, grpc_port=grpc_port, name=name, summarizer=summarizer, **options)
