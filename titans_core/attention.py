"""Attention with rotary positions and persistent memory, over sliding windows or MAC segments.

Keys are rotated by absolute position, which makes a cache of rotated keys valid for any later
query. Angles are computed in float64: at position 10^9 a float32 angle would be off by tens of
radians, a float64 one by 10^-7. ``n_persistent``
learned key/value pairs (Sukhbaatar et al., 2019; Titans' persistent memory) are visible to every
query and carry no position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def rotary_table(start: int, length: int, dim: int, base: float, like: Tensor) -> tuple[Tensor, Tensor]:
    """cos and sin ``[length, dim / 2]`` of RoPE at positions ``start ...``, in ``like``'s dtype."""
    inv_freq = base ** -(torch.arange(0, dim, 2, dtype=torch.float64, device=like.device) / dim)
    positions = torch.arange(start, start + length, dtype=torch.float64, device=like.device)
    angles = positions[:, None] * inv_freq
    return angles.cos().to(like.dtype), angles.sin().to(like.dtype)


def rotate(x: Tensor, table: tuple[Tensor, Tensor]) -> Tensor:
    """``x`` ``[..., L, d]`` rotated by the :func:`rotary_table` of its positions."""
    cos, sin = table
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    """Multi-head attention whose callers choose which keys each query sees (by token positions)."""

    def __init__(self, d_model: int, n_heads: int, n_persistent: int, rope_base: float):
        super().__init__()
        self.n_heads, self.head_dim, self.rope_base = n_heads, d_model // n_heads, rope_base
        self.to_qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.to_out = nn.Linear(d_model, d_model, bias=False)
        self.persistent_keys = nn.Parameter(0.02 * torch.randn(n_heads, n_persistent, self.head_dim))
        self.persistent_values = nn.Parameter(0.02 * torch.randn(n_heads, n_persistent, self.head_dim))

    def rotary(self, start: int, length: int) -> tuple[Tensor, Tensor]:
        """The RoPE table for ``length`` tokens from ``start`` (shared by every projection there)."""
        return rotary_table(start, length, self.head_dim, self.rope_base, self.to_out.weight)

    def project(self, x: Tensor, table: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Rotated queries and keys, and values, ``[B, H, L, d]`` for ``x`` ``[B, L, d_model]``."""
        qkv = self.to_qkv(x).unflatten(-1, (3, self.n_heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        qk = rotate(qkv[:2], table)
        return qk[0], qk[1], qkv[2]

    def project_keys_values(self, x: Tensor, table: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """Only the rotated keys and the values, for tokens that are never queries."""
        width = self.n_heads * self.head_dim
        kv = F.linear(x, self.to_qkv.weight[width:])
        k, v = kv.unflatten(-1, (2, self.n_heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        return rotate(k, table), v

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor, k_pos: Tensor, window: int | None
    ) -> Tensor:
        """Query ``i`` sees the persistent pairs and key ``j`` where ``0 <= q_pos[i] - k_pos[j] < window``.

        ``window`` None means no lower limit. A single query must be given only keys it sees (no
        mask is built for it). Returns ``[B, L, d_model]`` after the output projection.
        """
        batch, persistent = q.shape[0], self.persistent_keys.shape[1]
        visible = None
        if len(q_pos) > 1:
            distance = q_pos[:, None] - k_pos[None, :]
            visible = distance >= 0
            if window is not None:
                visible &= distance < window
            if persistent:
                always = torch.ones(len(q_pos), persistent, dtype=torch.bool, device=visible.device)
                visible = torch.cat([always, visible], dim=1)
        if persistent:
            k = torch.cat([self.persistent_keys.expand(batch, -1, -1, -1).to(k.dtype), k], dim=2)
            v = torch.cat([self.persistent_values.expand(batch, -1, -1, -1).to(v.dtype), v], dim=2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=visible)
        return self.to_out(y.transpose(1, 2).flatten(2))


class SlidingWindowAttention(nn.Module):
    """Causal attention over the last ``window`` tokens (itself included), carrying ``window - 1``
    rotated keys and values between calls. Long inputs go in query blocks of ``window``: linear cost.
    """

    def __init__(self, d_model: int, n_heads: int, n_persistent: int, rope_base: float, window: int):
        super().__init__()
        self.attention = Attention(d_model, n_heads, n_persistent, rope_base)
        self.window = window

    def forward(
        self, x: Tensor, start: int, cache: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """``x`` ``[B, L, d_model]`` at positions from ``start``; ``cache`` the keys and values before it."""
        q, k, v = self.attention.project(x, self.attention.rotary(start, x.shape[1]))
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        first = start + x.shape[1] - k.shape[2]  # the position of the first key held
        positions = torch.arange(first, start + x.shape[1], device=x.device)
        outputs = []
        for block in range(0, x.shape[1], self.window):
            stop = min(block + self.window, x.shape[1])
            lo = max(0, start + block - self.window + 1 - first)
            hi = start + stop - first
            outputs.append(
                self.attention.attend(
                    q[:, :, block:stop],
                    k[:, :, lo:hi],
                    v[:, :, lo:hi],
                    positions[start - first + block : start - first + stop],
                    positions[lo:hi],
                    self.window,
                )
            )
        keep = self.window - 1
        cache = None if keep == 0 else (k[:, :, -keep:].clone(), v[:, :, -keep:].clone())
        return torch.cat(outputs, dim=1), cache
