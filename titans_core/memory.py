"""The neural long-term memory module: projections, gates and a test-time-trained MLP per head.

``y, state = NeuralMemory(...)(x, state)`` reads and writes the memory for every token of ``x``.
Feeding a sequence at once, in pieces, or token by token gives the same outputs and state: chunk
boundaries are absolute positions in the stream, and the state carries the open chunk.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from titans_core._validation import describe
from titans_core.ops import OpenChunk, commit_chunk, memory_step, memory_stream
from titans_core.ops.chunked_memory import check_max_surprise
from titans_core.stacking import Stacker


@dataclass
class MemoryState:
    """What continuing a stream needs, batched along dimension 0 of every tensor.

    ``weights`` and ``momentum`` are the memory at the start of the open chunk (``[B, H, d_in,
    d_out]`` per layer; momentum None without momentum); ``open_chunk`` that chunk's rows so far,
    as the current memory factored over its start (None at a chunk boundary); ``conv_tail`` the
    last ``kernel - 1`` projections before the causal convolution (``[B, kernel - 1, 3 * heads *
    head_dim]``); ``position`` the tokens consumed so far.
    """

    weights: list[Tensor]
    momentum: list[Tensor] | None
    open_chunk: OpenChunk | None
    conv_tail: Tensor
    position: int

    def tensors(self) -> list[Tensor]:
        """Every tensor held."""
        chunk = [] if self.open_chunk is None else self.open_chunk.tensors()
        return [*self.weights, *(self.momentum or []), *chunk, self.conv_tail]

    def nbytes(self) -> int:
        """Bytes held by the state's tensors (what storing or moving it costs)."""
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def current_weights(self) -> list[Tensor]:
        """The memory as of the last token (``weights`` are at the open chunk's start)."""
        if self.open_chunk is None:
            return self.weights
        return commit_chunk(self.weights, self.momentum, self.open_chunk)[0]

    def map(self, fn: Callable[[Tensor], Tensor]) -> MemoryState:
        """The same state with ``fn`` applied to every tensor (``detach``, ``to(device)``, slicing)."""
        return MemoryState(
            [fn(w) for w in self.weights],
            None if self.momentum is None else [fn(s) for s in self.momentum],
            None if self.open_chunk is None else self.open_chunk.map(fn),
            fn(self.conv_tail),
            self.position,
        )


class WriteLog:
    """The write strength of every token fed while recording (:meth:`TitansLM.recording_writes`):
    ``theta_t |u_t|``, the size of the surprise each token wrote into each layer's memory, per head."""

    def __init__(self, layers: int):
        self._pieces: list[list[Tensor]] = [[] for _ in range(layers)]

    def recorder(self, layer: int) -> Callable[[Tensor], None]:
        return self._pieces[layer].append

    def strengths(self) -> Tensor:
        """``[B, T]``: each token's write strength averaged over layers and heads, and forgotten."""
        if not any(self._pieces):
            raise ValueError("no token was fed while recording")
        per_layer = [torch.cat(pieces, dim=-1).mean(dim=1) for pieces in self._pieces]
        for pieces in self._pieces:
            pieces.clear()
        return torch.stack(per_layer).mean(dim=0)


