"""The neural-memory definition, token by token with autograd: slow, obvious, and the oracle.

Every fast path (:func:`titans_core.ops.memory_update`, streaming, decode, CUDA) is tested against
this function on fresh random inputs. It keeps the autograd graph (``create_graph=True``), so the
gradients of a loss on its outputs are the exact gradients the fast path must reproduce.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def memory_mlp(x: Tensor, weights: list[Tensor]) -> Tensor:
    """``M(x) = silu(...silu(x W_1)...) W_L`` batched over the leading dimensions."""
    for w in weights[:-1]:
        x = torch.nn.functional.silu(x @ w)
    return x @ weights[-1]


def memory_update_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    theta: Tensor,
    eta: Tensor | None,
    alpha: Tensor | None,
    weights: list[Tensor],
    momentum: list[Tensor] | None,
    chunk_size: int,
    *,
    max_surprise: float | None = None,
    on_write: Callable[[Tensor], None] | None = None,
) -> tuple[Tensor, list[Tensor], list[Tensor] | None]:
    """Same contract as :func:`titans_core.ops.memory_update`, computed by the definition. ``on_write``
    (as :func:`titans_core.ops.memory_stream`'s) gets each token's ``theta_t |u_t|`` (``[..., 1]``),
    the norm taken over all the MLP's layers."""
    total = q.shape[-2]
    zeros = torch.zeros_like(theta)
    eta = zeros if eta is None else eta
    alpha = zeros if alpha is None else alpha
    with_momentum = momentum is not None
    surprise = list(momentum) if with_momentum else [torch.zeros_like(w) for w in weights]
    weights = list(weights)
    outputs = []
    with torch.enable_grad():
        for t in range(total):
            if t % chunk_size == 0:
                chunk_start = [w if w.requires_grad else w.detach().requires_grad_() for w in weights]
                weights = chunk_start
            row = (..., slice(t, t + 1), slice(None))
            loss = (memory_mlp(k[row], chunk_start) - v[row]).pow(2).sum()
            grads = torch.autograd.grad(loss, chunk_start, create_graph=True)
            if max_surprise is not None:  # the guard: the whole gradient scaled to norm max_surprise
                norm = torch.sqrt(sum(u.square().sum(dim=(-2, -1)) for u in grads))
                scale = torch.where(norm > max_surprise, max_surprise / norm, torch.ones_like(norm))
                grads = [u * scale[..., None, None] for u in grads]
            if on_write is not None:
                size = torch.sqrt(sum(u.square().sum(dim=(-2, -1)) for u in grads))
                on_write((theta[..., t] * size).unsqueeze(-1))
            gate = (..., t, None, None)
            surprise = [eta[gate] * s - theta[gate] * u for s, u in zip(surprise, grads)]
            weights = [(1 - alpha[gate]) * w + s for w, s in zip(weights, surprise)]
            outputs.append(memory_mlp(q[row], weights))
    y = torch.cat(outputs, dim=-2)
    return y, weights, surprise if with_momentum else None
