"""The lead control: each document's "summary" is its title plus its first sentence, no model involved.

    resume data lead --data data/cranfield --out runs/lead/summaries.jsonl
    resume evaluate --data data/cranfield --texts runs/lead/summaries.jsonl --split test --out runs/lead/eval

`write_lead_summaries` writes the same schema as `resume summarize` (`{"_id", "summary", "completion",
"n_tokens", "has_separator", "truncated"}`, completion "", has_separator true, truncated false, n_tokens under the retriever's
tokenizer without special tokens), so the lead goes through exactly the evaluate path of an LLM's summaries.

Sentences end at `.`, `?` or `!` followed by whitespace, and at newlines. Text written with a space before
its end punctuation (Cranfield: lowercase, `slipstream . an experimental study`, while `3. 5`, `j. aero.`
and `fig. 1` are not sentence ends) is detected (spaced ends at least as common as `word. ` ends) and then
only a spaced mark ends a sentence. Cranfield abstracts begin by repeating the title: a first sentence
that repeats the title (same letters and digits, or 90% similar) is skipped, so the lead is the title plus
the first sentence of the body. A first "sentence" with no end punctuation is cut to its first 30 words.

`join_title` is the one join of a title and a text: the lead's, and the index-time option
`evaluate.summary_title` (a document's title before its LLM summary, `resume.evaluate.load_index_texts`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

MAX_WORDS = 30  # a first sentence without end punctuation (a text with no period) is cut to this many words
_SPACED_LAST = re.compile(r"\s[.?!]\s*$")
_SPACED_END = re.compile(r"\s[.?!](?=\s|$)")
_TIGHT_END = re.compile(r"[^\s.?!][.?!](?=\s)")
_SPACED_SPLIT = re.compile(r"(?<=\s[.?!])\s+|\s*\n\s*")
_SPLIT = re.compile(r"(?<=[.?!])\s+|\s*\n\s*")
_ENDS = re.compile(r"[.?!:]$")
_ALNUM = re.compile(r"[^0-9a-z]+")


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, whitespace collapsed, empty ones dropped (rules in the module doc)."""
    spaced = bool(_SPACED_LAST.search(text)) or len(_SPACED_END.findall(text)) >= max(1, len(_TIGHT_END.findall(text)))
    parts = (_SPACED_SPLIT if spaced else _SPLIT).split(text)
    return [" ".join(p.split()) for p in parts if p.strip()]


def _norm(s: str) -> str:
    return _ALNUM.sub("", s.lower())


def _similarity(a: str, b: str) -> float:
    return 1.0 if a == b else difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def strip_title(text: str, title: str) -> str:
    """`text` without the copies of `title` it begins with (Cranfield abstracts repeat the title, one of
    them twice). A copy is the title's number of words, give or take one (an end mark), whose letters and
    digits are the title's or 90% similar (typos, `3 .5` vs `3. 5`); a lone end mark after it goes too."""
    t, size = _norm(title), len(title.split())
    while t:
        words = list(islice(re.finditer(r"\S+", text), size + 1))
        sims = {n: _similarity(_norm(" ".join(w.group() for w in words[:n])), t)
                for n in (size, size - 1, size + 1) if 0 < n <= len(words)}
        n = max(sims, key=sims.get, default=0)  # the best match; the title's own length on ties
        if not n or sims[n] < 0.9:
            break
        rest = text[words[n - 1].end():]
        text = re.sub(r"^(\s*[^\s0-9A-Za-z]+(?=\s|$))+", "", rest).lstrip()  # a lone end mark after the copy
    return text


def join_title(title: str, text: str) -> str:
    """`title` then `text`, with a period between them unless the title already ends with one (`.?!:`);
    whichever is empty is left out (so a collection without titles, MEDLINE, keeps its texts as they are).
    Whitespace inside the title is collapsed."""
    title = " ".join(str(title or "").split())
    if not title or not text:
        return title or text
    return f"{title} {text}" if _ENDS.search(title) else f"{title}. {text}"


def lead_text(doc: Mapping[str, Any], max_words: int = MAX_WORDS) -> str:
    """Title + first sentence of `doc` ({"title", "text"}); the title alone when the text is empty (or only
    repeats it), the first sentence alone when there is no title. Empty only for a document with no words."""
    from resume.data import doc_text

    title = " ".join(str(doc.get("title") or "").split())
    sentences = split_sentences(strip_title(str(doc.get("text") or ""), title))
    first = sentences[0] if sentences else ""
    if first and not _ENDS.search(first):
        first = " ".join(first.split()[:max_words])
    return join_title(title, first) or " ".join(doc_text(dict(doc)).split()[:max_words])


def _rows(corpus: Iterator[dict], tokenizer: Any, batch: int = 1024) -> Iterator[dict[str, Any]]:
    from resume.data.stats import _token_lengths

    while chunk := list(islice(corpus, batch)):
        leads = [lead_text(d) for d in chunk]
        for d, lead, n in zip(chunk, leads, _token_lengths(tokenizer, leads, batch_size=batch)):
            yield {"_id": d["_id"], "summary": lead, "completion": "", "n_tokens": n, "has_separator": True,
                   "truncated": False}


def write_lead_summaries(data_dir: str | Path, out_path: str | Path, *, retriever_tokenizer: Any = None
                         ) -> dict[str, Any]:
    """Write the lead of every corpus document of `data_dir` (BEIR layout, or `hf:<name>`) to `out_path`
    as summaries.jsonl, atomically, in corpus order. retriever_tokenizer: a tokenizer, or a model name whose
    tokenizer counts `n_tokens` (None = the default retriever's). Returns {"out_path", "n_docs",
    "mean_n_tokens"}."""
    from resume.config import RetrieverConfig
    from resume.data import CORPUS_FILE, read_corpus, resolve_data_path
    from resume.io import write_jsonl

    tokenizer = retriever_tokenizer if retriever_tokenizer is not None else RetrieverConfig().model
    if isinstance(tokenizer, str):
        from resume.models import load_tokenizer

        tokenizer = load_tokenizer(tokenizer)
    corpus = read_corpus(Path(resolve_data_path(data_dir)) / CORPUS_FILE)
    total = 0

    def counted() -> Iterator[dict[str, Any]]:
        nonlocal total
        for row in _rows(corpus, tokenizer):
            total += row["n_tokens"]
            yield row

    n = write_jsonl(out_path, counted())
    return {"out_path": str(out_path), "n_docs": n, "mean_n_tokens": total / n if n else 0.0}