class NeuralMemory(nn.Module):
    """Titans' neural long-term memory (Behrouz et al., 2025, §3.1) with exact chunked updates.

    Per token: ``q, k, v`` from linear projections, each through a causal depthwise convolution and
    SiLU, with ``q`` and ``k`` L2-normalised per head; gates ``theta`` in ``(0, max_lr)``, ``eta`` and
    ``alpha`` in ``(0, 1)``. Each head's memory is an MLP (``depth`` layers, hidden size
    ``expansion * head_dim``) starting from learned weights; its reads are RMS-normalised per head
    and projected back to ``dim``. No token's gradient is longer than ``max_surprise`` (the divergence
    guard of :mod:`titans_core.ops.chunked_memory`; None: unguarded).
    """

    piece_tokens = 4096  # inputs longer than this are processed in pieces of this many tokens

    def __init__(
        self,
        dim: int,
        heads: int = 1,
        depth: int = 2,
        expansion: int = 4,
        chunk_size: int = 64,
        use_momentum: bool = True,
        use_decay: bool = True,
        head_dim: int | None = None,
        max_lr: float = 0.1,
        conv_kernel: int = 4,
        max_surprise: float | None = 10.0,
    ):
        super().__init__()
        for name, value in (
            ("dim", dim),
            ("heads", heads),
            ("depth", depth),
            ("expansion", expansion),
            ("chunk_size", chunk_size),
            ("conv_kernel", conv_kernel),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if head_dim is None:
            if dim % heads:
                raise ValueError(f"dim ({dim}) must be divisible by heads ({heads}) unless head_dim is given")
            head_dim = dim // heads
        if not (isinstance(head_dim, int) and head_dim >= 1):
            raise ValueError(f"head_dim must be a positive integer, got {head_dim!r}")
        if not max_lr > 0:
            raise ValueError(f"max_lr must be positive, got {max_lr!r}")
        check_max_surprise(max_surprise)
        self.max_surprise = max_surprise
        self.on_write: Callable[[Tensor], None] | None = None  # see :class:`WriteLog`
        self.dim, self.heads, self.head_dim = dim, heads, head_dim
        self.chunk_size, self.max_lr = chunk_size, max_lr
        self.use_momentum, self.use_decay = use_momentum, use_decay
        inner = heads * head_dim
        gates = 1 + use_momentum + use_decay
        # One projection for q, k, v and the gates: one matmul per step, which decoding feels.
        self.to_inputs = nn.Linear(dim, 3 * inner + gates * heads)
        # The causal depthwise convolution over q, k, v: taps[-1] weighs the current token.
        bound = conv_kernel**-0.5
        self.conv_taps = nn.Parameter(torch.empty(conv_kernel, 3 * inner).uniform_(-bound, bound))
        self.conv_bias = nn.Parameter(torch.empty(3 * inner).uniform_(-bound, bound))
        sizes = [head_dim] + [expansion * head_dim] * (depth - 1) + [head_dim]
        self.initial_weights = nn.ParameterList(
            nn.Parameter(torch.randn(heads, d_in, d_out) / d_in**0.5)
            for d_in, d_out in zip(sizes[:-1], sizes[1:])
        )
        self.norm = nn.RMSNorm(head_dim)
        self.to_out = nn.Linear(inner, dim, bias=False)
        # Batched decoding restacks every session's chunk-start weights and momentum per step.
        self._stackers = ([Stacker() for _ in range(depth)], [Stacker() for _ in range(depth)])
        with torch.no_grad():
            # Start with strong momentum, little forgetting and steps small enough to be stable on
            # any input: a chunk of b identical unit keys moves the memory about b theta / (1 - eta)
            # times the gradient, and the squared loss overshoots (then diverges) from 1 on. Start
            # at 1/2: theta = (1 - eta) / (2 b).
            momentum_bias, decay_bias = 2.0, -9.0
            eta = torch.sigmoid(torch.tensor(momentum_bias)).item() if use_momentum else 0.0
            theta = min((1 - eta) / (2 * chunk_size), max_lr / 2)
            gate_bias = self.to_inputs.bias[3 * inner :].view(gates, heads)
            gate_bias[0].fill_(math.log(theta / (max_lr - theta)))
            gate_bias[1:].copy_(
                torch.tensor([momentum_bias] * use_momentum + [decay_bias] * use_decay).unsqueeze(-1)
            )

    def gate_rows(self) -> slice:
        """The rows of ``to_inputs`` (weight and bias) that make the gates ``theta, eta, alpha``."""
        return slice(3 * self.heads * self.head_dim, None)

    def initial_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> MemoryState:
        """The state before any token: the learned initial memory, zero momentum, no open chunk."""
        # Copies (gradients still flow): a state must not change when the parameters are trained on.
        weights = [
            w.to(device=device, dtype=dtype).expand(batch_size, *w.shape).clone()
            for w in self.initial_weights
        ]
        momentum = [torch.zeros_like(w) for w in weights] if self.use_momentum else None
        tail = torch.zeros(
            batch_size,
            self.conv_taps.shape[0] - 1,
            self.conv_taps.shape[1],
            device=device,
            dtype=dtype or self.to_out.weight.dtype,
        )
        return MemoryState(weights, momentum, None, tail, 0)

    def forward(self, x: Tensor, state: MemoryState | None = None) -> tuple[Tensor, MemoryState]:
        """Read and update the memory for ``x`` ``[B, T, dim]``; returns ``[B, T, dim]`` and the new state."""
        weight = self.to_out.weight
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must be a tensor [B, T, {self.dim}], got {describe(x)}")
        if x.dtype != weight.dtype or x.device != weight.device:
            raise ValueError(
                f"x must be {weight.dtype} on {weight.device} like the parameters, got {describe(x)}"
            )
        if state is None:
            state = self.initial_state(x.shape[0], x.device, x.dtype)
        else:
            self._check_state(state, x)
        # Streaming is exact for any split: long inputs go through in whole-chunk pieces, so the
        # intermediates stay cache-sized and memory does not grow beyond x and y themselves.
        piece_tokens = max(self.chunk_size, self.piece_tokens // self.chunk_size * self.chunk_size)
        if x.shape[1] <= piece_tokens:
            return self._forward_piece(x, state)
        outputs = []
        for piece in x.split(piece_tokens, dim=1):
            y, state = self._forward_piece(piece, state)
            outputs.append(y)
        return torch.cat(outputs, dim=1), state

    def _check_state(self, state: MemoryState, x: Tensor) -> None:
        """A state of another batch, layout or chunk size would silently compute garbage: refuse it."""
        tail = (x.shape[0], self.conv_taps.shape[0] - 1, self.conv_taps.shape[1])
        if not isinstance(state, MemoryState) or tuple(state.conv_tail.shape) != tail:
            raise ValueError(
                f"state must be a MemoryState for a batch of {x.shape[0]} with a conv tail {list(tail)}"
            )
        if state.conv_tail.dtype != x.dtype or state.conv_tail.device != x.device:
            raise ValueError(f"state must be {x.dtype} on {x.device} like x, got {describe(state.conv_tail)}")
        open_rows = 0 if state.open_chunk is None else state.open_chunk.length
        if (
            not isinstance(state.position, int)
            or state.position < 0
            or open_rows != state.position % self.chunk_size
        ):
            raise ValueError(
                f"state at position {state.position!r} holds {open_rows} open rows: "
                f"not a state of a memory with chunk_size {self.chunk_size}"
            )

    def _forward_piece(self, x: Tensor, state: MemoryState) -> tuple[Tensor, MemoryState]:
        length = x.shape[1]
        projected = self.to_inputs(x)
        inner = 3 * self.heads * self.head_dim
        q, k, v, tail = self._qkv(projected[..., :inner], state.conv_tail)
        theta, eta, alpha = self._gates(projected[..., inner:])
        y, weights, momentum, open_chunk = memory_stream(
            q,
            k,
            v,
            theta,
            eta,
            alpha,
            state.weights,
            state.momentum,
            self.chunk_size,
            state.open_chunk,
            max_surprise=self.max_surprise,
            on_write=self.on_write,
        )
        return self.readout(y), MemoryState(weights, momentum, open_chunk, tail, state.position + length)

    def decode(self, x: Tensor, states: list[MemoryState]) -> tuple[Tensor, list[MemoryState]]:
        """One token for each of ``B`` streams at positions of their own (``x`` ``[B, 1, dim]``).

        Exactly what ``B`` calls of :meth:`forward` give, in one batch: the open chunks are
        left-padded with rows that add nothing, and each stream's chunk closes when it is full.
        """
        if len(states) != x.shape[0]:
            raise ValueError(f"x holds {x.shape[0]} streams but {len(states)} states were given")
        for row, state in enumerate(states):
            self._check_state(state, x[row : row + 1])
        projected = self.to_inputs(x)
        inner = 3 * self.heads * self.head_dim
        q, k, v, tail = self._qkv(projected[..., :inner], torch.cat([s.conv_tail for s in states]))
        theta, eta, alpha = self._gates(projected[..., inner:])
        weights = [
            stack(list(layer)) for stack, layer in zip(self._stackers[0], zip(*(s.weights for s in states)))
        ]
        momentum = None
        if self.use_momentum:
            parts = zip(*(s.momentum for s in states))
            momentum = [stack(list(layer)) for stack, layer in zip(self._stackers[1], parts)]
        open_chunk = _pad_chunks([s.open_chunk for s in states], weights, q)
        y, open_chunk = memory_step(
            q,
            k,
            v,
            theta,
            eta,
            alpha,
            weights,
            momentum,
            self.chunk_size,
            open_chunk,
            max_surprise=self.max_surprise,
            on_write=self.on_write,
        )
        new_states = []
        for row, state in enumerate(states):
            rows = 1 + (0 if state.open_chunk is None else state.open_chunk.length)
            pick = lambda t, row=row: t[row : row + 1]  # noqa: E731
            chunk = open_chunk.map(pick)
            chunk = OpenChunk(
                [t[:, :, -rows:] for t in chunk.inputs],
                [t[:, :, -rows:] for t in chunk.deltas],
                chunk.g[..., -rows:],
                None if chunk.s is None else chunk.s[..., -rows:],
                chunk.beta,
                chunk.f,
                chunk.m,
            )
            own_weights, own_momentum = state.weights, state.momentum
            if rows == self.chunk_size:
                own_weights, own_momentum = commit_chunk(own_weights, own_momentum, chunk)
                chunk = None
            new_states.append(
                MemoryState(own_weights, own_momentum, chunk, tail[row : row + 1], state.position + 1)
            )
        return self.readout(y), new_states

    def readout(self, reads: Tensor) -> Tensor:
        """Memory reads ``[B, H, T, head_dim]`` to the model's space ``[B, T, dim]``."""
        return self.to_out(self.norm(reads).transpose(1, 2).flatten(2))

    def _qkv(self, projected: Tensor, tail: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """q, k, v through the causal depthwise convolution, continuing from ``tail``."""
        padded = torch.cat([tail, projected], dim=1)
        length, kernel = projected.shape[1], tail.shape[1] + 1
        # Depthwise and short: a sum of shifted products beats a conv kernel call at decode sizes.
        mixed = padded[:, :length] * self.conv_taps[0]
        for shift in range(1, kernel):
            mixed.addcmul_(padded[:, shift : shift + length], self.conv_taps[shift])
        mixed.add_(self.conv_bias)
        heads = F.silu(mixed).unflatten(-1, (3, self.heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        qk = F.normalize(heads[:2], dim=-1)
        return qk[0], qk[1], heads[2], padded[:, length:].clone()  # the tail must not pin `padded`

    def _gates(self, logits: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        gates = torch.sigmoid(logits).unflatten(-1, (-1, self.heads)).permute(2, 0, 3, 1)
        theta = gates[0] * self.max_lr
        eta = gates[1] if self.use_momentum else None
        alpha = gates[1 + self.use_momentum] if self.use_decay else None
        return theta, eta, alpha


def _pad_chunks(chunks: list[OpenChunk | None], weights: list[Tensor], like: Tensor) -> OpenChunk | None:
    """One open chunk for streams with different numbers of rows: left-padded with zero rows
    (which add nothing); a stream without rows is ``beta = m = 1``, ``f = 0``."""
    present = [c for c in chunks if c is not None]
    if not present:
        return None
    longest = max(c.length for c in present)
    batch, heads = like.shape[:2]
    template = present[0]

    def stack(
        get: Callable[[OpenChunk], Tensor | None], shape: tuple[int, ...], fill: float
    ) -> Tensor | None:
        if get(template) is None:
            return None
        out = like.new_full((batch, heads, *shape), fill)
        for row, chunk in enumerate(chunks):
            if chunk is not None:
                value = get(chunk)
                if value.dim() > 2:  # rows along dimension 2: right-aligned
                    out[row, :, longest - chunk.length : longest] = value[0]
                else:
                    out[row] = value[0]
        return out

    inputs = [stack(lambda c, j=j: c.inputs[j], (longest, w.shape[2]), 0.0) for j, w in enumerate(weights)]
    deltas = [stack(lambda c, j=j: c.deltas[j], (longest, w.shape[3]), 0.0) for j, w in enumerate(weights)]
    return OpenChunk(
        inputs,
        deltas,
        stack(lambda c: c.g.unsqueeze(-1), (longest, 1), 0.0).squeeze(-1),
        None if template.s is None else stack(lambda c: c.s.unsqueeze(-1), (longest, 1), 0.0).squeeze(-1),
        stack(lambda c: c.beta, (), 1.0),
        stack(lambda c: c.f, (), 0.0),
        stack(lambda c: c.m, (), 1.0),
    )
