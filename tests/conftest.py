"""Shared fixtures of the test suite (the environment is set in the root conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The environment (offline, local model cache) is set in the root conftest.py.


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def cranfield_dir() -> Path:
    return ROOT / "data" / "cranfield"


@pytest.fixture(scope="session")
def medline_dir() -> Path:
    return ROOT / "data" / "medline"
