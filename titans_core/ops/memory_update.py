"""The Titans neural-memory update in closed form: a few matmuls per chunk, no autograd inside.

The memory is an MLP ``M(x) = silu(...silu(x W_1)...) W_L`` per batch entry and head, trained at
test time on ``l(M; k, v) = ||M(k) - v||^2`` (summed over features). The definition (DESIGN.md §2):
chunks of ``chunk_size`` tokens; for token ``t`` in a chunk starting at ``t0``::

    u_t = grad_M l(M_{t0}; k_t, v_t)        S_t = eta_t S_{t-1} - theta_t u_t
    M_t = (1 - alpha_t) M_{t-1} + S_t       y_t = M_t(q_t)

Every ``u_t`` of a chunk is taken at the same weights, and each layer's gradient is an outer
product ``x_t^T delta_t`` of the layer's input and the back-propagated residual at that input. So
``M_t = beta_t M_{t0} + f_t S_{t0} - sum_j G[t, j] x_j^T delta_j`` with scalar gate coefficients, and
reading ``M_t(q_t)`` layer by layer is attention-like: ``(tril(A X^T) * G) Delta``. The coefficients
are products of gates over spans of the chunk; they are computed as segment products by cumprod
(exact with gates of exactly 0 or 1, no division, no log of zero).

Streaming: a chunk may be left open (the input ended mid-chunk). The open chunk keeps each row's
gradient factors at the chunk-start weights, so a later call (or one decode step) continues with
exactly the numbers the one-shot computation gives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from titans_core._validation import describe


@dataclass
class OpenChunk:
    """The rows of a chunk in progress, as continuing it needs them.

    ``inputs[l]`` / ``deltas[l]``: layer ``l``'s input at each key and the loss gradient with respect
    to that layer's output (pre-activation), both taken at the chunk-start weights; shapes
    ``[B, H, p, d_in_l]`` and ``[B, H, p, d_out_l]``. Gates are ``[B, H, p]``; ``eta`` is None without
    momentum and ``alpha`` None without decay.
    """

    inputs: list[Tensor]
    deltas: list[Tensor]
    theta: Tensor
    eta: Tensor | None
    alpha: Tensor | None

    @property
    def length(self) -> int:
        return self.theta.shape[-1]

    def tensors(self) -> list[Tensor]:
        """Every tensor held, for moving, stacking and counting bytes."""
        gates = [g for g in (self.theta, self.eta, self.alpha) if g is not None]
        return [*self.inputs, *self.deltas, *gates]

    def map(self, fn: Callable[[Tensor], Tensor]) -> OpenChunk:
        """The same rows with ``fn`` applied to every tensor (device moves, batch reshapes, slicing)."""
        return OpenChunk(
            [fn(x) for x in self.inputs],
            [fn(x) for x in self.deltas],
            fn(self.theta),
            None if self.eta is None else fn(self.eta),
            None if self.alpha is None else fn(self.alpha),
        )


def memory_update(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    theta: Tensor,
    eta: Tensor | None,
    alpha: Tensor | None,
    weights: list[Tensor],
    momentum: list[Tensor] | None,
    chunk_size: int,
) -> tuple[Tensor, list[Tensor], list[Tensor] | None]:
    """Read and update the memory over a sequence that starts at a chunk boundary.

    Shapes: ``q, k, v`` ``[B, H, T, d]``; ``theta, eta, alpha`` ``[B, H, T]``; ``weights[l]`` and
    ``momentum[l]`` ``[B, H, d_in, d_out]``. ``eta=None`` with ``momentum=None`` means no momentum
    (the same as ``eta = 0``); ``alpha=None`` means no forgetting (``alpha = 0``). A trailing partial
    chunk is processed as a chunk. Returns ``y`` ``[B, H, T, d_out]`` and the weights and momentum
    after the last token.
    """
    y, weights, momentum, open_chunk = memory_stream(
        q, k, v, theta, eta, alpha, weights, momentum, chunk_size
    )
    if open_chunk is not None:
        weights, momentum = commit_chunk(weights, momentum, open_chunk)
    return y, weights, momentum


def memory_stream(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    theta: Tensor,
    eta: Tensor | None,
    alpha: Tensor | None,
    weights: list[Tensor],
    momentum: list[Tensor] | None,
    chunk_size: int,
    open_chunk: OpenChunk | None = None,
) -> tuple[Tensor, list[Tensor], list[Tensor] | None, OpenChunk | None]:
    """:func:`memory_update` for a stream: the input continues ``open_chunk`` (if any).

    ``weights`` and ``momentum`` are those at the start of the open chunk. Returns ``y`` and the
    state to continue from: the weights and momentum at the start of the chunk left open, and that
    chunk's rows (None when the input ends on a chunk boundary).
    """
    _check_inputs(q, k, v, theta, eta, alpha, weights, momentum, chunk_size, open_chunk)
    # Batch and heads are one dimension inside, so every product is a (fused) bmm.
    batch = q.shape[:2]
    q, k, v, theta, eta, alpha = (_flat(x) for x in (q, k, v, theta, eta, alpha))
    weights, momentum = _flat_list(weights), _flat_list(momentum)
    open_chunk = None if open_chunk is None else open_chunk.map(_flat)
    total = q.shape[1]
    outputs = []
    start = 0
    while start < total:
        filled = 0 if open_chunk is None else open_chunk.length
        end = min(total, start + chunk_size - filled)
        rows = slice(start, end)
        y, weights, momentum, open_chunk = _advance_chunk(
            q[:, rows],
            k[:, rows],
            v[:, rows],
            theta[:, rows],
            None if eta is None else eta[:, rows],
            None if alpha is None else alpha[:, rows],
            weights,
            momentum,
            open_chunk,
            chunk_size,
        )
        outputs.append(y)
        start = end
    y = torch.cat(outputs, dim=1) if outputs else q.new_empty(*q.shape[:-1], weights[-1].shape[-1])
    unflat = lambda x: x.unflatten(0, batch)  # noqa: E731
    weights, momentum = _unflat_list(weights, batch), _unflat_list(momentum, batch)
    return unflat(y), weights, momentum, None if open_chunk is None else open_chunk.map(unflat)


def commit_chunk(
    weights: list[Tensor], momentum: list[Tensor] | None, open_chunk: OpenChunk
) -> tuple[list[Tensor], list[Tensor] | None]:
    """The weights and momentum after the last row of ``open_chunk`` (closing it early)."""
    batch = weights[0].shape[:2]
    chunk = open_chunk.map(_flat)
    coef = _Coefficients(chunk.theta, chunk.eta, chunk.alpha, first_row=chunk.length - 1)
    weights, momentum = _commit(_flat_list(weights), _flat_list(momentum), chunk, coef)
    return _unflat_list(weights, batch), _unflat_list(momentum, batch)


def _flat(x: Tensor | None) -> Tensor | None:
    return None if x is None else x.flatten(0, 1)


def _flat_list(xs: list[Tensor] | None) -> list[Tensor] | None:
    return None if xs is None else [x.flatten(0, 1) for x in xs]


def _unflat_list(xs: list[Tensor] | None, batch: torch.Size) -> list[Tensor] | None:
    return None if xs is None else [x.unflatten(0, batch) for x in xs]


def _advance_chunk(q, k, v, theta, eta, alpha, weights, momentum, open_chunk, chunk_size):
    """Add rows to the current chunk: their reads, and the commit if the chunk fills up."""
    inputs, deltas = _key_factors(k, v, weights)
    filled = 0
    if open_chunk is not None:
        filled = open_chunk.length
        inputs = [torch.cat(pair, dim=1) for pair in zip(open_chunk.inputs, inputs)]
        deltas = [torch.cat(pair, dim=1) for pair in zip(open_chunk.deltas, deltas)]
        theta = torch.cat([open_chunk.theta, theta], dim=-1)
        eta = None if eta is None else torch.cat([open_chunk.eta, eta], dim=-1)
        alpha = None if alpha is None else torch.cat([open_chunk.alpha, alpha], dim=-1)
    chunk = OpenChunk(inputs, deltas, theta, eta, alpha)
    coef = _Coefficients(theta, eta, alpha, first_row=filled)
    y = _read(q, weights, momentum, chunk, coef)
    if chunk.length < chunk_size:
        return y, weights, momentum, chunk
    weights, momentum = _commit(weights, momentum, chunk, coef)
    return y, weights, momentum, None


def _silu_grad(h: Tensor) -> Tensor:
    s = torch.sigmoid(h)
    return s * (1 + h * (1 - s))


def _key_factors(k: Tensor, v: Tensor, weights: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """Each layer's input and output-gradient at the keys: the factors of the per-token gradients."""
    inputs, pre = [k], []
    for w in weights[:-1]:
        pre.append(inputs[-1] @ w)
        inputs.append(torch.nn.functional.silu(pre[-1]))
    delta = 2 * (inputs[-1] @ weights[-1] - v)
    deltas = [delta]
    for w, h in zip(reversed(weights[1:]), reversed(pre)):
        delta = (delta @ w.mT) * _silu_grad(h)
        deltas.append(delta)
    return inputs, deltas[::-1]


