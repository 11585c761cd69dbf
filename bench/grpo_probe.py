"""Probe: does one GRPO round make f's summaries better for retrieval, as judged by a FIXED retriever?

    .venv/bin/python bench/grpo_probe.py --set grpo.learning_rate=3e-6            # one round, one setting
    .venv/bin/python bench/grpo_probe.py --sweep grpo.learning_rate=1e-6,3e-6,1e-5  # a measured sweep

Before: f_0's greedy summaries of the fixed judge's held-out training documents (`grpo.judge_docs`, never
GRPO prompts) scored by g_0 (`resume.quality.fixed_judge`: mean Delta, mean reward, share with Delta > 0)
plus the text signals. Then one GRPO round (`resume.grpo.grpo_train`, reward model g_0, the config's
`grpo.*` settings) from f_0, and the same measurement with f_1. The judge and the documents are the same
before and after, so the difference is what the round taught. Every setting of a sweep starts from f_0
and writes bench/out/grpo_probe/<tag>/ (`--work` for another folder); a rerun skips finished rounds and
cached summaries. Each round records its `--set` and sweep overrides (`<tag>/settings.json`), and a rerun with
other overrides stops instead of reusing a round trained otherwise (give it its own `--work`).
Writes bench/grpo_probe.json (the environment, the settings, before/after per setting, the reward log).

`--heldout-split dev` adds a second judge: f_0's and each round's greedy summaries of `--heldout-docs`
training documents that also answer dev queries (`heldout_doc_ids`, bench/best_of_n_probe.py's documents),
scored by g_0 with their dev queries, which GRPO never sees (some of those documents may have been the
round's prompts, scored there with their training queries). A rerun with it reuses finished rounds.

`--title-view` judges every summary set twice: alone (the paper's view, "fixed_judge") and after its
document's title ("fixed_judge_titled", the view `evaluate.summary_title` indexes and `reward.summary_title`
rewards), with the paired comparisons of both; the lead control starts with its title already and is
compared as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_ROOT = ROOT / "bench" / "out" / "grpo_probe"
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_ENCODERS: dict[str, object] = {}


def f0_dir(cfg) -> Path:
    """The cache of f_0's summaries and scores, one per summarizer (shared by the probes)."""
    return OUT_ROOT / ("f0-" + Path(str(cfg.summarizer.model)).name.replace("/", "_"))


def judge_encoder(cfg):
    """g_0 (`cfg.retriever`), loaded once per process for every fixed-judge call of a probe."""
    from resume.retriever import Encoder

    key = repr((cfg.retriever, cfg.device))
    if key not in _ENCODERS:
        _ENCODERS[key] = Encoder(cfg.retriever.model, cfg.retriever, device=None if cfg.device == "auto" else cfg.device)
    return _ENCODERS[key]


def judges(cfg, ds, path: Path, ids: list[str], split: str | None = None, titled: bool = False) -> dict:
    """{"fixed_judge": the summaries alone (the paper's view, whatever `reward.summary_title` says)} and,
    with `titled`, "fixed_judge_titled": each summary after its document's title (the titled index's view)."""
    from resume.quality import fixed_judge

    out = {}
    for key, title in (("fixed_judge", False), *((("fixed_judge_titled", True),) if titled else ())):
        out[key] = fixed_judge(cfg, data_dir=ds, summaries=path, judge=cfg.retriever.model, doc_ids=ids,
                               encoder=judge_encoder(cfg), per_doc=True, split=split, title=title)
    return out


def measure(cfg, data: str, model: str, out: Path, ids: list[str], ds=None, titled: bool = False) -> dict:
    from resume.data import load_beir
    from resume.quality import summary_quality
    from resume.summarizer import summarize_corpus

    path = out / "summaries.jsonl"
    stats = summarize_corpus(cfg, data_dir=data, model=model, retriever=cfg.retriever.model, out_path=path,
                             doc_ids=ids)
    return {"quality": summary_quality(path, data), **judges(cfg, ds or load_beir(data), path, ids, titled=titled),
            "generation_s": stats["generation_time_s"]}


def measure_lead(cfg, data: str, out: Path, ids: list[str], ds=None) -> dict:
    """The lead control (title + first sentence, no LLM) on the same documents, scored the same way (it
    starts with the title already, so it has no titled view)."""
    from resume.data import load_beir
    from resume.lead import write_lead_summaries

    path = out / "summaries.jsonl"
    if not path.exists():
        write_lead_summaries(data, path, retriever_tokenizer=cfg.retriever.model)
    return judges(cfg, ds or load_beir(data), path, ids)


def heldout_doc_ids(cfg, ds, split: str, k: int) -> list[str]:
    """`k` training documents that also have positives in `split` (a sample seeded by `grpo.seed`, corpus order)."""
    import random

    from resume.grpo import train_positives

    train, held = train_positives(ds, cfg.data.train_split), train_positives(ds, split)
    docs = [d for d in ds.corpus if d in train and d in held]
    keep = set(random.Random(f"heldout-{cfg.grpo.seed}").sample(docs, min(k, len(docs))))
    return [d for d in docs if d in keep]


