"""Run `resume serve` (or any server) as a child process on a free loopback port: tests and benchmarks.

    with ServerProcess(["serve", "retriever", "--model", "runs/demo/bundle"]) as srv:
        httpx.post(f"{srv.url}/v1/models/resume-retriever:predict", json={"instances": ["shock waves"]})

The child gets `--http-port <free port> --grpc-port 0 --host 127.0.0.1` appended (for `serve` commands;
`grpc=True` gives gRPC a free port too, bound on 127.0.0.1 like REST) and is stopped with SIGTERM (then
SIGKILL) on exit. Its output goes to a log file, shown in the error
when it dies or does not become ready in time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_http(url: str, *, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> float:
    """Poll `url` until it answers 200; returns the seconds waited. Raises if `proc` exits first."""
    t0 = time.monotonic()
    while True:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            raise RuntimeError(f"server exited with {proc.returncode} before {url} was ready:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() - t0 > timeout:
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            raise TimeoutError(f"{url} not ready after {timeout:.0f}s:\n{tail}")
        time.sleep(0.2)


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class ServerProcess:
    """`python -m resume.cli <args>` in a child process on a free loopback port (see the module doc)."""

    def __init__(self, args: list[str], *, env: dict[str, str] | None = None, ready_path: str = "/v2/health/ready",
                 timeout: float = 180.0, log_path: str | Path | None = None, grpc: bool = False):
        self.port = free_port()
        self.grpc_port = free_port() if grpc else 0
        self.args = list(args)
        if self.args[:1] == ["serve"]:
            self.args += ["--http-port", str(self.port), "--grpc-port", str(self.grpc_port), "--host", "127.0.0.1"]
        self.env = {**os.environ, **(env or {})}
        self.ready_path = ready_path
        self.timeout = timeout
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="resume-serve-", suffix=".log")[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}" if grpc else None
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None

    def start(self) -> ServerProcess:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "resume.cli", *self.args], env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self.startup_s = wait_http(self.url + self.ready_path, timeout=self.timeout, proc=self.proc,
                                       log=self.log_path)
        except BaseException:
            self.stop()
            raise
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        if getattr(self, "_log", None) is not None:
            self._log.close()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
