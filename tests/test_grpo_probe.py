"""bench/grpo_probe.py's round folders: a round records the overrides it was trained with, and a rerun
with other overrides (another summarizer, other dtypes) stops instead of reusing it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from grpo_probe import check_round_settings  # noqa: E402


def test_a_round_records_its_overrides_and_refuses_others(tmp_path):
    d = tmp_path / "max_steps=48"
    qwen = ["summarizer.model=qwen2.5-coder-0.5b-instruct", "grpo.max_steps=48"]
    check_round_settings(d, qwen)
    assert json.loads((d / "settings.json").read_text()) == {"overrides": qwen}
    assert not list(d.glob("*.tmp"))
    check_round_settings(d, qwen)  # the same settings: reused
    with pytest.raises(SystemExit, match="qwen2.5-coder-0.5b-instruct"):
        check_round_settings(d, ["grpo.max_steps=48"])


def test_a_finished_round_without_a_record_is_reused_with_a_warning(tmp_path, capsys):
    d = tmp_path / "base"
    (d / "summarizer").mkdir(parents=True)
    (d / "summarizer" / "trainer_state.json").write_text("{}")
    check_round_settings(d, ["grpo.max_steps=8"])
    assert "no settings.json" in capsys.readouterr().out
    assert not (d / "settings.json").exists()
