"""``pip install ./clients`` in a fresh virtual environment: the SDK and the ``titans`` command
without torch, every client command working against a real server, and one line saying what to
install for the commands that need the model."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

CLIENTS = Path(__file__).resolve().parents[2] / "clients"


@pytest.fixture(scope="module")
def client_env(tmp_path_factory) -> Path:
    """A virtual environment holding only the client distribution and what it depends on."""
    home = tmp_path_factory.mktemp("client-venv")
    venv.create(home, with_pip=True)
    python = home / "bin" / "python"
    # a copy of clients/: building in place would leave build/ and *.egg-info in the checkout
    source = tmp_path_factory.mktemp("client-source")
    subprocess.run(["cp", "-r", str(CLIENTS), str(source)], check=True)
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(source / "clients")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    return home


def run(home: Path, *args: str, server=None, stdin: str | None = None) -> subprocess.CompletedProcess:
    where = {"TITANS_BASE_URL": server.url} if server is not None else {}
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return subprocess.run(
        [str(home / "bin" / args[0]), *args[1:]],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "COLUMNS": "200", **where},
        cwd=home,  # not the checkout: nothing of the repository on the import path
    )


def test_the_client_installs_without_torch_or_the_server(client_env):
    probe = "import importlib.util as u; print([u.find_spec(m) is not None for m in ('torch', 'titans_core', 'titans_server', 'titans_client', 'httpx', 'typer', 'rich')])"  # noqa: E501
    done = run(client_env, "python", "-c", probe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str([False, False, False, True, True, True, True])
    assert run(client_env, "titans", "--help").returncode == 0


def test_every_client_command_works_against_a_server(client_env, server, tmp_path):
    session = "dist-" + os.urandom(4).hex()
    assert run(client_env, "titans", "models", server=server).stdout.split() == ["tiny-random", "default"]
    chat = run(client_env, "titans", "chat", "-s", session, "-m", "hello", "--max-tokens", "4", server=server)
    assert chat.returncode == 0, chat.stderr
    document = tmp_path / "doc.txt"
    document.write_text("alpha beta gamma " * 40)
    ingest = run(client_env, "titans", "ingest", str(document), "--session", session, server=server)
    assert ingest.returncode == 0, ingest.stderr
    shown = run(client_env, "titans", "sessions", "show", session, "--json", server=server)
    assert json.loads(shown.stdout)["version"] == 2
    listed = run(client_env, "titans", "sessions", "ls", "--json", server=server)
    assert listed.returncode == 0 and "has_more" in json.loads(listed.stdout), listed.stderr
    state = tmp_path / "state.safetensors"
    for args in (
        ("fork", session, session + "-fork"),
        ("export", session, str(state)),
        ("import", session + "-fork", str(state)),
        ("reset", session),
        ("rm", session + "-fork"),
        ("rm", session),
    ):
        done = run(client_env, "titans", "sessions", *args, server=server)
        assert done.returncode == 0, (args, done.stderr)
    passkey = run(client_env, "titans", "eval", "passkey", "--distance", "30", "--trials", "1", server=server)
    assert passkey.returncode == 0, passkey.stderr
    assert json.loads(passkey.stdout.splitlines()[-1])["trials"] == 1
    talk = run(
        client_env, "titans", "eval", "conversation", "--trials", "1", "--distance", "20",
        "--part", "facts", "--reply-tokens", "4", "--json", server=server,
    )  # fmt: skip
    assert talk.returncode == 0, talk.stderr
    assert set(json.loads(talk.stdout.splitlines()[-1])["facts"]) == {"name", "city", "number"}


@pytest.mark.parametrize(
    "args, extra",
    [
        (("serve",), "server"),
        (("train", "corpus", "--out", "runs/x"), "train"),
        (("data", "shakespeare", "corpus"), "train"),
    ],
)
def test_commands_that_need_the_model_say_what_to_install(client_env, args, extra):
    done = run(client_env, "titans", *args)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"titans-serve[{extra}]" in lines[0], done.stderr


def test_keys_add_needs_only_the_client(client_env):
    """Hashing a key needs the standard library, not the server (which a key's admin may not have)."""
    made = run(client_env, "titans", "keys", "add", "acme", "--file", "keys.txt")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert (client_env / "keys.txt").read_text() == f"acme {hashlib.sha256(key.encode()).hexdigest()}\n"


def test_the_root_project_still_brings_the_client():
    import titans_client

    assert Path(titans_client.__file__).resolve().is_relative_to(CLIENTS)
    assert (Path(sys.executable).parent / "titans").exists()
