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


@pytest.fixture(scope="module")
def one_faiss_thread():
    """FAISS's OpenMP threads spin-wait; on a shared 2-core machine one thread is ~3x faster for small
    indexes. Use with `pytestmark = pytest.mark.usefixtures("one_faiss_thread")`."""
    import faiss

    n = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(n)


@pytest.fixture(scope="module")
def rp():
    """The pipeline module, loaded once per test module."""
    from _pipeline import load_pipeline_module

    return load_pipeline_module()
