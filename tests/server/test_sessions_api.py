"""Sessions over HTTP: lifecycle, versions, fork and state transfer, ingestion, persistence."""

import asyncio
import json
import time

import httpx
import pytest
import torch
from safetensors.torch import load

from titans_core import TitansConfig, TitansLM
from titans_core.state import read_metadata, to_bytes

GREEDY = {"temperature": 0, "max_tokens": 10}


def complete(client, session_id, prompt="Tell me more", **extra):
    body = {"prompt": prompt, "session_id": session_id, **GREEDY, **extra}
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["text"]


def test_create_get_list_delete(client, session_id):
    created = client.post("/v1/sessions", json={"id": session_id, "metadata": {"user": "ada"}})
    assert created.status_code == 201
    session = created.json()
    assert session["id"] == session_id and session["version"] == 0 and session["tokens_seen"] == 0
    assert session["metadata"] == {"user": "ada"} and session["model"] == "tiny-random"
    assert client.get(f"/v1/sessions/{session_id}").json() == session
    assert client.post("/v1/sessions", json={"id": session_id}).status_code == 409
    listed = client.get("/v1/sessions", params={"limit": 1000}).json()
    assert session_id in [s["id"] for s in listed["data"]]
    assert client.delete(f"/v1/sessions/{session_id}").json()["deleted"] is True
    assert client.get(f"/v1/sessions/{session_id}").status_code == 404
    assert client.delete(f"/v1/sessions/{session_id}").status_code == 404


def test_an_id_is_generated_when_none_is_given(client):
    session = client.post("/v1/sessions", json={}).json()
    assert session["id"].startswith("sess_")


def test_list_pages_in_creation_order(client, session_id):
    ids = [f"{session_id}-{i}" for i in range(5)]
    for one in ids:
        client.post("/v1/sessions", json={"id": one})
    everything = [s["id"] for s in client.get("/v1/sessions", params={"limit": 1000}).json()["data"]]
    assert everything[everything.index(ids[0]) :][:5] == ids
    page = client.get("/v1/sessions", params={"limit": 2, "after": ids[1]}).json()
    assert [s["id"] for s in page["data"]] == ids[2:4] and page["has_more"] and page["last_id"] == ids[3]


def test_every_committed_request_adds_one_version(client, session_id):
    versions = []
    complete(client, session_id)
    versions.append(client.get(f"/v1/sessions/{session_id}").json()["version"])
    client.post(
        f"/v1/sessions/{session_id}/ingest", content="a document", headers={"content-type": "text/plain"}
    )
    versions.append(client.get(f"/v1/sessions/{session_id}").json()["version"])
    versions.append(client.post(f"/v1/sessions/{session_id}/reset").json()["version"])
    assert versions == [1, 2, 3]
    assert client.get(f"/v1/sessions/{session_id}").json()["tokens_seen"] == 0


def test_fork_and_export_import_reproduce_greedy_output(client, session_id):
    complete(client, session_id, prompt="Some history " * 5)
    fork = client.post(f"/v1/sessions/{session_id}/fork", json={"id": session_id + "-fork"})
    assert fork.status_code == 201 and fork.json()["tokens_seen"] > 0
    exported = client.get(f"/v1/sessions/{session_id}/state")
    assert exported.headers["content-type"] == "application/octet-stream"
    imported = client.put(f"/v1/sessions/{session_id}-copy/state", content=exported.content)
    assert imported.status_code == 200 and imported.json()["tokens_seen"] == fork.json()["tokens_seen"]
    original = complete(client, session_id)
    assert complete(client, session_id + "-fork") == original
    assert complete(client, session_id + "-copy") == original


def test_a_fork_is_independent_of_its_source(client, session_id):
    complete(client, session_id)
    client.post(f"/v1/sessions/{session_id}/fork", json={"id": session_id + "-f"})
    complete(client, session_id + "-f", prompt="only the fork hears this " * 4)
    assert client.get(f"/v1/sessions/{session_id}").json()["version"] == 1


@pytest.mark.parametrize(
    "data, status",
    [
        (b"", 400),
        (b"not a state at all", 400),
        ("other model", 422),
        ("batch of 2", 400),
        ("every value 3e38", 400),  # finite, but the model's arithmetic would overflow on it
    ],
)
def test_imports_are_validated(client, session_id, data, status):
    if data == "every value 3e38":
        state = TitansLM.from_pretrained("tiny-random").initial_state(1)
        data = to_bytes(state.map(lambda t: torch.full_like(t, 3.0e38)))
    elif data == "other model":
        data = to_bytes(
            TitansLM(TitansConfig(vocab_size=300, d_model=32, n_heads=2, mem_heads=2)).initial_state(1)
        )
    elif data == "batch of 2":
        data = to_bytes(TitansLM.from_pretrained("tiny-random").initial_state(2))
    response = client.put(f"/v1/sessions/{session_id}/state", content=data)
    assert response.status_code == status, response.text
    assert client.get(f"/v1/sessions/{session_id}").status_code == 404  # nothing was created


