"""Kept versions through the SDK (sync and async) and ``titans sessions versions|restore``, against a
real server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load

from titans_client import AsyncTitansClient, ConflictError, NotFoundError, SessionVersion, TitansClient

GREEDY = {"temperature": 0, "max_tokens": 4}
TITANS = str(Path(sys.executable).parent / "titans")


def titans(*args: str, server) -> subprocess.CompletedProcess:
    """The installed ``titans`` command, as users run it."""
    env = {**os.environ, "COLUMNS": "200", "TITANS_BASE_URL": server.url}
    return subprocess.run([TITANS, *args], capture_output=True, text=True, timeout=120, env=env)


def test_versions_restore_and_export_a_kept_version(server):
    name = f"sdk-history-{os.urandom(4).hex()}"
    with TitansClient(server.url) as client:
        client.create_session(name)
        client.ingest(name, "The passkey is 4417. " * 4)
        kept = client.export_state(name)
        client.complete(name, "And then", **GREEDY)
        found = client.versions(name)
        assert [(v.version, v.made_by, v.current) for v in found] == [
            (2, "completion", True),
            (1, "ingest", False),
            (0, "create", False),
        ]
        assert all(isinstance(v, SessionVersion) for v in found)
        with pytest.raises(ConflictError):
            client.restore(name, 1, if_version=1)
        with pytest.raises(NotFoundError):
            client.restore(name, 9)
        session = client.restore(name, 1, if_version=2)
        assert session.version == 3 and session.history_bytes > 0
        now, then = load(client.export_state(name)), load(client.export_state(name, version=1))
        assert now.keys() == load(kept).keys() == then.keys()
        assert all((now[k] == then[k]).all() for k in now)


def test_the_async_client_lists_and_restores(server):
    name = f"sdk-history-async-{os.urandom(4).hex()}"

    async def run() -> tuple[list[int], int]:
        async with AsyncTitansClient(server.url) as client:
            await client.complete(name, "One", **GREEDY)
            await client.complete(name, "Two", **GREEDY)
            restored = await client.restore(name, 1)
            return [v.version for v in await client.versions(name)], restored.version

    assert asyncio.run(run()) == ([3, 2, 1], 3)


def test_the_cli_lists_and_restores_versions(server):
    name = f"cli-history-{os.urandom(4).hex()}"
    with TitansClient(server.url) as client:
        client.complete(name, "One", **GREEDY)
        client.complete(name, "Two", **GREEDY)
    listed = titans("sessions", "versions", name, "--json", server=server)
    assert listed.returncode == 0, listed.stderr
    assert [v["version"] for v in json.loads(listed.stdout)] == [2, 1]
    table = titans("sessions", "versions", name, server=server)
    assert table.returncode == 0 and "completion" in table.stdout and "(current)" in table.stdout
    refused = titans("sessions", "restore", name, "1", "--if-version", "1", server=server)
    assert refused.returncode != 0
    restored = titans("sessions", "restore", name, "1", "--if-version", "2", server=server)
    assert restored.returncode == 0, restored.stderr
    assert "now version 3" in restored.stdout
