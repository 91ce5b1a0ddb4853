"""Linear layers that decode fast: one row times an ``[in, out]`` copy of the weight.

A decode step multiplies a single row by every weight matrix, so it is bound by how fast the
matrices stream from memory. On CPUs a vector-matrix product over an ``[in, out]`` row-major matrix
(``x @ W.T`` with ``W.T`` contiguous) streams about twice as fast as the dot products over the rows of
``nn.Linear``'s ``[out, in]`` weight (``benchmarks/README.md``, "Decode layout"); from a few rows on,
the two are equal. So single rows without autograd use a transposed copy of the weight, made on
first use and remade whenever the weight changes (its storage or version: a training step, a
``load_state_dict``, a move). Parameters, checkpoints and every other path are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FAST_ROWS = 2  # inputs of at most this many rows take the transposed copy


class TransposedWeight:
    """A contiguous ``[in, out]`` copy of an ``[out, in]`` weight, kept in step with it."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._copy = torch.empty(0)

    def __call__(self, weight: Tensor) -> Tensor:
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device, tuple(weight.shape))
        if key != self._key:
            with torch.no_grad():
                self._copy = weight.detach().t().contiguous()
            self._key = key
        return self._copy


def linear(x: Tensor, weight: Tensor, bias: Tensor | None, transposed: TransposedWeight) -> Tensor:
    """``F.linear(x, weight, bias)``, through ``transposed(weight)`` for a row or two without autograd."""
    rows = x.numel() // max(x.shape[-1], 1)
    needs_grad = torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad)
    # An inference tensor has no version counter, so a copy of it could not tell when it is stale.
    if rows > FAST_ROWS or needs_grad or weight.is_inference():
        return F.linear(x, weight, bias)
    flat = x.reshape(rows, x.shape[-1])
    w = transposed(weight)
    out = torch.mm(flat, w) if bias is None else torch.addmm(bias, flat, w)
    return out.view(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same checkpoints) that takes :func:`linear`'s fast path."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        self.transposed = TransposedWeight()

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias, self.transposed)