def test_a_request_that_would_leave_an_unloadable_state_commits_nothing(client, session_id):
    model = TitansLM.from_pretrained("tiny-random")
    with torch.inference_mode():
        _, state = model(torch.tensor([[5] * 7]))
    state.position = 2**53 - 25  # importable: the largest position is 2^53 - 1
    assert client.put(f"/v1/sessions/{session_id}/state", content=to_bytes(state)).status_code == 200
    answer = client.post(f"/v1/sessions/{session_id}/ingest", content="x" * 40)  # 2^53 + 15 after it
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "state_out_of_range"
    assert session_id in answer.json()["error"]["message"]
    assert client.get(f"/v1/sessions/{session_id}").json()["version"] == 1  # the import only
    assert client.get(f"/v1/sessions/{session_id}/state").status_code == 200  # and it still loads


def test_unknown_sessions_are_404_except_where_named_ids_create(client, session_id):
    for method, path in [
        ("GET", ""),
        ("DELETE", ""),
        ("POST", "/fork"),
        ("POST", "/reset"),
        ("GET", "/state"),
    ]:
        response = client.request(method, f"/v1/sessions/{session_id}{path}")
        assert response.status_code == 404
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("session_not_found", "session_id"), (method, path)


@pytest.mark.parametrize("form", ["text/plain", "json", "multipart"])
def test_ingest_accepts_text_json_and_files(client, session_id, form):
    document = "The passkey is 41213. " * 20
    path = f"/v1/sessions/{session_id}/ingest"
    if form == "text/plain":
        response = client.post(path, content=document, headers={"content-type": "text/plain"})
    elif form == "json":
        response = client.post(path, json={"text": document})
    else:
        response = client.post(path, files={"file": ("doc.txt", document.encode(), "text/plain")})
    result = response.json()
    assert response.status_code == 200, result
    assert result["session_id"] == session_id and result["tokens_ingested"] == len(document.encode())
    assert result["version"] == 1 and result["tokens_per_second"] > 0
    assert result["mean_loss"] > 0 and result["mean_write_strength"] > 0


def ingest_events(server, session_id: str, document: str, query: str = "") -> list[tuple[str, dict]]:
    events = []
    path = f"/v1/sessions/{session_id}/ingest?stream=true{query}"
    with (
        httpx.Client(base_url=server.url, timeout=60) as http,
        http.stream("POST", path, content=document) as response,
    ):
        kind = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    return events


def test_ingest_streams_progress_events_with_the_series_per_bin(server, session_id):
    """Three pieces of 2048 tokens; bins of 64: 32, 32, then 14 whole and the partial last one."""
    events = ingest_events(server, session_id, "x" * 5000)
    progress = [e for k, e in events if k == "progress"]
    assert [p["tokens_done"] for p in progress] == [2048, 4096, 5000]
    assert [p["first_bin"] for p in progress] == [0, 32, 64]
    assert [len(p["loss"]) for p in progress] == [len(p["write_strength"]) for p in progress] == [32, 32, 15]
    assert all(p["bin_tokens"] == 64 for p in progress)
    done = events[-1][1]
    assert events[-1][0] == "done" and done["tokens_ingested"] == 5000
    writes = [w for p in progress for w in p["write_strength"]]
    losses = [loss for p in progress for loss in p["loss"]]
    assert all(w > 0 for w in writes) and all(loss > 0 for loss in losses)
    weights = [64] * 78 + [5000 - 78 * 64]  # the document's mean is the bins' token-weighted mean
    assert sum(w * n for w, n in zip(writes, weights)) / 5000 == pytest.approx(done["mean_write_strength"])
    assert (sum(loss * n for loss, n in zip(losses, weights)) - losses[0]) / 4999 == pytest.approx(
        done["mean_loss"], rel=1e-3
    )


def test_the_bin_size_is_a_query_parameter(server, client, session_id):
    progress = [
        e for k, e in ingest_events(server, session_id, "y" * 2500, "&bin_tokens=1000") if k == "progress"
    ]
    assert [(p["first_bin"], len(p["loss"]), p["bin_tokens"]) for p in progress] == [
        (0, 2, 1000),
        (2, 1, 1000),
    ]
    refused = client.post(f"/v1/sessions/{session_id}/ingest?bin_tokens=0", content="y")
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "bin_tokens"


@pytest.mark.parametrize(
    "content, kind",
    [(b"\xff\xfe", "text/plain"), (b"{}", "application/json"), (b"", "text/plain"), (b"x", "image/png")],
)
def test_bad_documents_are_400(client, session_id, content, kind):
    response = client.post(
        f"/v1/sessions/{session_id}/ingest", content=content, headers={"content-type": kind}
    )
    assert response.status_code == 400 and "error" in response.json()


