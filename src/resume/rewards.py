"""The GRPO reward of DESIGN §1.1: StructureReward(s) + r_phi(Delta), as pure functions plus a TRL adapter.

    from resume.rewards import RetrievalReward
    reward = RetrievalReward(encoder, queries, docs, cfg.reward, separator=cfg.summarizer.separator)
    GRPOTrainer(..., reward_funcs=[reward])      # dataset columns: doc_id, pos_query_ids, neg_query_ids

Definitions (the paper's, with our guards made explicit):

- Separator: the summary is the text after the LAST separator (`</think>`), stripped; `None` when the
  separator is absent. A template that prefills `<think>` leaves only `</think>` in the completion; that
  is the normal case, not an error.
- StructureReward(n): n = tokens of the summary under the RETRIEVER's tokenizer, no special tokens.
  min..max (64..128) -> 1.0; max < n <= over_limit (160) -> 0.9; n < min -> 0.3; n > over_limit ->
  `far_over` (0.0 by default: the paper leaves it open; a summary that long bloats the index and gets
  truncated by the retriever, so it earns less than a short one); missing separator -> -1.0.
- RetScore(x) = sum_{q+} S(q, x) / (sum_{q+} S(q, x) + sum_{q-} S(q, x)), S = cosine similarity.
  Guard: with `clamp_negative` (default) cosines are clamped at 0 first, so RetScore is in [0, 1];
  a zero (or, unclamped, non-positive) denominator gives 0. With no negatives (the "w/o negative
  queries" ablation, or an empty sampled set) the ratio would be 1: RetScore = mean_{q+} S(q, x).
  No positives -> 0.
- Delta = RetScore(summary) - RetScore(document), clipped to [-1, 1].
- r_phi = the paper's bins ([-1,-0.5) -> -1.0 ... [0.5,1] -> 1.0), left-closed, with deltas within
  1e-9 of an edge counted as on it (so 0.3 - 0.2 = 0.0999... lands in [0.1, 0.2)); the "w/o discrete
  reward" ablation uses Delta itself. Missing separator -> r_phi = -1.
- Total = StructureReward + r_phi, in [-2, 2]; a missing separator gives -2.

Logging: `RetrievalReward` keeps `last_parts` (one `RewardParts` per completion of the last call) and
an accumulating `log` (one summary row per call, with the trainer's global step); `pop_log()` drains
it for grpo.py's `reward_log.jsonl`. When TRL passes its `log_metric` / `log_extra` hooks (TRL >= 1.x
does), the means of the parts are logged as `reward_parts/{structure,retrieval,delta,n_tokens,
separator_rate}` and the per-completion parts go into the completions table. For trainers without
those hooks, `companion_funcs()` returns two zero-cost reward functions (`structure_reward`,
`retrieval_reward`) that return the parts of the main call: add them with reward weight 0 and TRL
logs `rewards/structure_reward/mean` and `rewards/retrieval_reward/mean`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from resume.config import RewardConfig

# Left edges of the discrete bins of r_phi and the value of each bin (DESIGN §1.1).
DISCRETE_EDGES = (-0.5, -0.2, -0.1, 0.0, 0.1, 0.2, 0.5)
DISCRETE_VALUES = (-1.0, -0.8, -0.6, -0.3, 0.3, 0.6, 0.8, 1.0)
EDGE_TOLERANCE = 1e-9


# ------------------------------------------------------------------------------------ pure functions


def split_summary(completion: str, separator: str = "</think>") -> str | None:
    """Text after the LAST `separator` in `completion`, stripped; None when the separator is absent.

    >>> split_summary("<think>terms</think> A summary. ")
    'A summary.'
    >>> split_summary("reasoning only, the template prefilled <think></think>final")
    'final'
    >>> split_summary("no tag") is None
    True
    """
    if not separator:
        raise ValueError("separator must be a non-empty string")
    idx = completion.rfind(separator)
    if idx < 0:
        return None
    return completion[idx + len(separator):].strip()


def structure_reward(n_tokens: int | None, cfg: RewardConfig | None = None) -> float:
    """StructureReward for a summary of `n_tokens` retriever tokens; None = missing separator."""
    cfg = cfg or RewardConfig()
    if n_tokens is None:
        return float(cfg.missing_separator)
    if n_tokens < 0:
        raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
    if n_tokens < cfg.min_tokens:
        return float(cfg.under)
    if n_tokens <= cfg.max_tokens:
        return float(cfg.in_range)
    if n_tokens <= cfg.over_limit:
        return float(cfg.slightly_over)
    return float(cfg.far_over)


def ret_score(pos_sims: Sequence[float] | np.ndarray, neg_sims: Sequence[float] | np.ndarray | None = None,
              cfg: RewardConfig | None = None, *, clamp: bool | None = None) -> float:
    """RetScore from the cosines of a text to its positive and negative queries (see module docstring).

    `neg_sims` None or empty -> mean positive similarity (the "w/o negative queries" rule).
    `clamp` defaults to `cfg.clamp_negative` (True).
    """
    if clamp is None:
        clamp = (cfg or RewardConfig()).clamp_negative
    pos = np.asarray(pos_sims, dtype=np.float64).reshape(-1)
    neg = np.asarray([] if neg_sims is None else neg_sims, dtype=np.float64).reshape(-1)
    if clamp:
        pos, neg = np.maximum(pos, 0.0), np.maximum(neg, 0.0)
    if pos.size == 0:
        return 0.0
    if neg.size == 0:
        return float(pos.mean())
    sp = float(pos.sum())
    den = sp + float(neg.sum())
    if den <= 0.0:
        return 0.0
    return sp / den


def delta(score_summary: float, score_doc: float) -> float:
    """Delta = RetScore(summary) - RetScore(document), clipped to [-1, 1]."""
    return float(min(1.0, max(-1.0, score_summary - score_doc)))


def discrete_reward(d: float) -> float:
    """The paper's r_phi bins: [-1,-0.5) -1.0 | [-0.5,-0.2) -0.8 | [-0.2,-0.1) -0.6 | [-0.1,0) -0.3 |
    [0,0.1) 0.3 | [0.1,0.2) 0.6 | [0.2,0.5) 0.8 | [0.5,1] 1.0. Values outside [-1, 1] take the end bins."""
    if math.isnan(d):
        raise ValueError("delta is NaN")
    for edge, value in zip(DISCRETE_EDGES, DISCRETE_VALUES):
        if d < edge - EDGE_TOLERANCE:
            return value
    return DISCRETE_VALUES[-1]


def retrieval_reward(d: float, cfg: RewardConfig | None = None) -> float:
    """r_phi(Delta): the discrete bins, or Delta itself for the "w/o discrete reward" ablation."""
    cfg = cfg or RewardConfig()
    return discrete_reward(d) if cfg.discrete else float(d)


def total_reward(structure: float, r_phi: float) -> float:
    """Total reward = StructureReward + r_phi (in [-2, 2])."""
    return float(structure + r_phi)


def sample_negatives(train_qids: Iterable[str], positives: Iterable[str], n: int,
                     rng: np.random.Generator | random.Random | int | None = None) -> list[str]:
    """`n` query ids drawn uniformly without replacement from `train_qids` minus `positives`.

    Deterministic for a seeded `rng` (a numpy Generator, a `random.Random`, or an int seed): the pool
    is sorted first, so the result does not depend on set or dict ordering. Fewer than `n` candidates
    -> all of them (in sampled order).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    pos = set(positives)
    pool = sorted({q for q in train_qids if q not in pos})
    k = min(n, len(pool))
    if k == 0:
        return []
    if rng is None or isinstance(rng, int):
        rng = np.random.default_rng(rng)
    if isinstance(rng, random.Random):
        return rng.sample(pool, k)
    idx = rng.choice(len(pool), size=k, replace=False)
    return [pool[i] for i in idx]


