"""Several servers on one Redis, overload, and clients that go away: no update is ever lost."""

import asyncio
import json

import httpx
import pytest

from titans_server.store import EmbeddedRedis

GREEDY = {"temperature": 0, "max_tokens": 4}


@pytest.fixture
def shared_redis(tmp_path):
    redis = EmbeddedRedis(tmp_path / "redis")
    yield f"unix://{redis.socket_file}"
    redis.stop()


def test_two_servers_on_one_redis_share_sessions(start_server, shared_redis, tmp_path):
    servers = [start_server(tmp_path / f"d{i}", "--redis-url", shared_redis) for i in range(2)]
    versions = []
    for turn in range(6):
        url = servers[turn % 2].url
        body = {"prompt": f"turn {turn}", "session_id": "shared", **GREEDY}
        assert httpx.post(url + "/v1/completions", json=body, timeout=60).status_code == 200
        versions.append(httpx.get(url + "/v1/sessions/shared").json()["version"])
    assert versions == [1, 2, 3, 4, 5, 6]


def test_concurrent_writers_through_two_servers_take_turns(start_server, shared_redis, tmp_path):
    """Two replicas racing on one session: the session's lease makes them take turns, and every
    request commits exactly once (and the compare-and-set on the version would catch any slip)."""
    servers = [start_server(tmp_path / f"d{i}", "--redis-url", shared_redis) for i in range(2)]

    async def run():
        async with httpx.AsyncClient(timeout=120) as http:

            async def one(i):
                body = {"prompt": f"race {i}", "session_id": "raced", **GREEDY}
                return (await http.post(servers[i % 2].url + "/v1/completions", json=body)).status_code

            codes = await asyncio.gather(*(one(i) for i in range(16)))
            version = (await http.get(servers[0].url + "/v1/sessions/raced")).json()["version"]
        return codes, version

    codes, version = asyncio.run(run())
    assert codes == [200] * 16 and version == 16


def test_overload_is_429_with_retry_after(start_server, tmp_path):
    server = start_server(tmp_path / "data", "--max-queue", "1")

    async def run():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
            body = {"prompt": "x", "max_tokens": 64, "min_tokens": 64, "ignore_eos": True}
            return await asyncio.gather(
                *(http.post("/v1/completions", json={**body, "session_id": f"load-{i}"}) for i in range(6))
            )

    responses = asyncio.run(run())
    overloaded = [r for r in responses if r.status_code == 429]
    assert overloaded and all(r.headers["retry-after"] for r in overloaded)
    assert overloaded[0].json()["error"]["type"] == "rate_limit_error"
    assert any(r.status_code == 200 for r in responses)


def test_a_client_that_goes_away_commits_nothing(server):
    body = {
        "prompt": "go on",
        "session_id": "abandoned",
        "stream": True,
        "max_tokens": 200,
        "min_tokens": 200,
    }
    httpx.post(server.url + "/v1/sessions", json={"id": "abandoned"})
    with httpx.Client(base_url=server.url, timeout=60) as http:
        with http.stream("POST", "/v1/completions", json={**body, "ignore_eos": True}) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["text"]:
                    break  # leave after the first token
        # The session is free again and untouched.
        done = http.post("/v1/completions", json={"prompt": "x", "session_id": "abandoned", **GREEDY})
        assert done.status_code == 200
        assert http.get("/v1/sessions/abandoned").json()["version"] == 1


def test_redis_down_is_503_and_the_server_recovers_when_it_returns(start_server, tmp_path):
    redis = EmbeddedRedis(tmp_path / "redis")
    server = start_server(tmp_path / "data", "--redis-url", f"unix://{redis.socket_file}")
    body = {"prompt": "before", "session_id": "kept", **GREEDY}
    assert httpx.post(server.url + "/v1/completions", json=body, timeout=60).status_code == 200
    redis.stop()
    try:
        down = httpx.post(server.url + "/v1/completions", json={**body, "prompt": "during"}, timeout=60)
        assert down.status_code == 503 and down.json()["error"]["code"] == "store_unavailable"
        assert httpx.get(server.url + "/ready", timeout=10).status_code == 503
    finally:
        redis = EmbeddedRedis(tmp_path / "redis")  # the same files and socket
    try:
        assert httpx.post(server.url + "/v1/completions", json=body, timeout=60).status_code == 200
        assert httpx.get(server.url + "/v1/sessions/kept", timeout=10).json()["version"] == 2
    finally:
        redis.stop()


def test_a_replica_never_continues_a_deleted_sessions_memory(start_server, shared_redis, tmp_path):
    """Replica A caches a session's state; B deletes it and a new session of the same id starts at
    the same version. A must load the new memory, not its cached copy of the old one."""
    a, b = (start_server(tmp_path / f"d{i}", "--redis-url", shared_redis) for i in range(2))

    def complete(server, prompt: str, session: str) -> int:
        body = {"prompt": prompt, "max_tokens": 1, "temperature": 0, "session_id": session}
        assert httpx.post(server.url + "/v1/completions", json=body, timeout=60).status_code == 200
        return httpx.get(f"{server.url}/v1/sessions/{session}").json()["tokens_seen"]

    complete(a, "x" * 60, "reborn")  # A now holds this state in its cache
    assert httpx.delete(b.url + "/v1/sessions/reborn").status_code == 200
    reborn = complete(b, "y", "reborn")  # version 1 again, a short memory
    step = complete(a, "z", "control")  # what one such request adds
    assert complete(a, "z", "reborn") == reborn + step
