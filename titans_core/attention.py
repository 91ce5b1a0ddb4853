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

Rotary = tuple[Tensor, Tensor]  # cos and sin of every position and frequency


def rotary_table(positions: Tensor, dim: int, base: float, like: Tensor) -> Rotary:
    """cos and sin ``[*positions.shape, dim / 2]`` of RoPE at integer ``positions``, in ``like``'s dtype."""
    inv_freq = base ** -(torch.arange(0, dim, 2, dtype=torch.float64, device=like.device) / dim)
    angles = positions.to(device=like.device, dtype=torch.float64).unsqueeze(-1) * inv_freq
    return angles.cos().to(like.dtype), angles.sin().to(like.dtype)


def rotate(x: Tensor, table: Rotary) -> Tensor:
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

    def project(self, x: Tensor, table: Rotary) -> tuple[Tensor, Tensor, Tensor]:
        """Rotated queries and keys, and values, ``[B, H, L, d]`` for ``x`` ``[B, L, d_model]``."""
        qkv = self.to_qkv(x).unflatten(-1, (3, self.n_heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        qk = rotate(qkv[:2], table)
        return qk[0], qk[1], qkv[2]

    def project_keys_values(self, x: Tensor, table: Rotary) -> tuple[Tensor, Tensor]:
        """Only the rotated keys and the values, for tokens that are never queries."""
        width = self.n_heads * self.head_dim
        if type(self.to_qkv) is nn.Linear:
            kv = F.linear(x, self.to_qkv.weight[width:])
        else:  # a wrapped projection (a PEFT adapter) is applied whole, so its keys get the adapter too
            kv = self.to_qkv(x)[..., width:]
        k, v = kv.unflatten(-1, (2, self.n_heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        return rotate(k, table), v

    def attend(
        self,
        q: Tensor,
        keys: list[Tensor],
        values: list[Tensor],
        q_pos: Tensor,
        k_pos: Tensor,
        window: int | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Query ``i`` sees the persistent pairs and key ``j`` where ``0 <= q_pos[i] - k_pos[j] < window``.

        ``keys`` and ``values`` come in parts (a cache and new tokens) that are joined once, with
        the persistent pairs, and returned joined (views) for caching. ``window`` None means no
        lower limit. A single query must be given only keys it sees (no mask is built for it).
        Returns ``[B, L, d_model]`` after the output projection, and the joined keys and values.
        """
        batch, persistent = q.shape[0], self.persistent_keys.shape[1]
        k = torch.cat([self.persistent_keys.expand(batch, -1, -1, -1).to(q.dtype), *keys], dim=2)
        v = torch.cat([self.persistent_values.expand(batch, -1, -1, -1).to(q.dtype), *values], dim=2)
        visible = None
        if len(q_pos) > 1:
            distance = q_pos[:, None] - k_pos[None, :]
            visible = distance >= 0
            if window is not None:
                visible &= distance < window
            always = torch.ones(len(q_pos), persistent, dtype=torch.bool, device=visible.device)
            visible = torch.cat([always, visible], dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=visible)
        return self.to_out(y.transpose(1, 2).flatten(2)), k[:, :, persistent:], v[:, :, persistent:]

    def attend_one(self, q: Tensor, keys: Tensor, values: Tensor, visible: Tensor) -> Tensor:
        """One query per stream (``q`` ``[B, H, 1, d]``) over the persistent pairs and ``keys``,
        ``values`` ``[B, H, L, d]`` where ``visible`` (``[B, L]``) is set. The persistent pairs are
        scored apart, so the padded keys are read where they lie instead of copied once more.
        Returns ``[B, 1, d_model]`` after the output projection.
        """
        scale = q.shape[-1] ** -0.5
        persistent = self.persistent_keys.shape[1]
        scores = torch.cat(
            [
                (q @ self.persistent_keys.to(q.dtype).mT).mul_(scale),
                (q @ keys.mT).mul_(scale).masked_fill_(~visible[:, None, None, :], float("-inf")),
            ],
            dim=-1,
        ).softmax(dim=-1)
        y = scores[..., :persistent] @ self.persistent_values.to(q.dtype)
        y = y + scores[..., persistent:] @ values
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
        self, x: Tensor, start: int, cache: tuple[Tensor, Tensor] | None, table: Rotary
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """``x`` ``[B, L, d_model]`` at positions from ``start`` (``table`` their RoPE); ``cache`` the
        keys and values before it."""
        length, keep = x.shape[1], self.window - 1
        q, k, v = self.attention.project(x, table)
        held = 0 if cache is None else cache[0].shape[2]
        keys, values = ([k], [v]) if cache is None else ([cache[0], k], [cache[1], v])
        positions = torch.arange(start - held, start + length, device=x.device)
        if length <= self.window:
            # One block (decode and short prompts): the cache, new keys and persistent pairs are
            # joined once, and the next cache is a view of that.
            y, k, v = self.attention.attend(q, keys, values, positions[held:], positions, self.window)
            return y, None if keep == 0 else (k[:, :, -keep:], v[:, :, -keep:])
        k, v = torch.cat(keys, dim=2), torch.cat(values, dim=2)
        outputs = []
        for block in range(0, length, self.window):
            stop = min(block + self.window, length)
            lo, hi = max(0, held + block - keep), held + stop
            y, _, _ = self.attention.attend(
                q[:, :, block:stop],
                [k[:, :, lo:hi]],
                [v[:, :, lo:hi]],
                positions[held + block : held + stop],
                positions[lo:hi],
                self.window,
            )
            outputs.append(y)
        # Copies: a view would keep this whole input's keys alive in the state.
        cache = None if keep == 0 else (k[:, :, -keep:].clone(), v[:, :, -keep:].clone())
        return torch.cat(outputs, dim=1), cache

    def decode(
        self, x: Tensor, caches: list[tuple[Tensor, Tensor] | None], table: Rotary
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor] | None]]:
        """One token for each of ``B`` streams with caches of their own lengths (padded, masked)."""
        q, k, v = self.attention.project(x, table)
        keys, values, visible = pad_caches(caches, k, v)
        y = self.attention.attend_one(q, keys, values, visible)
        keep = self.window - 1
        held = [0 if c is None else c[0].shape[2] for c in caches]
        new = []
        for row, count in enumerate(held):
            n = min(count + 1, keep)
            new.append(None if n == 0 else (keys[row : row + 1, :, -n:], values[row : row + 1, :, -n:]))
        return y, new


def pad_caches(
    caches: list[tuple[Tensor, Tensor] | None], k: Tensor, v: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Each stream's cached keys and values left-padded to the longest, then its new ``k``, ``v``
    (``[B, H, n, d]``); and the mask ``[B, longest + n]`` of what is real."""
    held = [0 if c is None else c[0].shape[2] for c in caches]
    longest, batch, new = max(held), k.shape[0], k.shape[2]
    if longest == 0:
        return k, v, torch.ones(batch, new, dtype=torch.bool, device=k.device)
    keys = k.new_zeros(batch, k.shape[1], longest + new, k.shape[3])
    values = v.new_zeros(batch, v.shape[1], longest + new, v.shape[3])
    mask = torch.ones(batch, longest + new, dtype=torch.bool, device=k.device)
    for row, (cache, count) in enumerate(zip(caches, held)):
        mask[row, : longest - count] = False
        if count:
            keys[row, :, longest - count : longest] = cache[0][0]
            values[row, :, longest - count : longest] = cache[1][0]
    keys[:, :, longest:], values[:, :, longest:] = k, v
    return keys, values, mask