@dataclass
class RewardParts:
    """The parts of one completion's reward."""

    total: float
    structure: float
    retrieval: float          # r_phi (after the discrete map, or Delta for the continuous ablation)
    delta: float              # RetScore(summary) - RetScore(doc); -1 when the separator is missing
    n_tokens: int | None      # retriever tokens of the summary; None when the separator is missing
    has_separator: bool
    ret_summary: float | None = None
    ret_doc: float | None = None


def reward_from_parts(summary: str | None, n_tokens: int | None, pos_sims_summary, neg_sims_summary,
                      pos_sims_doc, neg_sims_doc, cfg: RewardConfig | None = None) -> RewardParts:
    """Assemble one completion's reward from its similarities (pure; the TRL adapter calls it)."""
    cfg = cfg or RewardConfig()
    if summary is None:
        s = structure_reward(None, cfg)
        return RewardParts(total_reward(s, -1.0), s, -1.0, -1.0, None, False)
    if not cfg.use_negatives:
        neg_sims_summary = neg_sims_doc = None
    rs = ret_score(pos_sims_summary, neg_sims_summary, cfg)
    rd = ret_score(pos_sims_doc, neg_sims_doc, cfg)
    d = delta(rs, rd)
    s = structure_reward(n_tokens, cfg)
    r = retrieval_reward(d, cfg)
    return RewardParts(total_reward(s, r), s, r, d, n_tokens, True, rs, rd)


