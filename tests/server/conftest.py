"""A real titans-server process on loopback with its embedded Redis, driven over HTTP."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``titans-server --model tiny-random`` exactly as a user starts it, in its own process."""

    def __init__(self, data_dir: Path, *args: str):
        self.data_dir, self.args = data_dir, args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> Server:
        command = [sys.executable, "-m", "titans_server", "--model", "tiny-random"]
        command += ["--port", str(self.port), "--data-dir", str(self.data_dir), *self.args]
        log = open(self.data_dir.parent / f"server-{self.port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
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
    """``start_server(data_dir)``: another server process, stopped after the test."""
    started: list[Server] = []

    def start(data_dir: Path | None = None) -> Server:
        started.append(Server(data_dir or tmp_path / "data").start())
        return started[-1]

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def client(server) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


@pytest.fixture
def openai_client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture
def session_id(request) -> str:
    """A session id of this test's own."""
    name = re.sub(r"[^A-Za-z0-9._:-]", "-", request.node.name)[:80]
    return f"t-{name}-{os.urandom(3).hex()}"
