"""A Docker engine for the deploy tests, and containers of the image on the host's loopback.

Every container here runs with host networking and the server bound to 127.0.0.1 on a free
port: the tests' traffic never leaves loopback. Waits are on conditions (``/ready``, the
healthcheck's status), each with a generous deadline for a busy 2-core machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable

import httpx
import pytest
from servers import free_port

REQUIRED = "TITANS_DOCKER"  # "required" (set by .ci/run once it has an engine): no engine fails


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """``docker ARGS``; output captured as text; a failure raises with docker's own words."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: exit {done.returncode}\n{done.stdout}{done.stderr}")
    return done


def anonymous_volumes(container: str) -> list[str]:
    """The container's volumes with no name of their own (the image's VOLUME; Docker names them by
    a hash): removing the container without ``-v`` leaves them behind."""
    template = '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}'
    names = docker("inspect", "--format", template, container).stdout.split()
    return [name for name in names if re.fullmatch(r"[0-9a-f]{64}", name)]


def engine_or_skip() -> None:
    """Skip, saying why, where no Docker engine answers; fail instead where CI started one."""
    try:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, timeout=60
        )
        problem = None if info.returncode == 0 else info.stderr.decode(errors="replace").strip()
    except FileNotFoundError:
        problem = "no docker command"
    if problem is None:
        return
    reason = f"no Docker engine answers ({problem}); .ci/run starts dockerd where it can"
    if os.environ.get(REQUIRED) == "required":
        pytest.fail(reason)
    pytest.skip(reason)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 240, every: float = 0.5) -> None:
    """Return once ``condition()`` holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"waited {timeout:.0f} s for {what}")


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class Container:
    """The image run detached on the host's network, the server on 127.0.0.1:``port``."""

    def __init__(self, image: str, *options: str, env: dict[str, str] | None = None):
        self.image, self.options = image, options
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {"TITANS_HOST": "127.0.0.1", "TITANS_PORT": str(self.port), "TITANS_MODEL": "tiny-random"}
        self.env |= env or {}
        self.id = ""

    def run(self) -> Container:
        flags = [item for name, value in self.env.items() for item in ("-e", f"{name}={value}")]
        self.id = docker("run", "-d", "--network", "host", *flags, *self.options, self.image).stdout.strip()
        return self

    def wait_ready(self, timeout: float = 240) -> Container:
        """Until /ready answers 200 (the model loaded, the store answering); fail if it exited."""

        def ready() -> bool:
            if self.state("{{.State.Running}}") != "true":
                raise AssertionError(f"the container exited:\n{self.logs()[-3000:]}")
            return answers(self.url + "/ready")

        wait_for(ready, f"{self.url}/ready", timeout)
        return self

    def state(self, template: str) -> str:
        return docker("inspect", "--format", template, self.id).stdout.strip()

    def logs(self) -> str:
        done = docker("logs", self.id, check=False)
        return done.stdout + done.stderr

    def start(self) -> Container:
        docker("start", self.id)
        return self

    def stop(self, *options: str) -> float:
        """``docker stop``; the seconds it took."""
        began = time.monotonic()
        docker("stop", *options, self.id, timeout=180)
        return time.monotonic() - began

    def remove(self) -> None:
        if self.id:
            docker("rm", "-f", "-v", self.id, check=False)
