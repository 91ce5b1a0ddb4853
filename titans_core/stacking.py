"""Stacking per-session tensors for a batched decode step, copying only what changed.

A session's memory weights change once per chunk (every 64 tokens by default) and its MAC segment
memory once per segment, yet a decode step needs them stacked along the batch every step. A
:class:`Stacker` keeps its last stacked tensor and which tensor objects filled each row: the same
objects mean the same values (states are never modified in place), so a step copies only the
rows of sessions whose tensors changed, in place.
"""

from __future__ import annotations

import torch
from torch import Tensor


class Stacker:
    """``torch.cat(parts)`` (each part ``[1, ...]``), updating the last result's changed rows in place.

    The result is valid until the next call (which may write into it): a decode step's scratch,
    never kept in a state. One thread at a time (the engine's). With autograd, a fresh ``cat``.
    """

    def __init__(self) -> None:
        self._parts: list[Tensor] = []
        self._stacked = torch.empty(0)

    def __call__(self, parts: list[Tensor]) -> Tensor:
        if torch.is_grad_enabled():  # a graph must not be shared between calls
            return torch.cat(parts)
        previous, stacked = self._parts, self._stacked
        if len(parts) != len(previous) or any(
            a.shape != b.shape or a.dtype != b.dtype or a.device != b.device for a, b in zip(parts, previous)
        ):
            self._parts, self._stacked = list(parts), torch.cat(parts)
            return self._stacked
        for row, (part, old) in enumerate(zip(parts, previous)):
            if part is not old:
                stacked[row : row + 1].copy_(part)
        self._parts = list(parts)
        return stacked
