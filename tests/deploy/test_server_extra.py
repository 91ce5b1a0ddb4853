"""``pip install torch==2.13.0 ".[server]"`` in a fresh virtual environment serves a real chat.

The dev extra brings numpy and much else that the server extra does not: a module that imports
what only the dev extra installs passes every other test and fails for every user. Here the
server runs from a venv with the server extra alone, and the official ``openai`` package chats
with it, streamed and not, on loopback.
"""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

import pytest
from openai import OpenAI

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ["pyproject.toml", "README.md", "titans_core", "server", "clients"]  # what the build reads


@pytest.fixture(scope="module")
def server_env(tmp_path_factory) -> Path:
    """A venv holding torch's CPU wheel, this project and its server extra, nothing else."""
    home = tmp_path_factory.mktemp("server-venv")
    venv.create(home, with_pip=True)
    # a copy of the sources: an in-tree build would leave build/ and *.egg-info in the checkout
    source = tmp_path_factory.mktemp("server-source")
    subprocess.run(["cp", "-r", *[str(ROOT / name) for name in SOURCES], str(source)], check=True)
    # torch==2.13.0 named first: pip takes the CPU wheel on local disk, never a multi-GB CUDA build
    pip = [str(home / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    done = subprocess.run(
        [*pip, "torch==2.13.0", f"{source}[server]"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    return home


def test_the_server_extra_brings_no_dev_tools(server_env):
    probe = "import importlib.util as u; print([u.find_spec(m) is not None for m in ('numpy', 'pytest', 'titans_server', 'torch')])"  # noqa: E501
    done = subprocess.run([str(server_env / "bin" / "python"), "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str([False, False, True, True]), "the server extra brought dev tools"


def test_the_server_extra_alone_serves_a_chat(server_env, start_server, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env |= {"TITANS_HOST": "127.0.0.1", "TITANS_MODEL": "tiny-random"}
    env["TITANS_DATA_DIR"] = str(tmp_path / "data")
    server = start_server(
        tmp_path / "data", command=[str(server_env / "bin" / "titans-server")], env=env, cwd=tmp_path
    )
    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    asked = {
        "model": "tiny-random",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 4,
        "extra_headers": {"X-Session-Id": "extra-" + os.urandom(4).hex()},
        "extra_body": {"ignore_eos": True},
    }
    reply = client.chat.completions.create(**asked)
    assert reply.usage.completion_tokens == 4, reply
    stream = client.chat.completions.create(**asked, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage.completion_tokens == 4, chunks[-1]
    assert sum(1 for chunk in chunks if chunk.choices and chunk.choices[0].delta.content is not None) >= 1
    log = (tmp_path / f"server-{server.port}.log").read_text()
    assert "Traceback" not in log, log[-3000:]
