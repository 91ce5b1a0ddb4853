"""A session's state: what continuing its stream needs, batched for the engine, as safetensors bytes.

The bytes are untrusted on import (they come over HTTP and out of Redis), so :func:`from_bytes`
accepts exactly the tensors a state of the given config at the recorded position has: names,
shapes, dtype and finiteness are all checked, and nothing is ever unpickled.
"""

from __future__ import annotations

import ctypes
import json
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from safetensors.torch import load
from torch import Tensor

from titans_core.config import TitansConfig
from titans_core.memory import MemoryState
from titans_core.ops import OpenChunk

FORMAT = "titans-state"
FORMAT_VERSION = "1"
RESERVED_METADATA = ("format", "format_version", "config_hash", "position")
MAX_POSITION = 2**53  # float64 RoPE angles tell positions apart up to here
# The largest magnitude a valid state holds. A served state stays far below it (the default's
# largest value after a million streamed tokens is in the model card), and the model's float32
# arithmetic stays clear of overflow under it: the widest product a state value enters is a
# 256-term dot product whose square an RMS norm then takes, (256 * 1e6)^2 ~ 1e17 << 3.4e38.
STATE_MAX_ABS = 1e6


class StateMismatchError(ValueError):
    """A well-formed state of another model or config: valid bytes, wrong model."""


@dataclass
class LayerState:
    """One block's state: its memory, the attention cache and, for MAC, the open segment's memory.

    ``cache`` holds rotated keys and values ``[B, n_heads, L, head_dim]`` that later queries may
    see: the last ``window - 1`` tokens (MAG, MAL), or the open segment's retrieved and own tokens
    interleaved (MAC). ``segment_weights`` is the memory as it was when MAC's open segment began.
    None stands for empty.
    """

    memory: MemoryState
    cache: tuple[Tensor, Tensor] | None = None
    segment_weights: list[Tensor] | None = None


@dataclass
class ModelState:
    """Per layer a :class:`LayerState`, and the tokens consumed so far; batched along dimension 0."""

    layers: list[LayerState]
    position: int
    config_hash: str

    @property
    def batch_size(self) -> int:
        return self.layers[0].memory.conv_tail.shape[0]

    def named_tensors(self) -> dict[str, Tensor]:
        """Every tensor by its stable name (the names of the safetensors form)."""
        named: dict[str, Tensor] = {}
        for i, layer in enumerate(self.layers):
            memory, prefix = layer.memory, f"layers.{i}"
            _put(named, f"{prefix}.memory.weights", memory.weights)
            _put(named, f"{prefix}.memory.momentum", memory.momentum)
            named[f"{prefix}.memory.conv_tail"] = memory.conv_tail
            chunk = memory.open_chunk
            if chunk is not None:
                _put(named, f"{prefix}.memory.open.inputs", chunk.inputs)
                _put(named, f"{prefix}.memory.open.deltas", chunk.deltas)
                for name in ("g", "s", "beta", "f", "m"):
                    if getattr(chunk, name) is not None:
                        named[f"{prefix}.memory.open.{name}"] = getattr(chunk, name)
            if layer.cache is not None:
                named[f"{prefix}.keys"], named[f"{prefix}.values"] = layer.cache
            _put(named, f"{prefix}.segment_weights", layer.segment_weights)
        return named

    def nbytes(self) -> int:
        """Bytes of tensor data: what storing or moving this state costs."""
        return sum(t.numel() * t.element_size() for t in self.named_tensors().values())

    def map(self, fn: Callable[[Tensor], Tensor]) -> ModelState:
        """The same state with ``fn`` applied to every tensor (``to(device)``, ``detach``, slicing)."""
        return _assemble({k: fn(t) for k, t in self.named_tensors().items()}, self)

    @classmethod
    def stack(cls, states: list[ModelState]) -> ModelState:
        """One batch of several states, which must be of one config and at one position."""
        if not states:
            raise ValueError("stack needs at least one state")
        first = states[0]
        for other in states[1:]:
            if other.config_hash != first.config_hash or other.position != first.position:
                raise ValueError(
                    "stacked states must share config and position, got "
                    f"{first.config_hash}@{first.position} and {other.config_hash}@{other.position}"
                )
        named = [s.named_tensors() for s in states]
        return _assemble({k: torch.cat([n[k] for n in named]) for k in named[0]}, first)

    def unstack(self) -> list[ModelState]:
        """One state per batch entry (each owns its tensors, so one may be stored while others run)."""
        return [self.map(lambda t, i=i: t[i : i + 1].clone()) for i in range(self.batch_size)]


