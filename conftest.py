"""Test-session environment for every test folder (tests/ and components/): no network, a project-local
model cache, no telemetry. Fixtures live in tests/conftest.py and components/conftest.py."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent

# Nothing in a test may touch the network: hub access is off, caches are local to the project.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("RESUME_CACHE", str(ROOT / ".cache" / "models"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
