"""The working set of a run: the seeded, deterministic part of a dataset that `DataConfig` selects
(`select_working_set`)."""

from __future__ import annotations

import random

from resume.data.beir import BeirDataset


def _sample_in_order(items: list[str], k: int | None, rng: random.Random) -> list[str]:
    if k is None or k >= len(items):
        return list(items)
    keep = set(rng.sample(items, k))
    return [x for x in items if x in keep]


def select_working_set(ds: BeirDataset, cfg) -> BeirDataset:
    """The part of `ds` a run uses, from a `DataConfig` (seeded, deterministic, file order preserved).

    Queries: per split, the queries with at least one positive judgement (score > 0); keep
    `max_train_queries` of the train split and `max_eval_queries` of every other split (None = all),
    sampled with a generator seeded by (seed, split), so one split's cap never changes another's sample.
    Documents: every document judged (any score) for a kept query, plus `distractors` other documents
    sampled uniformly (None = the whole corpus). Document dicts are shared with `ds`, not copied.
    """
    qrels: dict[str, dict[str, dict[str, int]]] = {}
    for split, split_qrels in ds.qrels.items():
        cap = cfg.max_train_queries if split == cfg.train_split else cfg.max_eval_queries
        candidates = [q for q, docs in split_qrels.items() if q in ds.queries and any(s > 0 for s in docs.values())]
        kept = _sample_in_order(candidates, cap, random.Random(f"{cfg.seed}:{split}"))
        qrels[split] = {q: split_qrels[q] for q in kept}
    kept_queries = {q for split_qrels in qrels.values() for q in split_qrels}
    queries = {q: t for q, t in ds.queries.items() if q in kept_queries}
    if cfg.distractors is None:
        corpus = ds.corpus
    else:
        judged = {d for split_qrels in qrels.values() for docs in split_qrels.values() for d in docs}
        ids = list(ds.corpus)
        rng = random.Random(f"{cfg.seed}:distractors")
        # Sample positions, not a filtered copy of the corpus: O(distractors + judged), not O(corpus).
        want = min(len(ids), cfg.distractors + len(judged))
        picked = [ids[i] for i in rng.sample(range(len(ids)), want)]
        distract = [d for d in picked if d not in judged][: cfg.distractors]
        keep = judged | set(distract)
        corpus = {d: doc for d, doc in ds.corpus.items() if d in keep}
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels, path=ds.path)
