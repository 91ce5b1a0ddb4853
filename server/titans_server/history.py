"""A session's kept versions: the last N committed states before the current one, within a byte budget.

Kept beside the session under its hash tag (one slot, so the commit script that replaces the state
moves the outgoing one into the history in the same atomic step): ``titans:{<tenant>:<session>}:history``
(a hash: version -> what made it, as JSON) and ``...:history:states`` (a hash: version -> state bytes;
empty: the initial memory). They expire and are deleted with the session, and a resent commit (which
finds its own revision) pushes nothing. A kept version holds the state and the transcript hash chain,
so a restore also restores which messages the session has consumed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# What made a version: the kinds of call that commit.
KINDS = ("create", "chat", "completion", "ingest", "import", "fork", "reset", "restore")

# The outgoing version's meta fields a kept entry records (HMGET order, JSON-encoded as an array).
_FIELDS = (
    "version",
    "updated_at",
    "tokens_seen",
    "made_by",
    "request_id",
    "chain_hash",
    "chain_length",
    "state_bytes",
    "restored_from",
)

# Part of the commit script (see store._COMMIT), after the version check, before the new state is
# written. KEYS: meta, state, history, history states. ARGV[5]: versions to keep (0: none),
# ARGV[6]: the history's byte budget (-1: none), ARGV[7]: bytes the session may hold in all under
# its tenant's quota (-1: no quota). Pushes the outgoing version (if any), drops the oldest past the
# count or the budget, and leaves ``history_bytes``.
PUSH = (
    """
local keep, budget, room = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
if room >= 0 and (budget < 0 or room - #ARGV[2] < budget) then budget = room - #ARGV[2] end
if current == false or keep <= 0 then
  redis.call('DEL', KEYS[3], KEYS[4])
else
  local old = redis.call('HMGET', KEYS[1], """
    + ", ".join(f"'{name}'" for name in _FIELDS)
    + """)
  redis.call('HSET', KEYS[3], old[1], cjson.encode(old))
  redis.call('HSET', KEYS[4], old[1], redis.call('GET', KEYS[2]) or '')
end
local versions = redis.call('HKEYS', KEYS[3])
table.sort(versions, function(a, b) return tonumber(a) < tonumber(b) end)
local sizes, history_bytes = {}, 0
for i, v in ipairs(versions) do
  sizes[i] = redis.call('HSTRLEN', KEYS[4], v)
  history_bytes = history_bytes + sizes[i]
end
local first = 1
while first <= #versions and (#versions - first + 1 > keep or (budget >= 0 and history_bytes > budget)) do
  redis.call('HDEL', KEYS[3], versions[first])
  redis.call('HDEL', KEYS[4], versions[first])
  history_bytes = history_bytes - sizes[first]
  first = first + 1
end
"""
)

# KEYS: meta, history. Both at once (a script: no commit lands between the two reads).
READ = "return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}"
# KEYS: history, history states. ARGV: version. The entry and its state bytes, or nil.
READ_ONE = """
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if not entry then return false end
return {entry, redis.call('HGET', KEYS[2], ARGV[1]) or ''}
"""


@dataclass(frozen=True)
class Policy:
    """How much history sessions keep: ``versions`` (a session's own field overrides it), within
    ``session_bytes`` per session; ``tenant_bytes`` bounds a tenant's states and history together
    (0: no bound)."""

    versions: int = 4
    session_bytes: int = 64 << 20
    tenant_bytes: int = 0

    def keep(self, session_versions: int) -> int:
        return self.versions if session_versions < 0 else session_versions


@dataclass
class Version:
    """One version of a session: the current one or a kept one."""

    version: int
    created_at: float
    tokens_seen: int
    made_by: str
    request_id: str
    chain_hash: str
    chain_length: int
    state_bytes: int
    restored_from: int | None = None

    @classmethod
    def from_json(cls, raw: bytes) -> Version:
        """A kept entry (written by :data:`PUSH`)."""
        return cls._of(dict(zip(_FIELDS, json.loads(raw))))

    @classmethod
    def from_meta(cls, fields: dict[bytes, bytes]) -> Version:
        """The current version, from the session's meta hash."""
        return cls._of({name: fields.get(name.encode(), b"").decode() for name in _FIELDS})

    @classmethod
    def _of(cls, values: dict) -> Version:
        return cls(
            version=int(values["version"]),
            created_at=float(values["updated_at"] or 0),
            tokens_seen=int(values["tokens_seen"] or 0),
            made_by=values["made_by"] or "",
            request_id=values["request_id"] or "",
            chain_hash=values["chain_hash"] or "",
            chain_length=int(values["chain_length"] or 0),
            state_bytes=int(values["state_bytes"] or 0),
            restored_from=_version_or_none(values["restored_from"]),
        )

    def public(self, current: bool) -> dict:
        """The version as the API lists it."""
        return {
            "object": "session.version",
            "version": self.version,
            "created_at": int(self.created_at),
            "tokens_seen": self.tokens_seen,
            "made_by": self.made_by or None,
            "request_id": self.request_id or None,
            "state_bytes": self.state_bytes,
            "restored_from": self.restored_from,
            "current": current,
        }


def _version_or_none(value) -> int | None:
    return None if value in (None, False, "", "-1") else int(value)
