"""Tests of the GRPO reward (DESIGN §1.1): pure functions at every edge, and the TRL adapter."""

from __future__ import annotations

import random
import zlib
from types import SimpleNamespace

import numpy as np
import pytest

from resume.config import RewardConfig
from resume.rewards import (
    RetrievalReward,
    delta,
    discrete_reward,
    ret_score,
    retrieval_reward,
    reward_from_parts,
    sample_negatives,
    split_summary,
    structure_reward,
    total_reward,
)


class FakeEncoder:
    """Deterministic stand-in for resume.retriever.Encoder: a lookup table, else a text-seeded vector;
    tokens = whitespace words. Counts its encode calls and the texts it encoded."""

    def __init__(self, table: dict[str, list[float]] | None = None, dim: int = 8):
        self.table = {k: np.asarray(v, dtype=np.float32) for k, v in (table or {}).items()}
        self.dim = dim
        self.calls: list[tuple[str, int]] = []

    def _emb(self, texts):
        out = []
        for t in texts:
            if t in self.table:
                out.append(self.table[t])
            else:
                out.append(np.random.default_rng(zlib.crc32(t.encode())).standard_normal(self.dim))
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)

    def encode_queries(self, texts):
        self.calls.append(("queries", len(texts)))
        return self._emb(list(texts))

    def encode_docs(self, texts):
        self.calls.append(("docs", len(texts)))
        return self._emb(list(texts))

    def count_tokens(self, texts):
        return [len(t.split()) for t in texts]


def words(n: int, word: str = "w") -> str:
    return " ".join([word] * n)


# ------------------------------------------------------------------------------------ separator


def test_split_summary_last_separator_stripped():
    assert split_summary("<think>a</think> b </think>  the summary \n") == "the summary"
    assert split_summary("no separator here") is None
    assert split_summary("<think>still thinking") is None
    assert split_summary("</think>") == ""


def test_split_summary_prefilled_think_template():
    # The template prefilled `<think>`, so the completion holds only the closing tag.
    assert split_summary("the key terms are wings and lift\n</think>\n\nLift of swept wings.") == "Lift of swept wings."
    assert split_summary("x[/sep]y", separator="[/sep]") == "y"


# ------------------------------------------------------------------------------------ structure


@pytest.mark.parametrize("n, expected", [(0, 0.3), (63, 0.3), (64, 1.0), (100, 1.0), (128, 1.0), (129, 0.9),
                                         (160, 0.9), (161, 0.0), (10_000, 0.0)])
def test_structure_reward_edges(n, expected):
    assert structure_reward(n, RewardConfig()) == expected


def test_structure_reward_configurable_limits_and_missing():
    cfg = RewardConfig(over_limit=200, far_over=-0.5)
    assert structure_reward(200, cfg) == 0.9
    assert structure_reward(201, cfg) == -0.5
    assert structure_reward(None, cfg) == -1.0
    default = RewardConfig()
    assert structure_reward(default.over_limit, default) == 0.9
    assert structure_reward(default.over_limit + 1, default) == default.far_over
    with pytest.raises(ValueError):
        structure_reward(-1)


# ------------------------------------------------------------------------------------ discrete map

EDGE_CASES = [(-1.0, -1.0), (-0.5, -0.8), (-0.2, -0.6), (-0.1, -0.3), (0.0, 0.3), (0.1, 0.6), (0.2, 0.8),
              (0.5, 1.0), (1.0, 1.0)]


@pytest.mark.parametrize("d, expected", EDGE_CASES)
def test_discrete_reward_every_edge(d, expected):
    assert discrete_reward(d) == expected


@pytest.mark.parametrize("d, expected", [(-0.75, -1.0), (-0.5 - 1e-6, -1.0), (-0.2 - 1e-6, -0.8),
                                         (-0.1 - 1e-6, -0.6), (-1e-6, -0.3), (0.1 - 1e-6, 0.3),
                                         (0.2 - 1e-6, 0.6), (0.5 - 1e-6, 0.8), (0.7, 1.0), (-0.0, 0.3)])
def test_discrete_reward_inside_bins(d, expected):
    assert discrete_reward(d) == expected


def test_discrete_reward_float_edges_from_arithmetic():
    # 0.3 - 0.2 == 0.09999999999999998 in binary floating point; it is the edge 0.1 -> [0.1, 0.2).
    assert 0.3 - 0.2 < 0.1
    assert discrete_reward(0.3 - 0.2) == 0.6
    assert discrete_reward(delta(0.7, 0.6)) == 0.6
    assert discrete_reward(delta(0.6, 0.1)) == 1.0          # 0.5 (0.49999999999999994 as a float)
    assert discrete_reward(delta(0.2, 0.3)) == -0.3         # -0.1 is in [-0.1, 0)
    assert discrete_reward(delta(0.1, 0.3)) == -0.6         # -0.2 is in [-0.2, -0.1)
    with pytest.raises(ValueError):
        discrete_reward(float("nan"))


