"""Test helper: the pipeline script loaded as a module."""

from __future__ import annotations

from pathlib import Path


def load_pipeline_module(name: str = "resume_pipeline_under_test"):
    """pipelines/resume_pipeline.py as a fresh module (the pipeline is a script, not a package module)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "pipelines"
                                                  / "resume_pipeline.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