def test_concurrent_requests_lose_no_update(server):
    """32 requests over 4 sessions at once: every one lands, in order, on its session."""

    async def run():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:

            async def one(i):
                body = {"prompt": f"request {i}", "session_id": f"concurrent-{i % 4}", **GREEDY}
                return (await http.post("/v1/completions", json=body)).status_code

            codes = await asyncio.gather(*(one(i) for i in range(32)))
            sessions = [(await http.get(f"/v1/sessions/concurrent-{k}")).json() for k in range(4)]
        return codes, sessions

    codes, sessions = asyncio.run(run())
    assert codes == [200] * 32
    assert [s["version"] for s in sessions] == [8] * 4


def test_a_session_survives_a_restart(start_server, tmp_path):
    first = start_server(tmp_path / "data")
    with httpx.Client(base_url=first.url, timeout=60) as http:
        complete(http, "durable", prompt="remember this " * 5)
        before = http.get("/v1/sessions/durable").json()
        state = http.get("/v1/sessions/durable/state").content
        http.post("/v1/sessions/durable/fork", json={"id": "twin"})
        expected = complete(http, "twin")
    first.stop()
    second = start_server(tmp_path / "data")
    with httpx.Client(base_url=second.url, timeout=60) as http:
        assert http.get("/v1/sessions/durable").json() == before
        restored = http.get("/v1/sessions/durable/state").content
        assert read_metadata(restored) == read_metadata(state)  # header key order may differ
        for name, tensor in load(state).items():
            assert torch.equal(load(restored)[name], tensor), name
        assert complete(http, "durable") == expected


def test_opposite_forks_at_once_do_not_deadlock(server, session_id):
    a, b = session_id + "-a", session_id + "-b"

    async def run():
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            for one in (a, b):
                await http.post("/v1/sessions", json={"id": one})
            return await asyncio.gather(
                http.post(f"/v1/sessions/{a}/fork", json={"id": b}),
                http.post(f"/v1/sessions/{b}/fork", json={"id": a}),
            )

    assert [r.status_code for r in asyncio.run(run())] == [409, 409]


def test_listing_after_an_unknown_cursor_is_400(client):
    response = client.get("/v1/sessions", params={"after": "no-such-session-anywhere"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "after"


def test_a_session_with_a_ttl_expires(client, session_id):
    assert client.post("/v1/sessions", json={"id": session_id, "ttl_seconds": 1}).json()["ttl_seconds"] == 1
    complete(client, session_id)  # a commit renews the expiry
    assert client.get(f"/v1/sessions/{session_id}").status_code == 200
    time.sleep(2.5)
    assert client.get(f"/v1/sessions/{session_id}").status_code == 404


def test_metrics_count_the_work(client, session_id):
    complete(client, session_id)
    client.post(f"/v1/sessions/{session_id}/ingest", content="some text to ingest")
    metrics = client.get("/metrics").text
    for name in (
        "titans:requests_running",
        "titans:time_to_first_token_seconds_count",
        "titans:inter_token_latency_seconds_count",
        "titans:prompt_tokens_total",
        "titans:generation_tokens_total",
        "titans:ingested_tokens_total",
        'titans:batch_size_count{kind="decode"}',
        "titans:state_save_seconds_count",
    ):
        assert name in metrics, name
    generated = float(
        next(row for row in metrics.splitlines() if row.startswith("titans:generation_tokens_total")).split()[
            -1
        ]
    )
    assert generated >= 10


def test_ids_and_ttls_are_checked(client):
    assert client.put("/v1/sessions/abc%0A/state", content=b"x").status_code == 400  # a trailing newline
    assert client.post("/v1/sessions/abc%0A/ingest", content="x").status_code == 400
    too_long = client.post("/v1/sessions", json={"ttl_seconds": 10**14})
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "ttl_seconds"


def test_the_memory_inspector_shows_how_far_the_memory_moved(client, session_id):
    """A new session sits at the initial memory; reading moves it; a reset brings it back."""
    created = client.post("/v1/sessions", json={"id": session_id}).json()
    fresh = client.get(f"/v1/sessions/{session_id}/memory").json()
    assert fresh["object"] == "session.memory" and fresh["version"] == created["version"] == 0
    assert len(fresh["layers"]) >= 1
    assert all(layer["distance_from_initial"] == 0 and layer["weight_norm"] > 0 for layer in fresh["layers"])
    client.post(f"/v1/sessions/{session_id}/ingest", content="The passkey is 41213. " * 3)  # ends mid-chunk
    moved = client.get(f"/v1/sessions/{session_id}/memory").json()
    session = client.get(f"/v1/sessions/{session_id}").json()
    assert (moved["tokens_seen"], moved["version"]) == (session["tokens_seen"], session["version"]) == (66, 1)
    assert moved["state_bytes"] == session["state_bytes"] > 0
    assert all(layer["distance_from_initial"] > 0 for layer in moved["layers"])
    client.post(f"/v1/sessions/{session_id}/reset")
    reset = client.get(f"/v1/sessions/{session_id}/memory").json()
    assert all(layer["distance_from_initial"] == 0 for layer in reset["layers"])
    missing = client.get("/v1/sessions/no-such-session/memory")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "session_not_found"
