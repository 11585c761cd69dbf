"""Algorithm 1 (the ReSuMe loop) with its baselines, ablations, early stopping and crash-safe resume.

    resume run --config configs/tiny.yaml --out runs/tiny          # seconds, random tiny models
    resume run --config configs/demo.yaml --out runs/demo          # CPU, SmolLM2 + MiniLM (`make demo`)

What runs (f = summarizer, g = retriever, S = summaries of the working-set corpus):

    data        the working set (`select_working_set(load_beir(data.path), cfg.data)`) is written ONCE as a
                BEIR dir <run_dir>/data/; every stage reads that dir (with the sampling knobs turned off),
                so all stages, and KFP components given the same dir, see the same documents and queries.
    baseline    g_0 over full documents                                  -> baseline/eval_test/
    iter_00     S_0 = f_0's summaries (g_0 counts tokens)                -> iter_00/summaries.jsonl
                fixed_summary = g_0 over S_0 (test; dev when early stopping on the metric is on)
    iter_t      f_t = GRPO(f_{t-1}, reward g_{t-1})                      -> iter_t/summarizer/
                S_t = f_t(corpus), greedy                                -> iter_t/summaries.jsonl
                g_t = InfoNCE fine-tune of g_{t-1} on (train q, S_t)     -> iter_t/retriever/
                g_t over S_t on the dev split (early stopping)           -> iter_t/eval/
                g_t over S_t on the test split (curves, final table)     -> iter_t/eval_test/
    systems     non_iterative = g_0 over S_1 (f_1 and S_1 are iteration 1's)  -> non_iterative/eval_test/
                iterative = g_T over S_T (the last completed iteration)
                full_doc_control = g_0 fine-tuned on FULL documents for T rounds with the same finetune
                config as the loop (same steps, same schedule per round), over full documents
                                                   -> full_doc_control/round_XX/retriever, round_T/eval_test/
                iterative_fused = documents and S_T as two views, g_T, the document weight chosen on dev
                lead, lead_fused = title + first sentence (no LLM), g_0, alone and fused the same way
                fixed_summary_titled, iterative_titled, iterative_titled_fused = Fixed Summary, Iterative and
                Iterative + fused with each summary indexed after its document's title (beyond the paper:
                evaluate.summary_title, resume.lead.join_title); the paper's rows stay as they are
    ablations   each a separate loop under ablations/<name>/ with the same baseline and S_0:
                no_retrieval_adaptation (g stays g_0; its iteration 1 IS the main loop's f_1/S_1, so it is
                reused), no_negative_queries (reward.use_negatives=false), continuous_reward (reward.discrete=false).

Early stopping (`resume.run_dir.early_stop`, the rule the KFP pipeline's should-continue task applies too;
after iteration t has COMPLETED, i.e. f_t, S_t, g_t exist and are evaluated; the loop then ends and
iteration t is the final one, T = t; nothing is rolled back):
    reward: mean GRPO reward of round t (mean over its logged steps) - that of round t-1 < eps_reward
            (from t = 2: round 1 has nothing to compare with);
    metric: dev MRR@10 of (g_t, S_t) - dev MRR@10 of (g_{t-1}, S_{t-1}) < eps_metric, where iteration 0 is the
            loop's starting point (g_0, S_0), so the rule applies from t = 1;
    either one stops the loop; null disables that rule.

Resume. Every stage writes its output through the stage function (atomic files, resumable caches) and
then a marker <scope>/_stages/<stage>.json (seconds + the stage's result) - the commit point. A rerun with
the same command skips stages whose marker exists; a stage without a marker is redone: summarize-corpus
and retriever-finetune continue from their own cache / checkpoints, the others start over from a clean
output dir. Every stage is seeded from loop.seed before it runs, so a resumed run gives the same numbers
as an uninterrupted one. A config that differs from <run_dir>/config.yaml is refused (`--force` accepts it
and keeps the completed stages; use a new --out to start over).

Outputs: results.json (everything the report and the tracker need; schema `resume.run_dir.Results`,
written by `run_dir.write_results` with its paths relative to the run dir), metrics.json (test metrics per
system and ablation), report.md + plots/ (resume.report), MLflow runs + registered models (resume.tracking).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from resume import run_dir as rd
from resume.config import ResumeConfig, flatten
from resume.errors import ConfigError, ResumeError
from resume.io import atomic_write_json, iter_jsonl
from resume.run_dir import METRICS, PRIMARY_METRIC, STAGES_DIR

# Stages whose functions continue from their own partial output (cache / checkpoints) and stay
# deterministic when they do; the others restart from a clean output dir.
RESUMABLE = {"summarize", "retriever-finetune"}


# ------------------------------------------------------------------------------------- stage functions


@dataclass
class Stages:
    """The stage functions the loop calls (injectable for tests; None = the real one from resume.*)."""

    load_beir: Callable | None = None
    select_working_set: Callable | None = None
    write_beir: Callable | None = None
    grpo_train: Callable | None = None
    summarize_corpus: Callable | None = None
    finetune_retriever: Callable | None = None
    evaluate_retrieval: Callable | None = None
    choose_fusion_weight: Callable | None = None
    quality_signals: Callable | None = None
    write_lead_summaries: Callable | None = None

    def get(self, name: str) -> Callable:
        fn = getattr(self, name)
        if fn is not None:
            return fn
        if name in ("load_beir", "select_working_set", "write_beir"):
            import resume.data as mod
        elif name == "grpo_train":
            import resume.grpo as mod
        elif name == "summarize_corpus":
            import resume.summarizer as mod
        elif name == "finetune_retriever":
            import resume.retriever as mod
        elif name == "quality_signals":
            import resume.quality as mod
        elif name == "write_lead_summaries":
            import resume.lead as mod
        else:
            import resume.evaluate as mod
        fn = getattr(mod, name)
        setattr(self, name, fn)
        return fn


# ---------------------------------------------------------------------------------------- helpers


def _normalised(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(yaml.safe_dump(cfg_dict, sort_keys=False))


def check_config(cfg: ResumeConfig, run_dir: Path, force: bool = False) -> None:
    """Write <run_dir>/config.yaml, or check that it matches `cfg` (a rerun must use the same config)."""
    import yaml

    from resume.config import dump_config

    path = run_dir / "config.yaml"
    if path.exists():
        saved = flatten(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
        now = flatten(_normalised(cfg.to_dict()))
        diff = [f"{k}: {saved.get(k, '<absent>')!r} -> {now.get(k, '<absent>')!r}"
                for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
        if diff and not force:
            shown = "; ".join(diff[:8]) + ("; ..." if len(diff) > 8 else "")
            raise ConfigError(
                f"{run_dir} holds a run with a different config ({shown}). Rerun with the same config to "
                f"continue it, pass --force to continue it with the new config (completed stages are kept), "
                f"or choose a new --out to start over"
            )
        if diff:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            shutil.copy2(path, run_dir / f"config.prev-{stamp}.yaml")
    dump_config(cfg, path)


def summary_stats(path: str | Path) -> dict[str, float]:
    """Mean summary length (retriever tokens) and separator rate of a summaries.jsonl."""
    n = tok = sep = 0
    for row in iter_jsonl(path):
        n += 1
        tok += int(row.get("n_tokens") or 0)
        sep += bool(row.get("has_separator"))
    return {"summary_len": tok / n if n else 0.0, "separator_rate": sep / n if n else 0.0, "n_summaries": n}


def _device(cfg: ResumeConfig) -> str:
    try:
        from resume.models import pick_device

        return str(pick_device(cfg.device))
    except Exception:  # noqa: BLE001 - informational only
        return cfg.device


# ------------------------------------------------------------------------------------------ runner


class Runner:
    """Runs stages with markers (skip when done), progress lines and per-stage seeding."""

    def __init__(self, run_dir: Path, seed: int, log: Callable[[str], None] = print):
        self.run_dir, self.seed, self.log = run_dir, seed, log
        self.times: dict[str, float] = {}
        self.cpu: dict[str, float] = {}  # process CPU time (all threads of this process; not child processes)

    def marker(self, scope: Path, name: str) -> Path:
        return scope / STAGES_DIR / f"{name}.json"

    def done(self, scope: Path, name: str) -> bool:
        return self.marker(scope, name).exists()

    def _load(self, m: Path) -> dict[str, Any]:
        """A marker, its result's paths resolved against the run dir (they are stored relative to it,
        `resume.run_dir.run_relative`, so a run dir can be moved or copied)."""
        rec = json.loads(m.read_text(encoding="utf-8"))
        rec["result"] = rd.resolve_run_paths(rec["result"], self.run_dir, keys=None)
        return rec

    def result(self, scope: Path, name: str) -> Any:
        return self._load(self.marker(scope, name))["result"]

    def stage(self, label: str, scope: Path, name: str, fn: Callable[[], Any], *,
              outputs: tuple[Path, ...] = ()) -> Any:
        m = self.marker(scope, name)
        key = f"{scope.relative_to(self.run_dir).as_posix()}/{name}".lstrip("./")
        if m.exists():
            rec = self._load(m)
            self.times[key] = rec["seconds"]
            self.cpu[key] = rec.get("cpu_seconds", 0.0)
            self.log(f"[{label}] {name} ... done earlier ({rec['seconds']:.0f} s), skipped")
            return rec["result"]
        if name not in RESUMABLE:
            for out in outputs:
                if out.is_dir():
                    shutil.rmtree(out)
                elif out.exists():
                    out.unlink()
        self.log(f"[{label}] {name} ...")
        rd.seed_everything(self.seed)
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        result = json.loads(json.dumps(result, default=str))
        stored = rd.run_relative(result, self.run_dir, keys=None)
        atomic_write_json(m, {"stage": name, "seconds": round(dt, 3), "cpu_seconds": round(cpu, 3), "result": stored,
                              "finished_at": datetime.now(UTC).isoformat(timespec="seconds")})
        self.times[key] = round(dt, 3)
        self.cpu[key] = round(cpu, 3)
        self.log(f"[{label}] {name} ... done in {dt:.0f} s")
        return result


@dataclass
class _Ctx:
    cfg: ResumeConfig  # the stage config (data.path = <run_dir>/data)
    run: Runner
    stages: Stages
    data_dir: Path
    has_dev: bool
    g0: str
    f0: str
    s0: str | None = None
    s0_dev: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def evaluate(self, label: str, scope: Path, name: str, split: str, retriever: str, texts: str | None,
                 out: Path, cfg: ResumeConfig | None = None, *, data_dir: Path | None = None,
                 fusion_weight: float | None = None, encoder: Any = None, title: bool = False) -> dict[str, float]:
        """Evaluate one system; `fusion_weight` given = the fused index (document + `texts`) with that
        weight on the document view, else the index of `texts` alone (None: the full documents); `title`:
        each summary after its document's title (`evaluate.summary_title`).
        `encoder`: the retriever's encoder to use (None: the stage loads `retriever`)."""
        fn = self.stages.get("evaluate_retrieval")
        c = cfg or self.cfg
        # the loop names each system's index itself (evaluate.mode and evaluate.summary_title are the served
        # index's, see EvalConfig)
        kw = {"mode": "summary"} if fusion_weight is None else {"mode": "fused", "fusion_weight": fusion_weight}
        kw["summary_title"] = title
        if encoder is not None:
            kw["encoder"] = encoder
        kw["run_dir"] = str(self.run.run_dir)  # eval_info.json holds the paths inside it relative
        res = self.run.stage(label, scope, name, lambda: fn(c, data_dir=str(data_dir or self.data_dir), split=split,
                                                             retriever=retriever, texts=texts, out_dir=str(out),
                                                             **kw), outputs=(out,))
        return {k: float(res[k]) for k in METRICS if k in res}

    def test_system(self, label: str, scope: Path, retriever: str, texts: str | None, *,
                    fusion_weight: float | None = None, cfg: ResumeConfig | None = None,
                    data_dir: Path | None = None, split: str | None = None, encoder: Any = None,
                    title: bool = False) -> dict[str, Any]:
        """One system of the results table: `retriever` over `texts` (None: the full documents; with
        `fusion_weight`: fused with them; `title`: each summary after its title) on the test split, into
        <scope>/eval_test.
        Returns {"test": metrics, "dir": the eval dir} (results.json `systems.<name>`)."""
        out = scope / rd.EVAL_TEST
        split = split or (cfg or self.cfg).data.test_split
        return {"test": self.evaluate(label, scope, "evaluate-test", split, retriever, texts, out, cfg,
                                      data_dir=data_dir, fusion_weight=fusion_weight, encoder=encoder, title=title),
                "dir": str(out)}

    def fused_system(self, label: str, scope: Path, retriever: str, texts: str, *, title: bool = False
                     ) -> dict[str, Any]:
        """A fused system (documents and `texts` as two views): the document weight (`fusion_weight`), then
        the test evaluation with it. Both stages share one encoder that encodes each view once
        (`evaluate.CachingEncoder`; the model loads on first use, so not at all when both stages are done)."""
        from resume.evaluate import CachingEncoder

        enc = CachingEncoder(_LazyEncoder(self.cfg, retriever))
        w = self.fusion_weight(label, scope, retriever, texts, encoder=enc, title=title)
        return {**self.test_system(label, scope, retriever, texts, fusion_weight=w["weight"], encoder=enc,
                                   title=title), "fusion": w}

    def quality(self, label: str, scope: Path, summaries: str, cfg: ResumeConfig | None = None, *,
                data_dir: Path | None = None) -> dict[str, Any]:
        """The summary-quality signals of one summaries.jsonl, the fixed judge being g_0."""
        fn = self.stages.get("quality_signals")
        c = cfg or self.cfg
        return self.run.stage(label, scope, "quality", lambda: fn(c, data_dir=str(data_dir or self.data_dir),
                                                                   summaries=summaries, judge=self.g0))

    def fusion_weight(self, label: str, scope: Path, retriever: str, texts: str, *,
                      encoder: Any = None, title: bool = False) -> dict[str, Any]:
        """The document view's weight in the fused index: chosen on the dev split (`choose_fusion_weight`)
        unless `evaluate.fusion_weight` fixes it; 0.5 without a dev split."""
        fixed = self.cfg.evaluate.fusion_weight
        if fixed is not None or not self.has_dev:
            return {"weight": 0.5 if fixed is None else fixed, "chosen_on": None}
        fn = self.stages.get("choose_fusion_weight")
        kw = {"summary_title": title} if encoder is None else {"encoder": encoder, "summary_title": title}
        res = self.run.stage(label, scope, "choose-fusion-weight", lambda: fn(
            self.cfg, data_dir=str(self.data_dir), split=self.cfg.data.dev_split, retriever=retriever, texts=texts,
            **kw))
        return {**res, "chosen_on": self.cfg.data.dev_split}


