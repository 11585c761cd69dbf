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
