"""bench/length_probe.py's `head`: the title plus the longest run of the body's leading words that keeps
the text within the token budget, under any token counter."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from length_probe import head  # noqa: E402


def _chars(s: str) -> int:  # a counter where words cost unequal amounts
    return len(s)


@pytest.mark.parametrize("budget", [10, 20, 37, 60, 1000])
def test_head_is_the_longest_prefix_within_budget(budget):
    title, body = "Wing flutter", "the quick brown fox jumps over a very lazy dog near the river bank"
    out = head(title, body, budget, _chars)
    assert out.startswith(title)
    if out == title:  # not even the first word fits after the title
        assert _chars(f"{title}. {body.split()[0]}") > budget
        return
    taken = out[len(title) + 2:].split()
    words = body.split()
    assert taken == words[:len(taken)]
    assert _chars(out) <= budget
    if len(taken) < len(words):  # one more word would break the budget
        assert _chars(f"{title}. {' '.join(words[:len(taken) + 1])}") > budget


def test_head_with_an_empty_body_is_the_title():
    assert head("A title", "", 50, _chars) == "A title"


def test_head_without_a_title_is_the_body_prefix():
    assert head("", "one two three four", 9, _chars) == "one two"


def test_whole_corpus_fuses_each_named_view_at_its_dev_weight(tmp_path):
    """`whole_corpus` with `fused`: the document + view row is evaluated at the weight its own curve picked,
    and its metric equals that curve's value (the fused evaluation and the weight search agree)."""
    pytest.importorskip("resume.data")
    import json

    from length_probe import whole_corpus
    from test_evaluate import HashEncoder

    from resume.config import ResumeConfig
    from resume.data import load_beir

    d = tmp_path / "beir"
    (d / "qrels").mkdir(parents=True)
    topics = ["wing lift", "heat flux", "shock wave", "boundary layer", "jet noise", "plate buckling"]
    # titles are empty and the bodies point elsewhere, so the summaries (the topics) carry the signal
    corpus = [{"_id": f"d{i}", "title": "", "text": f"study {topics[(i + 1) % 6]}"} for i in range(6)]
    (d / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (d / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": t}) + "\n"
                                             for i, t in enumerate(topics)))
    (d / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\td{i}\t1\n" for i in range(6)))
    cfg = ResumeConfig()
    cfg.evaluate.k = 10
    ds = load_beir(d)
    makers = {"lead": lambda i: ds.corpus[i]["text"], "topic": lambda i: topics[int(i[1:])]}
    res = whole_corpus(cfg, str(d), "dev", ds, HashEncoder(), makers, fused=("lead", "topic"),
                       out=tmp_path / "out")["systems"]
    assert set(res) == {"document", "lead", "topic", "document+lead", "document+topic"}
    assert res["topic"]["metrics"]["mrr@10"] == 1.0 > res["document"]["metrics"]["mrr@10"]
    for name in ("document+lead", "document+topic"):
        row = res[name]
        assert row["metrics"]["mrr@10"] == pytest.approx(row["curve"][str(row["fusion_weight"])])
        assert row["metrics"]["mrr@10"] == pytest.approx(max(row["curve"].values()))
        assert "vs_document+lead" in row or name == "document+lead"
    assert res["document+topic"]["fusion_weight"] < 1.0  # the summary view is worth weight here
    assert (tmp_path / "out" / "topic" / "eval-dev-fused" / "per_query.json").is_file()
