"""Faults: a server killed mid-load loses no acknowledged request, a corrupt state harms only its
session, and SIGTERM drains in-flight work within a deadline."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from redis import Redis

from titans_server.store import EmbeddedRedis


def redis_servers_on(data_dir) -> list[str]:
    """The redis-server processes whose command line names ``data_dir``."""
    found = subprocess.run(
        ["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True
    ).stdout.splitlines()
    return [line for line in found if "redis-server" in line and str(data_dir) in line]


def test_a_killed_server_loses_no_acknowledged_request(start_server, tmp_path):
    data = tmp_path / "data"
    server = start_server(data)
    acknowledged = dict.fromkeys(range(6), 0)

    async def writer(http: httpx.AsyncClient, session: int) -> None:
        body = {"prompt": "x", "max_tokens": 2, "session_id": f"s{session}"}
        try:
            while True:
                if (await http.post("/v1/completions", json=body)).status_code == 200:
                    acknowledged[session] += 1
        except httpx.HTTPError:  # the server died
            return

    async def load() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            writers = asyncio.gather(*(writer(http, s) for s in acknowledged))
            await asyncio.sleep(4)
            server.stop(signal.SIGKILL)
            await asyncio.wait_for(writers, 30)

    asyncio.run(load())
    assert sum(acknowledged.values()) > 6

    restarted = start_server(data)
    assert len(redis_servers_on(data)) == 1
    for session, count in acknowledged.items():
        found = httpx.get(f"{restarted.url}/v1/sessions/s{session}")
        version = found.json()["version"] if found.status_code == 200 else 0
        assert count <= version <= count + 1  # + the one in flight when it died
        body = {"prompt": "still here?", "max_tokens": 2, "session_id": f"s{session}"}
        assert httpx.post(restarted.url + "/v1/completions", json=body, timeout=30).status_code == 200


def test_one_data_dir_has_one_server(start_server, tmp_path):
    first = start_server(tmp_path / "data")
    with pytest.raises(RuntimeError, match="exited"):
        start_server(tmp_path / "data")
    assert httpx.get(first.url + "/ready").status_code == 200
    assert len(redis_servers_on(tmp_path / "data")) == 1


def test_the_default_relative_data_dir_works(start_server, tmp_path):
    """Without --data-dir the server keeps its Redis in ./data, below its working directory."""
    work = tmp_path / "work"
    work.mkdir()
    command = [sys.executable, "-m", "titans_server", "--model", "tiny-random"]
    server = start_server(work / "data", command=command, cwd=work)
    assert httpx.get(server.url + "/ready").status_code == 200
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30).status_code == 200
    assert len(redis_servers_on(work / "data")) == 1


def test_a_corrupt_state_harms_only_its_session(start_server, tmp_path):
    store = EmbeddedRedis(tmp_path / "redis")
    try:
        url = f"unix://{store.socket_file}"
        writer = start_server(tmp_path / "a", "--redis-url", url)
        for name in ("broken", "healthy"):
            body = {"prompt": "hello", "max_tokens": 2, "session_id": name}
            assert httpx.post(writer.url + "/v1/completions", json=body, timeout=30).status_code == 200
        Redis(unix_socket_path=store.socket_file).set("titans:{default:broken}:state", b"\x07garbage")

        reader = start_server(tmp_path / "b", "--redis-url", url)  # a replica that never cached it
        with httpx.Client(base_url=reader.url, timeout=30) as http:
            answer = http.post(
                "/v1/completions", json={"prompt": "x", "max_tokens": 2, "session_id": "broken"}
            )
            error = answer.json()["error"]
            assert (
                answer.status_code == 500
                and error["code"] == "state_corrupt"
                and "broken" in error["message"]
            )
            assert http.get("/v1/sessions/broken/state").status_code == 500
            healthy = {"prompt": "x", "max_tokens": 2, "session_id": "healthy"}
            assert http.post("/v1/completions", json=healthy).status_code == 200
            assert http.get("/v1/sessions/broken").json()["version"] == 1  # the metadata still reads
            assert http.post("/v1/sessions/broken/reset").status_code == 200  # and it can be repaired
            again = {"prompt": "x", "max_tokens": 2, "session_id": "broken"}
            assert http.post("/v1/completions", json=again).status_code == 200
    finally:
        store.stop()


def test_sigterm_drains_requests_within_the_deadline(start_server, tmp_path):
    data = tmp_path / "data"
    server = start_server(data, "--shutdown-timeout", "3")
    endless = {"prompt": "x", "max_tokens": 512, "min_tokens": 512, "ignore_eos": True, "session_id": "long"}
    short = {"prompt": "x", "max_tokens": 8, "session_id": "short"}

    async def run():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            long_one = asyncio.ensure_future(http.post("/v1/completions", json=endless))
            short_one = asyncio.ensure_future(http.post("/v1/completions", json=short))
            await asyncio.sleep(0.5)
            began = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            results = await asyncio.gather(long_one, short_one, return_exceptions=True)
            await asyncio.to_thread(server.process.wait, 30)
            return results, time.monotonic() - began

    (long_result, short_result), seconds = asyncio.run(run())
    assert short_result.status_code == 200  # finished in time
    assert long_result.status_code in (200, 503)  # done in time, or cancelled, and told so
    if long_result.status_code == 503:
        assert long_result.json()["error"]["code"] == "shutting_down"
    assert seconds < 3 + 10 and server.process.returncode in (0, -signal.SIGTERM)
    assert redis_servers_on(data) == []  # the embedded Redis stopped with it

    restarted = start_server(data)
    assert httpx.get(restarted.url + "/v1/sessions/short").json()["version"] == 1
    long_session = httpx.get(restarted.url + "/v1/sessions/long")
    assert long_session.status_code == (200 if long_result.status_code == 200 else 404)


def test_sigterm_does_not_wait_for_a_long_engine_step(start_server, tmp_path):
    """A step cannot be interrupted, and one prefill piece can outlast ``docker stop``'s 10 s on a
    loaded machine: the server leaves it behind (nothing of it is committed) and exits cleanly."""
    data = tmp_path / "data"
    piece = 131_072  # one step of ~30 s for tiny-random (a token per byte) on an idle core
    server = start_server(data, "--shutdown-timeout", "1", "--prefill-piece-tokens", str(piece))
    document = ("The harbour keeps a ledger of every ship. " * 4000)[:piece]
    done: dict = {}

    def ingest() -> None:
        try:
            done["status"] = httpx.post(
                f"{server.url}/v1/sessions/ledger/ingest", content=document, timeout=120
            ).status_code
        except httpx.HTTPError as error:
            done["status"] = type(error).__name__

    def engine_busy() -> bool:
        return "titans:requests_running 1.0" in httpx.get(server.url + "/metrics").text

    worker = threading.Thread(target=ingest)
    worker.start()
    deadline = time.monotonic() + 60
    while not engine_busy():
        assert time.monotonic() < deadline, "the ingest never reached the engine"
        time.sleep(0.05)
    began = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(60)
    seconds = time.monotonic() - began
    worker.join(60)
    assert server.process.returncode in (0, -signal.SIGTERM), server.process.returncode  # no crash
    assert seconds < 15, f"shutdown took {seconds:.1f} s: it waited for the engine's step"
    assert done["status"] != 200  # cut off or told 503: not committed
    assert redis_servers_on(data) == []
    restarted = start_server(data)
    assert httpx.get(restarted.url + "/v1/sessions/ledger").status_code == 404  # never committed
