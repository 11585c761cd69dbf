"""Converters of the raw SMART test collections into BEIR layout + a generated README.md: Cranfield 1400
(`convert_cranfield`, `resume data convert-cranfield`) and MEDLINE (`convert_medline`,
`resume data convert-medline`), with the SMART parser they share.

Malformed raw input raises `DataError` (file and line); nothing is written then. Both are deterministic
(same input and seed, same bytes).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from resume.data.beir import BeirDataset, _open_lines, doc_text, write_beir
from resume.data.stats import _load_tokenizer, _percentiles, _token_lengths
from resume.errors import DataError

# ------------------------------------------------------------------------------------------ SMART files

_FIELD = re.compile(r"^\.([A-Z])\s*$")


def _parse_smart(path: Path, fields: set[str]) -> tuple[list[dict], list[str]]:
    """Parse a SMART file into records {"id", "line", <field letter>: [lines]}.

    Quirks: the final bare `.I` (no id, no content) is ignored; a field marker met again after `.W`
    (stray `.A`/`.B`/`.W` lines inside the abstract of a few documents) is a corruption of the source,
    so its lines stay in the text and the marker itself is dropped; those ids are returned as notes.
    """
    records: list[dict] = []
    stray: list[str] = []
    cur: dict | None = None
    field_name: str | None = None
    bare_line: int | None = None
    markers = ", ".join("." + f for f in sorted(fields))
    for n, line in _open_lines(path, f"a SMART file (.I id, then {markers} fields)"):
        if line.startswith(".I"):
            if bare_line is not None:
                raise DataError(path, bare_line, "'.I' without an id before the end of the file; expected '.I <number>'")
            rest = line[2:].strip()
            if not rest:
                bare_line = n
                cur, field_name = None, None
                continue
            if not rest.isdigit():
                raise DataError(path, n, f"record id {rest!r}; expected '.I <number>'")
            cur = {"id": str(int(rest)), "line": n}
            records.append(cur)
            field_name = None
            continue
        m = _FIELD.match(line)
        if m:
            if cur is None:
                raise DataError(path, n, f"field '{line.strip()}' outside a record; expected '.I <number>' first")
            letter = m.group(1)
            if letter not in fields:
                raise DataError(path, n, f"unknown field '{line.strip()}'; expected one of {markers}")
            if field_name == "W":
                if cur["id"] not in stray:
                    stray.append(cur["id"])
                continue
            field_name = letter
            cur.setdefault(letter, [])
            continue
        if bare_line is not None and line.strip():
            raise DataError(path, n, "text after the final bare '.I'; expected '.I <number>' to start a record")
        if cur is None:
            if line.strip():
                raise DataError(path, n, "text before the first record; expected '.I <number>'")
            continue
        if field_name is None:
            if line.strip():
                raise DataError(path, n, f"text before any field marker; expected one of {markers}")
            continue
        cur[field_name].append(line)
    return records, stray


def _join(lines: list[str] | None) -> str:
    """Lines of one SMART field -> one string: each line stripped, joined by single spaces; nothing else."""
    return " ".join(s for s in (x.strip() for x in lines or []) if s)


def _collapse(lines: list[str] | None) -> str:
    """Lines of one SMART field -> one string with every run of whitespace (inside lines too) one space."""
    return " ".join(" ".join(lines or []).split())


def _smart_corpus(path: Path, fields: set[str], make_doc) -> tuple[dict[str, dict], list[str]]:
    """Documents of a SMART file: ({id: make_doc(record)}, ids with stray field markers); DataError on
    duplicate ids or no document at all."""
    docs, stray = _parse_smart(path, fields)
    corpus: dict[str, dict] = {}
    for r in docs:
        if r["id"] in corpus:
            raise DataError(path, r["line"], f"duplicate document id {r['id']!r}; expected unique '.I' ids")
        corpus[r["id"]] = make_doc(r)
    if not corpus:
        raise DataError(path, 1, "no documents; expected '.I <number>' records")
    return corpus, stray


def _smart_queries(path: Path, join=_join) -> dict[str, str]:
    """Queries of a SMART file (`.I`, `.W`) in file order: {id: join(.W lines)}; DataError on duplicate
    ids, a query without text, or a repeated `.W`."""
    qrecs, qstray = _parse_smart(path, {"W"})
    queries: dict[str, str] = {}
    for r in qrecs:
        if r["id"] in queries:
            raise DataError(path, r["line"], f"duplicate query id {r['id']!r}; expected unique '.I' ids")
        text = join(r.get("W"))
        if not text:
            raise DataError(path, r["line"], f"query {r['id']!r} has no text; expected a '.W' field with text")
        queries[r["id"]] = text
    if qstray:
        raise DataError(path, None, f"repeated '.W' in queries {qstray}; expected one '.W' per query")
    if not queries:
        raise DataError(path, 1, "no queries; expected '.I <number>' records")
    return queries


def _read_rel(path: Path, columns: str, judge) -> tuple[dict[str, dict[str, int]], list[dict], dict[int, int], int]:
    """Judgement lines of three integers `columns` -> (judged {query id: {doc id: score}}, dropped lines,
    {third column: count}, non-blank lines). `judge(a, b, c)` returns (query id, doc id, score), or the
    reason to drop the line; a line repeating a (query, document) pair is dropped too. A line that is not
    three integers raises DataError."""
    judged: dict[str, dict[str, int]] = {}
    dropped: list[dict] = []
    codes: dict[int, int] = {}
    n_lines = 0
    for n, line in _open_lines(path, f"lines '{columns}'"):
        if not line.strip():
            continue
        n_lines += 1
        cols = line.split()
        if len(cols) != 3:
            raise DataError(path, n, f"{len(cols)} columns; expected 3 integers '{columns}'")
        try:
            a, b, c = (int(x) for x in cols)
        except ValueError:
            raise DataError(path, n, f"{line.strip()!r}; expected 3 integers '{columns}'") from None
        codes[c] = codes.get(c, 0) + 1
        verdict = judge(a, b, c)
        if isinstance(verdict, str):
            reason = verdict
        else:
            qid, did, score = verdict
            reason = (f"repeats the judgement of (query {qid}, document {did})"
                      if did in judged.get(qid, {}) else None)
        if reason:
            dropped.append({"line": n, "raw": line.strip(), "reason": reason})
            continue
        judged.setdefault(qid, {})[did] = score
    return judged, dropped, codes, n_lines


def _conversion_report(raw: Path, out_dir, corpus: dict[str, dict], queries: dict[str, str], rel: tuple,
                       qrels: dict[str, dict[str, dict[str, int]]], stray: list[str], **extra) -> dict:
    """The report of a SMART conversion: counts, `rel` (= `_read_rel`'s result), the judgements per split,
    unjudged queries, documents with an empty text or a text repeating an earlier one (`"id (= first id)"`),
    documents with stray field markers; `extra` entries follow `out`."""
    judged, dropped, codes, n_lines = rel
    empty = [d for d, doc in corpus.items() if not doc["text"].strip()]
    seen: dict[str, str] = {}
    dup = []
    for d, doc in corpus.items():
        t = doc["text"].strip()
        if t and t in seen:
            dup.append(f"{d} (= {seen[t]})")
        seen.setdefault(t, d)
    return {
        "source": str(raw),
        "out": str(out_dir),
        **extra,
        "documents": len(corpus),
        "queries": len(queries),
        "qrels_lines": n_lines,
        "relevance_codes": {str(k): v for k, v in sorted(codes.items())},
        "judgements": sum(len(v) for v in judged.values()),
        "dropped": dropped,
        "splits": {s: {"queries": len(q), "judgements": sum(len(v) for v in q.values())} for s, q in qrels.items()},
        "unjudged_queries": [q for q in queries if q not in judged],
        "empty_documents": empty,
        "duplicate_documents": dup,
        "stray_field_markers": stray,
    }


# ------------------------------------------------------------------------------------------ Cranfield

CRANFIELD_SPLIT = {"dev": 50, "test": 50}  # of 225 judged queries; train takes the rest (125)


def _cranfield_split(qids: list[str], seed: int) -> dict[str, list[str]]:
    n = len(qids)
    n_dev = round(n * CRANFIELD_SPLIT["dev"] / 225)
    n_test = round(n * CRANFIELD_SPLIT["test"] / 225)
    order = list(qids)
    random.Random(seed).shuffle(order)
    parts = {"train": order[: n - n_dev - n_test], "dev": order[n - n_dev - n_test: n - n_test],
             "test": order[n - n_test:]}
    pos = {q: i for i, q in enumerate(qids)}
    return {s: sorted(p, key=pos.__getitem__) for s, p in parts.items()}


def convert_cranfield(raw_dir: str | Path, out_dir: str | Path, seed: int = 13) -> dict:
    """Convert the raw SMART Cranfield files (cran.all.1400, cran.qry, cranqrel) into BEIR layout + README.md.

    Mapping (see data/cranfield/README.md):
      - documents: `_id` = the `.I` number, title = `.T`, text = `.W` (authors `.A` and source `.B` dropped);
        each field's lines are stripped and joined with one space, nothing else is changed.
      - queries: `_id` = the `.I` number as written without leading zeros (`.I 008` -> "8").
      - cranqrel numbers queries by POSITION in cran.qry (1..225): position p -> the p-th query's id.
      - relevance codes 1 (complete answer) .. 4 (minimum interest) -> gain = 5 - code (4..1).
        A line whose code is outside 1..4, whose position or document does not exist, or that repeats
        a (query, document) pair, is dropped and named in the report.
      - judged queries are shuffled with `random.Random(seed)` and split 125/50/50 into train/dev/test
        (proportionally for another count); a query with no kept judgement stays in queries.jsonl and
        goes to no split (named in the report).
    Malformed raw input raises DataError; nothing is written then. Returns the conversion report.
    """
    raw = Path(raw_dir)
    if not raw.is_dir():
        raise DataError(raw, None, "directory not found; expected a folder with cran.all.1400, cran.qry, cranqrel")
    doc_path, qry_path, rel_path = raw / "cran.all.1400", raw / "cran.qry", raw / "cranqrel"

    corpus, stray = _smart_corpus(doc_path, {"T", "A", "B", "W"},
                                  lambda r: {"title": _join(r.get("T")), "text": _join(r.get("W"))})
    queries = _smart_queries(qry_path)
    by_position = list(queries)

    def judge(pos: int, did: int, code: int):
        if not 1 <= pos <= len(by_position):
            return f"query position {pos} is outside 1..{len(by_position)}"
        if str(did) not in corpus:
            return f"document {did} is not in cran.all.1400"
        if not 1 <= code <= 4:
            return f"relevance code {code} is outside 1..4"
        return by_position[pos - 1], str(did), 5 - code

    rel = _read_rel(rel_path, "query-position doc-id code", judge)
    judged = rel[0]
    split_ids = _cranfield_split([q for q in by_position if q in judged], seed)
    qrels = {s: {q: judged[q] for q in ids} for s, ids in split_ids.items()}
    report = _conversion_report(raw, out_dir, corpus, queries, rel, qrels, stray, seed=seed)
    ds = BeirDataset(corpus=corpus, queries=queries, qrels=qrels)
    write_beir(ds, out_dir, extra_files={"README.md": _cranfield_readme(report, queries, by_position)})
    return report


def _cranfield_readme(r: dict, queries: dict[str, str], by_position: list[str]) -> str:
    """README.md of the converted collection (generated, so it always matches the files)."""
    examples = [(p, q) for p, q in enumerate(by_position, 1) if str(p) != q][:3]
    ex = ", ".join(f"position {p} -> id `{q}`" for p, q in examples)
    codes = ", ".join(f"code {k}: {v}" for k, v in r["relevance_codes"].items())
    dropped = ("\n".join(f"- cranqrel line {d['line']} `{d['raw']}`: {d['reason']}" for d in r["dropped"])
               or "None: every cranqrel line was kept.")
    split_rows = "\n".join(f"| {s} | {v['queries']} | {v['judgements']} |" for s, v in r["splits"].items())
    unjudged = ", ".join(r["unjudged_queries"]) or "none"
    return f"""# Cranfield 1400 in BEIR layout

Generated by `resume data convert-cranfield <raw> data/cranfield --seed {r['seed']}`
(`scripts/convert_cranfield.py`, `resume.data.convert_cranfield`) from the raw SMART files
(`cran.all.1400`, `cran.qry`, `cranqrel`, as distributed with the Cranfield collection; the project's
copy lives in `data/cranfield-raw/`). Do not edit these files by hand: rerun the converter; it is
deterministic (same input and seed, same bytes).

| file | content |
| --- | --- |
| `corpus.jsonl` | {r['documents']} documents `{{"_id", "title", "text"}}` |
| `queries.jsonl` | {r['queries']} queries `{{"_id", "text"}}` |
| `qrels/train.tsv`, `qrels/dev.tsv`, `qrels/test.tsv` | graded judgements `query-id corpus-id score` |

## Mapping

- Documents: `_id` = the `.I` number; `title` = `.T`; `text` = `.W` (the abstract, which in this
  collection begins by repeating the title). Authors (`.A`) and source (`.B`) are not kept. The lines of
  a field are stripped and joined with one space; nothing else is changed (lowercase, ` .` before
  punctuation and typos are kept as distributed).
- Queries: `_id` = the `.I` number without leading zeros (`.I 008` -> `8`); `text` = `.W`.
- Judgements: `cranqrel` numbers queries by their POSITION in `cran.qry` (1..{len(by_position)}), not by
  their `.I` id; the position is mapped to the id ({ex}, ...).
- Relevance: Cleverdon's codes 1 (complete answer) .. 4 (minimum interest) become graded gains
  `score = 5 - code` (1 -> 4, 2 -> 3, 3 -> 2, 4 -> 1), so higher is more relevant, as NDCG expects.
  `cranqrel.readme` also defines code 5 (no interest), which never occurs; there is no `-1` code in this
  file. Codes found: {codes}. Every judgement has a score >= 1 (relevant); there are no zero-score rows.

## Quirks handled

- The final line of `cran.all.1400` and of `cran.qry` is a bare `.I` with no id and no text: ignored.
- `cran.qry` has CRLF line ends: read as text, the ends are dropped.
- Documents with an empty text keep their id (validation reports them): {', '.join(r['empty_documents']) or 'none'}.
  Documents whose text duplicates an earlier one: {', '.join(r['duplicate_documents']) or 'none'} (empty texts
  are not counted as duplicates).
- A few abstracts contain stray field markers (`.A`, `.B`, `.W` lines) after `.W`: documents
  {', '.join(r['stray_field_markers']) or 'none'}. The marker lines are dropped and the lines after them
  stay in the text (they are abstract text, not author or source fields).

## Split

The {sum(v['queries'] for v in r['splits'].values())} judged queries are shuffled with
`random.Random({r['seed']})` and cut into train / dev / test (125 / 50 / 50 of 225); each file lists its
queries in `cran.qry` order. Queries with no judgement go to no split: {unjudged}.

| split | queries | judgements |
| --- | --- | --- |
{split_rows}

Use: train for GRPO and retriever adaptation, dev for early stopping, test for the final table.

## Counts and dropped judgements

{r['documents']} documents, {r['queries']} queries, {r['qrels_lines']} lines in `cranqrel`,
{r['judgements']} judgements kept, {len(r['dropped'])} dropped.

{dropped}
"""


# ------------------------------------------------------------------------------------------ MEDLINE

MEDLINE_FILES = ("MED.ALL", "MED.QRY", "MED.REL")
MEDLINE_SPLIT = "test"  # 30 queries are too few to split: all of them are the (never trained on) test split


def convert_medline(raw_dir: str | Path, out_dir: str | Path, tokenizer: Any = None) -> dict:
    """Convert the raw SMART MEDLINE files (MED.ALL, MED.QRY, MED.REL) into BEIR layout + README.md.

    MEDLINE is the project's out-of-distribution set (`data.ood`): models trained on Cranfield are
    evaluated on it unchanged. Mapping (see data/medline/README.md):
      - documents: `_id` = the `.I` number, title = "" (MED.ALL has no title field: `.I` then `.W`),
        text = `.W` with every run of whitespace collapsed to one space (the raw text is lowercase, with
        spaces before punctuation and lines padded with trailing blanks; the words are kept as they are).
      - queries: `_id` = the `.I` number, text = `.W`, whitespace collapsed the same way.
      - MED.REL has three columns `query-id doc-id relevance` (not TREC's four); relevance is binary and
        kept as the score. A line naming an unknown query or document, a relevance other than 0/1, or a
        repeated (query, document) pair is dropped and named in the report.
      - every judged query goes to the one split `test` (qrels/test.tsv).
      - CRLF line ends are dropped by the line reader, so ids are "1", not "1\\r".
    tokenizer: a model name (`all-minilm-l6-v2`) or tokenizer object; when given, the README also carries
    token-length statistics of documents and queries (as `resume data stats`).
    Malformed raw input raises DataError (file and line); nothing is written then. Returns the report.
    """
    raw = Path(raw_dir)
    if not raw.is_dir():
        raise DataError(raw, None, f"directory not found; expected a folder with {', '.join(MEDLINE_FILES)}")
    doc_path, qry_path, rel_path = (raw / f for f in MEDLINE_FILES)

    corpus, stray = _smart_corpus(doc_path, {"W"}, lambda r: {"title": "", "text": _collapse(r.get("W"))})
    queries = _smart_queries(qry_path, join=_collapse)

    def judge(q: int, d: int, rel: int):
        if str(q) not in queries:
            return f"query {q} is not in MED.QRY"
        if str(d) not in corpus:
            return f"document {d} is not in MED.ALL"
        if rel not in (0, 1):
            return f"relevance {rel} is not binary (0 or 1)"
        return str(q), str(d), rel

    rel = _read_rel(rel_path, "query-id doc-id relevance", judge)
    test = {q: rel[0][q] for q in queries if q in rel[0]}  # in MED.QRY order
    report = _conversion_report(raw, out_dir, corpus, queries, rel, {MEDLINE_SPLIT: test}, stray)
    report["crlf_files"] = [f for f in MEDLINE_FILES if b"\r\n" in (raw / f).read_bytes()]
    if tokenizer is not None:
        name, tok = _load_tokenizer(tokenizer)
        doc_lengths = _token_lengths(tok, (doc_text(d) for d in corpus.values()))
        report["tokenizer"] = name
        report["document_tokens"] = {**_percentiles(doc_lengths),
                                     "over_256": sum(1 for n in doc_lengths if n > 256)}
        report["query_tokens"] = _percentiles(_token_lengths(tok, queries.values()))
    ds = BeirDataset(corpus=corpus, queries=queries, qrels={MEDLINE_SPLIT: test})
    write_beir(ds, out_dir, extra_files={"README.md": _medline_readme(report)})
    return report


def _medline_readme(r: dict) -> str:
    """README.md of the converted MEDLINE collection (generated, so it always matches the files)."""
    values = ", ".join(f"{k}: {v}" for k, v in r["relevance_codes"].items())
    dropped = ("\n".join(f"- MED.REL line {d['line']} `{d['raw']}`: {d['reason']}" for d in r["dropped"])
               or "None: every MED.REL line was kept.")
    split_rows = "\n".join(f"| {s} | {v['queries']} | {v['judgements']} |" for s, v in r["splits"].items())
    crlf = ", ".join(f"`{f}`" for f in r["crlf_files"]) or "none of the files"
    if "document_tokens" in r:
        d, q = r["document_tokens"], r["query_tokens"]
        lengths = (
            f"Under the `{r['tokenizer']}` tokenizer (word pieces, no special tokens), as\n"
            f"`resume data stats data/medline --tokenizer {r['tokenizer']}` counts them:\n\n"
            "| | count | mean | median | p90 | p99 | max |\n| --- | --- | --- | --- | --- | --- | --- |\n"
            + "".join(f"| {what} | {s['count']} | {s['mean']} | {s['p50']} | {s['p90']} | {s['p99']} | {s['max']} |\n"
                      for what, s in (("documents", d), ("queries", q)))
            + f"\n{d['over_256']} of {d['count']} documents are longer than 256 tokens (the retriever's default\n"
            "`max_length`) and are truncated when encoded."
        )
    else:
        lengths = "Not computed here: `resume data stats data/medline --tokenizer all-minilm-l6-v2` prints them."
    return f"""# MEDLINE in BEIR layout (the out-of-distribution test set)

Generated by `resume data convert-medline --raw data/medline-raw --out data/medline`
(`resume.data.convert_medline`) from the raw SMART files (`MED.ALL`, `MED.QRY`, `MED.REL`, the classic
MEDLINE test collection; the project's copy lives in `data/medline-raw/`). Do not edit these files by
hand: rerun the converter; it is deterministic (same input, same bytes).

Biomedical abstracts, far from Cranfield's aeronautics: the models trained on `data.path` (Cranfield)
are evaluated here unchanged (`data.ood: data/medline`), as the paper trains on MS MARCO and reports
NFCorpus without further training. Every query is in the `test` split; nothing is ever trained on it.

| file | content |
| --- | --- |
| `corpus.jsonl` | {r['documents']} documents `{{"_id", "title", "text"}}`, `title` always `""` |
| `queries.jsonl` | {r['queries']} queries `{{"_id", "text"}}` |
| `qrels/test.tsv` | {r['splits'][MEDLINE_SPLIT]['judgements']} binary judgements `query-id corpus-id score` |

## Mapping

- Documents: `_id` = the `.I` number; `title` = `""`: `MED.ALL` has no title field (`.I` then `.W`). The
  abstract often begins with the article's title as its first sentence, but nothing marks where it ends,
  so it stays in the text. `text` = `.W`.
- Queries: `_id` = the `.I` number; `text` = `.W`.
- Judgements: `MED.REL` lines are `query-id doc-id relevance`, three columns (not the four of TREC's
  `query 0 doc relevance`); the query is named by its `.I` id. Relevance is binary and kept as the score.
  Values found: {values}.

## Quirks handled

- CRLF line ends in {crlf}: dropped when reading, so ids are `1`, not `1\\r`.
- The text is lowercase, the documents with a space before punctuation (` .`); lines are padded with
  trailing blanks, paragraphs indented and sentences of the queries separated by two spaces: the words
  are kept as distributed, every run of whitespace becomes one space (Cranfield's converter keeps
  spaces inside lines; here the padding would otherwise leak into the text).
- Blank lines (the last line of `MED.QRY`) are ignored.
- Documents with an empty text: {', '.join(r['empty_documents']) or 'none'}.
- Documents whose text duplicates an earlier one: {', '.join(r['duplicate_documents']) or 'none'}.
- Repeated `.W` markers inside a document (the marker dropped, its lines kept):
  {', '.join(r['stray_field_markers']) or 'none'}.

## Split

{r['queries']} queries are too few to split: every judged query is in `test`.
Queries with no judgement go to no split: {', '.join(r['unjudged_queries']) or 'none'}.

| split | queries | judgements |
| --- | --- | --- |
{split_rows}

## Lengths

{lengths}

## Counts and dropped judgements

{r['documents']} documents, {r['queries']} queries, {r['qrels_lines']} lines in `MED.REL`,
{r['judgements']} judgements kept, {len(r['dropped'])} dropped.

{dropped}
"""