def _segment_products(a: Tensor) -> Tensor:
    """``P[..., t, j] = prod(a[..., j+1 : t+1])`` for ``t >= j``, and 0 above the diagonal."""
    length = a.shape[-1]
    ones = torch.ones(length, length, dtype=torch.bool, device=a.device)
    factors = a.unsqueeze(-1).expand(*a.shape, length).masked_fill(ones.triu(), 1.0)
    return factors.cumprod(dim=-2).masked_fill(ones.triu(1), 0.0)


class _Coefficients:
    """Gate products of one chunk, for the query rows ``first_row:`` and the chunk's end.

    ``g[t, j]``: how much token j's gradient has moved the weights read at t; ``beta[t]``: the
    surviving share of the chunk-start weights; ``f[t]``: of the chunk-start momentum;
    ``s_end[j]`` and ``m_end``: token j's and the start momentum's share in the momentum at the end.
    """

    def __init__(self, theta: Tensor, eta: Tensor | None, alpha: Tensor | None, first_row: int):
        length = theta.shape[-1]
        rows = slice(first_row, length)
        if alpha is None:
            keep = torch.ones(length, length, dtype=theta.dtype, device=theta.device).tril()[rows]
            self.beta = None
        else:
            keep = _segment_products(1 - alpha)[..., rows, :]
            self.beta = torch.cumprod(1 - alpha, dim=-1)[..., rows]
        if eta is None:
            self.g = keep * theta.unsqueeze(-2)
            self.f = self.s_end = self.m_end = None
        else:
            scaled = _segment_products(eta) * theta.unsqueeze(-2)
            m = torch.cumprod(eta, dim=-1)
            self.g = keep @ scaled
            self.f = (keep @ m.unsqueeze(-1)).squeeze(-1)
            self.s_end = scaled[..., -1, :]
            self.m_end = m[..., -1]