def test_delta_clipped_and_continuous_ablation():
    assert delta(0.9, 0.2) == pytest.approx(0.7)
    assert delta(3.0, 0.0) == 1.0 and delta(-3.0, 0.0) == -1.0
    assert retrieval_reward(0.15, RewardConfig(discrete=False)) == 0.15
    assert retrieval_reward(0.15, RewardConfig()) == 0.6
    assert total_reward(1.0, 1.0) == 2.0 and total_reward(-1.0, -1.0) == -2.0


# ------------------------------------------------------------------------------------ RetScore


def test_ret_score_ratio_and_negative_cosines():
    assert ret_score([0.6, 0.2], [0.2]) == pytest.approx(0.8)
    # Negative cosines are clamped at 0 before the ratio.
    assert ret_score([-0.5, 0.5], [-0.2]) == pytest.approx(1.0)
    assert ret_score([-0.3], [0.2]) == 0.0
    # All clamped to zero: zero denominator -> 0.
    assert ret_score([-0.3, -0.1], [-0.9]) == 0.0
    assert ret_score([0.0], [0.0]) == 0.0
    # Without clamping a non-positive denominator also gives 0.
    cfg = RewardConfig(clamp_negative=False)
    assert ret_score([0.5], [-0.5], cfg) == 0.0
    assert ret_score([0.6], [-0.2], cfg) == pytest.approx(1.5)
    assert ret_score([], [0.3]) == 0.0


def test_ret_score_without_negatives_is_mean_positive_similarity():
    assert ret_score([0.2, 0.6], []) == pytest.approx(0.4)
    assert ret_score([0.2, 0.6], None) == pytest.approx(0.4)
    assert ret_score([-0.4, 0.6], None) == pytest.approx(0.3)          # clamped
    assert ret_score([-0.4, 0.6], None, RewardConfig(clamp_negative=False)) == pytest.approx(0.1)


def test_reward_from_parts_missing_separator_is_minus_two():
    p = reward_from_parts(None, None, [], [], [], [], RewardConfig())
    assert (p.total, p.structure, p.retrieval, p.has_separator, p.n_tokens) == (-2.0, -1.0, -1.0, False, None)


def test_reward_from_parts_no_negatives_ablation_ignores_negatives():
    cfg = RewardConfig(use_negatives=False)
    p = reward_from_parts("s", 80, [0.8], [0.9, 0.9], [0.5], [0.0], cfg)
    assert p.ret_summary == pytest.approx(0.8) and p.ret_doc == pytest.approx(0.5)
    assert p.delta == pytest.approx(0.3) and p.retrieval == 0.8 and p.total == pytest.approx(1.8)


# ------------------------------------------------------------------------------------ negatives


def test_sample_negatives_uniform_without_replacement_seeded():
    train = [f"q{i}" for i in range(50)]
    pos = ["q1", "q2", "q3"]
    a = sample_negatives(train, pos, 10, np.random.default_rng(7))
    b = sample_negatives(list(reversed(train)), set(pos), 10, np.random.default_rng(7))
    assert a == b                                   # independent of input order
    assert len(a) == len(set(a)) == 10 and not set(a) & set(pos) and set(a) <= set(train)
    assert sample_negatives(train, pos, 10, 7) == a                       # int seed
    assert len(sample_negatives(train, pos, 100, 0)) == 47                # all candidates
    assert sample_negatives(["q1"], ["q1"], 5, 0) == []
    r = sample_negatives(train, pos, 5, random.Random(3))
    assert r == sample_negatives(train, pos, 5, random.Random(3)) and len(set(r)) == 5
    # Uniform: over many draws every candidate is chosen about equally often.
    counts = {q: 0 for q in train if q not in pos}
    rng = np.random.default_rng(0)
    for _ in range(2000):
        for q in sample_negatives(train, pos, 5, rng):
            counts[q] += 1
    expected = 2000 * 5 / 47
    assert all(abs(c - expected) < 0.35 * expected for c in counts.values())


# ------------------------------------------------------------------------------------ TRL adapter

