"""Stacking per-session tensors for a batched decode step, without re-copying what did not change.

A session's memory weights change once per chunk (every 64 tokens by default) and its MAC segment
memory once per segment, yet a decode step needs them stacked along the batch every step. A
:class:`Stacker` remembers its last inputs and output: when every input is the very same tensor
object as last time, it returns the same stacked tensor. States are never modified in place, so
the same objects mean the same values.
"""

from __future__ import annotations

import torch
from torch import Tensor


class Stacker:
    """``torch.cat(parts)``, reused while ``parts`` are the same tensor objects (inference only)."""

    def __init__(self) -> None:
        self._parts: list[Tensor] = []
        self._stacked: Tensor | None = None

    def __call__(self, parts: list[Tensor]) -> Tensor:
        if torch.is_grad_enabled():  # a graph must not be shared between calls
            return torch.cat(parts)
        same = len(parts) == len(self._parts) and all(a is b for a, b in zip(parts, self._parts))
        if not same:
            self._parts, self._stacked = list(parts), torch.cat(parts)
        return self._stacked