def _read(q: Tensor, weights, momentum, chunk: OpenChunk, coef: _Coefficients) -> Tensor:
    """``M_t(q_t)`` for the new rows, layer by layer, without forming any per-token weights."""
    a = q
    last = len(weights) - 1
    for layer, w in enumerate(weights):
        # In-place accumulation into fresh products (autograd-safe: no op here saves its output).
        pre = torch.bmm(a if coef.beta is None else a * coef.beta.unsqueeze(-1), w)
        if momentum is not None:
            pre.baddbmm_(a * coef.f.unsqueeze(-1), momentum[layer])
        scores = torch.bmm(a, chunk.inputs[layer].mT).mul_(coef.g)
        pre.baddbmm_(scores, chunk.deltas[layer], alpha=-1)
        a = pre if layer == last else torch.nn.functional.silu(pre)
    return a


def _commit(weights, momentum, chunk: OpenChunk, coef: _Coefficients):
    """The weights and momentum after the chunk's last row."""
    g_end = coef.g[:, -1, :, None]
    new_weights, new_momentum = [], None if momentum is None else []
    for layer, w in enumerate(weights):
        x, delta = chunk.inputs[layer], chunk.deltas[layer]
        w = w.clone() if coef.beta is None else w * coef.beta[:, -1, None, None]
        if momentum is not None:
            s = momentum[layer]
            w.addcmul_(s, coef.f[:, -1, None, None])
            s = (s * coef.m_end[:, None, None]).baddbmm_(x.mT, coef.s_end.unsqueeze(-1) * delta, alpha=-1)
            new_momentum.append(s)
        new_weights.append(w.baddbmm_(x.mT, g_end * delta, alpha=-1))
    return new_weights, new_momentum