Q = {"q1": "lift of wings", "q2": "heat transfer", "q3": "boundary layer"}
D = {"d1": "DOC ONE", "d2": "DOC TWO"}
TABLE = {
    "lift of wings": [1, 0, 0], "heat transfer": [0, 1, 0], "boundary layer": [0, 0, 1],
    "DOC ONE": [1, 1, 0], "DOC TWO": [0, 1, 1],
    "GOOD": [1, 0.2, 0], "BAD": [0, 1, 0], "NEG": [-1, -1, -1],
}


def make_reward(cfg=None, **kw):
    enc = FakeEncoder(TABLE, dim=3)
    return RetrievalReward(enc, Q, D, cfg or RewardConfig(), **kw), enc


def expected_total(summary: str, doc: str, pos: list[str], neg: list[str], n_tokens: int, cfg=None) -> float:
    cfg = cfg or RewardConfig()
    unit = {k: np.asarray(v, float) / np.linalg.norm(v) for k, v in TABLE.items()}

    def rs(x):
        return ret_score([unit[Q[q]] @ unit[x] for q in pos], [unit[Q[q]] @ unit[x] for q in neg], cfg)

    return structure_reward(n_tokens, cfg) + retrieval_reward(delta(rs(summary), rs(doc)), cfg)


def test_reward_matches_hand_computation():
    reward, _ = make_reward()
    out = reward(prompts=["p"] * 3, completions=["t</think>GOOD", "t</think>BAD", "no separator"],
                 completion_ids=[[1]] * 3, doc_id=["d1"] * 3, pos_query_ids=[["q1"]] * 3,
                 neg_query_ids=[["q2"]] * 3)
    # RetScore(doc) = 0.5; GOOD: 0.98/(0.98+0.196) = 0.833 -> delta 0.333 -> 0.8; one token -> 0.3.
    assert out[0] == pytest.approx(0.3 + 0.8) == pytest.approx(expected_total("GOOD", "DOC ONE", ["q1"], ["q2"], 1))
    # BAD: RetScore 0 -> delta -0.5 -> -0.8.
    assert out[1] == pytest.approx(0.3 - 0.8)
    assert out[2] == -2.0
    parts = reward.last_parts
    assert [p.has_separator for p in parts] == [True, True, False]
    assert parts[0].delta == pytest.approx(0.8333333 - 0.5, abs=1e-5) and parts[0].n_tokens == 1
    assert parts[1].ret_doc == pytest.approx(0.5)


def test_reward_negative_cosines_and_empty_negative_set():
    reward, _ = make_reward()
    # NEG has negative cosine with every query: clamped to 0 -> RetScore 0 -> delta -0.5.
    out = reward(completions=["</think>NEG"], doc_id=["d1"], pos_query_ids=[["q1"]], neg_query_ids=[["q2"]])
    assert out == [pytest.approx(0.3 - 0.8)]
    # Empty negative set: mean similarity to the positives (doc 0.707, GOOD 0.981 -> delta 0.27 -> 0.8).
    out = reward(completions=["</think>GOOD"], doc_id=["d1"], pos_query_ids=[["q1"]], neg_query_ids=[[]])
    assert reward.last_parts[0].ret_summary == pytest.approx(1 / np.sqrt(1.04), abs=1e-6)
    assert out == [pytest.approx(0.3 + 0.8)]


def test_reward_ablations_continuous_and_no_negatives():
    cfg = RewardConfig(discrete=False)
    reward, _ = make_reward(cfg)
    out = reward(completions=["</think>GOOD"], doc_id=["d1"], pos_query_ids=[["q1"]], neg_query_ids=[["q2"]])
    assert out[0] == pytest.approx(0.3 + reward.last_parts[0].delta)
    assert reward.last_parts[0].retrieval == reward.last_parts[0].delta
    assert out[0] == pytest.approx(expected_total("GOOD", "DOC ONE", ["q1"], ["q2"], 1, cfg))

    cfg = RewardConfig(use_negatives=False, discrete=False)
    reward, _ = make_reward(cfg)
    reward(completions=["</think>GOOD"], doc_id=["d1"], pos_query_ids=[["q1"]], neg_query_ids=[["q2"]])
    p = reward.last_parts[0]
    assert p.ret_summary == pytest.approx(1 / np.sqrt(1.04), abs=1e-6)     # mean sim to q+, q- ignored
    assert p.ret_doc == pytest.approx(1 / np.sqrt(2), abs=1e-6)