def measure_heldout(cfg, data: str, model: str, out: Path, ids: list[str], split: str, ds=None,
                    titled: bool = False) -> dict:
    """Greedy summaries of `ids` by `model`, scored by g_0 with `split`'s queries (per document)."""
    from resume.data import load_beir
    from resume.summarizer import summarize_corpus

    path = out / "summaries.jsonl"
    summarize_corpus(cfg, data_dir=data, model=model, retriever=cfg.retriever.model, out_path=path, doc_ids=ids)
    return judges(cfg, ds or load_beir(data), path, ids, split=split, titled=titled)


def check_round_settings(d: Path, overrides: list[str]) -> None:
    """A round's folder is named by its sweep value only, so it records every override it was trained with
    (`settings.json`) and a rerun with other `--set` values (another summarizer, other dtypes) stops here
    instead of reusing it. Rounds trained before the record existed are reused with a warning."""
    rec = d / "settings.json"
    if rec.exists():
        had = json.loads(rec.read_text())["overrides"]
        if had != overrides:
            raise SystemExit(f"{d}: this round was trained with {had}, not {overrides}; "
                             "pass another --work folder or remove the round")
        return
    if (d / "summarizer" / "trainer_state.json").exists():
        print(f"warning: {d} has no settings.json (a round from before the record); reusing it as it is", flush=True)
        return
    from resume.io import atomic_write_json

    atomic_write_json(rec, {"overrides": overrides})


