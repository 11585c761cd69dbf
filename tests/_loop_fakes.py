"""Fake stage functions for the loop's control-flow tests (and fabricated run dirs for report/tracking).

They follow the real signatures (CONTRACT.md) and write the real artifact formats, with scripted numbers:
the mean GRPO reward of round t is `rewards[t]`, the dev MRR@10 of iteration t's summaries is `dev[t]`
(t = 0: S_0; the baseline reads `dev[-1]`), test metrics are dev + 0.01.

They also record what each stage receives, so the tests can check the method's data flow: every call
appends a dict to `args` with the stage, its output path and its inputs (the summarizer, the retriever,
the texts, the reward config GRPO trains with). On receipt every stage asserts the part of the contract
that holds for every call: a `ResumeConfig` whose `data.path` is the directory the stage reads, with the
working-set sampling knobs off (the loop materialises the working set once; `resume.run_dir.stage_config`).
`evaluate_retrieval` writes `per_query.json` with per-query values whose mean is the scripted metric, so
the report's paired tests run on fabricated run dirs too.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from resume.io import atomic_write_json, write_jsonl
from resume.loop import Stages

_ITER = re.compile(r"iter_(\d+)")


def write_tiny_beir(root: Path, n_docs: int = 12) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "corpus.jsonl", [{"_id": f"d{i}", "title": f"T{i}", "text": f"text of document {i}"}
                                        for i in range(n_docs)])
    qs = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(9)]
    write_jsonl(root / "queries.jsonl", qs)
    (root / "qrels").mkdir(exist_ok=True)
    for split, ids in (("train", range(0, 4)), ("dev", range(4, 6)), ("test", range(6, 9))):
        lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in ids]
        (root / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _received(cfg, data_dir) -> None:
    """The contract every stage call must meet (see the module docstring)."""
    from resume.config import ResumeConfig

    assert isinstance(cfg, ResumeConfig), f"a stage got {type(cfg).__name__}, not a ResumeConfig"
    assert cfg.data.path == str(data_dir), f"stage config data.path {cfg.data.path} != data_dir {data_dir}"
    assert (cfg.data.max_train_queries, cfg.data.max_eval_queries, cfg.data.distractors) == (None, None, None), \
        "a stage got a config with the working-set sampling knobs on"


def _t(path: str | None) -> int:
    if path is None:
        return -1
    m = _ITER.findall(str(path))
    return int(m[-1]) if m else 0


@dataclass
class FakeStages:
    rewards: dict[int, float] = field(default_factory=lambda: {1: 0.1, 2: 0.3, 3: 0.5, 4: 0.7})
    dev: dict[int, float] = field(default_factory=lambda: {-1: 0.3, 0: 0.2, 1: 0.25, 2: 0.3, 3: 0.35, 4: 0.4})
    fail_on: str | None = None  # "stage:out-path-substring": raise once when called
    calls: list[tuple[str, str]] = field(default_factory=list)
    args: list[dict] = field(default_factory=list)  # what each call received (models, texts, weights)

    def _maybe_fail(self, stage: str, out: str) -> None:
        if self.fail_on:
            s, sub = self.fail_on.split(":", 1)
            if s == stage and sub in out:
                self.fail_on = None
                raise RuntimeError(f"injected failure in {stage} ({out})")

    def grpo_train(self, cfg, *, data_dir, summarizer, retriever, out_dir):
        _received(cfg, data_dir)
        self.calls.append(("grpo", str(out_dir)))
        self.args.append({"stage": "grpo", "out": str(out_dir), "summarizer": str(summarizer),
                          "retriever": str(retriever), "reward": dataclasses.asdict(cfg.reward),
                          "data": str(data_dir)})
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "partial").write_text("x")
        self._maybe_fail("grpo", str(out))
        t = _t(out_dir)
        rows = [{"step": s, "reward_mean": self.rewards.get(t, 0.0) + 0.01 * (s - 2), "structure_mean": 0.5,
                 "retrieval_mean": 0.1 * t, "length_mean": 20.0 + t, "separator_rate": 0.5} for s in (1, 2, 3)]
        write_jsonl(out / "reward_log.jsonl", rows)
        atomic_write_json(out / "config.json", {"init": str(summarizer), "reward_model": str(retriever)})
        return str(out)

    def summarize_corpus(self, cfg, *, data_dir, model, retriever, out_path, doc_ids=None):
        _received(cfg, data_dir)
        self.calls.append(("summarize", str(out_path)))
        self.args.append({"stage": "summarize", "out": str(out_path), "model": str(model), "retriever": str(retriever),
                          "data": str(data_dir)})
        self._maybe_fail("summarize", str(out_path))
        from resume.data import load_beir

        ds = load_beir(data_dir)
        t = _t(out_path)
        rows = [{"_id": d, "summary": f"S_{t} of {d}: " + "word " * (5 + t), "completion": "c", "n_tokens": 6 + t,
                 "has_separator": t > 0} for d in ds.corpus]
        write_jsonl(out_path, rows)
        return {"n_docs": len(rows)}

    def finetune_retriever(self, cfg, *, data_dir, split, init_model, texts, out_dir):
        _received(cfg, data_dir)
        self.calls.append(("finetune", str(out_dir)))
        self.args.append({"stage": "finetune", "out": str(out_dir), "init": str(init_model), "texts": str(texts),
                          "split": split, "data": str(data_dir)})
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self._maybe_fail("finetune", str(out))
        atomic_write_json(out / "config.json", {"init": str(init_model), "texts": str(texts)})
        return str(out)

    def evaluate_retrieval(self, cfg, *, data_dir, split, retriever, texts=None, out_dir, mode=None,
                           fusion_weight=None, encoder=None, run_dir=None, summary_title=None):
        _received(cfg, data_dir)
        self.calls.append(("evaluate", str(out_dir)))
        self.args.append({"stage": "evaluate", "out": str(out_dir), "retriever": str(retriever), "texts": str(texts),
                          "mode": mode, "weight": fusion_weight, "data": str(data_dir), "split": split,
                          "encoder": None if encoder is None else id(encoder), "title": summary_title})
        self._maybe_fail("evaluate", str(out_dir))
        t = _t(texts)
        v = self.dev.get(t, 0.0) + (0.01 if split == "test" else 0.0)
        if "full_doc_control" in str(retriever):
            v += 0.02
        if mode == "fused":
            v += 0.03 * (1.0 - fusion_weight)
        if summary_title:
            v += 0.015
        m = {"mrr@10": v, "ndcg@10": v + 0.05, "recall@100": min(1.0, v + 0.5), "recall@1000": 1.0}
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "run.trec").write_text("q6 Q0 d6 1 1.0 fake\n", encoding="utf-8")
        # per query: the scripted value -a, +a, 0 over the split's queries (mean = the value), with a spread
        # `a` that depends on the texts, so paired differences between two systems vary from query to query
        qids = {"train": ("q0", "q1", "q2"), "dev": ("q4", "q5"), "test": ("q6", "q7", "q8")}.get(split, ())
        a = 0.05 + 0.02 * (t + 1)
        per_query = {q: {k: round(x + (-a, a, 0.0)[i], 6) for k, x in m.items()} for i, q in enumerate(qids)}
        atomic_write_json(out / "per_query.json", per_query)
        atomic_write_json(out / "metrics.json", m)
        return m

    def choose_fusion_weight(self, cfg, *, data_dir, split, retriever, texts, encoder=None, summary_title=None):
        _received(cfg, data_dir)
        self.calls.append(("choose_weight", str(texts)))
        self.args.append({"stage": "choose_weight", "retriever": str(retriever), "texts": str(texts), "split": split,
                          "encoder": None if encoder is None else id(encoder), "title": summary_title})
        return {"weight": 0.7, "metric": "mrr@10", "value": 0.5, "curve": {"0.7": 0.5}}

    def quality_signals(self, cfg, *, data_dir, summaries, judge):
        _received(cfg, data_dir)
        self.calls.append(("quality", str(summaries)))
        self.args.append({"stage": "quality", "summaries": str(summaries), "judge": str(judge), "data": str(data_dir)})
        t = _t(summaries)
        return {"text": {"placeholder_rate": 0.0, "copy_rate": 0.1 * max(t, 0), "mean_tokens": 6.0 + t},
                "fixed_judge": {"n": 2, "judge": str(judge), "delta_mean": 0.01 * t, "reward_mean": 0.1 * t}}

    def write_lead_summaries(self, data_dir, out_path, *, retriever_tokenizer=None):
        self.calls.append(("lead", str(out_path)))
        from resume.data import load_beir

        rows = [{"_id": d, "summary": f"lead of {d}", "completion": "", "n_tokens": 3, "has_separator": True,
                 "truncated": False} for d in load_beir(data_dir).corpus]
        write_jsonl(out_path, rows)
        return {"n_docs": len(rows)}

    def stages(self) -> Stages:
        from resume.data import load_beir, select_working_set, write_beir

        return Stages(load_beir=load_beir, select_working_set=select_working_set, write_beir=write_beir,
                      grpo_train=self.grpo_train, summarize_corpus=self.summarize_corpus,
                      finetune_retriever=self.finetune_retriever, evaluate_retrieval=self.evaluate_retrieval,
                      choose_fusion_weight=self.choose_fusion_weight, quality_signals=self.quality_signals,
                      write_lead_summaries=self.write_lead_summaries)


def fake_cfg(data_dir: Path, **loop):
    from resume.config import load_config

    overrides = [f"data.path={data_dir}", "device=cpu", "summarizer.model=f0", "retriever.model=g0"]
    overrides += [f"loop.{k}={json.dumps(v)}" for k, v in loop.items()]
    return load_config(None, overrides)
