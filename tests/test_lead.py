"""The lead control (title + first sentence): sentence splitting on Cranfield's spacing, edge cases, the
summaries.jsonl it writes, and that it flows through the evaluate path like an LLM's summaries."""

from __future__ import annotations

import json

import pytest

from resume.lead import join_title, lead_text, split_sentences, strip_title, write_lead_summaries


@pytest.fixture(scope="module")
def cranfield(cranfield_dir) -> dict[str, dict]:
    with open(cranfield_dir / "corpus.jsonl", encoding="utf-8") as f:
        return {d["_id"]: d for d in map(json.loads, f)}


def test_lead_of_real_cranfield_rows(cranfield):
    # the abstract repeats the title: the lead is the title plus the body's first sentence
    assert lead_text(cranfield["1"]) == (
        "experimental investigation of the aerodynamics of a wing in a slipstream . an experimental study of a wing "
        "in a propeller slipstream was made in order to determine the spanwise distribution of the lift increase due "
        "to slipstream at different angles of attack of the wing and at different free stream to slipstream velocity "
        "ratios .")
    assert lead_text(cranfield["3"]) == ("the boundary layer in simple shear flow past a flat plate . the "
                                         "boundary-layer equations are presented for steady incompressible flow "
                                         "with no pressure gradient .")
    # `3. 5` in the repeated title and `(j. math. phys.` are not sentence ends in ` .`-spaced text
    assert lead_text(cranfield["1000"]).endswith(". tests were made of a short blunt-nosed without a 50 half-angle "
                                                 "conical afterbody in a pressurized ballistic range at nominal mach "
                                                 "numbers of 3.5 and of 90,000 and 220,000, respectively .")
    assert lead_text(cranfield["577"]).startswith("on hypersonic similitude . tsien in a recent paper (j. math. "
                                                  "phys. mass. inst. tech. sonic flows")
    assert lead_text(cranfield["1369"]).startswith("steady motion of a sphere., oseen's criticism and solution . the "
                                                   "formula of stokes")  # the repeat has a typo (oseens's)
    assert lead_text(cranfield["471"]) == ""  # no title, no text
    leads = [lead_text(d) for d in cranfield.values()]
    assert sum(not x for x in leads) == 2
    assert sum(len(x.split()) for x in leads) / len(leads) < 50  # short: a control, not the document


def test_lead_edge_cases():
    assert lead_text({"title": "", "text": "First one. Second one."}) == "First one."
    assert lead_text({"title": "A title", "text": "First one? Second."}) == "A title. First one?"
    assert lead_text({"title": "A title.", "text": "First! Second."}) == "A title. First!"
    assert lead_text({"title": "Only a title", "text": ""}) == "Only a title"
    assert lead_text({"title": "Same", "text": "Same."}) == "Same"  # the text only repeats the title
    words = " ".join(f"w{i}" for i in range(50))
    assert lead_text({"title": "", "text": words}) == " ".join(f"w{i}" for i in range(30))  # no period
    assert lead_text({"title": "T", "text": "line one\nline two."}) == "T. line one"
    assert lead_text({"text": "   Spaced   out.  Next."}) == "Spaced out."
    assert lead_text({"title": "", "text": "..."}) == "..."
    assert split_sentences("One. Two? Three!\nFour 3.5 five") == ["One.", "Two?", "Three!", "Four 3.5 five"]
    assert split_sentences("a b . c 3. 5 d . e") == ["a b .", "c 3. 5 d .", "e"]
    assert strip_title("t . t . body .", "t .") == "body ."  # repeated twice


def test_join_title():
    """The one join of a title and a text (the lead's, and evaluate.summary_title's)."""
    assert join_title("wing in a slipstream .", "The study measures lift.") == \
        "wing in a slipstream . The study measures lift."  # Cranfield titles end with a spaced period
    assert join_title("A title", "a summary") == "A title. a summary"
    assert join_title("Why?", "because") == "Why? because"
    assert join_title("  A   spaced\ttitle ", "s") == "A spaced title. s"
    assert join_title("", "a summary") == "a summary"  # MEDLINE: no titles, the summary unchanged
    assert join_title(None, "a summary") == "a summary"
    assert join_title("A title", "") == "A title"


def test_write_lead_summaries_schema_and_evaluate(tmp_path):
    pytest.importorskip("resume.data")
    from test_evaluate import HashEncoder

    from resume.config import ResumeConfig
    from resume.evaluate import evaluate_retrieval

    d = tmp_path / "beir"
    (d / "qrels").mkdir(parents=True)
    corpus = [{"_id": "a", "title": "Wing lift", "text": "Lift of wings. Other words here."},
              {"_id": "b", "title": "", "text": "Heat flux in tubes. More."},
              {"_id": "c", "title": "Shock waves", "text": ""}]
    (d / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (d / "queries.jsonl").write_text('{"_id": "q1", "text": "heat flux"}\n{"_id": "q2", "text": "shock"}\n')
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tb\t1\nq2\tc\t1\n")

    class WordTokenizer:
        def __call__(self, texts, add_special_tokens=False, verbose=False):
            return {"input_ids": [t.split() for t in texts]}

    out = tmp_path / "lead" / "summaries.jsonl"
    stats = write_lead_summaries(d, out, retriever_tokenizer=WordTokenizer())
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["_id"] for r in rows] == ["a", "b", "c"] and stats["n_docs"] == 3
    assert rows[0] == {"_id": "a", "summary": "Wing lift. Lift of wings.", "completion": "", "n_tokens": 5,
                       "has_separator": True, "truncated": False}
    assert [r["summary"] for r in rows[1:]] == ["Heat flux in tubes.", "Shock waves"]
    assert stats["mean_n_tokens"] == pytest.approx((5 + 4 + 2) / 3)
    assert sorted(p.name for p in out.parent.iterdir()) == ["summaries.jsonl"]  # atomic: no temporary left
    cfg = ResumeConfig()
    cfg.evaluate.k = 10
    m = evaluate_retrieval(cfg, data_dir=d, split="test", retriever="hash", texts=out, out_dir=tmp_path / "ev",
                           encoder=HashEncoder())
    assert m["mrr@10"] == 1.0


def test_cli_data_lead(tmp_path, capsys, cranfield_dir):
    from resume.cli import main

    out = tmp_path / "s.jsonl"
    code = main(["data", "lead", "--data", str(cranfield_dir), "--out", str(out), "--retriever", "tiny-encoder"])
    err = capsys.readouterr().err
    if code == 2 and "tiny-encoder" in err:
        pytest.skip(f"tiny-encoder unavailable: {err}")
    assert code == 0, err
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 1400 and all(r["n_tokens"] >= 0 and r["completion"] == "" for r in rows)
