"""The README's scale table is what `bench/bench_scaling.py --markdown bench/scaling.json` prints (so it can be
regenerated, never hand-edited), and that output states what the JSON says."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- bench_scaling --markdown: begin -->", "<!-- bench_scaling --markdown: end -->"


def _printed() -> str:
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_scaling.py"), "--markdown",
                        str(ROOT / "bench" / "scaling.json")], capture_output=True, text=True, timeout=120, check=True)
    return r.stdout.strip()


def test_readme_table_is_the_generated_one():
    if not (ROOT / "bench" / "scaling.json").is_file():
        pytest.skip("bench/scaling.json not written yet")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count(BEGIN) == 1 and readme.count(END) == 1, "README: the bench_scaling markers are missing"
    section = readme.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert section == _printed(), ("README's scale section differs from `.venv/bin/python bench/bench_scaling.py "
                                   "--markdown bench/scaling.json`: paste that output between the markers")


def test_generated_text_follows_the_json():
    path = ROOT / "bench" / "scaling.json"
    if not path.is_file():
        pytest.skip("bench/scaling.json not written yet")
    res = json.loads(path.read_text())
    text = _printed()
    rows = [line for line in text.splitlines() if re.match(r"\| [\d,]+ \|", line)]
    assert len(rows) == len(res["table"]) == 3 * len(res["sizes"])
    for line, r in zip(rows, res["table"]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == f"{r['n']:,}" and cells[1].startswith(r["kind"])
        assert float(cells[-1]) == pytest.approx(r["recall_at_100"], abs=5e-5)
    for kind, word in (("ivf", "IVF"), ("hnsw", "HNSW")):
        sub = all(g["exponent"] < 1 for g in res["growth"][kind])
        assert f"{word} {'yes' if sub else 'no'}" in text
    assert f"every size: {'yes' if res['defaults_meet_recall_0_99'] else 'no'}" in text
    assert f"below {res['defaults']['auto_min_docs']:,} vectors and {res['defaults']['auto_kind_above']}" in text
