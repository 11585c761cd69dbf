"""The MLflow pyfunc models: `RetrieverModel` (g_T: texts -> embeddings) and `SummarizerModel` (f_T: documents
-> summaries). MLflow pickles them by reference (`resume.tracking.pyfunc.<class>`); the `resume` source ships
with each model as `code_paths`, so they load outside the project."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc

from resume.config import ResumeConfig


def _texts(model_input: Any) -> list[str]:
    """list[str] | str | pandas DataFrame (column `text`, `query` or `document`, else the first) -> list[str]."""
    if isinstance(model_input, str):
        return [model_input]
    if hasattr(model_input, "columns"):
        for col in ("text", "query", "document"):
            if col in model_input.columns:
                return [str(x) for x in model_input[col].tolist()]
        return [str(x) for x in model_input.iloc[:, 0].tolist()]
    if isinstance(model_input, dict):
        for col in ("text", "query", "document", "texts", "queries"):
            if col in model_input:
                v = model_input[col]
                return [v] if isinstance(v, str) else [str(x) for x in v]
    return [str(x) for x in model_input]


def _load_cfg(context) -> ResumeConfig:
    from resume.config import ResumeConfig, from_dict

    d = json.loads(Path(context.artifacts["resume_config"]).read_text(encoding="utf-8"))
    return from_dict(ResumeConfig, d)


class RetrieverModel(mlflow.pyfunc.PythonModel):
    """Query/document encoder g_T. predict(texts, params={"kind": "query"|"doc"}) -> list of embeddings."""

    def load_context(self, context):
        from resume.retriever import Encoder

        cfg = _load_cfg(context)
        self.encoder = Encoder(context.artifacts["model_dir"], cfg.retriever, device="cpu")

    def predict(self, context, model_input, params=None):
        texts = _texts(model_input)
        kind = (params or {}).get("kind", "query")
        emb = self.encoder.encode_docs(texts) if kind in ("doc", "document", "docs") else \
            self.encoder.encode_queries(texts)
        return [list(map(float, row)) for row in emb]


class SummarizerModel(mlflow.pyfunc.PythonModel):
    """Summarizer f_T. predict(documents) -> list of summaries (greedy; text after the last separator)."""

    def load_context(self, context):
        from resume.models import load_causal_lm

        self.cfg = _load_cfg(context)
        self.model, self.tokenizer = load_causal_lm(context.artifacts["model_dir"], device="cpu")
        self.model.eval()

    def predict(self, context, model_input, params=None):
        from resume.summarizer import generate_batch, index_text

        docs = _texts(model_input)
        n = int((params or {}).get("max_new_tokens", self.cfg.summarizer.max_new_tokens))
        completions = generate_batch(self.model, self.tokenizer, docs, self.cfg, n)
        return [index_text(c, d, self.tokenizer, self.cfg)[0] for c, d in zip(completions, docs)]
