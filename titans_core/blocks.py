"""The residual blocks of the four Titans variants (Behrouz et al., 2025, §4), pre-norm.

Each block maps ``x`` ``[B, T, d_model]`` at absolute positions ``start ...`` and its
:class:`LayerState` to new ones; streaming is exact because every block's state carries exactly
what its later tokens can see.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from titans_core.attention import Attention, Rotary, SlidingWindowAttention, pad_caches
from titans_core.config import TitansConfig
from titans_core.memory import NeuralMemory
from titans_core.ops import memory_mlp
from titans_core.stacking import Stacker
from titans_core.state import LayerState


class FeedForward(nn.Module):
    def __init__(self, d_model: int, expansion: int):
        super().__init__()
        self.up = nn.Linear(d_model, expansion * d_model, bias=False)
        self.down = nn.Linear(expansion * d_model, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.up(x)))


class Block(nn.Module):
    """What every variant has: a neural memory and a feed-forward sublayer."""

    def __init__(self, config: TitansConfig):
        super().__init__()
        self.memory = NeuralMemory(
            config.d_model,
            heads=config.mem_heads,
            depth=config.mem_layers,
            expansion=config.mem_expansion,
            chunk_size=config.chunk_size,
            use_momentum=config.use_momentum,
            use_decay=config.use_decay,
            max_lr=config.max_lr,
            max_surprise=config.max_surprise,
            conv_kernel=config.conv_kernel,
        )
        self.norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.ffn_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.ffn = FeedForward(config.d_model, config.ffn_expansion)

    def initial_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> LayerState:
        return LayerState(self.memory.initial_state(batch_size, device, dtype))

    def forward(self, x: Tensor, start: int, state: LayerState, table: Rotary) -> tuple[Tensor, LayerState]:
        """``x`` at positions from ``start``; ``table`` their RoPE (shared by every layer)."""
        x, state = self.mix(x, start, state, table)
        return x + self.ffn(self.ffn_norm(x)), state

    def mix(self, x: Tensor, start: int, state: LayerState, table: Rotary) -> tuple[Tensor, LayerState]:
        raise NotImplementedError

    def decode(
        self, x: Tensor, states: list[LayerState], positions: list[int], table: Rotary
    ) -> tuple[Tensor, list[LayerState]]:
        """One token for each of ``B`` streams at ``positions`` of their own (``x`` ``[B, 1, d]``)."""
        x, states = self.mix_decode(x, states, positions, table)
        return x + self.ffn(self.ffn_norm(x)), states

    def mix_decode(
        self, x: Tensor, states: list[LayerState], positions: list[int], table: Rotary
    ) -> tuple[Tensor, list[LayerState]]:
        raise NotImplementedError


class LMMBlock(Block):
    """Memory as the only sequence mixer."""

    def mix(self, x: Tensor, start: int, state: LayerState, table: Rotary) -> tuple[Tensor, LayerState]:
        y, memory = self.memory(self.norm(x), state.memory)
        return x + y, LayerState(memory)

    def mix_decode(self, x, states, positions, table):
        y, memories = self.memory.decode(self.norm(x), [s.memory for s in states])
        return x + y, [LayerState(m) for m in memories]


class MALBlock(Block):
    """Memory as a layer: the memory, then sliding-window attention."""

    def __init__(self, config: TitansConfig):
        super().__init__(config)
        self.attention_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.attention = SlidingWindowAttention(
            config.d_model, config.n_heads, config.n_persistent, config.rope_base, config.window
        )

    def mix(self, x: Tensor, start: int, state: LayerState, table: Rotary) -> tuple[Tensor, LayerState]:
        y, memory = self.memory(self.norm(x), state.memory)
        x = x + y
        y, cache = self.attention(self.attention_norm(x), start, state.cache, table)
        return x + y, LayerState(memory, cache)

    def mix_decode(self, x, states, positions, table):
        y, memories = self.memory.decode(self.norm(x), [s.memory for s in states])
        x = x + y
        y, caches = self.attention.decode(self.attention_norm(x), [s.cache for s in states], table)
        return x + y, [LayerState(m, c) for m, c in zip(memories, caches)]


class MAGBlock(Block):
    """Memory as a gate: sliding-window attention and the memory side by side, normalised and
    combined as ``attention * sigmoid(memory)``."""

    def __init__(self, config: TitansConfig):
        super().__init__(config)
        self.attention = SlidingWindowAttention(
            config.d_model, config.n_heads, config.n_persistent, config.rope_base, config.window
        )
        self.attention_out_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.memory_out_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)

    def mix(self, x: Tensor, start: int, state: LayerState, table: Rotary) -> tuple[Tensor, LayerState]:
        h = self.norm(x)
        a, cache = self.attention(h, start, state.cache, table)
        m, memory = self.memory(h, state.memory)
        gated = self.attention_out_norm(a) * torch.sigmoid(self.memory_out_norm(m))
        return x + gated, LayerState(memory, cache)

    def mix_decode(self, x, states, positions, table):
        h = self.norm(x)
        a, caches = self.attention.decode(h, [s.cache for s in states], table)
        m, memories = self.memory.decode(h, [s.memory for s in states])
        gated = self.attention_out_norm(a) * torch.sigmoid(self.memory_out_norm(m))
        return x + gated, [LayerState(mem, c) for mem, c in zip(memories, caches)]


class MACBlock(Block):
    """Memory as context. Per segment (``segment_size`` tokens aligned to absolute positions): each
    token's query reads the memory as it was at the segment start; attention sees the persistent
    pairs and, up to itself, the segment's retrieved and own tokens; its output ``y`` updates the
    memory token by token, and the block adds ``y * sigmoid(memory(y))``.
    """

    def __init__(self, config: TitansConfig):
        super().__init__(config)
        self.attention = Attention(config.d_model, config.n_heads, config.n_persistent, config.rope_base)
        self.to_retrieval = nn.Linear(config.d_model, config.d_model, bias=False)
        self.segment_size = config.segment_size
        self._stackers = [Stacker() for _ in range(config.mem_layers)]  # the segments' start memories

    def mix(self, x: Tensor, start: int, state: LayerState, table: Rotary) -> tuple[Tensor, LayerState]:
        h = self.norm(x)
        # Everything per token is computed for the whole input and split (not sliced: a slice's
        # backward zero-fills the whole input once per segment) into the segments' pieces.
        lengths, offset = [], 0
        while offset < x.shape[1]:
            lengths.append(min(x.shape[1] - offset, self.segment_size - (start + offset) % self.segment_size))
            offset += lengths[-1]
        q, k, v = (t.split(lengths, dim=2) for t in self.attention.project(h, table))
        queries = self._retrieval_queries(self.to_retrieval(h)).split(lengths, dim=2)
        cos, sin = (t.split(lengths) for t in table)
        memory, cache, segment_weights = state.memory, state.cache, state.segment_weights
        outputs, offset, masks = [], 0, {}
        for i, length in enumerate(lengths):
            into = (start + offset) % self.segment_size
            if into == 0:
                segment_weights, cache = memory.weights, None
            retrieved = self.memory.readout(memory_mlp(queries[i], segment_weights))
            rk, rv = self.attention.project_keys_values(retrieved, (cos[i], sin[i]))
            keys, values = [_interleave(rk, k[i])], [_interleave(rv, v[i])]
            if cache is not None:
                keys, values = [cache[0], *keys], [cache[1], *values]
            if (into, length) not in masks:
                masks[into, length] = (
                    torch.arange(into, into + length, device=x.device),
                    torch.arange(2 * (into + length), device=x.device) // 2,
                )
            y, *cache = self.attention.attend(q[i], keys, values, *masks[into, length], None)
            m, memory = self.memory(y, memory)
            outputs.append(y * torch.sigmoid(m))
            offset += length
        if (start + x.shape[1]) % self.segment_size == 0:
            cache, segment_weights = None, None
        cache = None if cache is None else tuple(cache)
        return x + torch.cat(outputs, dim=1), LayerState(memory, cache, segment_weights)

    def mix_decode(self, x, states, positions, table):
        h = self.norm(x)
        q, k, v = self.attention.project(h, table)
        into = [p % self.segment_size for p in positions]
        segments = [s.memory.weights if i == 0 else s.segment_weights for s, i in zip(states, into)]
        stacked = [stack(list(layer)) for stack, layer in zip(self._stackers, zip(*segments))]
        retrieved = self._retrieve(self.to_retrieval(h), stacked)
        rk, rv = self.attention.project_keys_values(retrieved, table)
        caches = [None if i == 0 else s.cache for s, i in zip(states, into)]
        keys, values, visible = pad_caches(caches, _interleave(rk, k), _interleave(rv, v))
        y = self.attention.attend_one(q, keys, values, visible)
        m, memories = self.memory.decode(y, [s.memory for s in states])
        new_states = []
        for row, (position, i) in enumerate(zip(positions, into)):
            if (position + 1) % self.segment_size == 0:
                new_states.append(LayerState(memories[row]))
                continue
            held = 2 * (i + 1)
            cache = (keys[row : row + 1, :, -held:], values[row : row + 1, :, -held:])
            new_states.append(LayerState(memories[row], cache, segments[row]))
        return x + y * torch.sigmoid(m), new_states

    def _retrieve(self, queries: Tensor, weights: list[Tensor]) -> Tensor:
        """Read the memory ``weights`` (no update) with per-head L2-normalised queries."""
        return self.memory.readout(memory_mlp(self._retrieval_queries(queries), weights))

    def _retrieval_queries(self, queries: Tensor) -> Tensor:
        """``[B, T, d_model]`` to per-head L2-normalised queries ``[B, H, T, head_dim]``."""
        return F.normalize(queries.unflatten(-1, (self.memory.heads, -1)).transpose(1, 2), dim=-1)


def _interleave(a: Tensor, b: Tensor) -> Tensor:
    """``[a_0, b_0, a_1, b_1, ...]`` along dimension 2."""
    return torch.stack([a, b], dim=3).flatten(2, 3)


BLOCKS: dict[str, type[Block]] = {"LMM": LMMBlock, "MAL": MALBlock, "MAG": MAGBlock, "MAC": MACBlock}