def test_titles_score_the_titled_view_and_count_the_summarys_own_tokens():
    """`titles` (reward.summary_title): RetScore encodes title + summary, as a titled index holds it; the
    structure reward counts the summary alone; a document without a title keeps the summary as it is."""
    titled = {**TABLE, "Lift. BAD": [1, 0.2, 0]}  # the title turns BAD into GOOD's vector
    enc = FakeEncoder(titled, dim=3)
    reward = RetrievalReward(enc, Q, D, RewardConfig(), titles={"d1": "Lift", "d2": ""})
    plain, _ = make_reward()
    cols = dict(doc_id=["d1", "d2"], pos_query_ids=[["q1"], ["q1"]], neg_query_ids=[["q2"], ["q2"]])
    out = reward(completions=["</think>BAD", "</think>BAD"], **cols)
    ref = plain(completions=["</think>GOOD", "</think>BAD"], **cols)
    assert out == pytest.approx(ref)  # d1 scored as "Lift. BAD" (GOOD's vector); d2 untitled: BAD itself
    assert [p.n_tokens for p in reward.last_parts] == [1, 1]  # the summary's own token, not the title's


def test_reward_token_lengths_through_adapter():
    reward, _ = make_reward()
    lengths = [63, 64, 128, 129, 160, 161]
    comps = [f"think</think>{words(n)}" for n in lengths]
    reward(completions=comps, doc_id=["d1"] * 6, pos_query_ids=[["q1"]] * 6, neg_query_ids=[["q2"]] * 6)
    assert [p.n_tokens for p in reward.last_parts] == lengths
    assert [p.structure for p in reward.last_parts] == [0.3, 1.0, 1.0, 0.9, 0.9, 0.0]


def test_trl_signature_repeated_columns_conversational_and_logging():
    reward, enc = make_reward(name="resume_reward")
    assert reward.__name__ == "resume_reward"
    # Two prompts x 3 generations: TRL repeats every dataset column per generation.
    G = 3
    rows = [{"doc_id": "d1", "pos_query_ids": ["q1"], "neg_query_ids": ["q2", "q3"]},
            {"doc_id": "d2", "pos_query_ids": ["q3"], "neg_query_ids": ["q1"]}]
    cols = {k: [r[k] for r in rows for _ in range(G)] for k in rows[0]}
    texts = ["a</think>GOOD", "b</think>BAD", "no sep", "</think>" + words(70), "</think>BAD", "</think>GOOD"]
    conversational = [[{"role": "assistant", "content": t}] for t in texts]
    metrics, extra = {}, {}
    state = SimpleNamespace(global_step=5)
    out_conv = reward(prompts=[[{"role": "user", "content": "p"}]] * 6, completions=conversational,
                      completion_ids=[[0]] * 6, trainer_state=state,
                      log_metric=lambda k, v: metrics.setdefault(k, v),
                      log_extra=lambda k, v: extra.setdefault(k, v), **cols)
    out_str = reward(prompts=["p"] * 6, completions=texts, completion_ids=[[0]] * 6, **cols)
    assert len(out_conv) == 6 and all(isinstance(x, float) for x in out_conv)
    assert out_conv == out_str
    assert out_conv[2] == -2.0
    assert all(-2.0 <= x <= 2.0 for x in out_conv)
    assert set(metrics) == {f"reward_parts/{k}" for k in ("structure", "retrieval", "delta", "n_tokens",
                                                         "separator_rate")}
    assert metrics["reward_parts/separator_rate"] == pytest.approx(5 / 6)
    assert len(extra["structure"]) == 6
    log = reward.pop_log()
    assert [row["step"] for row in log] == [5, None] and reward.log == []
    assert log[0]["reward"] == pytest.approx(np.mean(out_conv))
    # Content given as parts (multimodal-style messages) is joined.
    parts_msg = [[{"role": "assistant", "content": [{"type": "text", "text": "x</think>"}, {"type": "text",
                                                                                          "text": "GOOD"}]}]]
    assert reward(completions=parts_msg, doc_id=["d1"], pos_query_ids=[["q1"]],
                  neg_query_ids=[["q2", "q3"]]) == [out_str[0]]


def test_cache_only_completions_are_encoded_per_call():
    reward, enc = make_reward()
    reward.warm()
    assert sorted(c[0] for c in enc.calls) == ["docs", "queries"]
    enc.calls.clear()
    cols = {"doc_id": ["d1", "d1", "d2", "d2"], "pos_query_ids": [["q1"], ["q1"], ["q3"], ["q3"]],
            "neg_query_ids": [["q2"], ["q2"], ["q1", "q2"], ["q1", "q2"]]}
    for _ in range(3):
        reward(prompts=["p"] * 4, completions=["</think>GOOD", "</think>x y", "nosep", "</think>BAD"],
               completion_ids=[[0]] * 4, **cols)
    # One batched encode of the (three) completions with a separator per call, nothing else.
    assert enc.calls == [("docs", 3)] * 3


