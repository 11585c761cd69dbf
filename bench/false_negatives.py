"""How often in-batch "negatives" are really positives, for our batches and for sentence-transformers' (issue #14).

    .venv/bin/python bench/false_negatives.py                  # -> bench/false_negatives.json, seconds, no model
    .venv/bin/python bench/false_negatives.py --encoder all-minilm-l6-v2   # + the loss terms (the committed JSON)
    .venv/bin/python bench/false_negatives.py --seeds 10 --out /tmp/fn.json

For each config (default: configs/cranfield.yaml and configs/demo.yaml) the fine-tuning pairs are built as
`resume.retriever._Run` builds them: the working set (`select_working_set`), the full documents as texts
(`load_texts(ds, None)`), every (train query, relevant document) judgement (`_pair_ids`, what
`training_pairs` returns as texts). A candidate column is a FALSE NEGATIVE for a query when its text is one
of that query's positives but not the query's own positive column: exactly the columns `_Run._batch_loss`
masks and `MultipleNegativesRankingLoss` keeps in its softmax denominator. Two batchings are counted:

- `ours`: `_Run.train`'s order: `DistributedSampler(pairs, shuffle=True, seed, drop_last=True)`, `set_epoch(e)`,
  consecutive slices of `finetune.batch_size`; the global batch of a step is every rank's slice.
- `st_no_duplicates`: the real `sentence_transformers.base.sampler.NoDuplicatesBatchSampler` on a
  `datasets.Dataset` of (anchor, positive) texts, seeded as `SentenceTransformerTrainer` seeds it (a
  generator seeded with the seed, `seed=seed`, `set_epoch(e)`), drop_last=True as our loop; under DDP
  accelerate hands batch i to rank i % nproc, so a step's global batch is `nproc` consecutive batches.

Each is counted for the configured run (finetune.seed, all its epochs) and over `--seeds` other seeds
(0..n-1, same epochs) for a stable rate. finetune.hard_negatives is 0 in every config, so the columns are
the batch's positives only (mined negatives would need the encoder; the script refuses a config with
hard negatives rather than count something else). The counts are a LOWER bound on false negatives:
Cranfield's judgements are incomplete, and unjudged relevant documents count as true negatives here.

`--encoder NAME` also scores the configured runs' batches with that encoder (the round's initial retriever,
all-MiniLM-L6-v2 in both configs): the mean InfoNCE with our mask and without it (MNRL's value on the same
embeddings), the share of the negatives' softmax mass that false negatives hold for a query that has any,
and how many false negatives the encoder already scores above the query's own positive.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _pairs(config: Path):
    from resume import retriever as R
    from resume.config import load_config
    from resume.data import load_beir, select_working_set

    cfg = load_config(config)
    if cfg.finetune.hard_negatives:
        raise SystemExit(f"{config}: finetune.hard_negatives = {cfg.finetune.hard_negatives}; this count covers "
                         "in-batch negatives only (mined negatives need the encoder)")
    ds = select_working_set(load_beir(ROOT / cfg.data.path), cfg.data)
    texts = R.load_texts(ds, None)
    ids = R._pair_ids(ds, cfg.data.train_split, texts)
    pairs = [(ds.queries[q], texts[d]) for q, d in ids]
    assert pairs == R.training_pairs(ds, cfg.data.train_split, texts)
    return cfg, ds, ids, pairs, texts


def _count(batches: list[list[int]], ids, texts) -> dict:
    """False negatives over global batches of pair indices (every query of a batch against every column)."""
    pos_texts: dict[str, set[str]] = defaultdict(set)
    for q, d in ids:
        pos_texts[q].add(texts[d])
    n_batches = with_fn = rows = rows_with_fn = neg_slots = fn = fn_same_query = 0
    for batch in batches:
        cols = [ids[i] for i in batch]
        batch_fn = 0
        for row, i in enumerate(batch):
            q = ids[i][0]
            hits = [(cq, cd) for col, (cq, cd) in enumerate(cols) if col != row and texts[cd] in pos_texts[q]]
            batch_fn += len(hits)
            fn_same_query += sum(cq == q for cq, _ in hits)
            rows_with_fn += bool(hits)
            neg_slots += len(cols) - 1
            rows += 1
        n_batches += 1
        with_fn += batch_fn > 0
        fn += batch_fn
    return {"batches": n_batches,
            "share_of_batches_with_a_false_negative": round(with_fn / n_batches, 4) if n_batches else None,
            "share_of_negative_columns_that_are_false_negatives": round(fn / neg_slots, 4) if neg_slots else None,
            "share_of_queries_with_a_false_negative": round(rows_with_fn / rows, 4) if rows else None,
            "false_negatives_per_batch": round(fn / n_batches, 3) if n_batches else None,
            "false_negatives_from_another_pair_of_the_same_query": fn_same_query,
            "false_negatives_from_a_positive_of_another_query": fn - fn_same_query,
            "false_negatives": fn, "negative_columns": neg_slots}


def _impact(batches: list[list[int]], ids, texts, q_emb: dict, d_emb: dict, temperature: float) -> dict:
    """Under an encoder: InfoNCE with our mask vs without it (MNRL's value), and the false negatives' weight."""
    import torch

    from resume.retriever import info_nce

    pos_texts: dict[str, set[str]] = defaultdict(set)
    for q, d in ids:
        pos_texts[q].add(texts[d])
    masked, unmasked, mass, above, n_fn = [], [], [], 0, 0
    for batch in batches:
        qs, ds = [ids[i][0] for i in batch], [ids[i][1] for i in batch]
        q = torch.stack([q_emb[x] for x in qs])
        d = torch.stack([d_emb[x] for x in ds])
        pos = torch.arange(len(batch))
        exclude = torch.tensor([[c != r and texts[ds[c]] in pos_texts[qs[r]] for c in range(len(ds))]
                                for r in range(len(qs))])
        masked.append(info_nce(q, d, pos, temperature, exclude).item())
        unmasked.append(info_nce(q, d, pos, temperature).item())
        logits = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(d, dim=-1).T / temperature
        for r in range(len(qs)):
            if exclude[r].any():
                neg = torch.ones(len(ds), dtype=torch.bool)
                neg[r] = False
                w = torch.softmax(logits[r][neg], dim=0)  # weight of each negative in the denominator
                mass.append(w[exclude[r][neg]].sum().item())
                above += int((logits[r][exclude[r]] > logits[r, r]).sum())
                n_fn += int(exclude[r].sum())
    mean = lambda xs: round(sum(xs) / len(xs), 4) if xs else None  # noqa: E731
    return {"loss_with_our_mask": mean(masked), "loss_without_mask_as_mnrl": mean(unmasked),
            "share_of_negative_softmax_mass_on_false_negatives_per_affected_query": mean(mass),
            "share_of_false_negatives_scored_above_the_query_positive": round(above / n_fn, 4) if n_fn else None}


def ours_batches(n_pairs: int, B: int, world: int, seed: int, epochs: int) -> list[list[int]]:
    """Global batches in `_Run.train`'s order (DistributedSampler per rank, slice k of every rank)."""
    from torch.utils.data import DistributedSampler

    steps = n_pairs // (B * world)
    out = []
    for e in range(epochs):
        orders = []
        for rank in range(world):
            s = DistributedSampler(range(n_pairs), num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                   drop_last=True)
            s.set_epoch(e)
            orders.append(list(s))
        out += [[i for o in orders for i in o[k * B:(k + 1) * B]] for k in range(steps)]
    return out


def st_batches(pairs, B: int, world: int, seed: int, epochs: int) -> list[list[int]]:
    """Global batches of sentence-transformers' NO_DUPLICATES sampler, seeded as its trainer does."""
    import torch
    from datasets import Dataset
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

    ds = Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [d for _, d in pairs]})
    sampler = NoDuplicatesBatchSampler(ds, batch_size=B, drop_last=True, generator=torch.Generator().manual_seed(seed),
                                       seed=seed)
    out = []
    for e in range(epochs):
        sampler.set_epoch(e)
        local = list(sampler)
        out += [[i for b in local[k:k + world] for i in b] for k in range(0, len(local) - world + 1, world)]
    return out


