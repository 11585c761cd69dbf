"""Tests of resume.quality: the summary-quality signals and the fixed judge.

    .venv/bin/pytest tests/test_quality.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest

from resume.config import load_config
from resume.quality import copy_share, distinct_n, fixed_judge, has_boilerplate, has_placeholder, text_signals

ROOT = Path(__file__).resolve().parents[1]
DOC = "the boundary layer on a flat plate at mach 6 was measured in a shock tunnel with heat transfer gauges"


def test_placeholder_is_a_bracket_absent_from_the_document_or_prompt_wording():
    assert has_placeholder("[summary] The boundary layer was measured.", DOC)
    assert has_placeholder("Key terms and search questions: flat plate.", DOC)
    assert not has_placeholder("The boundary layer [at mach 6] was measured.", DOC + " [at mach 6]")
    assert not has_placeholder("The boundary layer on a flat plate was measured.", DOC)


def test_boilerplate():
    assert has_boilerplate("The document   describes a plate.")
    assert has_boilerplate("Here is a summary: plates.")
    assert not has_boilerplate("A flat plate at Mach 6 was tested.")


def test_copy_share_counts_verbatim_8grams():
    copied = "the boundary layer on a flat plate at mach 6 was measured"  # 11 words: 4 8-grams, all in DOC
    assert copy_share(copied, DOC) == 1.0
    assert copy_share("heat flux data of a sphere cone body in a hypersonic tunnel run", DOC) == 0.0
    part = "the boundary layer on a flat plate at mach nine ten eleven"  # 12 words: 5 grams, the first 2 copied
    assert copy_share(part, DOC) == pytest.approx(0.4)
    assert copy_share("too short", DOC) is None


def test_distinct_2():
    assert distinct_n(["a b c", "a b c"], 2) == pytest.approx(2 / 4)
    assert distinct_n(["a b", "c d"], 2) == 1.0
    assert distinct_n(["a", ""], 2) == 0.0


def test_text_signals_of_rows():
    rows = [{"_id": "1", "summary": "[summary] the document is about plates", "n_tokens": 10, "truncated": True,
             "has_separator": True},
            {"_id": "2", "summary": "the boundary layer on a flat plate at mach 6 was measured", "n_tokens": 20,
             "truncated": False, "has_separator": False}]
    s = text_signals(rows, {"1": "plates", "2": DOC})
    assert s["n"] == 2 and s["placeholder_rate"] == 0.5 and s["boilerplate_rate"] == 0.5
    assert s["truncation_rate"] == 0.5 and s["separator_rate"] == 0.5 and s["mean_tokens"] == 15.0
    assert s["copy_rate"] == 1.0  # only the second summary has 8-grams
    assert text_signals([], {})["n"] == 0


class _BagEncoder:
    """Bag-of-words embeddings over a fixed vocabulary: similar texts share words (deterministic)."""

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def _enc(self, texts):
        import numpy as np

        out = np.zeros((len(texts), 512), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, self.vocab.setdefault(w, len(self.vocab) % 512)] += 1.0
        return out

    encode_queries = encode_docs = _enc

    def count_tokens(self, texts):
        return [len(t.split()) for t in texts]


def test_fixed_judge_scores_held_out_documents_and_rewards_query_words(tmp_path):
    from resume.data import doc_text, load_beir, select_working_set
    from resume.grpo import judge_doc_ids, train_positives

    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["grpo.judge_docs=4"])
    ds = select_working_set(load_beir(ROOT / "data" / "cranfield"), cfg.data)
    ids = judge_doc_ids(cfg, ds)
    assert len(ids) == 4 and set(ids) <= set(train_positives(ds, "train"))
    assert judge_doc_ids(cfg, ds) == ids  # deterministic
    from resume.data import write_beir

    data = tmp_path / "data"
    write_beir(ds, data)
    pos = train_positives(ds, "train")
    enc = _BagEncoder()
    docs = {d: doc_text(ds.corpus[d]) for d in ids}
    as_doc = fixed_judge(cfg, data_dir=data, summaries=docs, judge="unused", doc_ids=ids, encoder=enc)
    assert as_doc["n"] == 4 and as_doc["delta_mean"] == pytest.approx(0.0)  # the document itself: Delta = 0
    queries = {d: " ".join(ds.queries[q] for q in pos[d]) for d in ids}  # a "summary" made of its queries
    better = fixed_judge(cfg, data_dir=data, summaries=queries, judge="unused", doc_ids=ids, encoder=enc,
                         per_doc=True)
    assert better["delta_mean"] > 0.05 and better["delta_positive_share"] > 0.5
    assert "delta_per_doc" not in as_doc and list(better["delta_per_doc"]) == ids  # paired comparisons
    assert sum(better["delta_per_doc"].values()) / 4 == pytest.approx(better["delta_mean"])
    assert sum(better["reward_per_doc"].values()) / 4 == pytest.approx(better["reward_mean"])
    assert better["structure_mean"] + better["retrieval_mean"] == pytest.approx(better["reward_mean"])  # its parts
    # GRPO never sees the judge's documents
    from resume.grpo import build_grpo_dataset
    from resume.models import load_tokenizer

    rows = build_grpo_dataset(cfg, ds, load_tokenizer("tiny-causal-lm"))
    assert not {r["doc_id"] for r in rows} & set(ids)


def test_fixed_judge_split_scores_with_that_splits_queries():
    """`split` picks whose queries score: a text made of a document's dev queries gains under split="dev" more
    than under the training queries, and one made of its training queries the other way round."""
    from resume.data import load_beir
    from resume.grpo import train_positives

    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    data = ROOT / "data" / "cranfield"
    ds = load_beir(data)
    train, dev = train_positives(ds, "train"), train_positives(ds, "dev")
    ids = [d for d in ds.corpus if d in train and d in dev][:6]
    assert len(ids) == 6
    enc = _BagEncoder()

    def judge(pos, split):
        texts = {d: " ".join(ds.queries[q] for q in pos[d]) for d in ids}
        return fixed_judge(cfg, data_dir=data, summaries=texts, judge="unused", doc_ids=ids, encoder=enc,
                           split=split)["delta_mean"]

    assert judge(dev, "dev") > judge(dev, None) and judge(train, None) > judge(train, "dev")
    assert judge(dev, "dev") > 0.05 and judge(train, None) > 0.05


def test_fixed_judge_title_scores_the_titled_view_and_takes_a_loaded_dataset():
    """`title=True` scores title + summary (`resume.lead.join_title`); None follows `reward.summary_title`;
    a loaded dataset gives the same numbers as its directory."""
    from resume.data import load_beir
    from resume.grpo import train_positives
    from resume.lead import join_title

    data = ROOT / "data" / "cranfield"
    ds = load_beir(data)
    ids = [d for d in ds.corpus if d in train_positives(ds, "train")][:6]
    enc = _BagEncoder()
    texts = {d: "a summary that says nothing" for d in ids}
    titled = {d: join_title(ds.corpus[d]["title"], texts[d]) for d in ids}

    def judge(cfg, summaries, **kw):
        return fixed_judge(cfg, data_dir=kw.pop("data", data), summaries=summaries, judge="unused", doc_ids=ids,
                           encoder=enc, per_doc=True, **kw)

    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    plain, as_titled = judge(cfg, texts), judge(cfg, texts, title=True)
    assert as_titled["title"] and not plain["title"]
    assert as_titled["delta_per_doc"] == pytest.approx(judge(cfg, titled)["delta_per_doc"])
    assert as_titled["delta_mean"] > plain["delta_mean"]  # the titles share words with the queries
    by_cfg = judge(load_config(ROOT / "configs" / "tiny.yaml", ["reward.summary_title=true"]), texts)
    assert by_cfg["title"] and by_cfg["delta_per_doc"] == pytest.approx(as_titled["delta_per_doc"])
    assert judge(cfg, texts, data=ds)["delta_per_doc"] == pytest.approx(plain["delta_per_doc"])
