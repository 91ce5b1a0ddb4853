"""What the API returns, as typed objects."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # typing.Self from Python 3.11
    from typing_extensions import Self


class _FromJson:
    @classmethod
    def from_json(cls, data: dict) -> Self:
        """The fields of ``cls`` found in ``data``: newer servers may add fields, older SDKs ignore them."""
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


@dataclass(frozen=True)
class Session(_FromJson):
    """A session: its memory has seen ``tokens_seen`` tokens over ``version`` committed requests."""

    id: str
    model: str
    tokens_seen: int
    version: int
    created_at: int
    updated_at: int
    state_bytes: int
    metadata: dict[str, str] = field(default_factory=dict)
    ttl_seconds: int | None = None
    history_bytes: int = 0
    history_versions: int | None = None  # None: the server's default


@dataclass(frozen=True)
class SessionVersion(_FromJson):
    """One version of a session: the current one, or a kept one that ``restore`` brings back.

    ``made_by``: the call that committed it (chat, completion, ingest, import, fork, reset, restore,
    create); ``request_id``: its X-Request-Id; ``restored_from``: a restore's source version."""

    version: int
    created_at: int
    tokens_seen: int
    state_bytes: int
    current: bool
    made_by: str | None = None
    request_id: str | None = None
    restored_from: int | None = None


@dataclass(frozen=True)
class SessionPage:
    """One page of sessions; pass ``last_id`` as ``after`` for the next while ``has_more``."""

    data: list[Session]
    has_more: bool
    last_id: str | None

    @classmethod
    def from_json(cls, data: dict) -> SessionPage:
        return cls([Session.from_json(s) for s in data["data"]], data["has_more"], data.get("last_id"))


@dataclass(frozen=True)
class IngestProgress(_FromJson):
    """How far an ingestion is, and the bins of ``bin_tokens`` tokens it completed since the last
    update, from bin ``first_bin`` on: per bin the model's mean next-token ``loss`` (nats; None where
    no token had a prediction) and the memory's mean ``write_strength`` (how much the tokens moved it)."""

    tokens_done: int
    tokens_total: int
    tokens_per_second: float
    bin_tokens: int = 64
    first_bin: int = 0
    loss: list[float | None] = field(default_factory=list)
    write_strength: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class IngestResult(_FromJson):
    """A document in the session's memory: its mean next-token loss (nats) and mean write strength."""

    session_id: str
    tokens_ingested: int
    version: int
    seconds: float
    tokens_per_second: float | None
    mean_loss: float | None
    mean_write_strength: float | None


@dataclass(frozen=True)
class LayerMemory(_FromJson):
    """One layer's memory: its norm, and its distance from the model's initial memory."""

    layer: int
    weight_norm: float
    distance_from_initial: float


@dataclass(frozen=True)
class SessionMemory:
    """How far a session's memory has moved, per layer."""

    session_id: str
    tokens_seen: int
    version: int
    state_bytes: int
    created_at: int
    updated_at: int
    layers: list[LayerMemory]

    @classmethod
    def from_json(cls, data: dict) -> SessionMemory:
        names = {f.name for f in fields(cls)} - {"layers"}
        layers = [LayerMemory.from_json(layer) for layer in data["layers"]]
        return cls(**{key: value for key, value in data.items() if key in names}, layers=layers)


@dataclass(frozen=True)
class Model(_FromJson):
    id: str
    created: int
    owned_by: str
