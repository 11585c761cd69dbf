"""Tests of resume.report on a run dir fabricated with fake stages (no models).

    .venv/bin/pytest tests/test_report.py -x -q
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _loop_fakes import FakeStages, fake_cfg, write_tiny_beir

from resume.loop import run_loop
from resume.report import PAPER, _rel, render, write_report
from resume.run_dir import read_results


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    beir = write_tiny_beir(tmp / "beir")
    cfg = fake_cfg(beir, max_iterations=2, eps_reward=None, eps_metric=None,
                   systems=["baseline", "fixed_summary", "non_iterative", "iterative", "full_doc_control"],
                   ablations=["no_retrieval_adaptation", "continuous_reward"])
    run_loop(cfg, out_dir=tmp / "run", stages=FakeStages().stages(), track=False, log=lambda s: None)
    return tmp / "run"


def test_report_tables_and_plots(run_dir):
    path = write_report(run_dir)
    text = path.read_text()
    # what it ran on
    assert "## What it ran on" in text and "working set 12 documents" in text and "`f0`" in text
    # paper-style table: ours next to the paper, relative change vs Baseline (paper's Iterative: +13.2%)
    row = next(line for line in text.splitlines() if line.startswith("| Iterative"))
    assert "0.310" in row and "+0.0%" in row and "0.301" in row and "+13.2%" in row
    fixed = next(line for line in text.splitlines() if line.startswith("| Fixed Summary"))
    assert "0.210" in fixed and "-32.3%" in fixed
    assert "Full-doc control" in text
    # iterations, early stopping, ablations (paper NDCG@10 column), OOD note, summaries of three documents
    assert "| 2 | 0.300 |" in text  # iteration 2: mean GRPO reward
    assert "Early stopping" in text and "not triggered" in text
    assert "w/o retrieval adaptation" in text and "0.291" in text and "0.340" in text
    assert "No second dataset configured" in text
    assert text.count("**Document `") == 3 and "- S_0 (" in text and "- S_2 (" in text
    # plots are real PNGs and are linked
    for name in ("metrics.png", "reward.png"):
        data = (run_dir / "plots" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert f"](plots/{name})" in text


def test_relative_change_and_ood_table(run_dir):
    assert _rel(0.301, 0.266) == "+13.2%"
    assert _rel(None, 0.2) == "–" and _rel(0.1, 0) == "–"
    results = read_results(run_dir)
    results["ood"] = {"dataset": "medline", "split": "test", "systems": {
        "baseline": {"test": {"mrr@10": 0.5, "ndcg@10": 0.3, "recall@100": 0.29}},
        "iterative": {"test": {"mrr@10": 0.55, "ndcg@10": 0.33, "recall@100": 0.3}}}}
    text = render(results, [])
    assert "The in-domain models on `medline` (split `test`), no further training" in text
    assert "| Baseline (full documents, g_0) | 0.500 | 0.300 | 0.290 | +0.0% | 0.501 | 0.305 | 0.290 | +0.0% |" in text
    assert "| Iterative (S_T from f_T, g_T) | 0.550 | 0.330 | 0.300 | +10.0% | 0.535 | 0.329 | 0.303 | +6.8% |" in text
    assert PAPER["iterative"][0] == 0.301


def test_significance_table_from_per_query_files(run_dir):
    """The paired tests of Iterative against each system, from the eval dirs' per_query.json (the fakes write
    per-query values -a, +a, 0 around the system's metric, a = 0.05 + 0.02 (t + 1) for S_t's texts)."""
    text = write_report(run_dir).read_text()
    assert "Paired tests of Iterative against each system on the test queries" in text
    # Iterative (S_2: 0.31 ± 0.11) vs Fixed Summary (S_0: 0.21 ± 0.07): d = (+0.06, +0.14, +0.10), mean 0.10, sd 0.04,
    # t = 4.33 on 2 df -> p = 0.049; of the 8 sign flips only all-plus and all-minus reach |mean| 0.10 -> 0.250
    assert "| Fixed Summary | 3 | 0.100 | 0.049 | 0.250 | 0.100 | 0.049 | 0.250 |" in text
    # vs Baseline (documents: 0.31 ± 0.05): d = (-0.06, +0.06, 0), mean 0 -> p = 1 on both tests
    assert "| Baseline | 3 | 0.000 | 1.000 | 1.000 | 0.000 | 1.000 | 1.000 |" in text
    assert "| Non-iterative | 3 | 0.050 | 0.049 | 0.250 |" in text and "| Full-doc control | 3 | -0.020 |" in text


def test_significance_skips_what_has_no_per_query_file(run_dir, tmp_path):
    from resume.report import _significance

    results = read_results(run_dir)
    systems = results["systems"]
    assert sorted(r[0] for r in _significance(systems)) == ["Baseline", "Fixed Summary", "Full-doc control",
                                                            "Non-iterative"]
    gone = {**systems, "baseline": {**systems["baseline"], "dir": str(tmp_path / "nowhere")}}
    assert sorted(r[0] for r in _significance(gone)) == ["Fixed Summary", "Full-doc control", "Non-iterative"]
    assert _significance({**systems, "iterative": {**systems["iterative"], "dir": str(tmp_path)}}) == []
    assert _significance(systems, ref="iterative_fused") == []  # no such system in this run


def test_report_of_a_moved_run_dir_finds_its_files(run_dir, tmp_path):
    """results.json holds paths relative to the run dir: moved elsewhere (nothing left at the old place), the
    run dir still gives its summaries of three documents and its paired tests, which read the summaries and
    the per_query.json files that results.json points at."""
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.move(run_dir, moved)
    try:
        assert str(run_dir) not in (moved / "results.json").read_text()
        text = write_report(moved).read_text()
        assert text.count("**Document `") == 3 and "Paired tests of Iterative against each system" in text
        assert f"Run directory: `{moved}`" in text
    finally:
        shutil.move(moved, run_dir)


def test_ood_section_has_paired_tests_and_text_signals(run_dir):
    """The OOD table gets the same paired tests as in domain (from its eval dirs' per_query.json) and the
    text signals of its summary sets."""
    results = read_results(run_dir)
    sys_ = results["systems"]
    results["ood"] = {"dataset": "medline", "split": "test", "quality": {
        "fixed_summary": {"text": {"placeholder_rate": 0.0, "boilerplate_rate": 0.25, "copy_rate": 0.5,
                                   "distinct_2": 0.75, "mean_tokens": 99.0, "truncation_rate": 0.125,
                                   "separator_rate": 1.0}}},
        "systems": {k: sys_[k] for k in ("baseline", "fixed_summary", "iterative")}}
    text = render(results, [])
    ood = text[text.index("## Out of distribution"):]
    assert "Paired tests of Iterative against each system on these queries" in ood
    # the same per-query files as in domain, so the same rows as test_significance_table_from_per_query_files
    assert "| Fixed Summary | 3 | 0.100 | 0.049 | 0.250 | 0.100 | 0.049 | 0.250 |" in ood
    assert "| Baseline | 3 | 0.000 | 1.000 | 1.000 | 0.000 | 1.000 | 1.000 |" in ood
    assert "| Fixed Summary | 0.00 | 0.25 | 0.50 | 0.75 | 99.0 | 0.12 | 1.00 |" in ood
