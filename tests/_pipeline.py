"""Test helper: the pipeline script loaded as a module."""

from __future__ import annotations

from pathlib import Path


def _cheap_caller_lookup() -> None:
    """KFP 2.x's `PipelineTask._ensure_container_spec_exists` (every `set_cpu_request`, `set_env_variable`,
    ...) calls `inspect.stack()`, which reads the source lines of every frame on the stack, for a caller name it
    only uses in an error message. Under pytest (a deep stack, thousands of modules) that made one compilation
    of the pipeline take about 7 s instead of under 1 s. The tests hand KFP an `inspect` whose `stack` skips
    the source lines (`inspect.stack(0)`: the same frames and names); the compiled YAML is the same."""
    import inspect

    from kfp.dsl import pipeline_task

    class _Inspect:
        def __getattr__(self, name):
            return getattr(inspect, name)

        @staticmethod
        def stack(context: int = 1):
            return inspect.stack(0)

    if pipeline_task.inspect is inspect:  # once per process
        pipeline_task.inspect = _Inspect()


def load_pipeline_module(name: str = "resume_pipeline_under_test"):
    """pipelines/resume_pipeline.py as a fresh module (the pipeline is a script, not a package module)."""
    import importlib.util

    _cheap_caller_lookup()

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "pipelines"
                                                  / "resume_pipeline.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