def paired(a: dict, b: dict, key: str = "fixed_judge", key_a: str | None = None) -> dict:
    """b - a on the documents both were scored on (per-document Delta of the fixed judge `key`; `key_a`
    for a's when it differs): mean gain, documents better / worse, the project's paired t-test and
    sign-flip test (`resume.evaluate.paired_test`) and the Wilcoxon signed-rank p-value."""
    from scipy import stats

    from resume.evaluate import paired_test

    da, db = a[key_a or key]["delta_per_doc"], b[key]["delta_per_doc"]
    test = paired_test(da, db, metric="delta")
    x = [db[d] - da[d] for d in da if d in db]
    nz = [v for v in x if v != 0]
    return {"n": test["n"], "gain": test["mean_diff"], "better": sum(v > 0 for v in x), "worse": sum(v < 0 for v in x),
            "t_p": test["p_value"], "perm_p": test["p_permutation"],
            "wilcoxon_p": float(stats.wilcoxon(nz).pvalue) if len(nz) >= 6 else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "cranfield.yaml"))
    ap.add_argument("--data", default=str(ROOT / "data" / "cranfield"))
    ap.add_argument("--set", action="append", default=[], help="config override for every setting")
    ap.add_argument("--sweep", default=None, help="KEY=V1,V2,...: one GRPO round per value")
    ap.add_argument("--measure-only", action="store_true", help="f_0 (and --lead) only: no GRPO round")
    ap.add_argument("--lead", action="store_true", help="also score the lead control on the same documents")
    ap.add_argument("--out", default=str(ROOT / "bench" / "grpo_probe.json"))
    ap.add_argument("--heldout-split", default=None, help="also judge with this split's queries (module docstring)")
    ap.add_argument("--heldout-docs", type=int, default=96, help="documents for --heldout-split")
    ap.add_argument("--work", default=str(OUT_ROOT),
                    help="folder of the rounds (<work>/<tag>/); a round records its settings there (module docstring)")
    ap.add_argument("--title-view", action="store_true",
                    help="also judge every summary set after its document's title (module docstring)")
    args = ap.parse_args(argv)

    from _common import write_result

    from resume.config import load_config
    from resume.data import load_beir
    from resume.grpo import grpo_train, judge_doc_ids
    from resume.io import iter_jsonl
    from resume.loop import run_env

    settings: list[tuple[str, list[str]]] = [("base", [])]
    if args.sweep:
        key, values = args.sweep.split("=", 1)
        settings = [(f"{key.split('.')[-1]}={v}", [f"{key}={v}"]) for v in values.split(",")]
    base = load_config(args.config, args.set)
    for _, extra in settings:  # validate every setting before any work
        load_config(args.config, [*args.set, *extra])
    ds = load_beir(args.data)
    ids = judge_doc_ids(base, ds)
    t0 = time.perf_counter()
    f0 = f0_dir(base)
    tv = args.title_view
    before = measure(base, args.data, base.summarizer.model, f0, ids, ds=ds, titled=tv)
    if tv:
        before["title_gain"] = paired(before, before, "fixed_judge_titled", key_a="fixed_judge")
    print(f"before: delta {before['fixed_judge']['delta_mean']:+.4f} reward {before['fixed_judge']['reward_mean']:+.3f}",
          flush=True)
    held = None
    if args.heldout_split:
        hids = heldout_doc_ids(base, ds, args.heldout_split, args.heldout_docs)
        held = {"split": args.heldout_split, "n_docs": len(hids),
                "before": measure_heldout(base, args.data, base.summarizer.model, f0 / "heldout", hids,
                                          args.heldout_split, ds=ds, titled=tv)}
    lead = None
    if args.lead:
        lead = measure_lead(base, args.data, OUT_ROOT / "lead", ids, ds=ds)
        lead["vs_f0"] = paired(before, lead)
        if tv:
            lead["vs_f0_titled"] = paired(before, lead, "fixed_judge", key_a="fixed_judge_titled")
        print(f"lead: delta {lead['fixed_judge']['delta_mean']:+.4f} (vs f_0: {lead['vs_f0']})", flush=True)
        if held:
            held["lead"] = judges(base, ds, OUT_ROOT / "lead" / "summaries.jsonl", hids, split=args.heldout_split)
            held["lead"]["vs_f0"] = paired(held["before"], held["lead"])
            if tv:
                held["lead"]["vs_f0_titled"] = paired(held["before"], held["lead"], "fixed_judge",
                                                      key_a="fixed_judge_titled")
    rounds = {}
    for tag, extra in ([] if args.measure_only else settings):
        cfg = load_config(args.config, [*args.set, *extra])
        d = Path(args.work) / tag.replace("/", "_")
        model_dir = d / "summarizer"
        check_round_settings(d, [*args.set, *extra])
        t1 = time.perf_counter()
        if not (model_dir / "trainer_state.json").exists():
            grpo_train(cfg, data_dir=args.data, summarizer=cfg.summarizer.model, retriever=cfg.retriever.model,
                       out_dir=model_dir)
        train_s = time.perf_counter() - t1
        after = measure(cfg, args.data, str(model_dir), d, ids, ds=ds, titled=tv)
        log = list(iter_jsonl(model_dir / "reward_log.jsonl"))
        state = json.loads((model_dir / "trainer_state.json").read_text())
        runtime = next((e["train_runtime"] for e in reversed(state.get("log_history", [])) if "train_runtime" in e),
                       None)
        # train_s: this invocation's wall time (0 when a finished round was reused); train_runtime_s: TRL's own
        rounds[tag] = {"overrides": extra, "after": after, "train_s": round(train_s, 1),
                       "train_runtime_s": runtime, "reward_log": log,
                       "delta_gain": after["fixed_judge"]["delta_mean"] - before["fixed_judge"]["delta_mean"],
                       "reward_gain": after["fixed_judge"]["reward_mean"] - before["fixed_judge"]["reward_mean"],
                       "paired_vs_f0": paired(before, after)}
        if tv:  # the titled view of f_0 and f_1 (and against the lead, which has its title already)
            rounds[tag]["paired_vs_f0_titled"] = paired(before, after, "fixed_judge_titled")
            if lead:
                rounds[tag]["paired_vs_lead_titled"] = paired(lead, after, "fixed_judge_titled", key_a="fixed_judge")
            print(f"{tag} titled view: vs f_0 {rounds[tag]['paired_vs_f0_titled']}", flush=True)
        if held:
            h = measure_heldout(cfg, args.data, str(model_dir), d / "heldout", hids, args.heldout_split, ds=ds,
                                titled=tv)
            rounds[tag]["heldout"] = {"after": h, "paired_vs_f0": paired(held["before"], h)}
            if "lead" in held:
                rounds[tag]["heldout"]["paired_vs_lead"] = paired(held["lead"], h)
            if tv:
                rounds[tag]["heldout"]["paired_vs_f0_titled"] = paired(held["before"], h, "fixed_judge_titled")
                if "lead" in held:
                    rounds[tag]["heldout"]["paired_vs_lead_titled"] = paired(held["lead"], h, "fixed_judge_titled",
                                                                             key_a="fixed_judge")
                print(f"{tag} titled view on {args.heldout_split} queries: "
                      f"{rounds[tag]['heldout']['paired_vs_f0_titled']}", flush=True)
            print(f"{tag} on {args.heldout_split} queries: {rounds[tag]['heldout']['paired_vs_f0']}", flush=True)
        print(f"{tag}: delta {after['fixed_judge']['delta_mean']:+.4f} ({rounds[tag]['delta_gain']:+.4f}) reward "
              f"{after['fixed_judge']['reward_mean']:+.3f} ({rounds[tag]['reward_gain']:+.3f}); train {train_s:.0f} s; "
              f"round reward {[round(r.get('reward_mean', 0), 2) for r in log]}", flush=True)
    doc = {"config": args.config, "overrides": args.set, "n_judge_docs": len(ids), "env": run_env(base),
           "summarizer": base.to_dict()["summarizer"], "grpo": base.to_dict()["grpo"], "before": before,
           "lead": lead, "heldout": held, "rounds": rounds,
           "seconds": round(time.perf_counter() - t0, 1)}
    write_result(args.out, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