class _LazyEncoder:
    """`evaluate.load_encoder(cfg, retriever)`, loaded on the first attribute access."""

    def __init__(self, cfg: ResumeConfig, retriever: str):
        self._cfg, self._retriever, self._encoder = cfg, retriever, None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._encoder is None:
            from resume.evaluate import load_encoder

            self._encoder = load_encoder(self._cfg, self._retriever)
        return getattr(self._encoder, name)


# ------------------------------------------------------------------------------------------ the loop


def iterate(ctx: _Ctx, root: Path, cfg: ResumeConfig, *, name: str, adapt: bool = True,
            share_first_from: Path | None = None) -> dict[str, Any]:
    """Algorithm 1 under `root` (iter_01, iter_02, ...). Returns iterations, stop info and the final f_T, g_T."""
    T = cfg.loop.max_iterations
    f_prev, g_prev = ctx.f0, ctx.g0
    iterations: list[dict[str, Any]] = []
    stop: dict[str, Any] = {"iteration": None, "reason": f"max_iterations ({T}) reached"}
    prev_dev = ctx.s0_dev[PRIMARY_METRIC] if ctx.s0_dev else None
    prev_reward: float | None = None
    grpo, summ, ft = (ctx.stages.get(n) for n in ("grpo_train", "summarize_corpus", "finetune_retriever"))
    tr = cfg.data.train_split
    for t in range(1, T + 1):
        label = f"{name} iter {t}/{T}" if name != "main" else f"iter {t}/{T}"
        it = root / f"iter_{t:02d}"
        rec: dict[str, Any] = {"iteration": t, "dir": str(it)}
        shared = share_first_from is not None and t == 1
        if shared:
            src = share_first_from / "iter_01"
            for stage in ("grpo-train", "summarize"):
                if not ctx.run.done(src, stage):
                    raise ResumeError(f"{name}: iteration 1 is shared with {src}, whose {stage} has not run")
            f_t = ctx.run.result(src, "grpo-train")
            s_path = str(src / "summaries.jsonl")
            rec["shared_from"] = str(src)
            ctx.run.log(f"[{label}] grpo-train + summarize ... shared with {src.relative_to(ctx.run.run_dir)}")
        else:
            out = it / "summarizer"
            live = ctx.extra.get("live_grpo") or (lambda *a: nullcontext())  # MLflow metrics while GRPO trains

            def train(f=f_prev, g=g_prev, o=out, t=t, live=live, prev=tuple(r["summarizer"] for r in iterations)):
                with live(name, t, list(prev)):
                    return grpo(cfg, data_dir=str(ctx.data_dir), summarizer=f, retriever=g, out_dir=str(o))

            f_t = ctx.run.stage(label, it, "grpo-train", train, outputs=(out,))
            s_path = str(it / "summaries.jsonl")
            ctx.run.stage(label, it, "summarize", lambda f=f_t, g=g_prev, o=s_path: summ(
                cfg, data_dir=str(ctx.data_dir), model=f, retriever=g, out_path=o), outputs=(Path(s_path),))
        f_t = str(f_t)
        quality = ctx.quality(label, it, s_path, cfg)
        if adapt:
            out = it / "retriever"
            g_t = str(ctx.run.stage(label, it, "retriever-finetune", lambda g=g_prev, s=s_path, o=out: ft(
                cfg, data_dir=str(ctx.data_dir), split=tr, init_model=g, texts=s, out_dir=str(o)), outputs=(out,)))
        else:
            g_t = g_prev
        dev = (ctx.evaluate(label, it, "evaluate-dev", cfg.data.dev_split, g_t, s_path, it / "eval", cfg)
               if ctx.has_dev else None)
        test = ctx.evaluate(label, it, "evaluate-test", cfg.data.test_split, g_t, s_path, it / "eval_test", cfg)
        rlog = rd.read_reward_log(f_t)
        rmean = rd.mean_reward(rlog)
        rec.update({"summarizer": f_t, "summaries": s_path, "retriever": g_t, "reward_mean": rmean,
                    "grpo_steps": len(rlog), "dev": dev, "test": test, "quality": quality, **summary_stats(s_path)})
        # early stopping, decided after the iteration has completed (the rule the KFP pipeline applies too)
        metric = dev[PRIMARY_METRIC] if dev else None
        decision = rd.early_stop(reward=rmean, prev_reward=prev_reward, metric=metric, prev_metric=prev_dev,
                                 eps_reward=cfg.loop.eps_reward, eps_metric=cfg.loop.eps_metric)
        if decision.reward_gain is not None:
            rec["reward_gain"] = decision.reward_gain
        if decision.metric_gain is not None:
            rec["dev_gain"] = decision.metric_gain
        iterations.append(rec)
        f_prev, g_prev = f_t, g_t
        prev_reward, prev_dev = rmean, metric
        if decision.stop:
            stop = {"iteration": t, "reason": decision.reason}
            ctx.run.log(f"[{label}] early stop after iteration {t}: {stop['reason']}")
            break
    return {"iterations": iterations, "stopped": stop, "final": {"summarizer": f_prev, "retriever": g_prev},
            "test": iterations[-1]["test"], "dev": iterations[-1]["dev"], "n_iterations": len(iterations)}


