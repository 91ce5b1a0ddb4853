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


def rotate(x: Tensor, start: int, base: float) -> Tensor:
    """RoPE for ``x`` ``[B, H, L, d]`` at absolute positions ``start, start + 1, ...``."""
    dim, length = x.shape[-1], x.shape[-2]
    inv_freq = base ** -(torch.arange(0, dim, 2, dtype=torch.float64, device=x.device) / dim)
    positions = torch.arange(start, start + length, dtype=torch.float64, device=x.device)
    angles = positions[:, None] * inv_freq
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    """Multi-head attention whose callers choose which keys each query sees (by token positions)."""

    def __init__(self, d_model: int, n_heads: int, n_persistent: int, rope_base: float):
        super().__init__()
        self.n_heads, self.head_dim, self.rope_base = n_heads, d_model // n_heads, rope_base
        self.to_q = nn.Linear(d_model, d_model, bias=False)
        self.to_kv = nn.Linear(d_model, 2 * d_model, bias=False)
        self.to_out = nn.Linear(d_model, d_model, bias=False)
        self.persistent_keys = nn.Parameter(0.02 * torch.randn(n_heads, n_persistent, self.head_dim))
        self.persistent_values = nn.Parameter(0.02 * torch.randn(n_heads, n_persistent, self.head_dim))

    def queries(self, x: Tensor, start: int) -> Tensor:
        """Rotated queries ``[B, H, L, d]`` for ``x`` ``[B, L, d_model]`` at positions from ``start``."""
        return rotate(self._heads(self.to_q(x)), start, self.rope_base)

    def keys_values(self, x: Tensor, start: int) -> tuple[Tensor, Tensor]:
        """Rotated keys and values ``[B, H, L, d]``, ready to cache."""
        k, v = self._heads(self.to_kv(x)).chunk(2, dim=-1)
        return rotate(k, start, self.rope_base), v

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor, k_pos: Tensor, window: int | None
    ) -> Tensor:
        """Query ``i`` sees the persistent pairs and key ``j`` where ``0 <= q_pos[i] - k_pos[j] < window``.

        ``window`` None means no lower limit. Returns ``[B, L, d_model]`` after the output projection.
        """
        distance = q_pos[:, None] - k_pos[None, :]
        visible = distance >= 0
        if window is not None:
            visible &= distance < window
        batch = q.shape[0]
        persistent = self.persistent_keys.shape[1]
        if persistent:
            k = torch.cat([self.persistent_keys.expand(batch, -1, -1, -1).to(k.dtype), k], dim=2)
            v = torch.cat([self.persistent_values.expand(batch, -1, -1, -1).to(v.dtype), v], dim=2)
            always = torch.ones(len(q_pos), persistent, dtype=torch.bool, device=visible.device)
            visible = torch.cat([always, visible], dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=visible)
        return self.to_out(y.transpose(1, 2).flatten(2))

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.n_heads, -1)).transpose(1, 2)


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
        q = self.attention.queries(x, start)
        k, v = self.attention.keys_values(x, start)
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
