"""Real titans-server processes on loopback, as a user starts them (for tests and test tooling)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


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
