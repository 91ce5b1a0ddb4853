"""The first-order linear recurrence ``h_t = a_t * h_{t-1} + b_t`` along the last dimension.

Two implementations of one function: a plain loop (the definition, and the fastest for short
sequences on a CPU) and a Hillis-Steele associative scan (log depth: fewer, larger kernels, which
pays where kernel launches dominate, as on a GPU). Both are exact up to rounding and differentiable.
"""

from __future__ import annotations

import torch


def linear_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """All ``h_t`` of ``h_t = a_t h_{t-1} + b_t`` in ``ceil(log2 T)`` vectorised steps.

    ``a`` and ``b`` broadcast against each other; the recurrence runs along the last dimension.
    ``h0`` (the value before the first step, default 0) has the shape of ``b[..., 0]``.
    """
    a, b = torch.broadcast_tensors(a, b)
    if h0 is not None:
        b = torch.cat([(a[..., :1] * h0.unsqueeze(-1) + b[..., :1]), b[..., 1:]], dim=-1)
    length = b.shape[-1]
    offset = 1
    while offset < length:
        # Compose each element with the one `offset` before it: (a2, b2) o (a1, b1) = (a2 a1, a2 b1 + b2).
        b = torch.cat(
            [b[..., :offset], torch.addcmul(b[..., offset:], a[..., offset:], b[..., :-offset])], -1
        )
        a = torch.cat([a[..., :offset], a[..., offset:] * a[..., :-offset]], -1)
        offset *= 2
    return b


def linear_recurrence(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """The same recurrence as :func:`linear_scan`, one step at a time (the reference)."""
    a, b = torch.broadcast_tensors(a, b)
    h = torch.zeros_like(b[..., 0]) if h0 is None else h0
    out = []
    for t in range(b.shape[-1]):
        h = a[..., t] * h + b[..., t]
        out.append(h)
    return torch.stack(out, dim=-1)
