"""bench/gpu_check.py on a machine without CUDA: every part is listed and skipped with its reason.

    .venv/bin/pytest tests/test_gpu_check.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"
PARTS = ["bf16_matmul", "bf16_generate", "nccl", "retriever_finetune", "faiss_gpu", "vllm",
         "bench_summarize", "bench_reward"]


def _run(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "gpu_check.json"
    p = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(out.read_text())


def _check_parts(data: dict) -> None:
    assert list(data["parts"]) == PARTS
    for name, part in data["parts"].items():
        for key in ("ok", "skipped", "error", "seconds", "timeout_s"):
            assert key in part, (name, key)
        assert part["skipped"], name  # a skip always says why
        assert part["ok"] is None and part["error"] is None, (name, part)
        if not data["cuda_available"]:
            assert "CUDA not available" in part["skipped"], (name, part["skipped"])
    assert data["summary"] == {"ok": [], "failed": [], "skipped": PARTS}
    assert sum(p["timeout_s"] for p in data["parts"].values()) > 0 and data["budget_s"] < 540


def test_dry_run_lists_every_part_with_a_skip_reason(tmp_path):
    data = _run(tmp_path, "--dry-run")
    assert data["dry_run"] is True
    env = data["environment"]
    assert env["importable"]["torch"] and env["importable"]["resume"]
    assert data["models"]["summarizer"] and data["models"]["config"].endswith(".yaml")
    _check_parts(data)


def test_full_run_without_cuda_records_skips(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the full run is the device check itself, not a fast test")
    data = _run(tmp_path, "--budget-s", "60")
    assert data["dry_run"] is False and data["gpu_name"] is None
    _check_parts(data)
    assert data["total_seconds"] < 60
