"""The image built from the Dockerfile and run by a real Docker engine.

Chat (the ``openai`` package, streamed and not), ingest, fork and export against the container on
loopback; the healthcheck turning healthy; the non-root user; sessions kept in the /data volume
across a restart and in a bind-mounted host folder; ``docker stop`` with Docker's default 10 s
ending in-flight work cleanly.
"""

from __future__ import annotations

import json
import os
import struct
import threading

import httpx
import pytest
from calls import chat, new_session, version
from containers import Container, docker, wait_for

UID = 10001  # the Dockerfile's user


@pytest.fixture(scope="module")
def served(image):
    """The image with a named volume on /data (its embedded Redis keeps its files there)."""
    volume = "titans-deploy-test-" + os.urandom(4).hex()
    container = Container(image, "-v", f"{volume}:/data").run()
    try:
        yield container.wait_ready()
    finally:
        container.remove()
        docker("volume", "rm", "-f", volume, check=False)


def test_chat_stream_ingest_fork_and_export(served):
    session = new_session()
    chat(served.url, session)
    chat(served.url, session, stream=True)
    ingested = httpx.post(
        f"{served.url}/v1/sessions/{session}/ingest",
        content="The harbour opens at dawn. " * 40,
        headers={"Content-Type": "text/plain"},
        timeout=120,
    )
    assert ingested.status_code == 200, ingested.text
    assert ingested.json()["version"] == 3 and ingested.json()["tokens_ingested"] > 0
    fork = httpx.post(f"{served.url}/v1/sessions/{session}/fork", json={"id": session + "-f"}, timeout=60)
    assert fork.status_code == 201, fork.text
    source = httpx.get(f"{served.url}/v1/sessions/{session}", timeout=30).json()
    assert fork.json()["tokens_seen"] == source["tokens_seen"] > 0, (fork.json(), source)
    exported = httpx.get(f"{served.url}/v1/sessions/{session}/state", timeout=60)
    assert exported.status_code == 200, exported.text
    (header_bytes,) = struct.unpack("<Q", exported.content[:8])  # a safetensors file: its header
    header = json.loads(exported.content[8 : 8 + header_bytes])
    assert header and len(exported.content) > 8 + header_bytes
    assert "Traceback" not in served.logs()


def test_the_server_logs_its_device(served):
    assert " on cpu " in served.logs()


def test_it_runs_as_the_non_root_user(served):
    assert served.state("{{.Config.User}}") == f"{UID}:{UID}"
    assert docker("exec", served.id, "id", "-u").stdout.strip() == str(UID)
    # the server itself, not only what exec starts
    status = docker("exec", served.id, "cat", "/proc/1/status").stdout
    (uids,) = [line for line in status.splitlines() if line.startswith("Uid:")]
    assert uids.split()[1:] == [str(UID)] * 4


def test_the_healthcheck_turns_healthy(served):
    # Docker runs the image's check every 30 s: the first verdict comes 30 s after the start.
    wait_for(lambda: served.state("{{.State.Health.Status}}") == "healthy", "the healthcheck", timeout=240)


def test_a_restart_keeps_the_sessions_in_the_volume(served):
    session = new_session()
    chat(served.url, session)
    before = version(served.url, session)
    docker("restart", served.id, timeout=180)
    served.wait_ready()
    assert version(served.url, session) == before
    chat(served.url, session)
    assert version(served.url, session) == before + 1


def test_docker_stop_ends_work_in_flight_cleanly(served):
    """Default ``docker stop`` (SIGTERM, SIGKILL after 10 s): the server's own shutdown fits, and
    a long ingest in flight is either committed or left as it was, its session free."""
    session = new_session()
    chat(served.url, session)
    before = version(served.url, session)
    accepted, events = threading.Event(), []

    def ingest() -> None:
        url = f"{served.url}/v1/sessions/{session}/ingest?stream=true"
        document = "Every harbour keeps a ledger of the ships it sees. " * 40_000  # 2 MB: minutes of work
        try:
            with httpx.stream("POST", url, content=document, timeout=120) as response:
                accepted.set()  # the server took the request: it is in flight
                events.extend(line for line in response.iter_lines() if line.startswith("event:"))
        except httpx.HTTPError as error:  # the connection closed by the shutdown
            events.append(type(error).__name__)
        accepted.set()

    worker = threading.Thread(target=ingest)
    worker.start()
    assert accepted.wait(120), "the ingest was never answered"
    seconds = served.stop()  # no -t: Docker's default grace of 10 s
    worker.join(60)
    exit_code = served.state("{{.State.ExitCode}}")
    served.start().wait_ready()
    after = version(served.url, session)
    assert after in (before, before + 1), (before, after, events)
    assert "event: done" not in events or after == before + 1, events  # said done: committed
    chat(served.url, session)  # no lease left behind: the session takes a chat at once
    assert version(served.url, session) == after + 1
    assert exit_code in ("0", "143"), f"exit {exit_code} after {seconds:.1f} s"  # 137: killed at 10 s
    assert seconds < 10, seconds


def test_a_bind_mounted_data_folder_owned_by_the_image_user(image, tmp_path):
    """A host folder for /data works when uid 10001 owns it (the README says so)."""
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, UID, UID)
    container = Container(image, "-v", f"{data}:/data").run()
    try:
        container.wait_ready()
        session = new_session()
        chat(container.url, session)
        assert any(data.iterdir()), "the embedded Redis keeps its files in the host folder"
        container.stop()
        container.start().wait_ready()
        assert version(container.url, session) == 1
    finally:
        container.remove()
