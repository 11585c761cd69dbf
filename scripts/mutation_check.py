"""Mutation check of the method's data flow: each deliberate mistake must make the fast tests fail.

    .venv/bin/python scripts/mutation_check.py            # every mutant, every test of its files; prints who fails
    .venv/bin/python scripts/mutation_check.py --quick    # stop each run at the first failure (tests/test_mutations.py)
    .venv/bin/python scripts/mutation_check.py --only non_iterative_scored_with_g1

In the spirit of mutation testing (issue #15): the source tree is copied to a scratch directory, one
mistake is applied there by an exact text replacement (which must match exactly once, so a refactor
that moves the code makes this script fail loudly instead of passing quietly), and the relevant fast
test files run against the copy (`PYTHONPATH=<scratch>/src`, which comes before the editable install).
A mutant is *caught* when pytest reports failing tests (exit status 1); a collection or usage error
(status 2-5) is reported as an error, never as caught. The unmutated copy runs the same selection
first (skipped with --quick), so a failure cannot come from the copy itself.

The first five mistakes are the ones the issue lists; `fused_systems_encode_twice` guards the shared
encoder of the fused systems, `significance_table_hidden` the weak spot of the report the issue names (a
significance table that silently renders nothing).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("src", "tests", "components", "pipelines", "configs", "conftest.py", "pyproject.toml", "Makefile")
LOOP_FAST = ("tests/test_loop.py", "-k", "not real_tiny")  # the fake-stage tests (the real tiny run takes a minute)


@dataclass(frozen=True)
class Mutation:
    """One deliberate mistake: exact replacements in files of the scratch copy, and the tests that must fail."""

    name: str
    what: str
    edits: tuple[tuple[str, str, str], ...]  # (file, old text, new text); old must occur exactly once
    tests: tuple[str, ...]  # pytest arguments (files, -k ...), run with -m "not slow"
    recompile_pipeline: bool = False  # regenerate pipelines/resume_pipeline.yaml as `make pipeline` would
    extra_env: dict[str, str] = field(default_factory=dict)


MUTATIONS = (
    Mutation(
        "grpo_from_f0_with_g0",
        "GRPO of every iteration starts from f_0 with g_0 as reward model (instead of f_{t-1}, g_{t-1})",
        (("src/resume/loop.py", 'def train(f=f_prev, g=g_prev,', 'def train(f=ctx.f0, g=ctx.g0,'),),
        LOOP_FAST),
    Mutation(
        "summaries_from_f0",
        "the summaries of every iteration come from f_0 (instead of f_t)",
        (("src/resume/loop.py", '"summarize", lambda f=f_t, g=g_prev', '"summarize", lambda f=ctx.f0, g=g_prev'),),
        LOOP_FAST),
    Mutation(
        "reward_ablations_unchanged",
        "the no_negative_queries and continuous_reward ablations no longer change the reward config",
        (("src/resume/loop.py", "c.reward.use_negatives = False", "pass"),
         ("src/resume/loop.py", "c.reward.discrete = False", "pass")),
        LOOP_FAST),
    Mutation(
        "non_iterative_scored_with_g1",
        "Non-iterative is scored with g_1 (instead of g_0 over S_1)",
        (("src/resume/loop.py", 'run_dir / "non_iterative", ctx.g0, s1)',
          'run_dir / "non_iterative", main["iterations"][0]["retriever"], s1)'),),
        LOOP_FAST),
    Mutation(
        "pipeline_iterations_not_chained",
        "the KFP pipeline no longer passes iteration t's summarizer and retriever to iteration t+1 "
        "(the YAML recompiled, as `make pipeline` would)",
        (("pipelines/resume_pipeline.py", 'f_kw = {"summarizer_in": prev["summarizer"]} if prev else {}', "f_kw = {}"),
         ("pipelines/resume_pipeline.py", 'g_kw = {"retriever_in": prev["retriever"]} if prev else {}', "g_kw = {}")),
        ("tests/test_pipeline.py",), recompile_pipeline=True),
    Mutation(
        "fused_systems_encode_twice",
        "a fused system's weight choice and test evaluation no longer share one encoder (documents encoded twice)",
        (("src/resume/loop.py", "enc = CachingEncoder(_LazyEncoder(self.cfg, retriever))", "enc = None"),),
        LOOP_FAST),
    Mutation(
        "significance_table_hidden",
        "the report's significance table renders nothing (what `except Exception: return []` would do on a bug)",
        (("src/resume/report.py", 'if not it.get("dir") or not a_path.exists():\n        return []',
          "if True:\n        return []"),),
        ("tests/test_report.py",)),
)


def scratch_copy(dest: Path) -> Path:
    """Copy the files the fast tests need (no caches, no run dirs, no data) to `dest`."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "*.egg-info", "runs", ".cache")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def apply(root: Path, m: Mutation) -> None:
    for rel, old, new in m.edits:
        p = root / rel
        text = p.read_text(encoding="utf-8")
        n = text.count(old)
        if n != 1:
            raise SystemExit(f"{m.name}: {rel} holds the text to mutate {n} times (expected once): {old!r}; "
                             "update scripts/mutation_check.py to the current source")
        p.write_text(text.replace(old, new), encoding="utf-8")
    if m.recompile_pipeline:
        recompile_pipeline(root)


