"""Stacking per-session tensors for a batched decode step, copying only what changed.

A session's memory weights change once per chunk (every 64 tokens by default) and its MAC segment
memory once per segment, yet a decode step needs them stacked along the batch every step. A
:class:`Stacker` keeps its last few stacked tensors and which tensor objects filled each row: the
same objects mean the same values (states are never modified in place), so a step copies only the
rows of sessions whose tensors changed, in place. It keeps several because the engine decodes more
sessions than one batch holds as several batches per turn, each mostly the same sessions as on the
turn before; with one kept stack they would overwrite each other every step.
"""

from __future__ import annotations

import torch
from torch import Tensor

KEPT_STACKS = 4  # batches per engine turn whose stacks survive: 32 sessions at the default batch of 8


class Stacker:
    """``torch.cat(parts)`` (each part ``[1, ...]``), reusing a kept result and rewriting its changed rows.

    A call takes the kept result (same shapes) whose rows hold the most of the same tensors, copies
    the other rows in place and makes it the most recent; with none alike, a fresh ``cat`` is kept,
    and beyond ``capacity`` the least recently used is dropped (with the tensors it was made from:
    up to ``capacity`` batches of session memories stay alive). A result is valid until a later
    call reuses it: a decode step's scratch, never kept in a state. One thread at a time (the
    engine's). With autograd, a fresh ``cat``.
    """

    def __init__(self, capacity: int = KEPT_STACKS) -> None:
        self.capacity = capacity
        self._kept: list[tuple[list[Tensor], Tensor]] = []  # least recently used first

    def __call__(self, parts: list[Tensor]) -> Tensor:
        if torch.is_grad_enabled():  # a graph must not be shared between calls
            return torch.cat(parts)
        best, shared = None, 0
        for index, (previous, _) in enumerate(self._kept):
            if _alike(parts, previous):
                same = sum(a is b for a, b in zip(parts, previous))
                if best is None or same > shared:
                    best, shared = index, same
        if best is None or (shared == 0 and len(self._kept) < self.capacity):
            stacked = torch.cat(parts)
        else:
            previous, stacked = self._kept.pop(best)
            for row, (part, old) in enumerate(zip(parts, previous)):
                if part is not old:
                    stacked[row : row + 1].copy_(part)
        self._kept.append((list(parts), stacked))
        del self._kept[: -self.capacity]
        return stacked


def _alike(parts: list[Tensor], previous: list[Tensor]) -> bool:
    """Whether ``previous``'s stack can hold ``parts``: as many, of the same shape, dtype and device
    (the parts of one stack are all alike, so their first ones tell)."""
    a, b = parts[0], previous[0]
    return len(parts) == len(previous) and a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
