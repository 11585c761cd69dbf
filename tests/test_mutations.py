"""The tests guard the method's data flow: every deliberate mistake of scripts/mutation_check.py makes them fail.

    .venv/bin/pytest tests/test_mutations.py -q -m slow        # about two minutes on 2 cores

Slow tier: each mutant is a scratch copy of the sources with one mistake and a pytest run of the test files
that must catch it (stopping at the first failure). `scripts/mutation_check.py` without --quick prints
which tests catch which mistake.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import mutation_check  # noqa: E402


def test_the_five_mistakes_of_the_issue_are_listed():
    names = [m.name for m in mutation_check.MUTATIONS]
    assert names[:5] == ["grpo_from_f0_with_g0", "summaries_from_f0", "reward_ablations_unchanged",
                         "non_iterative_scored_with_g1", "pipeline_iterations_not_chained"]


def test_a_mutation_that_no_longer_matches_the_source_is_an_error(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.py").write_text("a = 1\n")
    stale = mutation_check.Mutation("stale", "gone", (("src/x.py", "b = 2", "b = 3"),), ("tests",))
    with pytest.raises(SystemExit, match="0 times"):
        mutation_check.apply(tmp_path, stale)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_mutation_is_caught():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "mutation_check.py"), "--quick"], cwd=ROOT,
                       capture_output=True, text=True, timeout=880)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    n = len(mutation_check.MUTATIONS)
    assert f"{n}/{n} mutations caught" in r.stdout
