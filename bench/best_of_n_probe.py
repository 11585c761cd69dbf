"""Probe (issue #11): is there anything in f_0's own rollouts for GRPO to reinforce? Best of N under the fixed judge.

    .venv/bin/python bench/best_of_n_probe.py                  # 8 samples per document -> bench/best_of_n_probe.json

GRPO can only move the policy towards completions it samples: within a group of `grpo.num_generations`
rollouts (temperature `grpo.temperature`, `grpo.top_p`, TRL's top_k 0, up to `grpo.max_completion_length`
tokens, the same prompt as GRPO's and the corpus pass's), the advantages favour the ones with the higher
reward. This probe draws such a group for each of the fixed judge's 64 held-out training documents
(`resume.grpo.judge_doc_ids`, never GRPO prompts) from f_0 and scores every sample with the fixed judge g_0
(`resume.quality.fixed_judge`, per document), then asks, per document and averaged:

- `mean`: the group's mean Delta (what the sampling policy gives on average);
- `best_reward`: the Delta of the sample with the highest total reward (the one GRPO pushes towards most);
- `best_delta`: the best Delta of the group, an oracle: it picks with the judge's own training queries, so
  it is an upper bound of what a policy that always wrote its best sample would reach, not a result;
- against f_0's greedy summaries (the index's text today) and the lead (title + first sentence, no LLM;
  the reference a summary has to beat), scored the same way on the same documents in the same run.

If even the oracle does not reach the lead, more GRPO on this model (more steps, a GPU) cannot either;
if it does, what is missing is learning signal, not capacity. Samples are cached in
bench/out/best_of_n/samples.jsonl (one line per document, written as each batch finishes), so an
interrupted run resumes where it stopped (`--work`). A measurement script, not a product path.

    .venv/bin/python bench/best_of_n_probe.py --heldout-split dev --docs 96 --prompts-per-call 4 \
        --work bench/out/best_of_n_dev --out bench/best_of_n_dev_probe.json

`--heldout-split dev` asks whether the best-of-N headroom is learnable rather than the luck of the draw: the
documents are training documents that also answer dev queries (a sample seeded by `grpo.seed`, `--docs` of
them); each sample is scored twice by g_0, with the document's training queries (what GRPO's reward sees)
and with its dev queries (positives and the negatives' pool from dev; queries GRPO never sees). The sample
GRPO favours is picked by the training reward and judged by its dev Delta against the group's mean dev Delta:
if the pick is no better on dev, the spread inside a group is about the queries that scored it, not about
the summary, and more of the same GRPO cannot turn it into retrieval.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(ROOT / "bench"))


def sample_groups(cfg, ds, ids: list[str], n: int, path: Path, prompts_per_call: int) -> dict[str, list[str]]:
    """{doc id: n sampled completions} from f_0 (`cfg.summarizer.model`), cached per document in `path`."""
    import torch

    from resume.data import doc_text
    from resume.io import iter_jsonl
    from resume.models import load_causal_lm, pick_device
    from resume.summarizer import _stop_ids, build_prompt, decode_generated, set_cpu_threads

    done = {r["_id"]: r["samples"] for r in iter_jsonl(path)} if path.exists() else {}
    todo = [d for d in ids if d not in done]
    if not todo:
        return done
    set_cpu_threads()
    device = pick_device(cfg.device)
    # GRPO's policy, which samples the rollouts, is fp32 on CPU whatever summarizer.dtype (resume.grpo.trl_config)
    dtype = cfg.summarizer.dtype if device.startswith("cuda") else "float32"
    model, tok = load_causal_lm(cfg.summarizer.model, dtype=dtype, device=device)
    g, stops = cfg.grpo, _stop_ids(model, tok)
    path.parent.mkdir(parents=True, exist_ok=True)
    for i in range(0, len(todo), prompts_per_call):
        batch = todo[i:i + prompts_per_call]
        t0 = time.perf_counter()
        enc = tok([build_prompt(tok, doc_text(ds.corpus[d]), cfg) for d in batch], return_tensors="pt",
                  padding=True, add_special_tokens=False)
        torch.manual_seed(cfg.grpo.seed + ids.index(batch[0]))  # the draws of a batch do not depend on a resume
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=True, temperature=g.temperature, top_p=g.top_p, top_k=0,
                                 max_new_tokens=g.max_completion_length, num_return_sequences=n, use_cache=True,
                                 pad_token_id=tok.pad_token_id)
        rows = out[:, enc["input_ids"].shape[1]:].tolist()
        with path.open("a", encoding="utf-8") as f:
            for j, d in enumerate(batch):
                done[d] = texts = [" ".join(decode_generated(tok, row, stops, cfg.summarizer.separator)[0].split())
                                   for row in rows[j * n:(j + 1) * n]]
                f.write(json.dumps({"_id": d, "samples": texts}) + "\n")
        print(f"sampled {len(done)}/{len(ids)} documents ({time.perf_counter() - t0:.0f} s for {len(batch)})",
              flush=True)
    return done


def sample_features(ds, ids: list[str], groups: dict[str, list[str]], deltas: dict[str, list[float]]) -> dict:
    """Pearson correlation, within documents (each document's mean taken out), of a sample's Delta with what
    can be read off its text: words, share of its 8-grams copied from the document, boilerplate. A feature that
    goes with Delta inside a group is a direction GRPO's advantages can push; none means the spread looks like
    noise around the policy's mean (the best of 8 draws lands ~1.4 standard deviations above it anyway)."""
    import numpy as np

    from resume.data import doc_text
    from resume.quality import copy_share, has_boilerplate

    cols: dict[str, list[float]] = {"delta": [], "words": [], "copy_8gram": [], "boilerplate": []}
    for d in ids:
        doc = doc_text(ds.corpus[d])
        rows = {"delta": deltas[d], "words": [len(t.split()) for t in groups[d]],
                "copy_8gram": [copy_share(t, doc) or 0.0 for t in groups[d]],
                "boilerplate": [float(has_boilerplate(t)) for t in groups[d]]}
        for k, v in rows.items():
            cols[k] += list(np.asarray(v, dtype=float) - np.mean(v))
    y = np.asarray(cols.pop("delta"))
    return {k: round(float(np.corrcoef(y, np.asarray(v))[0, 1]), 4) if np.std(v) > 0 else None
            for k, v in cols.items()}


def heldout_scores(cfg, ds, split: str, ids: list[str], groups: dict[str, list[str]],
                   rewards: dict[str, list[float]], deltas: dict[str, list[float]], fixed: dict[str, Path],
                   enc) -> dict:
    """Every sample (and the fixed texts: greedy f_0, the lead) scored with `split`'s queries; the sample picked
    by the training reward (GRPO's favourite) and by the training Delta, judged there against the group mean."""
    import numpy as np
    from grpo_probe import paired

    from resume.grpo import train_positives
    from resume.quality import fixed_judge

    pos = train_positives(ds, split)
    n = len(next(iter(groups.values())))
    per_k = [fixed_judge(cfg, data_dir=ds, summaries={d: groups[d][k] for d in ids}, judge=cfg.retriever.model,
                         doc_ids=ids, encoder=enc, per_doc=True, split=split) for k in range(n)]
    held = {d: [j["delta_per_doc"][d] for j in per_k] for d in ids}
    arms = {"mean": {d: float(np.mean(held[d])) for d in ids},
            "pick_by_train_reward": {d: held[d][int(np.argmax(rewards[d]))] for d in ids},
            "pick_by_train_delta": {d: held[d][int(np.argmax(deltas[d]))] for d in ids},
            "oracle_heldout_best": {d: max(held[d]) for d in ids}}
    for name, path in fixed.items():
        arms[name] = fixed_judge(cfg, data_dir=ds, summaries=path, judge=cfg.retriever.model, doc_ids=ids,
                                 encoder=enc, per_doc=True, split=split)["delta_per_doc"]
    wrapped = {k: {"fixed_judge": {"delta_per_doc": v}} for k, v in arms.items()}

    # within a document, does a sample's training Delta go with its held-out Delta? (each document's mean out)
    x = np.concatenate([np.asarray(deltas[d]) - np.mean(deltas[d]) for d in ids])
    y = np.concatenate([np.asarray(held[d]) - np.mean(held[d]) for d in ids])
    return {
        "split": split, "n_docs": len(ids),
        "positives_per_doc": float(np.mean([len(pos[d]) for d in ids])),
        "delta_mean": {k: float(np.mean(list(v.values()))) for k, v in arms.items()},
        "within_group_delta_sd_mean": float(np.mean([np.std(held[d]) for d in ids])),
        "within_doc_corr_train_vs_heldout_delta": round(float(np.corrcoef(x, y)[0, 1]), 4),
        "paired": {"pick_by_train_reward_vs_mean": paired(wrapped["mean"], wrapped["pick_by_train_reward"]),
                   "pick_by_train_delta_vs_mean": paired(wrapped["mean"], wrapped["pick_by_train_delta"]),
                   "pick_by_train_reward_vs_greedy_f0": paired(wrapped["greedy_f0"], wrapped["pick_by_train_reward"]),
                   "pick_by_train_reward_vs_lead": paired(wrapped["lead"], wrapped["pick_by_train_reward"]),
                   "lead_vs_greedy_f0": paired(wrapped["greedy_f0"], wrapped["lead"])},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "cranfield.yaml"))
    ap.add_argument("--data", default=str(ROOT / "data" / "cranfield"))
    ap.add_argument("--set", action="append", default=[], help="config override")
    ap.add_argument("--n", type=int, default=None, help="samples per document (default grpo.num_generations)")
    ap.add_argument("--docs", type=int, default=None,
                    help="only the first N of the judge's documents (default: all grpo.judge_docs)")
    ap.add_argument("--prompts-per-call", type=int, default=2, help="documents per generate call (GRPO's step: 2)")
    ap.add_argument("--work", default=str(ROOT / "bench" / "out" / "best_of_n"),
                    help="cache of the greedy, lead and sampled texts (a rerun resumes from it)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "best_of_n_probe.json"))
    ap.add_argument("--heldout-split", default=None,
                    help="also score every sample with this split's queries (documents: training documents with "
                         "positives in it; see the module docstring)")
    args = ap.parse_args(argv)

    from _common import write_result
    from grpo_probe import heldout_doc_ids, judge_encoder, measure, measure_lead, paired

    from resume.config import load_config
    from resume.data import load_beir
    from resume.grpo import judge_doc_ids
    from resume.loop import run_env
    from resume.quality import fixed_judge

    cfg = load_config(args.config, args.set)
    n = args.n or cfg.grpo.num_generations
    ds = load_beir(args.data)
    ids = (heldout_doc_ids(cfg, ds, args.heldout_split, args.docs or cfg.grpo.judge_docs) if args.heldout_split
           else judge_doc_ids(cfg, ds)[:args.docs])
    out_root = Path(args.work)
    t0 = time.perf_counter()
    greedy = measure(cfg, args.data, cfg.summarizer.model, out_root / "greedy", ids, ds=ds)
    lead = measure_lead(cfg, args.data, out_root / "lead", ids, ds=ds)
    t1 = time.perf_counter()
    groups = sample_groups(cfg, ds, ids, n, out_root / "samples.jsonl", args.prompts_per_call)
    sample_s = time.perf_counter() - t1
    enc = judge_encoder(cfg)  # the one g_0 of every score in this run
    per_k = [fixed_judge(cfg, data_dir=ds, summaries={d: groups[d][k] for d in ids}, judge=cfg.retriever.model,
                         doc_ids=ids, encoder=enc, per_doc=True) for k in range(n)]
    ids = [d for d in ids if all(d in j["delta_per_doc"] for j in per_k)]
    deltas = {d: [j["delta_per_doc"][d] for j in per_k] for d in ids}
    rewards = {d: [j["reward_per_doc"][d] for j in per_k] for d in ids}
    picks = {
        "mean": {d: statistics.fmean(deltas[d]) for d in ids},
        "best_reward": {d: deltas[d][max(range(n), key=lambda k, d=d: rewards[d][k])] for d in ids},
        "best_delta": {d: max(deltas[d]) for d in ids},
    }
    features = sample_features(ds, ids, groups, deltas)
    arms = {name: {"fixed_judge": {"delta_per_doc": v, "delta_mean": statistics.fmean(v.values())}}
            for name, v in picks.items()}
    lead_d = lead["fixed_judge"]["delta_per_doc"]
    result = {
        "config": args.config, "overrides": args.set, "n_docs": len(ids), "n_samples": n,
        "sampling": {"temperature": cfg.grpo.temperature, "top_p": cfg.grpo.top_p, "top_k": 0,
                     "max_new_tokens": cfg.grpo.max_completion_length, "prompts_per_call": args.prompts_per_call},
        "env": run_env(cfg),
        "delta_mean": {"greedy_f0": greedy["fixed_judge"]["delta_mean"], "lead": lead["fixed_judge"]["delta_mean"],
                       **{k: a["fixed_judge"]["delta_mean"] for k, a in arms.items()}},
        "reward_mean": {"greedy_f0": greedy["fixed_judge"]["reward_mean"],
                        "samples": statistics.fmean(r for d in ids for r in rewards[d])},
        "within_group_delta_sd_mean": statistics.fmean(statistics.pstdev(deltas[d]) for d in ids),
        "docs_with_a_sample_above_the_lead": sum(max(deltas[d]) > lead_d[d] for d in ids if d in lead_d),
        "docs_with_a_sample_above_the_document": sum(max(deltas[d]) > 0 for d in ids),
        "paired": {f"{k}_vs_greedy_f0": paired(greedy, a) for k, a in arms.items()}
        | {f"{k}_vs_lead": paired(lead, a) for k, a in arms.items()}
        | {"lead_vs_greedy_f0": paired(greedy, lead)},
        "within_doc_correlation_with_delta": features,
        "greedy_quality": greedy["quality"],
        "sample_s": round(sample_s, 1), "seconds": round(time.perf_counter() - t0, 1),
        "examples": {d: {"samples": groups[d][:3], "deltas": deltas[d][:3]} for d in ids[:2]},
    }
    if args.heldout_split:
        result["heldout"] = heldout_scores(cfg, ds, args.heldout_split, ids, groups, rewards, deltas,
                                           {"greedy_f0": out_root / "greedy" / "summaries.jsonl",
                                            "lead": out_root / "lead" / "summaries.jsonl"}, enc)
    write_result(args.out, result)
    print(json.dumps({k: result[k] for k in ("delta_mean", "within_group_delta_sd_mean",
                                              "docs_with_a_sample_above_the_lead")}, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
