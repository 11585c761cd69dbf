"""The summarizer predictor: document -> retrieval-oriented summary (a `kserve.Model`).

    resume serve summarizer --model models:/resume-summarizer@champion --http-port 8080
    curl -s localhost:8080/v1/models/resume-summarizer:predict -d '{"instances": [{"document": "..."}]}'

Generation is greedy (`resume.summarizer.generate_batch`, as for the corpus summaries); the summary is
the text after the last separator (`summarizer.separator`, default `</think>`), stripped; without a
separator it is `summarizer.fallback` (`resume.summarizer.index_text`). The reasoning is returned only
when asked for (`"return_reasoning": true`). Concurrent documents are micro-batched (up to
`summarizer.batch_size` per `generate` call).

Protocols:
- v1: `{"instances": [{"document": "...", "return_reasoning": false}, "or a bare document string"]}` ->
  `{"predictions": [{"summary": "...", "has_separator": true, ["reasoning": "..."]}]}`.
- v2: BYTES input `document` ([n]); `return_reasoning` as a BOOL input or request parameter ->
  outputs `summary` (BYTES [n]), `has_separator` (BOOL [n]), `reasoning` (BYTES [n], only when asked).
Documents longer than `max_chars` characters are rejected with 400 (they would be truncated to
`summarizer.max_doc_tokens` tokens anyway; the bound protects the server).

The generation settings (prompt, separator, thinking, max_new_tokens, ...) come from `config`, else the
run's `config.yaml` found next to the model (run directory / registry artifacts), else the defaults.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from pathlib import Path
from typing import Any

from resume.serving.batching import MicroBatcher
from resume.serving.protocol import (
    InferRequest,
    InvalidInput,
    check_bool,
    check_fields,
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

FIELDS = ("document", "return_reasoning")


def reasoning_of(completion: str, separator: str) -> str | None:
    """The text before the last separator, `<think>` removed; None without a separator."""
    if separator not in completion:
        return None
    return completion.rsplit(separator, 1)[0].replace("<think>", "").strip()


class SummaryGenerator:
    """The summarizer LLM behind an async, micro-batched `summarize(docs)` (shared by the summarizer
    predictor and by the retriever's document adds)."""

    def __init__(self, source: str, cfg: Any = None, *, device: str | None = None, max_wait_ms: float = 5.0,
                 max_batch_size: int | None = None, dtype: str | None = None):
        self.source = source
        self.cfg = cfg
        self.device = device
        self.dtype = dtype
        self.max_wait_ms = max_wait_ms
        self.max_batch_size = max_batch_size
        self.loaded = False

    def load(self) -> SummaryGenerator:
        from resume.config import load_config
        from resume.serving.bundle import find_run_config
        from resume.serving.loading import resolve_summarizer_source
        from resume.summarizer import BatchSummarizer

        model, cfg_dir = resolve_summarizer_source(self.source)
        if self.cfg is None:
            self.cfg = find_run_config(cfg_dir) if cfg_dir is not None else load_config(None)
        elif isinstance(self.cfg, str | Path):
            self.cfg = load_config(self.cfg)
        if self.dtype is not None:  # a copy: the caller's config object stays as it was
            self.cfg = copy.deepcopy(self.cfg)
            self.cfg.summarizer.dtype = self.dtype
        runner = BatchSummarizer(model, self.cfg, device=self.device)
        self.model, self.tokenizer = runner.model, runner.tokenizer
        self.model_ref = model
        self.batcher = MicroBatcher(self._generate, max_batch_size=self.max_batch_size or self.cfg.summarizer.batch_size,
                                    max_wait_ms=self.max_wait_ms, name="summarizer-batcher")
        self.loaded = True
        return self

    def _generate(self, docs: list[str]) -> list[dict[str, Any]]:
        from resume.summarizer import generate_batch, index_text

        sep = self.cfg.summarizer.separator
        completions = generate_batch(self.model, self.tokenizer, docs, self.cfg)
        out = []
        for c, d in zip(completions, docs):
            text, has_sep = index_text(c, d, self.tokenizer, self.cfg)
            out.append({"summary": text, "has_separator": has_sep, "reasoning": reasoning_of(c, sep)})
        return out

    async def summarize(self, docs: list[str]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self.batcher.submit(d) for d in docs)))

    def close(self) -> None:
        if self.loaded:
            self.batcher.close()


class SummarizerModel(kserve.Model):
    """Options: source (HF dir, run dir, packaged name or MLflow URI), cfg (ResumeConfig or YAML path),
    device, dtype (overrides summarizer.dtype), max_chars (per document), max_instances (per request)."""

    def __init__(self, name: str, source: str, *, cfg: Any = None, device: str | None = None,
                 max_chars: int = 20_000, max_instances: int = 64, max_wait_ms: float = 5.0,
                 dtype: str | None = None):
        super().__init__(name)
        self.generator = SummaryGenerator(source, cfg, device=device, max_wait_ms=max_wait_ms, dtype=dtype)
        self.max_chars, self.max_instances = max_chars, max_instances

    def load(self) -> bool:
        self.generator.load()
        self.ready = True
        return self.ready

    def stop(self):
        self.generator.close()
        super().stop()

    def _parse_v1(self, payload: Any) -> tuple[list[str], list[bool]]:
        docs, reasons = [], []
        for i, inst in enumerate(v1_instances(payload, max_instances=self.max_instances)):
            where = f"instances[{i}]"
            if isinstance(inst, str):
                inst = {"document": inst}
            if not isinstance(inst, dict):
                raise InvalidInput(f'{where}: expected an object {{"document": ...}} or a document string, '
                                   f"got {type_name(inst)} {short(inst)}")
            check_fields(inst, where, FIELDS)
            if "document" not in inst:
                raise InvalidInput(f"{where}: missing field 'document'")
            docs.append(check_text(inst["document"], f"{where}.document", max_chars=self.max_chars, what="document"))
            reasons.append(check_bool(inst.get("return_reasoning", False), f"{where}.return_reasoning"))
        return docs, reasons

    async def predict(self, payload: dict | InferRequest, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> dict | InferResponse:
        if isinstance(payload, InferRequest):
            v2_check_inputs(payload, FIELDS)
            docs = [check_text(d, f"document[{i}]", max_chars=self.max_chars, what="document")
                    for i, d in enumerate(v2_strings(payload, "document", max_items=self.max_instances))]
            want = v2_scalar(payload, "return_reasoning", False)
            want = check_bool(bool(want) if isinstance(want, int) and want in (0, 1) else want, "return_reasoning")
            res = await self.generator.summarize(docs)
            n = len(res)
            outputs = [InferOutput("summary", [n], "BYTES", [r["summary"] for r in res]),
                       InferOutput("has_separator", [n], "BOOL", [r["has_separator"] for r in res])]
            if want:
                outputs.append(InferOutput("reasoning", [n], "BYTES", [r["reasoning"] or "" for r in res]))
            return InferResponse(response_id=payload.id or str(uuid.uuid4()), model_name=self.name,
                                 infer_outputs=outputs)
        docs, reasons = self._parse_v1(payload)
        res = await self.generator.summarize(docs)
        preds = []
        for r, want in zip(res, reasons):
            p = {"summary": r["summary"], "has_separator": r["has_separator"]}
            if want:
                p["reasoning"] = r["reasoning"]
            preds.append(p)
        return {"predictions": preds}