def _batches(kind: str, pairs, B: int, world: int, seed: int, epochs: int) -> list[list[int]]:
    if kind == "ours":
        return ours_batches(len(pairs), B, world, seed, epochs)
    return st_batches(pairs, B, world, seed, epochs)


KINDS = ("ours", "st_no_duplicates")


def main(argv: list[str] | None = None) -> int:
    import datasets
    import sentence_transformers
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="configs/cranfield.yaml,configs/demo.yaml")
    ap.add_argument("--seeds", type=int, default=50, help="extra seeds 0..n-1 for the rate (default 50)")
    ap.add_argument("--encoder", default=None, help=(
        "also score the configured runs' batches with this encoder (e.g. all-minilm-l6-v2, the initial "
        "retriever g_0; CPU, about a minute): loss with / without the mask, weight of the false negatives"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "false_negatives.json"))
    args = ap.parse_args(argv)
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    t0 = time.time()
    report: dict = {"command": " ".join([".venv/bin/python bench/false_negatives.py", *(argv or sys.argv[1:])]),
                    "definition": ("a column is a false negative for a query when its text is one of that query's "
                                   "train positives and it is not the query's own positive column (what "
                                   "resume.retriever._Run._batch_loss masks; MultipleNegativesRankingLoss keeps it "
                                   "as a negative); judgements are incomplete, so these are lower bounds"),
                    "configs": {}}
    for name in args.configs.split(","):
        cfg, ds, ids, pairs, texts = _pairs(ROOT / name)
        ft = cfg.finetune
        B, world = ft.batch_size, ft.nproc
        steps_per_epoch = len(pairs) // (B * world)
        total = ft.max_steps or ft.epochs * steps_per_epoch  # the run's optimiser steps (_Run.total)
        epochs = -(-total // max(steps_per_epoch, 1))
        n_pos = defaultdict(int)
        for q, _ in ids:
            n_pos[q] += 1
        docs_of = defaultdict(set)
        for q, d in ids:
            docs_of[d].add(q)
        entry = {"data": {"pairs": len(pairs), "train_queries": len(n_pos),
                          "mean_positives_per_query": round(len(pairs) / max(len(n_pos), 1), 2),
                          "positive_docs": len(docs_of),
                          "positive_docs_relevant_to_several_train_queries": sum(len(v) > 1 for v in docs_of.values()),
                          "documents": len(texts)},
                 "finetune": {"batch_size": B, "nproc": world, "global_batch": B * world, "steps": total,
                              "max_steps": ft.max_steps, "seed": ft.seed, "hard_negatives": ft.hard_negatives,
                              "steps_per_epoch_ours": steps_per_epoch}}
        for label in KINDS:
            run = _batches(label, pairs, B, world, ft.seed, epochs)[:total]
            sweep = [b for s in range(args.seeds) for b in _batches(label, pairs, B, world, s, epochs)[:total]]
            entry[label] = {"configured_run": _count(run, ids, texts),
                            f"seeds_0_to_{args.seeds - 1}": _count(sweep, ids, texts)}
        if args.encoder:
            from resume.retriever import Encoder

            torch.set_num_threads(1)
            enc = Encoder(args.encoder, cfg.retriever, device="cpu", dtype="float32")
            qids, dids = sorted({q for q, _ in ids}), sorted({d for _, d in ids})
            q_emb = dict(zip(qids, torch.from_numpy(enc.encode_queries([ds.queries[q] for q in qids]))))
            d_emb = dict(zip(dids, torch.from_numpy(enc.encode_docs([texts[d] for d in dids]))))
            entry["impact"] = {"encoder": str(enc.path), "temperature": ft.temperature}
            for label in KINDS:
                run = _batches(label, pairs, B, world, ft.seed, epochs)[:total]
                entry["impact"][label] = _impact(run, ids, texts, q_emb, d_emb, ft.temperature)
        if entry["st_no_duplicates"]["configured_run"]["batches"] < total:
            entry["st_no_duplicates"]["note"] = (
                f"NoDuplicatesBatchSampler filled {entry['st_no_duplicates']['configured_run']['batches']} batches of "
                f"{B} where our loop takes {total}: {len(n_pos)} distinct queries cannot fill a "
                f"batch of {B} without repeating an anchor text")
            from datasets import Dataset
            from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

            keep_last = NoDuplicatesBatchSampler(
                Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [d for _, d in pairs]}),
                batch_size=B, drop_last=False, generator=torch.Generator().manual_seed(ft.seed), seed=ft.seed)
            entry["st_no_duplicates"]["drop_last_false_epoch_0"] = {
                "advertised_batches": len(keep_last), "batch_sizes": [len(b) for b in keep_last]}
        report["configs"][name] = entry
    report["environment"] = {"python": platform.python_version(), "torch": torch.__version__,
                             "sentence_transformers": sentence_transformers.__version__,
                             "datasets": datasets.__version__, "seconds": round(time.time() - t0, 1)}
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    print(json.dumps({k: {s: v[s]["configured_run"] | {"sweep": v[s][f"seeds_0_to_{args.seeds - 1}"]}
                          for s in KINDS} for k, v in report["configs"].items()}, indent=1))
    print(f"wrote {out} in {report['environment']['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
