"""Summary-quality signals: the guard against reward hacking, per iteration.

    from resume.quality import text_signals, fixed_judge
    text_signals(rows, documents)                       # placeholder/boilerplate/copy/distinct-2/length/truncation
    fixed_judge(cfg, data_dir=..., summaries=..., judge=g_0)   # mean Delta of S_t under the FIXED g_0

The GRPO reward of round t is computed with g_{t-1}, a retriever that moves between rounds, so round
rewards are not comparable. These signals are:

- `placeholder_rate`: share of summaries with a bracketed span (`[...]`) that is not in their document,
  or with the prompt's own wording (`retrieval-oriented`, `key terms`, `search questions`): the model
  copied the prompt instead of summarising.
- `boilerplate_rate`: share of summaries that talk about the text instead of its content
  (`the document`, `this document`, `the text`, `this summary`, `here is`).
- `copy_rate`: mean over summaries of the share of their word 8-grams found verbatim in their document
  (lowercased, whitespace-split; summaries shorter than 8 words count 0 grams and are left out).
  1.0 = the summary is a cut-and-paste of the document.
- `distinct_2`: distinct word bigrams / all word bigrams over all summaries of the corpus (Li et al.,
  2016): low when summaries repeat each other or themselves.
- `mean_tokens` (retriever tokens, summaries.jsonl `n_tokens`), `truncation_rate` (cut by
  `max_new_tokens`), `separator_rate`.
- `fixed_judge`: the reward's Delta = RetScore(summary) - RetScore(document) and the total reward,
  both scored by the FIXED initial retriever g_0 on the training documents held out of GRPO
  (`resume.grpo.judge_doc_ids`), with the same positives and seeded negatives as GRPO would use.

Each signal is a plain function over texts (pytest-friendly); `summary_quality` computes all of them
for one summaries.jsonl. No library computes these particular rates; they are a few lines each.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from resume.io import iter_jsonl
from resume.run_dir import read_summaries

PROMPT_WORDS = ("retrieval-oriented", "key terms", "search questions")
BOILERPLATE = ("the document", "this document", "the text", "this text", "this summary", "here is")
_BRACKET = re.compile(r"\[[^\[\]\n]{1,80}\]")
SIGNALS = ("placeholder_rate", "boilerplate_rate", "copy_rate", "distinct_2", "mean_tokens", "truncation_rate",
           "separator_rate")


def _words(text: str) -> list[str]:
    return text.lower().split()


def has_placeholder(summary: str, document: str) -> bool:
    """A bracketed span absent from the document, or the prompt's own wording."""
    low, doc = summary.lower(), document.lower()
    if any(w in low and w not in doc for w in PROMPT_WORDS):
        return True
    return any(m.group(0).lower() not in doc for m in _BRACKET.finditer(summary))


def has_boilerplate(summary: str) -> bool:
    low = " ".join(_words(summary))
    return any(p in low for p in BOILERPLATE)


def copy_share(summary: str, document: str, n: int = 8) -> float | None:
    """Share of the summary's word n-grams found verbatim in the document; None when it has none."""
    s, d = _words(summary), _words(document)
    grams = [tuple(s[i:i + n]) for i in range(len(s) - n + 1)]
    if not grams:
        return None
    doc_grams = {tuple(d[i:i + n]) for i in range(len(d) - n + 1)}
    return sum(g in doc_grams for g in grams) / len(grams)


def distinct_n(texts: Iterable[str], n: int = 2) -> float:
    """Distinct word n-grams / all word n-grams over all texts (0 when there are none)."""
    seen, total = set(), 0
    for t in texts:
        w = _words(t)
        grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def text_signals(rows: Sequence[Mapping[str, Any]], documents: Mapping[str, str]) -> dict[str, float]:
    """The text signals of summaries.jsonl rows (`_id`, `summary`, `n_tokens`, `has_separator`,
    `truncated`) against their documents (doc id -> text)."""
    if not rows:
        return {k: 0.0 for k in SIGNALS} | {"n": 0}
    summaries = [str(r.get("summary") or "") for r in rows]
    docs = [documents.get(str(r["_id"]), "") for r in rows]
    copies = [c for s, d in zip(summaries, docs) if (c := copy_share(s, d)) is not None]
    return {
        "n": len(rows),
        "placeholder_rate": _mean([has_placeholder(s, d) for s, d in zip(summaries, docs)]),
        "boilerplate_rate": _mean([has_boilerplate(s) for s in summaries]),
        "copy_rate": _mean(copies),
        "distinct_2": distinct_n(summaries, 2),
        "mean_tokens": _mean([float(r.get("n_tokens") or 0) for r in rows]),
        "truncation_rate": _mean([bool(r.get("truncated")) for r in rows]),
        "separator_rate": _mean([bool(r.get("has_separator", True)) for r in rows]),
    }


