"""The container image (issue #14): `make image` builds the CPU image on this machine, and the project
runs inside it as the image's non-root user. Slow (not in CI): on 2 cores here the build took 5 to 9 min,
the three checks in the image 4 to 6 min.

    .venv/bin/pytest tests/test_image.py -m slow -q -s        # -s prints the build time and image size

In the image, as its non-root user (uid 1000): `resume --help`, `resume data validate data/cranfield` and
the whole loop `resume run --config configs/tiny.yaml` (every system of the tiny config, MLflow tracking
into the run directory's sqlite file). RESUME_TEST_IMAGE names the image (default
localhost/resume-test:cpu); RESUME_TEST_IMAGE_PREBUILT=1 skips the build and tests that image as it is
(one `make image` with this test's settings already made it; the test fails if it is not there).

With a Docker engine the test uses `docker build` / `docker run`; without one, buildah (chroot isolation,
vfs storage) and a Debian base made by mmdebstrap (`make image-base`), no container registry needed.
pip inside the build gets this machine's own pip settings (`pip config list`: find-links, extra
indexes, the CA bundle of a TLS-intercepting proxy), its directories mounted read-only into the build.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("RESUME_TEST_IMAGE", "localhost/resume-test:cpu")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(7200)]


def _docker() -> bool:
    return bool(shutil.which("docker")) and subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def _host_pip() -> dict[str, str]:
    """This machine's pip settings (later scopes win, like pip's own precedence)."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    conf = {}
    for line in out.splitlines():
        m = re.match(r"^[^.]*\.([\w-]+)='(.*)'$", line.strip())
        if m:
            conf[m.group(1)] = m.group(2)
    return conf


def _build_options() -> tuple[list[str], list[str]]:
    """(--build-arg ..., buildah -v ...) that give the build this machine's pip sources."""
    conf = _host_pip()
    args, mounts = [], []
    local = []  # (path, mount): a file index is mounted with its parent (its pages link to ../files)
    for key, var in (("index-url", "PIP_INDEX_URL"), ("extra-index-url", "PIP_EXTRA_INDEX_URL"),
                     ("find-links", "PIP_FIND_LINKS"), ("cert", "PIP_CERT")):
        if key in conf:
            args += ["--build-arg", f"{var}={conf[key]}"]
            for v in conf[key].split():
                if not v.startswith(("http://", "https://")):
                    p = Path(v.removeprefix("file://"))
                    local.append((p, p.parent if "index-url" in key else p))
    # a local CPU build of the pinned torch makes PyTorch's own index unnecessary
    if any(p.is_dir() and list(p.glob("torch-2.13.0+cpu-*.whl")) for p, _ in local):
        args += ["--build-arg", f"TORCH_INDEX={conf.get('index-url', 'https://pypi.org/simple')}"]
    for m in dict.fromkeys(m for _, m in local):
        if m.exists():
            mounts += ["-v", f"{m}:{m}:ro"]
    return args, mounts


def _image_size() -> int:
    if _docker():
        out = subprocess.run(["docker", "image", "inspect", IMAGE, "--format", "{{.Size}}"],
                             capture_output=True, text=True, check=True).stdout
        return int(out)
    out = subprocess.run(["buildah", "--storage-driver", "vfs", "images", "--json", IMAGE],
                         capture_output=True, text=True, check=True).stdout
    num, unit = json.loads(out)[0]["size"].split()  # buildah prints it in decimal units: "2.78 GB"
    return int(float(num) * {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[unit])


@pytest.fixture(scope="module")
def image():
    if not _docker() and not shutil.which("buildah"):
        pytest.fail("neither a Docker engine nor buildah here: `apt-get install buildah mmdebstrap`")
    if os.environ.get("RESUME_TEST_IMAGE_PREBUILT") == "1":
        size = _image_size()  # fails (CalledProcessError / no such image) when it was not built
        print(f"\n{IMAGE}: prebuilt, not rebuilt; image {size / 1e9:.2f} GB")
        return IMAGE
    args, mounts = _build_options()
    # make pastes these into a shell command line: shlex quoting keeps "a b" values (extra indexes) whole
    env = {**os.environ, "IMAGE": IMAGE, "BASE": "cpu", "BUILD_ARGS": shlex.join(args),
           "BUILDAH_OPTS": shlex.join(mounts)}
    t0 = time.monotonic()
    r = subprocess.run(["make", "image"], cwd=ROOT, env=env, capture_output=True, text=True)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    size = _image_size()
    print(f"\nmake image (BASE=cpu, {'docker' if _docker() else 'buildah'}): {took / 60:.1f} min, "
          f"image {size / 1e9:.2f} GB")
    return IMAGE


def _run(image: str, *argv: str, user: str = "") -> subprocess.CompletedProcess:
    """Run `argv` in a fresh container of `image` (the image's user unless `user`)."""
    if _docker():
        cmd = ["docker", "run", "--rm", "--entrypoint", argv[0]] + (["--user", user] if user else [])
        return subprocess.run(cmd + [image, *argv[1:]], capture_output=True, text=True, timeout=3600)
    b = ["buildah", "--storage-driver", "vfs"]
    ctr = subprocess.run(b + ["from", image], capture_output=True, text=True, check=True).stdout.strip()
    try:
        cfg = json.loads(subprocess.run(b + ["inspect", "--type", "container", ctr], capture_output=True,
                                        text=True, check=True).stdout)["OCIv1"]["config"]
        return subprocess.run(b + ["run", "--isolation", "chroot", "--user", user or cfg["User"], ctr, "--", *argv],
                              capture_output=True, text=True, timeout=3600)
    finally:
        subprocess.run(b + ["rm", ctr], capture_output=True)


def test_the_image_runs_the_cli_as_a_non_root_user(image):
    r = _run(image, "id", "-u")
    assert r.returncode == 0 and r.stdout.strip() == "1000", r.stdout + r.stderr
    r = _run(image, "resume", "--help")
    assert r.returncode == 0, r.stderr
    for sub in ("run", "serve", "data"):
        assert sub in r.stdout


def test_the_image_validates_the_bundled_data(image):
    r = _run(image, "resume", "data", "validate", "data/cranfield")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "judgements" in r.stdout and "queries" in r.stdout, r.stdout


def test_the_image_runs_the_whole_loop_on_the_tiny_config(image):
    """`resume run` on configs/tiny.yaml as uid 1000: run dir, MLflow sqlite and artifacts under /tmp."""
    mark = "=== results.json ==="
    r = _run(image, "sh", "-c", "resume run --config configs/tiny.yaml --out /tmp/run"
             f" && echo '{mark}' && cat /tmp/run/results.json && test -s /tmp/run/report.md && test -s /tmp/run/mlflow.db")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log, _, text = r.stdout.partition(mark + "\n")
    assert "report: /tmp/run/report.md" in log, log[-2000:]
    res = json.loads(text)
    assert res["name"] == "tiny" and res["device"] == "cpu"
    assert len(res["iterations"]) == 2 and all(it["grpo_steps"] == 2 for it in res["iterations"])
    assert set(res["systems"]) == {"baseline", "fixed_summary", "non_iterative", "iterative", "full_doc_control"}
    for name, system in res["systems"].items():
        assert set(system["test"]) >= {"mrr@10", "ndcg@10", "recall@100"}, name
        assert all(0.0 <= v <= 1.0 for v in system["test"].values()), name
    assert res["final"]["summarizer"] and res["final"]["retriever"]