def to_bytes(state: ModelState, metadata: dict[str, str] | None = None) -> bytes:
    """The state as safetensors bytes; ``metadata`` (strings) rides along in the header."""
    extra = dict(metadata or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
        raise ValueError("state metadata maps strings to strings")
    clash = sorted(set(extra) & set(RESERVED_METADATA))
    if clash:
        raise ValueError(f"metadata keys {', '.join(clash)} are reserved")
    header = {
        **extra,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config_hash": state.config_hash,
        "position": str(state.position),
    }
    return _safetensors(state.named_tensors(), header)


SAFETENSORS_DTYPES = {
    torch.float32: "F32",
    torch.float64: "F64",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
}


def _safetensors(tensors: dict[str, Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors file of ``tensors`` in one copy of their bytes.

    ``safetensors.torch.save`` wants contiguous tensors of their own (a state's are often views)
    and copies them twice more on the way: 17 ms for the default model's 8.9 MB state against
    2 ms here, with no numpy (the core does not depend on it). The layout is the format's own (a
    little-endian u64 header size, the JSON header padded with spaces to 8 bytes, the data in
    header order), and safetensors reads it back (tested).
    """
    header: dict[str, object] = {"__metadata__": metadata}
    offset, pieces, held = 0, [], []
    if sys.byteorder != "little":  # the format is little-endian; we write memory as it lies
        raise RuntimeError("writing state bytes needs a little-endian machine")
    for name, tensor in tensors.items():
        if tensor.dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"state tensor {name} is {tensor.dtype}; states are floating point")
        flat = tensor.detach().to("cpu").reshape(-1)
        if flat.stride(0) != 1:  # one element left with a slice's stride: "contiguous", but not bytes
            flat = flat.clone(memory_format=torch.contiguous_format)
        size = flat.numel() * flat.element_size()
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
        held.append(flat)  # the buffers below borrow these tensors' memory until the join
        pieces.append((ctypes.c_char * size).from_address(flat.data_ptr()))
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return b"".join([struct.pack("<Q", len(head)), head, *pieces])


def read_metadata(data: bytes) -> dict[str, str]:
    """The header metadata of state bytes (checked to be a state of this format, not validated)."""
    if not isinstance(data, bytes | bytearray | memoryview) or len(data) < 8:
        raise ValueError("state bytes are empty or truncated")
    (size,) = struct.unpack("<Q", bytes(data[:8]))
    if size > len(data) - 8:
        raise ValueError("state bytes are truncated: the header runs past the end")
    try:
        header = json.loads(bytes(data[8 : 8 + size]))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ValueError(f"state bytes have no valid safetensors header: {error}") from error
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ValueError("bytes are safetensors but not a Titans state (no 'titans-state' format tag)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"state format version {metadata.get('format_version')!r} is not supported "
            f"(this library reads version {FORMAT_VERSION})"
        )
    return metadata


def from_bytes(data: bytes, config: TitansConfig, dtype: torch.dtype = torch.float32) -> ModelState:
    """Parse and validate state bytes for a model of ``config``; any defect raises ValueError.

    A valid state of another config raises :class:`StateMismatchError` (a ValueError).
    """
    metadata = read_metadata(data)
    if metadata.get("config_hash") != config.fingerprint():
        raise StateMismatchError(
            f"state belongs to a model with config hash {metadata.get('config_hash')!r}; "
            f"this model's is {config.fingerprint()!r}"
        )
    position = metadata.get("position", "")
    if (
        not (isinstance(position, str) and position.isascii() and position.isdigit())
        or int(position) >= MAX_POSITION
    ):
        raise ValueError(f"state position {position!r} is not an integer in [0, 2^53)")
    try:
        tensors = load(bytes(data))
    except SafetensorError as error:
        raise ValueError(f"state bytes are not valid safetensors: {error}") from error
    if not tensors:
        raise ValueError("state holds no tensors")
    batch = next(iter(tensors.values())).shape[0] if next(iter(tensors.values())).dim() else 0
    if batch < 1:
        raise ValueError("state tensors must have a batch dimension of at least 1")
    expected = state_shapes(config, int(position), batch)
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ValueError(
            f"state at position {position} does not fit this config: "
            f"missing {_few(missing)}, unexpected {_few(extra)}"
        )
    for name, tensor in tensors.items():
        if tensor.dtype != dtype:
            raise ValueError(f"state tensor {name} is {tensor.dtype}, expected {dtype}")
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(
                f"state tensor {name} has shape {list(tensor.shape)}, expected {list(expected[name])}"
            )
    check_values(tensors)
    template = ModelState([], int(position), config.fingerprint())
    return _assemble(tensors, template, config.n_layers)


def check_values(tensors: dict[str, Tensor]) -> None:
    """Every value finite and within ``STATE_MAX_ABS``: one min-max reduction per tensor."""
    for name, tensor in tensors.items():
        if tensor.numel() == 0:
            continue
        low, high = torch.aminmax(tensor)
        if not (float(low) >= -STATE_MAX_ABS and float(high) <= STATE_MAX_ABS):  # NaN fails both
            raise ValueError(
                f"state tensor {name} holds values that are not finite or beyond +-{STATE_MAX_ABS:g}"
            )


def check_state(state: ModelState) -> None:
    """What :func:`from_bytes` would accept of ``state``'s position and values: checked before a
    state is stored, so that nothing is stored that would not load again."""
    if not 0 <= state.position < MAX_POSITION:
        raise ValueError(f"the state's position {state.position} is past the largest, 2^53 - 1")
    check_values(state.named_tensors())


def _few(names: list[str], shown: int = 5) -> str:
    """A list of names for a message, cut short: an error must not echo a hostile header."""
    if not names:
        return "nothing"
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def state_shapes(config: TitansConfig, position: int, batch: int) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor of a state of ``config`` after ``position`` tokens."""
    heads, head_dim = config.mem_heads, config.d_model // config.mem_heads
    sizes = [head_dim] + [config.mem_expansion * head_dim] * (config.mem_layers - 1) + [head_dim]
    matrices = [(batch, heads, a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    rows = position % config.chunk_size
    if config.variant == "MAC":
        cached = 2 * (position % config.segment_size)
    elif config.variant in ("MAG", "MAL"):
        cached = min(position, config.window - 1)
    else:
        cached = 0
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(config.n_layers):
        prefix = f"layers.{i}"
        for j, shape in enumerate(matrices):
            shapes[f"{prefix}.memory.weights.{j}"] = shape
            if config.use_momentum:
                shapes[f"{prefix}.memory.momentum.{j}"] = shape
            if rows:
                shapes[f"{prefix}.memory.open.inputs.{j}"] = (batch, heads, rows, shape[2])
                shapes[f"{prefix}.memory.open.deltas.{j}"] = (batch, heads, rows, shape[3])
            if config.variant == "MAC" and position % config.segment_size:
                shapes[f"{prefix}.segment_weights.{j}"] = shape
        shapes[f"{prefix}.memory.conv_tail"] = (batch, config.conv_kernel - 1, 3 * config.d_model)
        if rows:
            shapes[f"{prefix}.memory.open.g"] = (batch, heads, rows)
            if config.use_momentum:
                shapes[f"{prefix}.memory.open.s"] = (batch, heads, rows)
                shapes[f"{prefix}.memory.open.f"] = (batch, heads)
                shapes[f"{prefix}.memory.open.m"] = (batch, heads)
            if config.use_decay:
                shapes[f"{prefix}.memory.open.beta"] = (batch, heads)
        if cached:
            for name in ("keys", "values"):
                shapes[f"{prefix}.{name}"] = (batch, config.n_heads, cached, config.head_dim)
    return shapes


def _put(named: dict[str, Tensor], prefix: str, tensors: list[Tensor] | None) -> None:
    for j, tensor in enumerate(tensors or []):
        named[f"{prefix}.{j}"] = tensor


def _take(named: dict[str, Tensor], prefix: str) -> list[Tensor] | None:
    found = []
    while f"{prefix}.{len(found)}" in named:
        found.append(named[f"{prefix}.{len(found)}"])
    return found or None


def _assemble(named: dict[str, Tensor], like: ModelState, n_layers: int | None = None) -> ModelState:
    """The state whose :meth:`ModelState.named_tensors` is ``named``; ``like`` gives the rest."""
    layers = []
    for i in range(len(like.layers) if n_layers is None else n_layers):
        prefix = f"layers.{i}"
        chunk = None
        if f"{prefix}.memory.open.g" in named:
            scalars = [named.get(f"{prefix}.memory.open.{n}") for n in ("g", "s", "beta", "f", "m")]
            chunk = OpenChunk(
                _take(named, f"{prefix}.memory.open.inputs"),
                _take(named, f"{prefix}.memory.open.deltas"),
                *scalars,
            )
        memory = MemoryState(
            _take(named, f"{prefix}.memory.weights"),
            _take(named, f"{prefix}.memory.momentum"),
            chunk,
            named[f"{prefix}.memory.conv_tail"],
            like.position,
        )
        cache = (named[f"{prefix}.keys"], named[f"{prefix}.values"]) if f"{prefix}.keys" in named else None
        layers.append(LayerState(memory, cache, _take(named, f"{prefix}.segment_weights")))
    return ModelState(layers, like.position, like.config_hash)
