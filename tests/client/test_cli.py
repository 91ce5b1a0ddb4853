"""The ``titans`` command, run as users run it (the installed console script) against a real server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import typer.main
from typer.testing import CliRunner

from titans_client.cli import app

TITANS = str(Path(sys.executable).parent / "titans")


def titans(
    *args: str, server=None, stdin: str | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    where = {"TITANS_BASE_URL": server.url} if server is not None else {}
    return subprocess.run(
        [TITANS, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", **where, **(env or {})},
    )


def fresh_id(prefix: str) -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


def test_chat_once_and_interactively(server):
    name = fresh_id("cli-chat")
    once = titans("chat", "-s", name, "-m", "hello", "--temperature", "0", "--max-tokens", "6", server=server)
    assert once.returncode == 0, once.stderr
    assert once.stdout.strip()
    turns = titans(
        "chat", "--session", name, "--max-tokens", "4", stdin="again\nand again\n\n", server=server
    )
    assert turns.returncode == 0, turns.stderr
    assert httpx.get(f"{server.url}/v1/sessions/{name}").json()["version"] == 3


def test_ingest_files_with_a_progress_report(server, tmp_path):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("alpha " * 500)
    second.write_text("beta " * 100)
    name = fresh_id("cli-ingest")
    done = titans("ingest", str(first), str(second), "--session", name, server=server)
    assert done.returncode == 0, done.stderr
    assert "3,000 tokens" in done.stderr and "500 tokens" in done.stderr
    assert done.stderr.count("mean loss") == 2 and done.stderr.count("mean write") == 2
    session = httpx.get(f"{server.url}/v1/sessions/{name}").json()
    assert (session["version"], session["tokens_seen"]) == (2, 3500)


def test_sessions_commands(server, tmp_path):
    name = fresh_id("cli-sess")
    assert titans("chat", "-s", name, "-m", "remember", "--max-tokens", "3", server=server).returncode == 0
    shown = json.loads(titans("sessions", "show", name, "--json", server=server).stdout)
    assert shown["id"] == name and shown["version"] == 1
    listed = json.loads(titans("sessions", "ls", "--limit", "100", "--json", server=server).stdout)
    assert name in [s["id"] for s in listed["data"]]
    assert name in titans("sessions", "ls", "--limit", "100", server=server).stdout  # the table

    inspected = json.loads(titans("sessions", "memory", name, "--json", server=server).stdout)
    assert inspected["version"] == 1 and all(
        layer["distance_from_initial"] > 0 for layer in inspected["layers"]
    )
    assert "distance from initial" in titans("sessions", "memory", name, server=server).stdout

    state = tmp_path / "state.safetensors"
    assert titans("sessions", "export", name, str(state), server=server).returncode == 0
    assert titans("sessions", "fork", name, name + "-fork", server=server).returncode == 0
    assert titans("sessions", "reset", name, server=server).returncode == 0
    assert json.loads(titans("sessions", "show", name, "--json", server=server).stdout)["tokens_seen"] == 0
    assert titans("sessions", "import", name, str(state), server=server).returncode == 0
    restored = json.loads(titans("sessions", "show", name, "--json", server=server).stdout)
    assert restored["tokens_seen"] == shown["tokens_seen"]
    assert titans("sessions", "rm", name, server=server).returncode == 0

    gone = titans("sessions", "show", name, server=server)
    assert gone.returncode == 1 and "404" in gone.stderr and "no session" in gone.stderr


def test_models_and_the_base_url_flag(server):
    listed = titans("models", "--base-url", server.url)
    assert listed.returncode == 0 and listed.stdout.split() == ["tiny-random", "default"]
    nowhere = titans("models", "--base-url", "http://127.0.0.1:9")
    assert nowhere.returncode == 1 and "failed" in nowhere.stderr


def test_keys_add_makes_a_key_the_server_accepts(start_server, tmp_path):
    keys_file = tmp_path / "keys"
    made = titans("keys", "add", "acme", "--file", str(keys_file))
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert keys_file.read_text().startswith("acme ") and key not in keys_file.read_text()
    assert oct(keys_file.stat().st_mode & 0o777) == "0o600"
    assert titans("keys", "add", "bad:name", "--file", str(keys_file)).returncode == 2

    server = start_server(tmp_path / "data", "--api-keys-file", str(keys_file))
    assert titans("models", server=server).returncode == 1
    assert titans("models", server=server, env={"TITANS_API_KEY": key}).returncode == 0
    assert titans("models", "--api-key", key, server=server).returncode == 0


def test_serve_runs_the_server(start_server, tmp_path):
    data = tmp_path / "data"
    served = start_server(data, command=[TITANS, "serve", "--model", "tiny-random", "--data-dir", str(data)])
    assert titans("models", server=served).stdout.split() == ["tiny-random", "default"]


def command_paths(command=None, path=()) -> list[tuple[str, ...]]:
    """Every command and group of ``titans``, as the words that name it (``titans serve`` shows the
    server's own help, not typer's: it is left out)."""
    command = command or typer.main.get_command(app)
    found = [path]
    for name, sub in getattr(command, "commands", {}).items():
        if name != "serve":
            found += command_paths(sub, (*path, name))
    return found


@pytest.mark.parametrize("words", command_paths(), ids=lambda words: " ".join(words) or "titans")
def test_help_lists_flags_without_a_value_type(words):
    """A flag takes no value: its help line is the flag and what it does, never ``--json <bool>``."""
    shown = CliRunner().invoke(app, [*words, "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "<bool>" not in shown.output
    assert re.search(r"--help +Show this message and exit\.", shown.output), shown.output


def test_help_as_users_see_it():
    shown = titans("sessions", "ls", "--help")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"--json +print JSON instead of a table", shown.stdout), shown.stdout
    value = re.search(r"--limit +(<int>|INTEGER) +sessions per page", shown.stdout)  # an option's value
    assert value, shown.stdout
    assert "<bool>" not in shown.stdout
