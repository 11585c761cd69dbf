"""The CLI before the work: unusable output locations, unreadable inputs and the `metrics` warnings.

    .venv/bin/pytest tests/test_cli_outputs.py -q

Every command that writes is run as a real `python -m resume.cli` process with an output location it cannot
use (an existing directory where a file goes, a file where a directory goes, a path under a file, a place
nobody can write in): it must exit with 2 and one `error:` line naming the location, in under 2 seconds,
without importing a model library (torch, transformers, faiss, mlflow: the proof that no model work began)
and without creating anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "sentence_transformers", "faiss", "mlflow", "datasets")
# Runs the CLI's main() like `python -m resume.cli`, then prints which heavy modules got imported (stdout).
RUNNER = ("import sys\nfrom resume.cli import main\ntry:\n    rc = main(sys.argv[1:])\nfinally:\n"
          f"    print(sorted(m for m in {HEAVY!r} if m in sys.modules))\nsys.exit(rc)\n")

# command -> (argv with {out} for the output, kind of the output)
COMMANDS = {
    "data convert-cranfield": (["data", "convert-cranfield", "data/cranfield-raw", "{out}"], "dir"),
    "data convert-medline": (["data", "convert-medline", "--out", "{out}"], "dir"),
    "data download": (["data", "download", "BeIR/scifact", "{out}"], "dir"),
    "data lead": (["data", "lead", "--data", "data/cranfield", "--out", "{out}"], "file"),
    "evaluate": (["evaluate", "--config", "configs/tiny.yaml", "--out", "{out}"], "dir"),
    "retriever-finetune": (["retriever-finetune", "--config", "configs/tiny.yaml", "--out", "{out}"], "dir"),
    "summarize": (["summarize", "--config", "configs/tiny.yaml", "--out", "{out}"], "file"),
    "grpo-train": (["grpo-train", "--config", "configs/tiny.yaml", "--out", "{out}"], "dir"),
    "run": (["run", "--config", "configs/tiny.yaml", "--out", "{out}"], "dir"),
    "demo": (["demo", "--out", "{out}"], "dir"),
}


def _unwritable_dir(tmp: Path) -> Path:
    """A directory nobody may create files in: sysfs refuses new files, for root too; else a 0555 directory."""
    try:
        fd, probe = tempfile.mkstemp(dir="/sys/kernel")
    except OSError:
        return Path("/sys/kernel")
    os.close(fd)  # pragma: no cover - a writable sysfs: fall back to permissions
    os.unlink(probe)
    d = tmp / "readonly"
    d.mkdir()
    d.chmod(0o555)
    if os.access(d, os.W_OK):
        pytest.skip("no read-only location available (root on a writable /sys)")
    return d


def _locations(tmp: Path, kind: str) -> dict[str, Path]:
    """The unusable output locations for an output of `kind`."""
    a_file = tmp / "a-file.txt"
    a_file.write_text("x\n")
    a_dir = tmp / "a-dir"
    a_dir.mkdir(exist_ok=True)
    return {"existing " + ("directory" if kind == "file" else "file"): a_dir if kind == "file" else a_file,
            "under a file": a_file / "sub" / "out",
            "read-only place": _unwritable_dir(tmp) / "resume-out"}


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _cli(*argv: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", RUNNER, *argv], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    return p, time.perf_counter() - t0


@pytest.mark.parametrize("command", list(COMMANDS))
def test_unusable_output_fails_fast_before_any_work(command, tmp_path):
    argv, kind = COMMANDS[command]
    for what, out in _locations(tmp_path, kind).items():
        before = _tree(tmp_path)
        p, seconds = _cli(*[a.replace("{out}", str(out)) for a in argv])
        lines = p.stderr.strip().splitlines()
        where = f"{command} --out <{what}>: rc {p.returncode}, {seconds:.2f} s, stderr {p.stderr[-1500:]!r}"
        assert p.returncode == 2, where
        assert len(lines) == 1 and lines[0].startswith("error: ") and str(out) in lines[0], where
        assert "Traceback" not in p.stderr, where
        assert seconds < 2.0, where
        assert p.stdout.strip() == "[]", f"{where}: model libraries imported: {p.stdout}"
        assert _tree(tmp_path) == before, f"{where}: left files behind"
        assert not out.exists() or out in (tmp_path / "a-file.txt", tmp_path / "a-dir"), where


def test_summarize_cache_location_is_checked_too(tmp_path):
    """`summarize` also writes `<out>.cache.jsonl`: a directory there fails before any generation."""
    out = tmp_path / "summaries.jsonl"
    (tmp_path / "summaries.jsonl.cache.jsonl").mkdir()
    p, seconds = _cli("summarize", "--config", "configs/tiny.yaml", "--out", str(out))
    assert p.returncode == 2 and seconds < 2.0, p.stderr
    assert p.stderr.strip() == f"error: --out (its cache file) {out}.cache.jsonl: is a directory; expected a file path"
    assert p.stdout.strip() == "[]" and not out.exists()


def test_check_output_accepts_usable_locations(tmp_path):
    from resume.io import check_output

    assert check_output(tmp_path / "new" / "deeper", kind="dir") == tmp_path / "new" / "deeper"
    assert check_output(tmp_path / "new" / "f.jsonl", kind="file") == tmp_path / "new" / "f.jsonl"
    (tmp_path / "f.jsonl").write_text("old\n")
    check_output(tmp_path / "f.jsonl", kind="file")  # an existing file is replaced atomically later
    check_output(tmp_path, kind="dir")
    assert _tree(tmp_path) == ["f.jsonl"]  # nothing created by the checks


# ------------------------------------------------------------------------------------ inputs and metrics


def _qrels(path: Path, rows: list[tuple[str, str, int]]) -> Path:
    path.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in rows))
    return path


def _run(path: Path, rows: list[tuple[str, str, float]]) -> Path:
    path.write_text("".join(f"{q} Q0 {d} {i + 1} {s} t\n" for i, (q, d, s) in enumerate(rows)))
    return path


def test_metrics_binary_file_is_one_error_line(tmp_path):
    binary = tmp_path / "run.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    qrels = _qrels(tmp_path / "qrels.tsv", [("q1", "d1", 1)])
    p, _ = _cli("metrics", "--qrels", str(qrels), "--run", str(binary))
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [f"error: {binary}: not UTF-8 text (invalid start byte); expected a text "
                                             "file"], p.stderr
    p, _ = _cli("metrics", "--qrels", str(binary), "--run", str(binary))
    assert p.returncode == 2 and p.stderr.startswith(f"error: {binary}: not UTF-8 text"), p.stderr


def test_metrics_warns_when_nothing_matches_and_on_conflicting_judgements(tmp_path):
    qrels = _qrels(tmp_path / "qrels.tsv", [("q1", "d1", 1), ("q1", "d2", 0), ("q1", "d1", 2), ("q2", "d3", 1)])
    run = _run(tmp_path / "run.trec", [("x1", "d1", 3.0), ("x1", "d2", 2.0)])
    p, _ = _cli("metrics", "--qrels", str(qrels), "--run", str(run))
    assert p.returncode == 0, p.stderr
    warnings = p.stderr.strip().splitlines()
    assert len(warnings) == 2 and all(w.startswith("warning: ") for w in warnings), warnings
    assert "1 conflicting judgement(s)" in warnings[0] and "line 4: query q1, document d1: grade 1, then 2" in warnings[0]
    assert "share no query id, so every metric is 0" in warnings[1]
    metrics = json.loads(p.stdout.rstrip("\n").rsplit("\n", 1)[0])  # the last line is the runner's
    assert metrics["mrr@10"] == 0.0
    # a run that matches, with consistent qrels: no warning
    good = _qrels(tmp_path / "good.tsv", [("q1", "d1", 1)])
    p, _ = _cli("metrics", "--qrels", str(good), "--run", str(_run(tmp_path / "r2.trec", [("q1", "d1", 1.0)])))
    assert p.returncode == 0 and p.stderr == "", p.stderr


def test_os_errors_are_one_error_line(capsys, monkeypatch):
    """An OSError from inside a command (here: a file that cannot be read) is one line naming the file."""
    import resume.cli as cli

    def unreadable(args):
        open("/nonexistent-resume/x.jsonl", encoding="utf-8")  # noqa: SIM115 - it raises

    monkeypatch.setattr(cli, "_cmd_data_validate", unreadable)
    assert cli.main(["data", "validate", "data/cranfield"]) == 2
    assert capsys.readouterr().err == "error: /nonexistent-resume/x.jsonl: No such file or directory\n"