def _materialise(stages: Stages, source: str, out: Path, dcfg) -> dict[str, Any]:
    """Write the working set of `source` under `dcfg` (a DataConfig) as a BEIR dir at `out` (atomically)."""
    ds = stages.get("load_beir")(source)
    ws = stages.get("select_working_set")(ds, dcfg)
    tmp = out.parent / f".{out.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    stages.get("write_beir")(ws, tmp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return {"source": str(source), "n_docs": len(ws.corpus), "n_docs_source": len(ds.corpus),
            "queries": {s: len(q) for s, q in ws.qrels.items()},
            "judgements": {s: sum(len(v) for v in q.values()) for s, q in ws.qrels.items()}}


def _write_lead(ctx: _Ctx, label: str, scope: Path, data_dir: Path) -> str:
    """The lead control's summaries.jsonl of `data_dir`'s corpus (title + first sentence, no LLM; tokens
    counted with g_0's tokenizer), written once under `scope`; returns its path."""
    lead = scope / rd.SUMMARIES
    wl = ctx.stages.get("write_lead_summaries")
    ctx.run.stage(label, scope, "write-lead", lambda: wl(str(data_dir), str(lead), retriever_tokenizer=ctx.g0),
                  outputs=(lead,))
    return str(lead)


def _out_of_distribution(ctx: _Ctx, cfg: ResumeConfig, run_dir: Path, main: dict[str, Any] | None,
                         sys_metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The systems on `data.ood` (split `data.ood_split`) with the models trained in domain, as the paper's
    NFCorpus table: Baseline (g_0, documents), Fixed Summary (f_0's summaries, g_0), Iterative (f_T, g_T),
    Iterative + fused (the in-domain weight), the full-doc control, the lead control (alone and fused
    with the in-domain weights) and the titled systems where the in-domain run has them. Nothing is chosen on the OOD queries."""
    from resume.data import resolve_data_path

    ood_dir = Path(resolve_data_path(cfg.data.ood, splits=(cfg.data.ood_split,)))
    od = run_dir / "ood"
    split = cfg.data.ood_split
    source = ood_dir
    if cfg.data.ood_max_queries is not None or cfg.data.ood_distractors is not None:
        ws = od / "data"
        ctx.run.stage("ood", od, "working-set", lambda: _materialise(
            ctx.stages, str(source), ws, dataclasses.replace(cfg.data, max_eval_queries=cfg.data.ood_max_queries,
                                                      distractors=cfg.data.ood_distractors, max_train_queries=0)),
            outputs=(ws,))
        ood_dir = ws
    ocfg = copy.deepcopy(ctx.cfg)
    ocfg.data.path = str(ood_dir)
    systems: dict[str, dict[str, Any]] = {}
    summ = ctx.stages.get("summarize_corpus")

    def ev(name: str, retriever: str, texts: str | None, weight: float | None = None, title: bool = False) -> None:
        systems[name] = ctx.test_system(f"ood {name}", od / name, retriever, texts, fusion_weight=weight, cfg=ocfg,
                                        data_dir=ood_dir, split=split, title=title)
        if weight is not None:
            systems[name]["fusion_weight"] = weight

    def summaries(name: str, model: str) -> str:
        d = od / name
        out = d / "summaries.jsonl"
        ctx.run.stage(f"ood {name}", d, "summarize", lambda: summ(ocfg, data_dir=str(ood_dir), model=model,
                                                                  retriever=ctx.g0, out_path=str(out)),
                      outputs=(out,))
        return str(out)

    quality: dict[str, Any] = {}
    ev("baseline", ctx.g0, None)
    s0 = summaries("fixed_summary", ctx.f0)
    quality["fixed_summary"] = ctx.quality("ood fixed_summary", od / "fixed_summary", s0, ocfg, data_dir=ood_dir)
    ev("fixed_summary", ctx.g0, s0)
    if "fixed_summary_titled" in sys_metrics:  # a corpus without titles (MEDLINE) gives the untitled numbers
        ev("fixed_summary_titled", ctx.g0, s0, title=True)
    if main is not None:
        f_T, g_T = main["final"]["summarizer"], main["final"]["retriever"]
        s_T = summaries("iterative", f_T)
        quality["iterative"] = ctx.quality("ood iterative", od / "iterative", s_T, ocfg, data_dir=ood_dir)
        ev("iterative", g_T, s_T)
        if "iterative_fused" in sys_metrics:
            ev("iterative_fused", g_T, s_T, sys_metrics["iterative_fused"]["fusion"]["weight"])
        if "iterative_titled" in sys_metrics:
            ev("iterative_titled", g_T, s_T, title=True)
        if "iterative_titled_fused" in sys_metrics:
            ev("iterative_titled_fused", g_T, s_T, sys_metrics["iterative_titled_fused"]["fusion"]["weight"], title=True)
    if "full_doc_control" in sys_metrics:
        ev("full_doc_control", sys_metrics["full_doc_control"]["retriever"], None)
    if {"lead", "lead_fused"} & set(sys_metrics):
        lead = _write_lead(ctx, "ood lead", od / "lead", ood_dir)
        if "lead" in sys_metrics:
            ev("lead", ctx.g0, lead)
        if "lead_fused" in sys_metrics:
            ev("lead_fused", ctx.g0, lead, sys_metrics["lead_fused"]["fusion"]["weight"])
    return {"dataset": source.name, "path": str(ood_dir), "split": split, "systems": systems, "quality": quality,
            "working_set": None if ood_dir == source else ctx.run.result(od, "working-set")}


def run_env(cfg: ResumeConfig) -> dict[str, Any]:
    """What the numbers depend on beyond the config: CPU model and bf16 support, threads, dtypes."""
    import platform

    from resume.models import cpu_info

    cpu, flags = cpu_info()
    cpu = cpu or platform.processor()
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        threads = None
    device = _device(cfg)
    return {"cpu": cpu, "amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags,
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch_threads": threads, "device": device, "summarizer_dtype": _dtype_named(cfg.summarizer.dtype, device),
            "retriever_dtype": _dtype_named(cfg.retriever.dtype, device), "python": platform.python_version()}


def _dtype_named(dtype: str, device: str) -> str:
    """A config dtype with what it resolves to on this machine (`native (float32)`), as the report prints it."""
    try:
        from resume.models import torch_dtype

        resolved = str(torch_dtype(dtype, device)).removeprefix("torch.")
    except Exception:  # noqa: BLE001 - informational only
        return dtype
    return dtype if resolved == dtype else f"{dtype} ({resolved})"


def _ablation_cfg(cfg: ResumeConfig, name: str) -> ResumeConfig:
    c = copy.deepcopy(cfg)
    if name == "no_negative_queries":
        c.reward.use_negatives = False
    elif name == "continuous_reward":
        c.reward.discrete = False
    return c


def run_loop(cfg: ResumeConfig, *, out_dir: str | Path, force: bool = False, stages: Stages | None = None,
             track: bool = True, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run Algorithm 1 with the configured systems and ablations into `out_dir` (resumable).

    Returns {"report": path to report.md, "metrics": {system: test metrics}, "ablations": {name: test
    metrics}, "results": path to results.json, "run_dir": ...}. `track=False` skips MLflow; `stages`
    injects stage functions (tests).
    """
    log = log or (lambda s: print(s, flush=True))
    stages = stages or Stages()
    run_dir = Path(out_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    with _lock(run_dir), ExitStack() as stack:  # the stack: the MLflow parent run, FAILED if the loop raises
        return _run_loop(cfg, run_dir, force, stages, track, log, stack)


@contextmanager
def _lock(run_dir: Path):
    """One `resume run` per run dir at a time (an flock: released by the OS even on SIGKILL)."""
    import fcntl

    f = open(run_dir / ".lock", "w")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ResumeError(f"{run_dir} is in use by another `resume run`; wait for it or choose another --out") \
                from None
        yield
    finally:
        f.close()


def _run_loop(cfg: ResumeConfig, run_dir: Path, force: bool, stages: Stages, track: bool,
              log: Callable[[str], None], stack: ExitStack) -> dict[str, Any]:
    check_config(cfg, run_dir, force)
    if cfg.data.ood:  # a bad OOD set fails now, not after hours of training
        from resume.data import load_beir, resolve_data_path

        ood = load_beir(resolve_data_path(cfg.data.ood, splits=(cfg.data.ood_split,)), splits=[cfg.data.ood_split])
        if not ood.qrels.get(cfg.data.ood_split):
            raise ConfigError(f"data.ood: {cfg.data.ood} has no judgements in split {cfg.data.ood_split!r}")
    started = datetime.now(UTC)
    t_start = time.perf_counter()
    run = Runner(run_dir, cfg.loop.seed, log)
    tracker = None
    if track:
        from resume import tracking

        tracker = stack.enter_context(tracking.parent_run(cfg, run_dir))  # ends FAILED if anything below raises

    # 1. the working set, once
    data_dir = run_dir / "data"

    data_info = run.stage("data", run_dir, "working-set", lambda: _materialise(stages, cfg.data.path, data_dir, cfg.data),
                          outputs=(data_dir,))
    scfg = rd.stage_config(cfg, data_dir)
    has_dev = data_info["queries"].get(cfg.data.dev_split, 0) > 0
    if not has_dev and cfg.loop.eps_metric is not None:
        log(f"[data] no '{cfg.data.dev_split}' queries in the working set: early stopping on dev MRR@10 is off")
    ctx = _Ctx(cfg=scfg, run=run, stages=stages, data_dir=data_dir, has_dev=has_dev,
               g0=cfg.retriever.model, f0=cfg.summarizer.model)
    if tracker is not None:  # each GRPO round logs its reward to its nested MLflow run while it trains
        ctx.extra["live_grpo"] = lambda name, t, prev: tracking.live_grpo(cfg, run_dir, name, t, prev)
    systems, ablations = list(cfg.loop.systems), list(cfg.loop.ablations)
    test = cfg.data.test_split
    sys_metrics: dict[str, dict[str, Any]] = {}

    # 2. baseline: g_0 over full documents
    if "baseline" in systems:
        sys_metrics["baseline"] = ctx.test_system("baseline", run_dir / "baseline", ctx.g0, None)

    # 3. iteration 0: S_0 (fixed summary) and its dev MRR@10 (the loop's starting point for eps_metric)
    loops_needed = bool({"non_iterative", "iterative", "full_doc_control"} & set(systems)) or bool(ablations)
    needs_s0 = bool({"fixed_summary", "fixed_summary_titled"} & set(systems)) or (loops_needed and cfg.loop.eps_metric is not None and has_dev)
    if needs_s0:
        d0 = rd.iter_dir(run_dir, 0)
        s0 = d0 / rd.SUMMARIES
        summ = stages.get("summarize_corpus")
        run.stage("iter 0", d0, "summarize", lambda: summ(scfg, data_dir=str(data_dir), model=ctx.f0,
                                                          retriever=ctx.g0, out_path=str(s0)), outputs=(s0,))
        ctx.s0 = str(s0)
        ctx.extra["s0_quality"] = ctx.quality("iter 0", d0, ctx.s0)
        if loops_needed and cfg.loop.eps_metric is not None and has_dev:
            ctx.s0_dev = ctx.evaluate("iter 0", d0, "evaluate-dev", cfg.data.dev_split, ctx.g0, ctx.s0,
                                      d0 / rd.EVAL_DEV)
        if "fixed_summary" in systems:
            sys_metrics["fixed_summary"] = ctx.test_system("iter 0", d0, ctx.g0, ctx.s0)

    # 4. the iterative loop (the method)
    main = None
    if loops_needed:
        main = iterate(ctx, run_dir, scfg, name="main", adapt=True)
        if "iterative" in systems:
            sys_metrics["iterative"] = {"test": main["test"], "dev": main["dev"],
                                        "dir": main["iterations"][-1]["dir"] + "/" + rd.EVAL_TEST}
        if "non_iterative" in systems:  # g_0 over S_1: one GRPO round, no retriever adaptation
            s1 = main["iterations"][0]["summaries"]
            sys_metrics["non_iterative"] = ctx.test_system("non_iterative", run_dir / "non_iterative", ctx.g0, s1)
        if "full_doc_control" in systems:
            d = run_dir / "full_doc_control"
            ft = stages.get("finetune_retriever")
            g = ctx.g0
            T = main["n_iterations"]
            for r in range(1, T + 1):
                rnd = d / f"round_{r:02d}"
                g = str(run.stage(f"full_doc_control {r}/{T}", rnd, "retriever-finetune",
                                  lambda g=g, o=rnd / rd.RETRIEVER: ft(scfg, data_dir=str(data_dir),
                                                                       split=cfg.data.train_split, init_model=g,
                                                                       texts=None, out_dir=str(o)),
                                  outputs=(rnd / rd.RETRIEVER,)))
            # evaluated per final round: a rerun with another T re-evaluates
            sys_metrics["full_doc_control"] = {
                **ctx.test_system("full_doc_control", d / f"round_{T:02d}", g, None), "retriever": g, "rounds": T}

    # 4b. beyond the paper: the fused index (document + summary views) and the lead control (no LLM)
    if "iterative_fused" in systems and main is not None:
        d = run_dir / "iterative_fused"
        g_T, s_T = main["final"]["retriever"], main["iterations"][-1]["summaries"]
        sys_metrics["iterative_fused"] = ctx.fused_system("iterative_fused", d, g_T, s_T)
    # ... and each summary indexed after its document's title (evaluate.summary_title), beside the paper's rows
    if "fixed_summary_titled" in systems and ctx.s0 is not None:
        sys_metrics["fixed_summary_titled"] = ctx.test_system("fixed_summary_titled", run_dir / "fixed_summary_titled",
                                                              ctx.g0, ctx.s0, title=True)
    if main is not None and {"iterative_titled", "iterative_titled_fused"} & set(systems):
        g_T, s_T = main["final"]["retriever"], main["iterations"][-1]["summaries"]
        if "iterative_titled" in systems:
            sys_metrics["iterative_titled"] = ctx.test_system("iterative_titled", run_dir / "iterative_titled", g_T,
                                                              s_T, title=True)
        if "iterative_titled_fused" in systems:
            sys_metrics["iterative_titled_fused"] = ctx.fused_system(
                "iterative_titled_fused", run_dir / "iterative_titled_fused", g_T, s_T, title=True)
    if {"lead", "lead_fused"} & set(systems):
        lead = _write_lead(ctx, "lead", run_dir / "lead", data_dir)
        ctx.extra["lead_quality"] = ctx.quality("lead", run_dir / "lead", lead)
        if "lead" in systems:
            sys_metrics["lead"] = ctx.test_system("lead", run_dir / "lead", ctx.g0, lead)
        if "lead_fused" in systems:
            sys_metrics["lead_fused"] = ctx.fused_system("lead_fused", run_dir / "lead_fused", ctx.g0, lead)

    # 4c. out of distribution: the in-domain models on cfg.data.ood, no further training
    ood = _out_of_distribution(ctx, cfg, run_dir, main, sys_metrics) if cfg.data.ood else None

    # 5. ablations
    abl: dict[str, Any] = {}
    for name in ablations:
        acfg = _ablation_cfg(scfg, name)
        share = run_dir if name == "no_retrieval_adaptation" and main is not None else None
        abl[name] = iterate(ctx, run_dir / "ablations" / name, acfg, name=name,
                            adapt=name != "no_retrieval_adaptation", share_first_from=share)

    finished = datetime.now(UTC)
    results = {
        "name": cfg.name,
        "run_dir": str(run_dir),
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "seconds_this_invocation": round(time.perf_counter() - t_start, 1),
        "seconds_stages": round(sum(run.times.values()), 1),
        "device": _device(cfg),
        "models": {"summarizer": cfg.summarizer.model, "retriever": cfg.retriever.model},
        "data": data_info,
        "splits": {"train": cfg.data.train_split, "dev": cfg.data.dev_split, "test": test},
        "s0": ctx.s0,
        "s0_dev": ctx.s0_dev,
        "s0_quality": ctx.extra.get("s0_quality"),
        "lead_quality": ctx.extra.get("lead_quality"),
        "env": run_env(cfg),
        "ood": ood,
        "systems": sys_metrics,
        "iterations": main["iterations"] if main else [],
        "stopped": main["stopped"] if main else None,
        "final": main["final"] if main else None,
        "ablations": abl,
        "stage_seconds": run.times,
        "stage_cpu_seconds": run.cpu,
        "early_stopping": {"eps_reward": cfg.loop.eps_reward, "eps_metric": cfg.loop.eps_metric,
                           "max_iterations": cfg.loop.max_iterations},
    }
    rd.write_results(run_dir, results)
    metrics = {k: v["test"] for k, v in sys_metrics.items()}
    atomic_write_json(run_dir / rd.METRICS_FILE, {"systems": metrics,
                                                 "ablations": {k: v["test"] for k, v in abl.items()}})
    from resume.report import write_report

    report = write_report(run_dir)
    log(f"[report] {report}")
    out: dict[str, Any] = {"report": str(report), "metrics": metrics, "ablations": {k: v["test"] for k, v in abl.items()},
                           "results": str(run_dir / rd.RESULTS), "run_dir": str(run_dir)}
    if tracker is not None:
        from resume import tracking

        tracking.log_run(cfg, run_dir)
        if cfg.tracking.register and main is not None:
            out["registered"] = tracking.register_models(cfg, run_dir, once=True)
        log(f"[tracking] {tracking.tracking_uri(cfg, run_dir)}")
    return out