# ------------------------------------------------------------------------------------- TRL adapter


def completion_text(completion: Any) -> str:
    """A completion as text: a string as is; a conversational completion (list of messages) -> the
    content of its last message (content parts of type "text" joined)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if isinstance(completion, Sequence) and completion:
        content = completion[-1].get("content", "") if isinstance(completion[-1], Mapping) else completion[-1]
        if isinstance(content, str):
            return content
        if isinstance(content, Sequence):
            return "".join(p.get("text", "") if isinstance(p, Mapping) else str(p) for p in content)
        return "" if content is None else str(content)
    if isinstance(completion, Sequence):
        return ""
    raise TypeError(f"unsupported completion type {type(completion).__name__}")


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _as_id_list(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    return [str(x) for x in v]


class RetrievalReward:
    """TRL reward function for GRPO: `reward(prompts=, completions=, completion_ids=, **columns)`.

    Args:
        encoder: object with `encode_queries(texts)`, `encode_docs(texts)` -> float32 (n, d) arrays and
            `count_tokens(texts)` -> list[int] (no special tokens): `resume.retriever.Encoder`.
        queries: query id -> text (at least the training queries used as positives/negatives).
        docs: doc id -> text the summarizer sees summarised (`resume.data.doc_text`).
        cfg: `RewardConfig`.
        separator: the tag that ends the reasoning (`SummarizerConfig.separator`).
        prefix: text prepended to every completion before parsing: the part of the reasoning block
            that the prompt prefilled (`resume.summarizer.reasoning_prefix`; the separator itself when
            `summarizer.reasoning: skip`, else "").
        train_query_ids: pool for negatives when a row has no `neg_query_ids` column (sampled once
            per document with `cfg.seed`, so every completion of a group is scored on the same set).
        name: `__name__` that TRL shows in its logs.
        titles: doc id -> title, or None. Given (`reward.summary_title`), RetScore scores each summary
            after its document's title (`resume.lead.join_title`), the text a titled index holds; the
            structure reward still counts the summary's own tokens.

    Dataset columns read (TRL repeats them per generation): `doc_id`, `pos_query_ids`,
    `neg_query_ids` (optional). Query and document embeddings are cached for the lifetime of the object
    (the retriever is frozen during a GRPO round): after `warm()` (or once a document has been seen)
    a call makes one batched `encode_docs` over its completions and nothing else. Similarities are
    cosines (embeddings are L2-normalised in the cache whatever the encoder does).
    """

    def __init__(self, encoder: Any, queries: Mapping[str, str], docs: Mapping[str, str],
                 cfg: RewardConfig | None = None, *, separator: str = "</think>",
                 train_query_ids: Iterable[str] | None = None, name: str = "retrieval_reward", prefix: str = "",
                 titles: Mapping[str, str] | None = None):
        self.encoder = encoder
        self.titles = titles
        self.prefix = prefix
        self.queries = queries
        self.docs = docs
        self.cfg = cfg or RewardConfig()
        self.separator = separator
        self.train_query_ids = sorted(train_query_ids) if train_query_ids is not None else None
        self.__name__ = name
        self._q_emb: dict[str, np.ndarray] = {}
        self._d_emb: dict[str, np.ndarray] = {}
        self._negatives: dict[str, list[str]] = {}
        self._rng = np.random.default_rng(self.cfg.seed)
        self.last_parts: list[RewardParts] = []
        self._last_completions: Any = None
        self.log: list[dict[str, Any]] = []
        self.n_calls = 0

    # -- caches -----------------------------------------------------------------------------------

    def warm(self, doc_ids: Iterable[str] | None = None, query_ids: Iterable[str] | None = None) -> None:
        """Encode (once) the given documents and queries; None = every one in `docs` / `queries`."""
        self._ensure_docs(self.docs.keys() if doc_ids is None else doc_ids)
        self._ensure_queries(self.queries.keys() if query_ids is None else query_ids)

    def _ensure_queries(self, qids: Iterable[str]) -> None:
        missing = list(dict.fromkeys(q for q in qids if q not in self._q_emb))
        if not missing:
            return
        unknown = [q for q in missing if q not in self.queries]
        if unknown:
            raise KeyError(f"RetrievalReward: unknown query ids {unknown[:5]} (not in the queries given)")
        emb = _normalize_rows(self.encoder.encode_queries([self.queries[q] for q in missing]))  # (n, d)
        self._q_emb.update(zip(missing, emb))

    def _ensure_docs(self, dids: Iterable[str]) -> None:
        missing = list(dict.fromkeys(d for d in dids if d not in self._d_emb))
        if not missing:
            return
        unknown = [d for d in missing if d not in self.docs]
        if unknown:
            raise KeyError(f"RetrievalReward: unknown doc ids {unknown[:5]} (not in the docs given)")
        emb = _normalize_rows(self.encoder.encode_docs([self.docs[d] for d in missing]))  # (n, d)
        self._d_emb.update(zip(missing, emb))

    def negatives_for(self, doc_id: str, positives: list[str]) -> list[str]:
        """Negatives of a document without a `neg_query_ids` column (sampled once, then cached)."""
        if doc_id not in self._negatives:
            pool = self.train_query_ids if self.train_query_ids is not None else sorted(self.queries)
            self._negatives[doc_id] = sample_negatives(pool, positives, self.cfg.num_negatives, self._rng)
        return self._negatives[doc_id]

    def _sims(self, qids: list[str], x: np.ndarray) -> np.ndarray:
        if not qids:
            return np.zeros(0, dtype=np.float32)
        return np.stack([self._q_emb[q] for q in qids]) @ x  # (n_q,)

    # -- the reward function ----------------------------------------------------------------------

    def __call__(self, prompts: list[Any] | None = None, completions: list[Any] | None = None,
                 completion_ids: list[Any] | None = None, *, doc_id: Sequence[str] | None = None,
                 pos_query_ids: Sequence[Any] | None = None, neg_query_ids: Sequence[Any] | None = None,
                 **kwargs: Any) -> list[float]:
        if completions is None:
            raise ValueError("RetrievalReward needs `completions`")
        if doc_id is None or pos_query_ids is None:
            raise ValueError("RetrievalReward needs the dataset columns `doc_id` and `pos_query_ids`")
        n = len(completions)
        if len(doc_id) != n or len(pos_query_ids) != n or (neg_query_ids is not None and len(neg_query_ids) != n):
            raise ValueError(f"RetrievalReward: {n} completions but columns of lengths doc_id={len(doc_id)}, "
                             f"pos_query_ids={len(pos_query_ids)}"
                             + (f", neg_query_ids={len(neg_query_ids)}" if neg_query_ids is not None else ""))

        pos = [_as_id_list(p) for p in pos_query_ids]
        if not self.cfg.use_negatives:
            neg = [[] for _ in range(n)]
        elif neg_query_ids is not None:
            neg = [_as_id_list(q) for q in neg_query_ids]
        else:
            neg = [self.negatives_for(str(d), p) for d, p in zip(doc_id, pos)]
        summaries = [split_summary(self.prefix + completion_text(c), self.separator) for c in completions]
        parts = self.score([str(d) for d in doc_id], summaries, pos, neg)
        self._record(parts, {**kwargs, "_completions": completions})
        return [p.total for p in parts]

    def score(self, doc_ids: Sequence[str], summaries: Sequence[str | None], pos: Sequence[list[str]],
              neg: Sequence[list[str]]) -> list[RewardParts]:
        """The reward parts of already parsed summaries (None = no separator) of `doc_ids`, with their
        positive / negative query ids. One batched encode of the summaries; nothing is logged."""
        n = len(summaries)
        dids = list(doc_ids)
        self._ensure_docs(dids)
        self._ensure_queries(q for ids in (*pos, *neg) for q in ids)
        present = [i for i, s in enumerate(summaries) if s is not None]
        texts = [summaries[i] for i in present]
        emb = np.zeros((0, 0), dtype=np.float32)
        counts: list[int] = []
        if texts:
            if self.titles is None:
                indexed = texts
            else:
                from resume.lead import join_title

                indexed = [join_title(self.titles.get(dids[i], ""), summaries[i]) for i in present]
            emb = _normalize_rows(self.encoder.encode_docs(indexed))  # (n_present, d): the one encode
            counts = [int(c) for c in self.encoder.count_tokens(texts)]
        row = {i: j for j, i in enumerate(present)}

        parts: list[RewardParts] = []
        for i in range(n):
            if i not in row:
                parts.append(reward_from_parts(None, None, (), (), (), (), self.cfg))
                continue
            s_emb, d_emb = emb[row[i]], self._d_emb[dids[i]]
            parts.append(reward_from_parts(
                summaries[i], counts[row[i]],
                self._sims(pos[i], s_emb), self._sims(neg[i], s_emb),
                self._sims(pos[i], d_emb), self._sims(neg[i], d_emb), self.cfg))
        return parts

    # -- logging ----------------------------------------------------------------------------------

    def _record(self, parts: list[RewardParts], kwargs: dict[str, Any]) -> None:
        self.last_parts = parts
        self._last_completions = kwargs.get("_completions")
        self.n_calls += 1
        summary = summarize_parts(parts)
        state = kwargs.get("trainer_state")
        summary["step"] = getattr(state, "global_step", None)
        summary["call"] = self.n_calls
        self.log.append(summary)
        log_metric, log_extra = kwargs.get("log_metric"), kwargs.get("log_extra")
        if callable(log_metric):
            for key in ("structure", "retrieval", "delta", "n_tokens", "separator_rate"):
                if summary[key] is not None:
                    log_metric(f"reward_parts/{key}", summary[key])
        if callable(log_extra):
            for key in ("structure", "retrieval", "delta", "n_tokens"):
                log_extra(key, [getattr(p, key) for p in parts])

    def pop_log(self) -> list[dict[str, Any]]:
        """Return and clear the per-call summaries logged since the last `pop_log()`."""
        out, self.log = self.log, []
        return out

    def companion_funcs(self) -> list[_PartFunc]:
        """Zero-weight reward functions that return the structure / retrieval parts of the last call."""
        return [_PartFunc(self, "structure"), _PartFunc(self, "retrieval")]


class _PartFunc:
    """Returns one part of the parent's last call (no encoding) when called with the very same
    completions list (TRL passes one list to every reward function); otherwise runs the parent."""

    def __init__(self, parent: RetrievalReward, part: str):
        self.parent, self.part = parent, part
        self.__name__ = f"{part}_reward"

    def __call__(self, prompts=None, completions=None, **kwargs) -> list[float]:
        if completions is None or completions is not self.parent._last_completions:
            kwargs.pop("log_metric", None), kwargs.pop("log_extra", None)
            self.parent(prompts=prompts, completions=completions, **kwargs)
        parts = self.parent.last_parts
        return [float(getattr(p, self.part)) for p in parts]


def summarize_parts(parts: list[RewardParts]) -> dict[str, Any]:
    """Means over one batch: reward, structure, retrieval, delta and length (over completions with a
    separator), separator rate, count."""
    n = len(parts)
    with_sep = [p for p in parts if p.has_separator]

    def mean(xs: list[float]) -> float | None:
        return float(np.mean(xs)) if xs else None

    return {
        "n": n,
        "reward": mean([p.total for p in parts]),
        "structure": mean([p.structure for p in parts]),
        "retrieval": mean([p.retrieval for p in parts]),
        "delta": mean([p.delta for p in with_sep]),
        "n_tokens": mean([float(p.n_tokens) for p in with_sep if p.n_tokens is not None]),
        "separator_rate": (len(with_sep) / n) if n else None,
    }


def parts_as_dicts(parts: list[RewardParts]) -> list[dict[str, Any]]:
    return [asdict(p) for p in parts]