def recompile_pipeline(root: Path) -> None:
    """`make pipeline` in the copy, so the compiled YAML matches the (mutated) pipeline code."""
    subprocess.run([sys.executable, "pipelines/resume_pipeline.py", "--out", "pipelines/resume_pipeline.yaml"],
                   cwd=root, env=_env(root), check=True, capture_output=True)


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RESUME_IMAGE", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = str(root / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_tests(root: Path, tests: tuple[str, ...], quick: bool) -> tuple[int, list[str], str]:
    """pytest on the copy: (exit status, failing test ids, output tail)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=line", "-rf", "-m", "not slow",
           *(["-x"] if quick else []), *tests]
    r = subprocess.run(cmd, cwd=root, env=_env(root), capture_output=True, text=True)
    out = r.stdout + r.stderr
    failed = sorted(set(re.findall(r"^FAILED (\S+)", out, flags=re.M)))
    return r.returncode, [f.split("::", 1)[-1] for f in failed], out[-2500:]


def check_imports_from(root: Path) -> None:
    """The copy's `resume` is the one imported (PYTHONPATH before the editable install)."""
    r = subprocess.run([sys.executable, "-c", "import resume, sys; sys.stdout.write(resume.__file__)"],
                       cwd=root, env=_env(root), capture_output=True, text=True, check=True)
    if not Path(r.stdout).resolve().is_relative_to(root.resolve()):
        raise SystemExit(f"the scratch copy is not what gets imported: resume from {r.stdout}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="stop each test run at its first failure; skip the "
                                                         "unmutated reference runs")
    ap.add_argument("--only", action="append", default=[], help="run only this mutation (repeatable)")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.only and len(chosen) != len(set(args.only)):
        ap.error(f"unknown mutation in {args.only}; known: {[m.name for m in MUTATIONS]}")
    missed = 0
    with tempfile.TemporaryDirectory(prefix="resume-mutants-") as tmp:
        if not args.quick:
            clean = scratch_copy(Path(tmp) / "clean")
            check_imports_from(clean)
            if any(m.recompile_pipeline for m in chosen):
                recompile_pipeline(clean)  # the reference is the code as it is, with its YAML up to date
            for tests in dict.fromkeys(m.tests for m in chosen):
                t0 = time.perf_counter()
                rc, failed, tail = run_tests(clean, tests, quick=False)
                print(f"reference (no mutation) {' '.join(tests)}: exit {rc} in {time.perf_counter() - t0:.0f} s")
                if rc != 0:
                    print(tail)
                    return 2
        for i, m in enumerate(chosen):
            root = scratch_copy(Path(tmp) / f"m{i}")
            if i == 0:
                check_imports_from(root)
            t0 = time.perf_counter()
            apply(root, m)
            rc, failed, tail = run_tests(root, m.tests, args.quick)
            dt = time.perf_counter() - t0
            if rc == 1 and failed:
                print(f"CAUGHT  {m.name} ({dt:.0f} s): {m.what}")
                for f in failed:
                    print(f"        fails: {f}")
            else:
                missed += 1
                state = "MISSED " if rc == 0 else f"ERROR {rc}"
                print(f"{state} {m.name} ({dt:.0f} s): {m.what}\n{tail}")
            shutil.rmtree(root, ignore_errors=True)
    print(f"{len(chosen) - missed}/{len(chosen)} mutations caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
