"""The SDK against a real server: every call, its errors, and its retries."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from titans_client import (
    APIConnectionError,
    AsyncTitansClient,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    IngestProgress,
    NotFoundError,
    RateLimitError,
    StateMismatchError,
    TitansClient,
)

GREEDY = {"temperature": 0, "max_tokens": 8}


@pytest.fixture
def client(server):
    with TitansClient(server.url) as made:
        yield made


def fresh_id(prefix: str) -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


def test_a_session_from_creation_to_deletion(client, tmp_path):
    name = fresh_id("life")
    created = client.create_session(name, metadata={"user": "ada"}, ttl_seconds=3600)
    assert (created.id, created.version, created.tokens_seen, created.ttl_seconds) == (name, 0, 0, 3600)
    with pytest.raises(ConflictError) as taken:
        client.create_session(name)
    assert taken.value.status == 409 and taken.value.code == "session_exists"

    assert client.chat(name, "hello", **GREEDY) == client.chat(None, "hello", **GREEDY)
    seen = client.get_session(name)
    assert seen.version == 1 and seen.tokens_seen > 0 and seen.metadata == {"user": "ada"}

    state = client.export_state(name, tmp_path / "state.safetensors")
    assert (tmp_path / "state.safetensors").read_bytes() == state
    copy = client.fork_session(name, name + "-copy")
    assert (copy.tokens_seen, copy.metadata) == (seen.tokens_seen, seen.metadata)
    assert client.reset_session(name).tokens_seen == 0
    assert client.import_state(name, tmp_path / "state.safetensors").tokens_seen == seen.tokens_seen
    assert client.import_state(fresh_id("imported"), state).tokens_seen == seen.tokens_seen

    client.delete_session(name)
    with pytest.raises(NotFoundError, match="no session"):
        client.get_session(name)


def test_sessions_come_in_pages(client):
    ids = {client.create_session(fresh_id("page")).id for _ in range(3)}
    listed, after = [], None
    while True:
        page = client.list_sessions(limit=2, after=after)
        assert len(page.data) <= 2
        listed += [s.id for s in page.data]
        if not page.has_more:
            break
        after = page.last_id
    assert ids <= set(listed) and len(listed) == len(set(listed))


def test_streamed_text_is_the_whole_text(client):
    whole = client.chat(None, "stream me", **GREEDY)
    pieces = list(client.chat(None, "stream me", stream=True, **GREEDY))
    assert "".join(pieces) == whole and len(pieces) > 1
    assert "".join(client.complete(None, "abc", stream=True, **GREEDY)) == client.complete(
        None, "abc", **GREEDY
    )


def test_a_document_is_ingested_with_progress(client, tmp_path, server):
    document = tmp_path / "notes.txt"
    document.write_text("The passkey is 4417. " * 400)
    updates: list[IngestProgress] = []
    name = fresh_id("doc")
    done = client.ingest(name, document, progress=updates.append, bin_tokens=100)
    assert done.tokens_ingested == len(document.read_bytes()) == 8400 and done.version == 1
    assert updates and updates[-1].tokens_done <= done.tokens_ingested == updates[-1].tokens_total
    assert [u.first_bin for u in updates[1:]] == [u.first_bin + len(u.loss) for u in updates[:-1]]
    writes = [w for u in updates for w in u.write_strength]
    assert len(writes) == 84 and sum(writes) / 84 == pytest.approx(done.mean_write_strength)
    assert done.mean_loss > 0 and all(u.bin_tokens == 100 for u in updates)
    layers = client.session_memory(name).layers
    assert layers and all(layer.distance_from_initial > 0 for layer in layers)
    again = client.ingest(name, "more text")  # a str is the text itself
    assert again.version == 2 and client.get_session(name).tokens_seen == done.tokens_ingested + 9


def test_api_errors_carry_the_servers_message(client, tmp_path):
    with pytest.raises(BadRequestError) as bad:
        client.chat(None, "x", max_tokens=0)
    assert bad.value.status == 400 and bad.value.param == "max_tokens"
    with pytest.raises(StateMismatchError) as foreign:
        client.import_state(fresh_id("foreign"), _foreign_state())
    assert foreign.value.status == 422
    with pytest.raises(FileNotFoundError):
        client.ingest("s", Path(tmp_path / "missing.txt"))


def _foreign_state() -> bytes:
    from titans_core import TitansConfig, TitansLM
    from titans_core.state import to_bytes

    other = TitansLM(
        TitansConfig(vocab_size=300, d_model=32, n_layers=1, n_heads=2, mem_heads=2, n_persistent=2)
    )
    return to_bytes(other.initial_state(1))


def test_an_api_key_is_sent(start_server, tmp_path):
    server = start_server(tmp_path / "data", "--api-key", "client-key-0123456789")
    with TitansClient(server.url, api_key="client-key-0123456789") as good:
        assert good.models()[0].id == "tiny-random"
    with TitansClient(server.url, api_key="wrong") as bad, pytest.raises(AuthenticationError) as refused:
        bad.models()
    assert refused.value.code == "invalid_api_key"


def test_a_full_server_is_retried_with_backoff(start_server, tmp_path):
    server = start_server(tmp_path / "data", "--max-queue", "1")
    work = {"max_tokens": 24, "min_tokens": 24, "ignore_eos": True, "temperature": 0}

    async def burst(retries: int):
        async with AsyncTitansClient(server.url, max_retries=retries) as client:
            calls = [client.complete(None, f"load {i}", **work) for i in range(4)]
            return await asyncio.gather(*calls, return_exceptions=True)

    assert any(isinstance(r, RateLimitError) for r in asyncio.run(burst(0)))
    # Retried until each gets its turn, however slow the machine: about one Retry-After second per
    # try, so the bound only ends a run that would otherwise hang
    assert all(isinstance(r, str) and r for r in asyncio.run(burst(300)))


def test_an_unreachable_server_is_a_connection_error():
    with TitansClient("http://127.0.0.1:9", max_retries=1) as client, pytest.raises(APIConnectionError):
        client.models()


def test_a_slow_answer_times_out(client, server):
    with (
        TitansClient(server.url, timeout=0.05) as impatient,
        pytest.raises(APIConnectionError, match="timed out"),
    ):
        impatient.complete(None, "x", max_tokens=64, min_tokens=64, ignore_eos=True)


def test_the_async_client_does_the_same(server, tmp_path):
    async def run():
        async with AsyncTitansClient(server.url) as client:
            name = fresh_id("async")
            await client.create_session(name)
            pieces = [piece async for piece in await client.chat(name, "hi", stream=True, **GREEDY)]
            assert "".join(pieces) == await client.chat(None, "hi", **GREEDY)
            updates = []
            await client.ingest(name, "a document " * 300, progress=updates.append, bin_tokens=1000)
            session = await client.get_session(name)
            assert session.version == 2 and sum(len(u.write_strength) for u in updates) == 4  # 3,300 tokens
            memory = await client.session_memory(name)
            assert (memory.version, memory.tokens_seen) == (2, session.tokens_seen)
            state = await client.export_state(name, tmp_path / "s")
            copy = await client.import_state(fresh_id("async-copy"), state)
            assert copy.tokens_seen == session.tokens_seen
            assert name in [s.id for s in (await client.list_sessions(limit=100)).data]
            await client.delete_session(name)
            with pytest.raises(NotFoundError):
                await client.reset_session(name)

    asyncio.run(run())


def test_an_error_inside_a_stream_keeps_its_status(start_server, tmp_path):
    server = start_server(tmp_path / "data", "--max-sessions-per-tenant", "1")
    with TitansClient(server.url) as client:
        client.create_session("only")
        with pytest.raises(RateLimitError) as refused:  # the stream began before the session was made
            list(client.chat("another", "hi", stream=True, max_tokens=2))
        assert refused.value.status == 429 and refused.value.code == "too_many_sessions"