def test_cache_lazily_fills_without_warm():
    reward, enc = make_reward()
    cols = {"doc_id": ["d1", "d1"], "pos_query_ids": [["q1"]] * 2, "neg_query_ids": [["q2"]] * 2}
    reward(completions=["</think>GOOD", "</think>BAD"], **cols)
    assert sorted(enc.calls) == [("docs", 1), ("docs", 2), ("queries", 2)]
    enc.calls.clear()
    reward(completions=["</think>GOOD", "</think>BAD"], **cols)
    assert enc.calls == [("docs", 2)]


def test_negatives_sampled_per_document_when_column_absent():
    reward, _ = make_reward(RewardConfig(num_negatives=1, seed=3), train_query_ids=["q1", "q2", "q3"])
    reward(completions=["</think>GOOD"] * 2, doc_id=["d1", "d1"], pos_query_ids=[["q1"]] * 2)
    negs = reward.negatives_for("d1", ["q1"])
    assert len(negs) == 1 and negs[0] in {"q2", "q3"}
    assert reward.last_parts[0].total == reward.last_parts[1].total


def test_companion_funcs_return_parts_without_encoding():
    reward, enc = make_reward()
    structure_fn, retrieval_fn = reward.companion_funcs()
    assert (structure_fn.__name__, retrieval_fn.__name__) == ("structure_reward", "retrieval_reward")
    comps = ["</think>GOOD", "nosep"]
    cols = {"doc_id": ["d1"] * 2, "pos_query_ids": [["q1"]] * 2, "neg_query_ids": [["q2"]] * 2}
    total = reward(completions=comps, **cols)
    n = len(enc.calls)
    s, r = structure_fn(completions=comps, **cols), retrieval_fn(completions=comps, **cols)
    assert len(enc.calls) == n
    assert [a + b for a, b in zip(s, r)] == pytest.approx(total)
    assert s == [0.3, -1.0]
    # A different completions list is scored afresh.
    assert structure_fn(completions=["</think>" + words(64)], doc_id=["d1"], pos_query_ids=[["q1"]],
                        neg_query_ids=[["q2"]]) == [1.0]


def test_bad_columns_raise():
    reward, _ = make_reward()
    with pytest.raises(ValueError, match="doc_id"):
        reward(completions=["</think>x"])
    with pytest.raises(ValueError, match="columns of lengths"):
        reward(completions=["</think>x"] * 2, doc_id=["d1"], pos_query_ids=[["q1"]])
    with pytest.raises(KeyError, match="unknown doc"):
        reward(completions=["</think>x"], doc_id=["nope"], pos_query_ids=[["q1"]], neg_query_ids=[[]])


def test_with_real_tiny_encoder():
    retriever = pytest.importorskip("resume.retriever")
    from resume.config import RetrieverConfig

    try:
        enc = retriever.Encoder("tiny-encoder", RetrieverConfig(model="tiny-encoder"), device="cpu")
    except Exception as e:  # the tiny model cannot be built here (e.g. no cache dir)
        pytest.skip(f"tiny-encoder unavailable: {e}")
    queries = {"q1": "lift of swept wings", "q2": "heat transfer in hypersonic flow"}
    docs = {"d1": "Experimental study of the lift of swept wings at low speed."}
    reward = RetrievalReward(enc, queries, docs, RewardConfig())
    out = reward(prompts=["p"] * 3, completions=["t</think>lift of swept wings", "no sep", "</think>" + words(70)],
                 completion_ids=[[0]] * 3, doc_id=["d1"] * 3, pos_query_ids=[["q1"]] * 3,
                 neg_query_ids=[["q2"]] * 3)
    assert len(out) == 3 and out[1] == -2.0 and all(-2.0 <= x <= 2.0 for x in out)
    assert reward.last_parts[0].n_tokens == enc.count_tokens(["lift of swept wings"])[0]


def test_trl_sees_a_named_sync_picklable_reward():
    import pickle

    from trl.trainer.utils import get_callable_name, is_async_callable

    reward, _ = make_reward(name="resume_reward")
    assert get_callable_name(reward) == "resume_reward" and not is_async_callable(reward)
    assert [get_callable_name(f) for f in reward.companion_funcs()] == ["structure_reward", "retrieval_reward"]
    clone = pickle.loads(pickle.dumps(reward))
    cols = {"doc_id": ["d1"], "pos_query_ids": [["q1"]], "neg_query_ids": [["q2"]]}
    assert clone(completions=["</think>GOOD"], **cols) == reward(completions=["</think>GOOD"], **cols)
