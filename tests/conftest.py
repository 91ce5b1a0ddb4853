"""Shared by every test: a fresh random seed each, and real titans-server processes on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch


@pytest.fixture(autouse=True)
def fresh_seed(request):
    """Fresh random inputs on every run; a failure report names the seed that reproduces it."""
    seed = int.from_bytes(os.urandom(4), "little") % 2**31
    torch.manual_seed(seed)
    request.node.user_properties.append(("torch_seed", seed))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        seed = dict(item.user_properties).get("torch_seed")
        report.sections.append(("random seed", f"torch.manual_seed({seed}) reproduces this run"))
    return report


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``titans-server --model tiny-random`` exactly as a user starts it, in its own process.

    ``command`` and ``env`` replace the command line and the whole environment (the container's
    command, configured by its variables); such a command is told its port by ``TITANS_PORT``.
    ``cwd`` is the process's working directory (None: the tests').
    """

    def __init__(
        self,
        data_dir: Path,
        *args: str,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ):
        self.data_dir, self.args = data_dir, args
        self.command, self.env, self.cwd = command, env, cwd
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> Server:
        command = [sys.executable, "-m", "titans_server", "--model", "tiny-random"]
        command += ["--port", str(self.port), "--data-dir", str(self.data_dir), *self.args]
        env = {**os.environ} if self.env is None else {**self.env}
        if self.command is not None:
            command, env["TITANS_PORT"] = self.command, str(self.port)
        log = open(self.data_dir.parent / f"server-{self.port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.cwd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}; see {log.name}")
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop(signal.SIGKILL)  # not left running behind the failed test
        raise RuntimeError("the server did not become ready")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(30)


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    running = Server(tmp_path_factory.mktemp("titans") / "data").start()
    yield running
    running.stop()


@pytest.fixture
def start_server(tmp_path):
    """``start_server(data_dir, *flags, command=..., env=..., cwd=...)``: another server process (see
    ``Server``), stopped after the test."""
    started: list[Server] = []

    def start(data_dir: Path | None = None, *args: str, **options) -> Server:
        started.append(Server(data_dir or tmp_path / "data", *args, **options).start())
        return started[-1]

    yield start
    for running in started:
        running.stop()
