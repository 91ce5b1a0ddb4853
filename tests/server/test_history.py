"""Kept versions over HTTP (issue 30): each commit keeps the version before it, a restore makes a kept
one the newest (memory and transcript), exports and memory reports read kept versions; history is
bounded, survives a restart, goes with its session, and stays within its tenant."""

from __future__ import annotations

import asyncio
import time

import httpx
import redis
import torch
from safetensors.torch import load

from titans_server.auth import hash_key, new_key

GREEDY = {"temperature": 0, "max_tokens": 6}
PLAIN = {"content-type": "text/plain"}
TEXT = "The passkey is 48213. " * 8


def complete(client, session_id, prompt="Tell me more", **headers) -> httpx.Response:
    body = {"prompt": prompt, "session_id": session_id, **GREEDY}
    response = client.post("/v1/completions", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response


def chat(client, session_id, messages) -> dict:
    body = {"messages": messages, "session_id": session_id, **GREEDY}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def ingest(client, session_id, text=TEXT) -> dict:
    response = client.post(f"/v1/sessions/{session_id}/ingest", content=text, headers=PLAIN)
    assert response.status_code == 200, response.text
    return response.json()


def versions(client, session_id) -> list[dict]:
    response = client.get(f"/v1/sessions/{session_id}/versions")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def tensors(data: bytes) -> dict[str, torch.Tensor]:
    return load(data)


def same_tensors(a: bytes, b: bytes) -> bool:
    first, second = tensors(a), tensors(b)
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def export(client, session_id, version: int | None = None) -> bytes:
    params = {} if version is None else {"version": version}
    response = client.get(f"/v1/sessions/{session_id}/state", params=params)
    assert response.status_code == 200, response.text
    return response.content


def test_each_commit_keeps_the_one_before_with_what_made_it(client, session_id):
    client.post("/v1/sessions", json={"id": session_id})
    made = complete(client, session_id, **{"X-Request-Id": "req-42"})
    assert made.headers["x-request-id"] == "req-42"
    ingest(client, session_id)
    assert client.post(f"/v1/sessions/{session_id}/reset").status_code == 200
    imported = client.put(f"/v1/sessions/{session_id}/state", content=export(client, session_id, 2))
    assert imported.status_code == 200

    listed = versions(client, session_id)
    assert [v["version"] for v in listed] == [4, 3, 2, 1, 0]
    assert [v["made_by"] for v in listed] == ["import", "reset", "ingest", "completion", "create"]
    assert [v["current"] for v in listed] == [True, False, False, False, False]
    assert listed[3]["request_id"] == "req-42" and listed[2]["request_id"] is None
    assert listed[2]["tokens_seen"] > 0 and listed[2]["state_bytes"] > 0 and listed[1]["state_bytes"] == 0
    session = client.get(f"/v1/sessions/{session_id}").json()
    assert session["history_bytes"] == sum(v["state_bytes"] for v in listed[1:])

    complete(client, session_id)  # a fifth earlier version: the oldest goes (the default keeps 4)
    assert [v["version"] for v in versions(client, session_id)] == [5, 4, 3, 2, 1]


def test_every_response_echoes_its_request_id(client):
    assert client.get("/health", headers={"X-Request-Id": "abc"}).headers["x-request-id"] == "abc"
    refused = client.get("/v1/sessions/nope", headers={"X-Request-Id": "def"})
    assert refused.status_code == 404 and refused.headers["x-request-id"] == "def"
    assert "x-request-id" not in client.get("/health").headers


def test_a_restore_brings_back_the_memory_and_the_transcript(client, session_id):
    first = [{"role": "user", "content": "My locker code is 4721."}]
    reply = chat(client, session_id, first)["choices"][0]["message"]
    after_first = client.get(f"/v1/sessions/{session_id}").json()["version"]
    second = [*first, reply, {"role": "user", "content": "What is my locker code?"}]
    fed_then = chat(client, session_id, second)["usage"]["prompt_tokens"]
    kept = export(client, session_id, after_first)

    restored = client.post(f"/v1/sessions/{session_id}/restore", json={"version": after_first})
    assert restored.status_code == 200, restored.text
    assert restored.json()["version"] == after_first + 2  # a new version: nothing rewritten
    assert same_tensors(export(client, session_id), kept)
    newest = versions(client, session_id)[0]
    assert newest["made_by"] == "restore" and newest["restored_from"] == after_first
    # The chain is the kept one: resending the conversation feeds the undone turn again, only it.
    assert chat(client, session_id, second)["usage"]["prompt_tokens"] == fed_then


def test_restore_refuses_a_moved_session_and_an_unknown_version(client, session_id):
    complete(client, session_id)
    complete(client, session_id)
    stale = client.post(f"/v1/sessions/{session_id}/restore", json={"version": 1, "if_version": 1})
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "version_conflict"
    missing = client.post(f"/v1/sessions/{session_id}/restore", json={"version": 99})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "version_not_found"
    assert client.get(f"/v1/sessions/{session_id}/state", params={"version": 99}).status_code == 404
    assert client.post("/v1/sessions/nope/restore", json={"version": 0}).status_code == 404
    fine = client.post(f"/v1/sessions/{session_id}/restore", json={"version": 1, "if_version": 2})
    assert fine.status_code == 200 and fine.json()["version"] == 3


def test_a_restore_racing_a_chat_loses_neither(server, session_id):
    async def race() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            body = {"prompt": "Go on", "session_id": session_id, **GREEDY}
            await http.post("/v1/completions", json=body)
            return await asyncio.gather(
                http.post("/v1/completions", json=body),
                http.post(f"/v1/sessions/{session_id}/restore", json={"version": 1}),
            )

    answers = asyncio.run(race())
    assert [a.status_code for a in answers] == [200, 200]
    with httpx.Client(base_url=server.url) as client:
        listed = versions(client, session_id)
    assert listed[0]["version"] == 3
    assert sorted(v["made_by"] for v in listed[:2]) == ["completion", "restore"]


def test_memory_against_a_kept_version_says_how_far_it_moved(client, session_id):
    client.post("/v1/sessions", json={"id": session_id})  # version 0: the initial memory
    ingest(client, session_id)
    report = client.get(f"/v1/sessions/{session_id}/memory", params={"against": 0}).json()
    assert report["against"] == 0 and len(report["changes"]) == len(report["layers"])
    assert all(change["relative_change"] > 0 for change in report["changes"])
    same = client.get(f"/v1/sessions/{session_id}/memory", params={"against": 1}).json()
    assert all(change["relative_change"] == 0 for change in same["changes"])
    assert client.get(f"/v1/sessions/{session_id}/memory", params={"against": 7}).status_code == 404
    complete(client, session_id)
    between = client.get(f"/v1/sessions/{session_id}/memory", params={"against": 0, "version": 1}).json()
    assert between["compared"] == 1 and between["changes"] == report["changes"]


def test_a_fork_starts_its_own_history_at_the_forked_state(client, session_id):
    ingest(client, session_id)
    complete(client, session_id)
    fork = client.post(f"/v1/sessions/{session_id}/fork", json={"id": session_id + "-f"}).json()["id"]
    forked = export(client, session_id)
    assert [(v["version"], v["made_by"]) for v in versions(client, fork)] == [(0, "fork")]
    complete(client, fork)
    assert same_tensors(export(client, fork, 0), forked)
    assert [v["version"] for v in versions(client, fork)] == [1, 0]


def test_a_session_may_keep_no_history(client, session_id):
    client.post("/v1/sessions", json={"id": session_id, "history_versions": 0})
    ingest(client, session_id)
    session = client.get(f"/v1/sessions/{session_id}").json()
    assert session["history_versions"] == 0 and session["history_bytes"] == 0
    assert [v["version"] for v in versions(client, session_id)] == [1]


def test_history_survives_a_restart_and_goes_with_its_session(start_server, tmp_path, session_id):
    server = start_server(tmp_path / "data")
    with httpx.Client(base_url=server.url, timeout=60) as client:
        ingest(client, session_id)
        complete(client, session_id)
        before, kept = versions(client, session_id), export(client, session_id, 1)
    server.stop()
    server = start_server(tmp_path / "data")
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert versions(client, session_id) == before
        assert export(client, session_id, 1) == kept
        store = redis.Redis(unix_socket_path=str(tmp_path / "data" / "redis.sock"))
        pattern = f"titans:{{default:{session_id}}}:history*"
        assert len(store.keys(pattern)) == 2
        assert client.delete(f"/v1/sessions/{session_id}").status_code == 200
        assert store.keys(pattern) == [] and store.hget("titans:{default}:bytes", session_id) is None
        client.post("/v1/sessions", json={"id": session_id})  # the same id again starts afresh
        assert [v["version"] for v in versions(client, session_id)] == [0]


def test_tenants_never_see_each_others_history(start_server, tmp_path, session_id):
    keys = {"acme": new_key(), "globex": new_key()}
    (tmp_path / "keys").write_text("".join(f"{t} {hash_key(k)}\n" for t, k in keys.items()))
    server = start_server(tmp_path / "data", "--api-keys-file", str(tmp_path / "keys"))
    acme, globex = (
        httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {keys[t]}"})
        for t in ("acme", "globex")
    )
    with acme, globex:
        acme.post("/v1/sessions", json={"id": session_id})
        ingest(acme, session_id)
        assert globex.get(f"/v1/sessions/{session_id}/versions").status_code == 404
        assert globex.get(f"/v1/sessions/{session_id}/state", params={"version": 0}).status_code == 404
        assert globex.post(f"/v1/sessions/{session_id}/restore", json={"version": 0}).status_code == 404
        complete(globex, session_id)  # the same id, its own session and history
        assert [v["made_by"] for v in versions(globex, session_id)] == ["completion"]
        assert [v["made_by"] for v in versions(acme, session_id)] == ["ingest", "create"]


def test_a_tenant_byte_quota_trims_history_first_then_refuses_states(
    server, start_server, tmp_path, session_id
):
    sizes = []  # a state's bytes depend on its position: measured on another server, same steps
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(3):
            ingest(client, session_id)
            sizes.append(client.get(f"/v1/sessions/{session_id}").json()["state_bytes"])
    quota = sum(sizes) - 1  # the third state and the second, not the first as well
    limited = start_server(tmp_path / "data", "--max-tenant-bytes", str(quota))
    with httpx.Client(base_url=limited.url, timeout=60) as client:
        for _ in range(3):
            ingest(client, session_id)
        session = client.get(f"/v1/sessions/{session_id}").json()
        assert session["history_bytes"] == sizes[1] and len(versions(client, session_id)) == 2
        refused = client.post(f"/v1/sessions/{session_id}-b/ingest", content=TEXT, headers=PLAIN)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "tenant_bytes_exceeded"
        assert client.get(f"/v1/sessions/{session_id}-b").status_code == 404  # nothing committed
        assert client.delete(f"/v1/sessions/{session_id}").status_code == 200
        ingest(client, session_id + "-b")  # the deleted session's bytes are free again


def test_the_server_default_sets_how_many_versions_are_kept(start_server, tmp_path, session_id):
    server = start_server(tmp_path / "data", "--history-versions", "1")
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(3):
            complete(client, session_id)
        assert [v["version"] for v in versions(client, session_id)] == [3, 2]


def test_kept_versions_expire_with_their_session(server, client, session_id):
    client.post("/v1/sessions", json={"id": session_id, "ttl_seconds": 3600})
    ingest(client, session_id)
    store = redis.Redis(unix_socket_path=str(server.data_dir / "redis.sock"))
    prefix = f"titans:{{default:{session_id}}}"
    deadlines = [store.pttl(f"{prefix}:{part}") for part in ("meta", "history", "history:states")]
    assert all(0 < ms <= 3_600_000 for ms in deadlines) and max(deadlines) - min(deadlines) < 5_000


def test_a_lapsed_session_leaves_its_tenants_bytes(server, client, session_id):
    store = redis.Redis(unix_socket_path=str(server.data_dir / "redis.sock"))
    held, total, expiry = "titans:{default}:bytes", "titans:{default}:bytes_total", "titans:{default}:expiry"
    client.post("/v1/sessions", json={"id": session_id, "ttl_seconds": 1})
    ingest(client, session_id)
    mine, before = int(store.hget(held, session_id)), int(store.get(total))
    assert mine > 0
    deadline = time.monotonic() + 60
    while int(store.hget(expiry, session_id)) >= time.time() * 1000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get(f"/v1/sessions/{session_id}").status_code == 404
    client.post("/v1/sessions", json={"id": session_id + "-next"})  # counting the tenant prunes it
    assert store.hget(held, session_id) is None and int(store.get(total)) == before - mine