def fixed_judge(cfg, *, data_dir: Any, summaries: str | Path | Mapping[str, str], judge: str,
                doc_ids: Sequence[str] | None = None, encoder: Any = None, per_doc: bool = False,
                split: str | None = None, title: bool | None = None) -> dict[str, Any]:
    """Mean Delta and reward of the summaries of the held-out training documents, scored by `judge`.

    summaries: a summaries.jsonl or {doc id: summary}; judge: the retriever (g_0) name or dir;
    doc_ids: the documents to score (default `resume.grpo.judge_doc_ids`). Negatives are sampled like
    GRPO's (`reward.num_negatives` from the other training queries, seeded by `reward.seed`, documents
    in corpus order), so the judge gives the same negatives to every iteration. `per_doc`: add
    "delta_per_doc" ({doc id: Delta}) for paired comparisons of two summary sets on the same documents, and
    "reward_per_doc" ({doc id: total reward}). `split`: whose queries score (positives and the negatives'
    pool; default `data.train_split`); another split asks whether a summary that GRPO's queries favour also
    serves queries it never saw (bench/best_of_n_probe.py --heldout-split dev). `title` (None =
    `reward.summary_title`): score each summary after its document's title, as a titled index holds it.
    `data_dir`: a BEIR directory, or the already loaded `BeirDataset` (a probe scoring many summary sets
    reads the collection once).
    """
    import numpy as np

    from resume.data import doc_text, load_beir
    from resume.grpo import judge_doc_ids, train_positives
    from resume.rewards import RetrievalReward, sample_negatives

    ds = data_dir if hasattr(data_dir, "corpus") else load_beir(data_dir)
    split = split or cfg.data.train_split
    title = cfg.reward.summary_title if title is None else bool(title)
    pos = train_positives(ds, split)
    ids = list(doc_ids) if doc_ids is not None else judge_doc_ids(cfg, ds)
    texts = summaries if isinstance(summaries, Mapping) else read_summaries(summaries)
    ids = [d for d in ids if d in texts and d in pos]
    if not ids:
        return {"n": 0, "delta_mean": None, "reward_mean": None, "delta_positive_share": None}
    train_qids = sorted(q for q in ds.qrels.get(split, {}) if q in ds.queries)
    rng = np.random.default_rng(cfg.reward.seed)
    neg = [sample_negatives(train_qids, pos[d], cfg.reward.num_negatives, rng) if cfg.reward.use_negatives else []
           for d in ids]
    if encoder is None:
        from resume.retriever import Encoder

        encoder = Encoder(judge, cfg.retriever, device=None if cfg.device == "auto" else cfg.device)
    reward = RetrievalReward(encoder, ds.queries, {d: doc_text(ds.corpus[d]) for d in ids}, cfg.reward,
                             separator=cfg.summarizer.separator, train_query_ids=train_qids,
                             titles={d: str(ds.corpus[d].get("title") or "") for d in ids} if title else None)
    parts = reward.score(ids, [texts[d] for d in ids], [pos[d] for d in ids], neg)
    deltas = [p.delta for p in parts]
    out = {"n": len(ids), "judge": str(judge), "title": title, "delta_mean": _mean(deltas),
           "reward_mean": _mean([p.total for p in parts]),
           "structure_mean": _mean([p.structure for p in parts]), "retrieval_mean": _mean([p.retrieval for p in parts]),
           "delta_positive_share": _mean([d > 0 for d in deltas]),
           "retscore_summary_mean": _mean([p.ret_summary or 0.0 for p in parts]),
           "retscore_doc_mean": _mean([p.ret_doc or 0.0 for p in parts])}
    if per_doc:
        out["delta_per_doc"] = {d: float(x) for d, x in zip(ids, deltas, strict=True)}
        out["reward_per_doc"] = {d: float(p.total) for d, p in zip(ids, parts, strict=True)}
    return out


def summary_quality(summaries: str | Path, data_dir: str | Path) -> dict[str, float]:
    """`text_signals` of one summaries.jsonl against the documents of `data_dir`."""
    from resume.data import doc_text, load_beir

    ds = load_beir(data_dir)
    rows = list(iter_jsonl(summaries))
    return text_signals(rows, {d: doc_text(doc) for d, doc in ds.corpus.items()})


def quality_signals(cfg, *, data_dir: str | Path, summaries: str | Path, judge: str,
                    doc_ids: list[str] | None = None, encoder=None, per_doc: bool = False) -> dict[str, Any]:
    """The quality stage for one summaries.jsonl (the loop's, and the benchmarks' in bench/):
    {"text": `summary_quality`, "fixed_judge": `fixed_judge` with `judge` (g_0)}; `doc_ids` and
    `encoder` and `per_doc` are passed on to `fixed_judge`."""
    return {"text": summary_quality(summaries, data_dir),
            "fixed_judge": fixed_judge(cfg, data_dir=data_dir, summaries=summaries, judge=judge, doc_ids=doc_ids,
                                       encoder=encoder, per_doc=per_doc)}
