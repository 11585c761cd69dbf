"""Probe (issue #11): does the same rollout budget teach more as rejection-sampling fine-tuning than as GRPO?

    .venv/bin/python bench/rft_probe.py      # -> bench/rft_probe.json (needs bench/best_of_n_probe.py's samples)

Beyond the paper; a measurement, not a product path. docs/LEVERS.md row 40 found that the sample GRPO favours
in a group of 8 (the highest total reward under g_0 and the document's training queries) is better than its
group on queries GRPO never sees, and row 41 that a 48-step GRPO round (96 prompts, 768 rollouts) moves the
fixed judge by about +0.01 only. This probe spends the same kind of budget the other way (best-of-N
distillation, as in RAFT / ReST): row 40's cached samples (96 training documents x 8 rollouts of f_0 at the
rollouts' settings, bench/out/best_of_n_dev/samples.jsonl), the fixed judge's 64 documents left out, each
document's pick by total reward (a pick cut at `grpo.max_completion_length` is dropped: it has no end to
learn), and f_0 fine-tuned on (prompt, pick) pairs with TRL's `SFTTrainer` (loss on the completion only,
the tokenizer's end-of-sequence appended). Then f_RFT's greedy summaries of the fixed judge's 64 held-out
documents, scored like every probe (`bench/grpo_probe.py`'s `measure`: alone and after the title), paired
against f_0, the lead and row 41's GRPO round on the same documents (their cached summaries).

`--more-docs N` samples N more training documents the same way first (fp32 policy, the rollouts' settings;
cached, so a rerun resumes), for more prompts than a CPU GRPO round sees.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(ROOT / "bench"))


def picks(cfg, ds, groups: dict[str, list[str]], tok) -> tuple[dict[str, str], dict]:
    """{doc id: the sample with the highest total reward} and what was dropped (cut picks)."""
    from grpo_probe import judge_encoder

    from resume.quality import fixed_judge

    ids = [d for d in ds.corpus if d in groups]
    n = len(next(iter(groups.values())))
    per_k = [fixed_judge(cfg, data_dir=ds, summaries={d: groups[d][k] for d in ids}, judge=cfg.retriever.model,
                         doc_ids=ids, encoder=judge_encoder(cfg), per_doc=True, title=False) for k in range(n)]
    ids = [d for d in ids if all(d in j["reward_per_doc"] for j in per_k)]
    out, cut = {}, []
    for d in ids:
        best = max(range(n), key=lambda k, d=d: per_k[k]["reward_per_doc"][d])
        text = groups[d][best]
        if len(tok(text, add_special_tokens=False)["input_ids"]) >= cfg.grpo.max_completion_length:
            cut.append(d)
            continue
        out[d] = text
    return out, {"docs_scored": len(ids), "cut_picks_dropped": len(cut),
                 "pick_reward_mean": sum(max(j["reward_per_doc"][d] for j in per_k) for d in ids) / len(ids),
                 "sample_reward_mean": sum(j["reward_per_doc"][d] for j in per_k for d in ids) / (len(ids) * n)}


def more_docs(cfg, ds, exclude: set[str], k: int) -> list[str]:
    """`k` training documents with training positives, none in `exclude` (a sample seeded by `grpo.seed`,
    corpus order)."""
    import random

    from resume.grpo import train_positives

    if k <= 0:
        return []
    pool = [d for d in train_positives(ds, cfg.data.train_split) if d not in exclude]
    keep = set(random.Random(f"rft-more-{cfg.grpo.seed}").sample(sorted(pool), min(k, len(pool))))
    return [d for d in ds.corpus if d in keep]


def fine_tune(cfg, ds, pairs: dict[str, str], out: Path, lr: float, epochs: int, batch: int) -> dict:
    """f_0 fine-tuned on (GRPO's prompt, pick) with TRL's SFTTrainer; the model and tokenizer in `out`."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from resume.data import doc_text
    from resume.models import load_causal_lm
    from resume.summarizer import build_prompt, set_cpu_threads

    set_cpu_threads()
    model, tok = load_causal_lm(cfg.summarizer.model, dtype="float32", device="cpu")  # GRPO's policy dtype on CPU
    rows = [{"prompt": build_prompt(tok, doc_text(ds.corpus[d]), cfg), "completion": s} for d, s in pairs.items()]
    args = SFTConfig(output_dir=str(out / "trainer"), learning_rate=lr, num_train_epochs=epochs,
                     per_device_train_batch_size=batch, gradient_accumulation_steps=1, lr_scheduler_type="linear",
                     logging_steps=1, save_strategy="no", report_to=[], seed=cfg.grpo.seed,
                     max_length=1024, use_cpu=True, dataloader_num_workers=0, completion_only_loss=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    t0 = time.perf_counter()
    result = trainer.train()
    model_dir = out / "summarizer"
    trainer.save_model(str(model_dir))
    tok.save_pretrained(str(model_dir))
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {"model_dir": str(model_dir), "train_s": round(time.perf_counter() - t0, 1), "steps": result.global_step,
            "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "cranfield.yaml"))
    ap.add_argument("--data", default=str(ROOT / "data" / "cranfield"))
    ap.add_argument("--set", action="append", default=[], help="config override")
    ap.add_argument("--samples", default=str(ROOT / "bench" / "out" / "best_of_n_dev" / "samples.jsonl"))
    ap.add_argument("--grpo-round", default=str(ROOT / "bench" / "out" / "grpo_probe" / "max_steps=48"),
                    help="a bench/grpo_probe.py round directory to compare with (its cached summaries)")
    ap.add_argument("--more-docs", type=int, default=0,
                    help="also sample this many more training documents (seeded; not the judge's, not in --samples) "
                         "the same way, cached in <work>/samples_more.jsonl")
    ap.add_argument("--prompts-per-call", type=int, default=8, help="documents per generate call for --more-docs")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--work", default=str(ROOT / "bench" / "out" / "rft_probe"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "rft_probe.json"))
    args = ap.parse_args(argv)

    from _common import write_result
    from grpo_probe import OUT_ROOT, f0_dir, judges, measure, measure_lead, paired

    from resume.config import load_config
    from resume.data import load_beir
    from resume.errors import ResumeError
    from resume.grpo import judge_doc_ids
    from resume.io import iter_jsonl
    from resume.loop import run_env
    from resume.models import load_tokenizer

    cfg = load_config(args.config, args.set)
    samples, grpo_round = Path(args.samples), Path(args.grpo_round)
    if not samples.exists():
        raise ResumeError(f"{samples}: no samples; run bench/best_of_n_probe.py --heldout-split dev --docs 96 "
                          "--prompts-per-call 4 --work bench/out/best_of_n_dev first")
    ds = load_beir(args.data)
    ids = judge_doc_ids(cfg, ds)
    groups = {r["_id"]: r["samples"] for r in iter_jsonl(samples)}
    overlap = sorted(set(groups) & set(ids))
    groups = {d: g for d, g in groups.items() if d not in set(ids)}  # the judge's documents stay unseen
    t0 = time.perf_counter()
    work = Path(args.work)
    more = more_docs(cfg, ds, set(ids) | set(groups), args.more_docs)
    if more:
        from best_of_n_probe import sample_groups

        groups.update(sample_groups(cfg, ds, more, cfg.grpo.num_generations, work / "samples_more.jsonl",
                                    args.prompts_per_call))
    sample_s = time.perf_counter() - t0
    chosen, pick_stats = picks(cfg, ds, groups, load_tokenizer(cfg.summarizer.model))
    if not chosen:
        raise ResumeError(f"{samples}: no pick to fine-tune on ({pick_stats}; the judge's documents are left out)")
    model_dir = work / "summarizer"
    sft = ({"model_dir": str(model_dir), "reused": True} if (model_dir / "config.json").exists()
           else fine_tune(cfg, ds, chosen, work, args.lr, args.epochs, args.batch))
    print(f"fine-tuned on {len(chosen)} picks: {sft}", flush=True)

    before = measure(cfg, args.data, cfg.summarizer.model, f0_dir(cfg), ids, ds=ds, titled=True)
    after = measure(cfg, args.data, str(model_dir), work, ids, ds=ds, titled=True)
    lead = measure_lead(cfg, args.data, OUT_ROOT / "lead", ids, ds=ds)
    result = {"config": args.config, "overrides": args.set, "env": run_env(cfg), "samples": str(samples),
              "judge_docs_in_samples_dropped": len(overlap), "more_docs": len(more),
              "more_docs_sample_s": round(sample_s, 1), "n_pairs": len(chosen), "picks": pick_stats,
              "sft": {**sft, "lr": args.lr, "epochs": args.epochs, "batch": args.batch},
              "before": before, "after": after, "lead": lead,
              "rft_vs_f0": paired(before, after), "rft_vs_f0_titled": paired(before, after, "fixed_judge_titled"),
              "rft_vs_lead": paired(lead, after),
              "rft_vs_lead_titled": paired(lead, after, "fixed_judge_titled", key_a="fixed_judge")}
    if (grpo_round / "summaries.jsonl").exists():  # the GRPO round's summaries as they are (not regenerated)
        g = judges(cfg, ds, grpo_round / "summaries.jsonl", ids, titled=True)
        result["grpo_round"] = {"dir": str(grpo_round), **g, "rft_vs_grpo": paired(g, after),
                                "rft_vs_grpo_titled": paired(g, after, "fixed_judge_titled")}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    write_result(args.out, result)
    for k in ("rft_vs_f0", "rft_vs_f0_titled", "rft_vs_lead", "rft_vs_lead_titled"):
        print(k, {a: round(b, 4) if isinstance(b, float) else b for a, b in result[k].items()}, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