def _check_inputs(q, k, v, theta, eta, alpha, weights, momentum, chunk_size, open_chunk) -> None:
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, Tensor) or x.dim() != 4:
            raise ValueError(f"{name} must be a 4-D tensor [B, H, T, d], got {describe(x)}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {x.dtype}")
        if x.dtype != q.dtype or x.device != q.device:
            raise ValueError(f"{name} has dtype {x.dtype} on {x.device}; q has {q.dtype} on {q.device}")
    lead = q.shape[:-1]
    if k.shape[:-1] != lead or v.shape[:-1] != lead:
        raise ValueError(
            f"q, k, v must agree in [B, H, T]: got {list(q.shape)}, {list(k.shape)}, {list(v.shape)}"
        )
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"k must have q's feature size {q.shape[-1]}, got {k.shape[-1]}")
    for name, gate in (("theta", theta), ("eta", eta), ("alpha", alpha)):
        if gate is None and name == "theta":
            raise ValueError("theta is required")
        if gate is not None and (not isinstance(gate, Tensor) or gate.shape != lead or gate.dtype != q.dtype):
            raise ValueError(f"{name} must be a {q.dtype} tensor of shape {list(lead)}, got {describe(gate)}")
    if not isinstance(weights, (list, tuple)) or not weights:
        raise ValueError("weights must be a non-empty list of [B, H, d_in, d_out] tensors")
    expected_in = q.shape[-1]
    for layer, w in enumerate(weights):
        if (
            not isinstance(w, Tensor)
            or w.dim() != 4
            or w.shape[:2] != q.shape[:2]
            or w.shape[2] != expected_in
        ):
            raise ValueError(
                f"weights[{layer}] must have shape [{q.shape[0]}, {q.shape[1]}, {expected_in}, d_out], "
                f"got {describe(w)}"
            )
        if w.dtype != q.dtype or w.device != q.device:
            raise ValueError(
                f"weights[{layer}] has dtype {w.dtype} on {w.device}; q has {q.dtype} on {q.device}"
            )
        expected_in = w.shape[3]
    if v.shape[-1] != expected_in:
        raise ValueError(f"v must have the memory's output size {expected_in}, got {v.shape[-1]}")
    if (eta is None) != (momentum is None):
        raise ValueError("eta and momentum must be given together (or both None for no momentum)")
    if momentum is not None:
        if not isinstance(momentum, (list, tuple)) or len(momentum) != len(weights):
            raise ValueError(f"momentum must be a list of {len(weights)} tensors shaped like weights")
        for layer, (s, w) in enumerate(zip(momentum, weights)):
            if not isinstance(s, Tensor) or s.shape != w.shape or s.dtype != w.dtype:
                raise ValueError(
                    f"momentum[{layer}] must match weights[{layer}] {list(w.shape)}, got {describe(s)}"
                )
    if open_chunk is not None:
        if open_chunk.length >= chunk_size or open_chunk.theta.shape[:2] != q.shape[:2]:
            raise ValueError(f"open_chunk holds {open_chunk.length} rows; it must hold fewer than chunk_size")
        if (open_chunk.eta is None) != (eta is None) or (open_chunk.alpha is None) != (alpha is None):
            raise ValueError("open_chunk's gates must match the given eta/alpha (None or not)")
