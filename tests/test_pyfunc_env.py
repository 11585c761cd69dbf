"""The registered retriever loads outside the project: a fresh virtualenv with only the requirements MLflow
logged with the model (requirements.txt of the model; the `resume` source travels as code_paths) loads it
with `mlflow.pyfunc.load_model`, and its signature validates the input.

    .venv/bin/pytest tests/test_pyfunc_env.py -m slow -q     # minutes: installs mlflow + torch into a venv

Slow: creating the venv and installing MLflow, torch and transformers takes minutes (pip reads the machine's
own pip configuration, so wheels mirrored locally are used). RESUME_WHEELHOUSE=<dir of wheels> installs from
that directory alone (`--no-index --find-links`), e.g. after `pip download -d <dir> -r <model>/requirements.txt`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _loop_fakes import FakeStages, fake_cfg, write_tiny_beir

pytestmark = pytest.mark.slow

QUERIES = ["what is a shock wave?", "boundary layer transition"]

# Runs inside the fresh venv: load through the registry, predict on DataFrames, feed a bad input.
_SCRIPT = """
import importlib.util, json, sys
assert importlib.util.find_spec("resume") is None, "the project is importable in the fresh venv"
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
sig = model.metadata.signature
queries = json.loads(sys.argv[2])
out = {"signature_inputs": [t.name for t in sig.inputs.input_types()],
       "params": {p.name: p.default for p in sig.params.params},
       "query": model.predict(pd.DataFrame({"text": queries})),
       "doc": model.predict(pd.DataFrame({"text": queries[:1]}), params={"kind": "doc"}),
       "resume_from": sys.modules["resume"].__file__}
try:
    model.predict(pd.DataFrame({"text": [1.5]}))
    out["bad_input"] = "accepted"
except mlflow.exceptions.MlflowException as e:
    out["bad_input"] = "rejected: " + str(e).splitlines()[0]
print("RESULT " + json.dumps(out))
"""


def test_registered_retriever_loads_in_a_fresh_venv(tmp_path, monkeypatch):
    import mlflow

    from resume import tracking
    from resume.loop import run_loop
    from resume.models import resolve_model

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    beir = write_tiny_beir(tmp_path / "beir")
    cfg = fake_cfg(beir, max_iterations=1, eps_reward=None, eps_metric=None, systems=["iterative"])
    run = tmp_path / "run"
    run_loop(cfg, out_dir=run, stages=FakeStages().stages(), track=False, log=lambda s: None)
    res = json.loads((run / "results.json").read_text())
    res["final"] = {"retriever": resolve_model("tiny-encoder"), "summarizer": resolve_model("tiny-causal-lm")}
    (run / "results.json").write_text(json.dumps(res))
    monkeypatch.setattr(tracking.registry, "_retriever_bundle", lambda *a, **k: None)
    reg = tracking.register_models(cfg, run)
    uri = tracking.tracking_uri(cfg, run)
    with tracking._fluent(uri):
        local = Path(mlflow.artifacts.download_artifacts(reg["retriever"]["uri"], dst_path=str(tmp_path / "model")))
        expected = mlflow.pyfunc.load_model(reg["retriever"]["uri"]).predict(QUERIES)
    reqs = local / "requirements.txt"
    assert reqs.is_file() and "resume" not in reqs.read_text()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "MLFLOW_"))}
    wheels = os.environ.get("RESUME_WHEELHOUSE")
    offline = ["--no-index", "--find-links", wheels] if wheels else []
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *offline, "-r", str(reqs)],
                         env=env, capture_output=True, text=True, timeout=1800)
    assert pip.returncode == 0, pip.stderr[-3000:]
    env["MLFLOW_TRACKING_URI"] = uri  # the registry: models:/resume-retriever/<version>
    p = subprocess.run([str(venv / "bin" / "python"), "-c", _SCRIPT, reg["retriever"]["uri"], json.dumps(QUERIES)],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(next(x for x in p.stdout.splitlines() if x.startswith("RESULT "))[len("RESULT "):])
    assert str(venv) not in out["resume_from"] and "/code/resume/" in out["resume_from"]  # from the model's code
    assert out["signature_inputs"] == ["string"] and out["params"] == {"kind": "query"}
    assert out["bad_input"].startswith("rejected"), out["bad_input"]
    assert len(out["query"]) == 2 and len(out["doc"]) == 1
    for a, b in zip(out["query"], expected):  # the same embeddings as in the project's environment
        assert a == pytest.approx(b, abs=1e-4)
