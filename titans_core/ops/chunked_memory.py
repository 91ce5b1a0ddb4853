"""The Titans neural-memory update in closed form: a few matmuls per chunk, no autograd inside.

The memory is an MLP ``M(x) = silu(...silu(x W_1)...) W_L`` per batch entry and head, trained at
test time on ``l(M; k, v) = ||M(k) - v||^2`` (summed over features). The definition (computed token
by token in :mod:`titans_core.ops.reference`): chunks of ``chunk_size`` tokens aligned to positions
in the stream; for token ``t`` in a chunk starting at ``t0``::

    u_t = clip(grad_M l(M_{t0}; k_t, v_t))  S_t = eta_t S_{t-1} - theta_t u_t
    M_t = (1 - alpha_t) M_{t-1} + S_t       y_t = M_t(q_t)

``clip`` is the divergence guard: a token's gradient (the surprise, over all the MLP's layers) is
scaled to norm ``max_surprise`` where it is larger (``max_surprise=None``: no guard). A memory that
overshoots feeds itself ever larger gradients; clipped, each token moves it by at most
``theta_t * max_surprise``, so an unstable chunk can no longer grow without bound.

Every ``u_t`` of a chunk is taken at the same weights, and each layer's gradient is an outer
product ``x_t^T delta_t`` of the layer's input and the back-propagated residual at that input. So
``M_t = beta_t M_{t0} + f_t S_{t0} - sum_j G[t, j] x_j^T delta_j`` with scalar gate coefficients, and
reading ``M_t(q_t)`` layer by layer is attention-like: ``(tril(A X^T) * G) Delta``. The coefficients
are products of gates over spans of the chunk, computed as segment products by cumprod (exact with
gates of exactly 0 or 1: no division, no log of zero).

Streaming: a chunk may be left open (the input ended mid-chunk). :class:`OpenChunk` keeps the
current memory in that factored form, so a later call (or a one-token decode step) continues with
exactly the numbers of the one-shot computation, and closing the chunk is a matmul per layer (two
with momentum).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from titans_core._validation import describe


@dataclass
class OpenChunk:
    """A chunk in progress: the current memory, factored over the memory at the chunk start::

        W_l = beta W0_l + f S0_l - sum_j g_j x_lj^T delta_lj      (weights)
        S_l =             m S0_l - sum_j s_j x_lj^T delta_lj      (momentum)

    ``inputs[l]`` (``[B, H, p, d_in]``) and ``deltas[l]`` (``[B, H, p, d_out]``) hold layer ``l``'s
    input at each key of the chunk and the loss gradient with respect to that layer's output, taken
    at the chunk-start weights. ``g`` and ``s`` are ``[B, H, p]``; ``beta``, ``f``, ``m`` are
    ``[B, H]``. Without decay ``beta`` is None (1); without momentum ``s``, ``f`` and ``m`` are None.
    """

    inputs: list[Tensor]
    deltas: list[Tensor]
    g: Tensor
    s: Tensor | None
    beta: Tensor | None
    f: Tensor | None
    m: Tensor | None

    @property
    def length(self) -> int:
        return self.g.shape[-1]

    def tensors(self) -> list[Tensor]:
        """Every tensor held, for moving, stacking and counting bytes."""
        scalars = [x for x in (self.s, self.beta, self.f, self.m) if x is not None]
        return [*self.inputs, *self.deltas, self.g, *scalars]

    def map(self, fn: Callable[[Tensor], Tensor]) -> OpenChunk:
        """The same chunk with ``fn`` applied to every tensor (device moves, batch reshapes, slicing)."""
        maybe = lambda x: None if x is None else fn(x)  # noqa: E731
        return OpenChunk(
            [fn(x) for x in self.inputs],
            [fn(x) for x in self.deltas],
            fn(self.g),
            maybe(self.s),
            maybe(self.beta),
            maybe(self.f),
            maybe(self.m),
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
    *,
    max_surprise: float | None = None,
) -> tuple[Tensor, list[Tensor], list[Tensor] | None]:
    """Read and update the memory over a sequence that starts at a chunk boundary.

    Shapes: ``q, k, v`` ``[B, H, T, d]``; ``theta, eta, alpha`` ``[B, H, T]``; ``weights[l]`` and
    ``momentum[l]`` ``[B, H, d_in, d_out]``. ``eta=None`` with ``momentum=None`` means no momentum
    (the same as ``eta = 0``); ``alpha=None`` means no forgetting (``alpha = 0``). A trailing partial
    chunk is processed as a chunk. Returns ``y`` ``[B, H, T, d_out]`` and the weights and momentum
    after the last token. ``max_surprise`` bounds the norm of each token's gradient (the guard).
    """
    y, weights, momentum, open_chunk = memory_stream(
        q, k, v, theta, eta, alpha, weights, momentum, chunk_size, max_surprise=max_surprise
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
    *,
    max_surprise: float | None = None,
    on_write: Callable[[Tensor], None] | None = None,
) -> tuple[Tensor, list[Tensor], list[Tensor] | None, OpenChunk | None]:
    """:func:`memory_update` for a stream: the input continues ``open_chunk`` (if any).

    ``weights`` and ``momentum`` are those at the start of the open chunk. Returns ``y`` and the
    state to continue from: the weights and momentum at the start of the chunk left open, and that
    chunk (None when the input ends on a chunk boundary). ``on_write``, if given, is called with
    each token's write strength ``theta_t |u_t|`` (``[B, H, rows]``, rows in order): the size of
    the surprise the token wrote, from factors the update computes anyway.
    """
    if isinstance(q, Tensor) and q.dim() == 4 and q.shape[2] == 1:  # a decode step
        y, open_chunk = memory_step(
            q,
            k,
            v,
            theta,
            eta,
            alpha,
            weights,
            momentum,
            chunk_size,
            open_chunk,
            max_surprise=max_surprise,
            on_write=on_write,
        )
        if open_chunk.length == chunk_size:
            weights, momentum = commit_chunk(weights, momentum, open_chunk)
            open_chunk = None
        return y, weights, momentum, open_chunk
    _check_inputs(q, k, v, theta, eta, alpha, weights, momentum, chunk_size, open_chunk, max_surprise)
    # Batch and heads are one dimension inside, so every product is a (fused) bmm.
    batch = q.shape[:2]
    q, k, v, theta, eta, alpha = (_flat(x) for x in (q, k, v, theta, eta, alpha))
    weights, momentum = _flat_list(weights), _flat_list(momentum)
    open_chunk = None if open_chunk is None else open_chunk.map(_flat)
    total = q.shape[1]
    filled = 0 if open_chunk is None else open_chunk.length
    first = min(total, chunk_size - filled)  # the rows that close the open chunk, or a first whole one
    bounds = [0, *range(first, total, chunk_size), total] if total else [0]
    # Two or more whole chunks: their gate products at once. With gradients (training) they go
    # through _whole_chunks, every read in one batched product: a few large ops, not many small
    # ones. Without (inference) chunk by chunk, each commit reusing the memory in place.
    whole = [i for i in range(len(bounds) - 1) if bounds[i + 1] - bounds[i] == chunk_size]
    if len(whole) < 2:
        whole = []
    batched = None
    if whole and not torch.is_grad_enabled():
        rows = slice(bounds[whole[0]], bounds[whole[-1] + 1])
        split = lambda x: None if x is None else x[:, rows].unflatten(1, (len(whole), chunk_size))  # noqa: E731
        batched = _LocalCoefficients.of(split(theta), split(eta), split(alpha))
    outputs, norms = [], []
    owned = False  # whether the weights are tensors this call made, free to update in place
    for i, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        in_whole = bool(whole) and whole[0] <= i <= whole[-1]
        if in_whole and batched is None:
            if i == whole[0]:
                rows = slice(start, bounds[whole[-1] + 1])
                y, weights, momentum, squared = _whole_chunks(
                    *(None if x is None else x[:, rows] for x in (q, k, v, theta, eta, alpha)),
                    weights,
                    momentum,
                    chunk_size,
                    max_surprise,
                    on_write is not None,
                )
                outputs.append(y)
                norms.append(squared)
                owned = True
            continue
        rows = slice(start, end)
        if in_whole:
            local = batched.select(i - whole[0])
        else:
            local = _LocalCoefficients.of(*(None if x is None else x[:, rows] for x in (theta, eta, alpha)))
        y, open_chunk, squared = _advance_chunk(
            q[:, rows], k[:, rows], v[:, rows], weights, momentum, open_chunk, local, max_surprise, on_write
        )
        outputs.append(y)
        norms.append(squared)
        if open_chunk.length == chunk_size:
            in_place = owned and not torch.is_grad_enabled()
            weights, momentum = _commit(weights, momentum, open_chunk, in_place)
            open_chunk, owned = None, True
    if len(outputs) == 1:
        y = outputs[0]
    else:
        y = torch.cat(outputs, dim=1) if outputs else q.new_empty(*q.shape[:-1], weights[-1].shape[-1])
    if on_write is not None and total:  # once per call: a few ops, not a few per chunk
        on_write(_write_strength(theta, torch.cat(norms, dim=1), max_surprise).unflatten(0, batch))
    weights, momentum = _unflat_list(weights, batch), _unflat_list(momentum, batch)
    if open_chunk is not None:
        # A state is kept and stored: its rows must not be views pinning this call's inputs.
        open_chunk = open_chunk.map(lambda x: _compact(x.unflatten(0, batch)))
    return y.unflatten(0, batch), weights, momentum, open_chunk


def commit_chunk(
    weights: list[Tensor], momentum: list[Tensor] | None, open_chunk: OpenChunk
) -> tuple[list[Tensor], list[Tensor] | None]:
    """The weights and momentum after the last row of ``open_chunk`` (closing it early)."""
    batch = weights[0].shape[:2]
    weights, momentum = _commit(_flat_list(weights), _flat_list(momentum), open_chunk.map(_flat))
    return _unflat_list(weights, batch), _unflat_list(momentum, batch)


def _compact(x: Tensor) -> Tensor:
    """``x`` itself if it owns exactly its storage, else a copy that does."""
    return x if x.untyped_storage().nbytes() == x.numel() * x.element_size() else x.clone()


def _flat(x: Tensor | None) -> Tensor | None:
    return None if x is None else x.flatten(0, 1)


def _flat_list(xs: list[Tensor] | None) -> list[Tensor] | None:
    return None if xs is None else [x.flatten(0, 1) for x in xs]


def _unflat_list(xs: list[Tensor] | None, batch: torch.Size) -> list[Tensor] | None:
    return None if xs is None else [x.unflatten(0, batch) for x in xs]


def _advance_chunk(
    q, k, v, weights, momentum, open_chunk, local, max_surprise, on_write
) -> tuple[Tensor, OpenChunk, Tensor | None]:
    """Add rows to the current chunk: their reads, the chunk with them, and the squared norms of
    their gradients (None unless the guard or ``on_write`` needed them)."""
    inputs, deltas, squared = _key_factors(k, v, weights, max_surprise, on_write is not None)
    g, beta, f = local.g, local.beta, local.f
    s_end, m_end = local.s_end, None if local.m is None else local.m[:, -1]
    if open_chunk is not None:
        # The earlier rows of the chunk enter through the factored memory at the row before this
        # call: their weights carry on decayed, plus what the carried momentum adds.
        prev = open_chunk
        inputs = [torch.cat(pair, dim=1) for pair in zip(prev.inputs, inputs)]
        deltas = [torch.cat(pair, dim=1) for pair in zip(prev.deltas, deltas)]
        old = prev.g.unsqueeze(1) if beta is None else beta.unsqueeze(-1) * prev.g.unsqueeze(1)
        if momentum is not None:
            old = old + local.f.unsqueeze(-1) * prev.s.unsqueeze(1)
            f = prev.f.unsqueeze(-1) * (1 if beta is None else beta) + local.f * prev.m.unsqueeze(-1)
            s_end = torch.cat([local.m[:, -1:] * prev.s, s_end], dim=-1)
            m_end = m_end * prev.m
        g = torch.cat([old.expand(-1, g.shape[1], -1), g], dim=-1)
        beta = None if beta is None else beta * prev.beta.unsqueeze(-1)
    y = _read(q, weights, momentum, inputs, deltas, g, beta, f)
    last = lambda x: None if x is None else x[:, -1]  # noqa: E731
    return y, OpenChunk(inputs, deltas, g[:, -1], s_end, last(beta), last(f), m_end), squared


READ_GROUP_BYTES = 16 * 2**20  # the chunk-start weights stacked for one batched read stay below this


def _whole_chunks(
    q, k, v, theta, eta, alpha, weights, momentum, chunk_size, max_surprise, with_norms
) -> tuple[Tensor, list[Tensor], list[Tensor] | None, Tensor | None]:
    """Rows from a chunk boundary that fill whole chunks: their reads, the weights and momentum
    after the last chunk, and the squared gradient norms (None unless the guard or ``with_norms``).

    A chunk's gradients are taken at the weights the chunk before it left, so the commits go one
    after another; a read needs only its chunk's start weights and factors, so the reads of many
    chunks are one batched product (groups of chunks, their stacked weights bounded in bytes).
    """
    n, count = q.shape[0], q.shape[1] // chunk_size
    split = lambda x: None if x is None else x.unflatten(1, (count, chunk_size))  # noqa: E731
    local = _LocalCoefficients.of(split(theta), split(eta), split(alpha))
    ends = lambda x: [None] * count if x is None else x.unbind(1)  # noqa: E731
    keys, values = split(k).unbind(1), split(v).unbind(1)
    g_end, s_end = local.g[:, :, -1].unbind(1), ends(local.s_end)
    beta_end, f_end, m_end = (ends(None if x is None else x[..., -1]) for x in (local.beta, local.f, local.m))
    per_chunk = n * sum(w[0].numel() * w.element_size() for w in weights) * (1 + (momentum is not None))
    group = max(1, min(count, READ_GROUP_BYTES // per_chunk))
    stack = lambda layers: [torch.stack(layer, dim=1).flatten(0, 1) for layer in zip(*layers)]  # noqa: E731
    reads, norms = [], []
    for first in range(0, count, group):
        span = range(first, min(count, first + group))
        starts, factors = [], []
        for c in span:
            inputs, deltas, squared = _key_factors(keys[c], values[c], weights, max_surprise, with_norms)
            starts.append((weights, momentum))
            factors.append((inputs, deltas))
            norms.append(squared)
            chunk = OpenChunk(inputs, deltas, g_end[c], s_end[c], beta_end[c], f_end[c], m_end[c])
            weights, momentum = _commit(weights, momentum, chunk)
        flat = lambda x, s=slice(span.start, span.stop): None if x is None else x[:, s].flatten(0, 1)  # noqa: E731
        y = _read(
            flat(split(q)),
            stack([w for w, _ in starts]),
            None if momentum is None else stack([s for _, s in starts]),
            stack([x for x, _ in factors]),
            stack([d for _, d in factors]),
            flat(local.g),
            flat(local.beta),
            flat(local.f),
        )
        reads.append(y.unflatten(0, (n, len(span))).flatten(1, 2))
    y = reads[0] if len(reads) == 1 else torch.cat(reads, dim=1)
    return y, weights, momentum, None if norms[0] is None else torch.cat(norms, dim=1)


def memory_step(
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
    *,
    max_surprise: float | None = None,
    on_write: Callable[[Tensor], None] | None = None,
) -> tuple[Tensor, OpenChunk]:
    """One token per stream (``T = 1``): its read, and the open chunk with its row appended.

    The decode step of :func:`memory_stream`, which calls it, without closing a full chunk (the
    caller commits it with :func:`commit_chunk`). ``open_chunk`` may hold padding rows (zero inputs,
    deltas, ``g`` and ``s``), which add nothing, and a stream without rows yet is ``beta = m = 1``,
    ``f = 0``: that is how streams at different positions decode as one batch.
    """
    _check_inputs(q, k, v, theta, eta, alpha, weights, momentum, chunk_size, open_chunk, max_surprise)
    if q.shape[2] != 1:
        raise ValueError(f"memory_step takes one token per stream, got {q.shape[2]}")
    y, open_chunk, squared = _advance_one(
        q, k, v, theta, eta, alpha, weights, momentum, open_chunk, max_surprise, on_write is not None
    )
    if on_write is not None:
        on_write(_write_strength(theta, squared, max_surprise))
    return y, open_chunk


def _advance_one(
    q, k, v, theta, eta, alpha, weights, momentum, open_chunk, max_surprise, with_norms
) -> tuple[Tensor, OpenChunk, Tensor | None]:
    """:func:`_advance_chunk` for one row with every product written out, on ``[B, H, ...]``
    tensors as they come: decoding is bound by the number of ops, not FLOPs.
    """
    inputs, deltas, squared = _key_factors(k, v, weights, max_surprise, with_norms)
    theta, kept = theta[..., 0], None if alpha is None else 1 - alpha[..., 0]
    eta = None if eta is None else eta[..., 0]
    if open_chunk is None:
        g, s, beta, f, m = theta.unsqueeze(-1), None, kept, eta, eta
        if eta is not None:
            s = g
    else:
        prev = open_chunk
        inputs = [torch.cat(pair, dim=2) for pair in zip(prev.inputs, inputs)]
        deltas = [torch.cat(pair, dim=2) for pair in zip(prev.deltas, deltas)]
        g = prev.g if kept is None else prev.g * kept.unsqueeze(-1)
        beta = None if kept is None else prev.beta * kept
        s = f = m = None
        if eta is not None:
            g = g + prev.s * eta.unsqueeze(-1)
            s = torch.cat([prev.s * eta.unsqueeze(-1), theta.unsqueeze(-1)], dim=-1)
            f = (prev.f if kept is None else prev.f * kept) + prev.m * eta
            m = prev.m * eta
        g = torch.cat([g, theta.unsqueeze(-1)], dim=-1)
    a, last = q, len(weights) - 1
    for layer, w in enumerate(weights):
        pre = (a if beta is None else a * beta[..., None, None]) @ w
        if momentum is not None:
            pre = pre + (a * f[..., None, None]) @ momentum[layer]
        pre = pre - ((a @ inputs[layer].mT) * g.unsqueeze(-2)) @ deltas[layer]
        a = pre if layer == last else torch.nn.functional.silu(pre)
    return a, OpenChunk(inputs, deltas, g, s, beta, f, m), squared


def _silu_grad(h: Tensor) -> Tensor:
    s = torch.sigmoid(h)
    return s * (1 + h * (1 - s))


def _key_factors(
    k: Tensor, v: Tensor, weights: list[Tensor], max_surprise: float | None, with_norms: bool = False
) -> tuple[list[Tensor], list[Tensor], Tensor | None]:
    """Each layer's input and output-gradient at the keys: the factors of the per-token gradients,
    the deltas scaled so that no token's gradient is longer than ``max_surprise``; and each token's
    squared gradient norm before the scaling (None when neither the guard nor ``with_norms`` wants it).

    Layer ``l``'s gradient is the outer product ``x^T delta``, of norm ``|x| |delta|``: the whole
    gradient's norm needs no product formed, and scaling every delta of a token scales its gradient.
    """
    inputs, pre = [k], []
    for w in weights[:-1]:
        pre.append(inputs[-1] @ w)
        inputs.append(torch.nn.functional.silu(pre[-1]))
    residual = (inputs[-1] @ weights[-1]).sub_(v)
    delta = residual + residual  # 2 (M(k) - v), exactly: no scalar operand to wrap in a tensor
    deltas = [delta]
    for w, h in zip(reversed(weights[1:]), reversed(pre)):
        delta = (delta @ w.mT).mul_(_silu_grad(h))
        deltas.append(delta)
    deltas = deltas[::-1]
    if max_surprise is None and not with_norms:
        return inputs, deltas, None
    squared = sum((x * x).sum(-1) * (d * d).sum(-1) for x, d in zip(inputs, deltas))
    if max_surprise is None:
        return inputs, deltas, squared
    # clamp_min first: below the bound the scale is exactly 1 and no gradient flows through it
    scale = (max_surprise * squared.clamp_min(max_surprise**2).rsqrt()).clamp(max=1.0).unsqueeze(-1)
    return inputs, [d * scale for d in deltas], squared


def _write_strength(theta: Tensor, squared: Tensor, max_surprise: float | None) -> Tensor:
    """``theta_t |u_t|``: the gate times the token's gradient norm, as the guard clipped it."""
    norm = squared.sqrt()
    return theta * (norm if max_surprise is None else norm.clamp(max=max_surprise))


def _triangles(length: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Masks for ``length`` rows: upper with diagonal, strictly upper, lower with diagonal."""
    ones = torch.ones(length, length, dtype=torch.bool, device=device)
    return ones.triu(), ones.triu(1), ones.tril()


def _segment_products(a: Tensor) -> Tensor:
    """``P[..., t, j] = prod(a[..., j+1 : t+1])`` for ``t >= j``, and 0 above the diagonal."""
    length = a.shape[-1]
    upper, strictly_upper, _ = _triangles(length, a.device)
    factors = a.unsqueeze(-1).expand(*a.shape, length).masked_fill(upper, 1.0)
    return factors.cumprod(dim=-2).masked_fill(strictly_upper, 0.0)


@dataclass
class _LocalCoefficients:
    """Gate products over the ``n`` new rows of a call, relative to the row just before them.

    The fields mean what :class:`OpenChunk`'s do, with that row as the start: ``g[t, j]`` is new row
    j's gradient weight in the weights read at row t; ``beta[t]`` the share of the start weights
    left at t (None without decay); ``m[t]`` of the start momentum; ``f[t]`` what that momentum has
    added to the weights by t; ``s_end[j]`` row j's gradient weight in the momentum after the last
    row (the last three None without momentum). Leading dimensions of the gates carry through, so
    many chunks are computed at once.
    """

    g: Tensor
    beta: Tensor | None
    m: Tensor | None
    f: Tensor | None
    s_end: Tensor | None

    @classmethod
    def of(cls, theta: Tensor, eta: Tensor | None, alpha: Tensor | None) -> _LocalCoefficients:
        length = theta.shape[-1]
        if length == 1:
            # One row (a decode step): every product is empty, the coefficients are the gates.
            beta = None if alpha is None else 1 - alpha
            return cls(theta.unsqueeze(-1), beta, eta, eta, None if eta is None else theta)
        if alpha is None:
            keep, beta = _triangles(length, theta.device)[2].to(theta.dtype), None
        else:
            kept = 1 - alpha
            keep, beta = _segment_products(kept), torch.cumprod(kept, dim=-1)
        if eta is None:
            return cls(keep * theta.unsqueeze(-2), beta, None, None, None)
        scaled = _segment_products(eta) * theta.unsqueeze(-2)
        m = torch.cumprod(eta, dim=-1)
        f = (keep @ m.unsqueeze(-1)).squeeze(-1)
        return cls(keep @ scaled, beta, m, f, scaled[..., -1, :])

    def select(self, index: int) -> _LocalCoefficients:
        """The coefficients of chunk ``index`` out of many computed at once (dimension 1)."""
        fields = (self.g, self.beta, self.m, self.f, self.s_end)
        return _LocalCoefficients(*(None if x is None else x[:, index] for x in fields))


def _read(q, weights, momentum, inputs, deltas, g, beta, f) -> Tensor:
    """``M_t(q_t)`` for the new rows, layer by layer, without forming any per-token weights."""
    a = q
    last = len(weights) - 1
    for layer, w in enumerate(weights):
        # In-place accumulation into fresh products (autograd-safe: no op here saves its output).
        pre = torch.bmm(a if beta is None else a * beta.unsqueeze(-1), w)
        if momentum is not None:
            pre.baddbmm_(a * f.unsqueeze(-1), momentum[layer])
        scores = torch.bmm(a, inputs[layer].mT).mul_(g)
        pre.baddbmm_(scores, deltas[layer], alpha=-1)
        a = pre if layer == last else torch.nn.functional.silu(pre)
    return a


def _commit(weights, momentum, chunk: OpenChunk, in_place: bool = False):
    """Materialise the factored memory: the weights and momentum after the chunk's last row.

    ``in_place`` reuses the given tensors' memory: only for tensors the caller owns, without autograd.
    """
    scale = lambda x, c: x.mul_(c) if in_place else x * c  # noqa: E731
    new_weights, new_momentum = [], None if momentum is None else []
    for layer, w in enumerate(weights):
        x, delta = chunk.inputs[layer], chunk.deltas[layer]
        if chunk.beta is not None:
            w = scale(w, chunk.beta[:, None, None])
        elif not in_place:
            w = w.clone()
        if momentum is not None:
            s = momentum[layer]
            w.addcmul_(s, chunk.f[:, None, None])
            s = scale(s, chunk.m[:, None, None]).baddbmm_(x.mT, chunk.s.unsqueeze(-1) * delta, alpha=-1)
            new_momentum.append(s)
        new_weights.append(w.baddbmm_(x.mT, chunk.g.unsqueeze(-1) * delta, alpha=-1))
    return new_weights, new_momentum


def _check_inputs(
    q, k, v, theta, eta, alpha, weights, momentum, chunk_size, open_chunk, max_surprise
) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    check_max_surprise(max_surprise)
    if not isinstance(q, Tensor) or q.dim() != 4 or not q.is_floating_point():
        raise ValueError(f"q must be a floating-point tensor [B, H, T, d], got {describe(q)}")
    batch, heads, length, features = q.shape
    _expect("k", k, (batch, heads, length, features), q)
    if not isinstance(v, Tensor) or v.dim() != 4:
        raise ValueError(f"v must be a tensor [B, H, T, d_out], got {describe(v)}")
    _expect("v", v, (batch, heads, length, v.shape[-1]), q)
    _expect("theta", theta, (batch, heads, length), q)
    for name, gate in (("eta", eta), ("alpha", alpha)):
        if gate is not None:
            _expect(name, gate, (batch, heads, length), q)
    if not isinstance(weights, (list, tuple)) or not weights:
        raise ValueError("weights must be a non-empty list of [B, H, d_in, d_out] tensors")
    sizes = [features]
    for layer, w in enumerate(weights):
        if not isinstance(w, Tensor) or w.dim() != 4:
            raise ValueError(f"weights[{layer}] must be a tensor [B, H, d_in, d_out], got {describe(w)}")
        _expect(f"weights[{layer}]", w, (batch, heads, sizes[-1], w.shape[-1]), q)
        sizes.append(w.shape[-1])
    if v.shape[-1] != sizes[-1]:
        raise ValueError(f"v must have the memory's output size {sizes[-1]}, got {v.shape[-1]}")
    if (eta is None) != (momentum is None):
        raise ValueError("eta and momentum must be given together (or both None for no momentum)")
    if momentum is not None:
        if not isinstance(momentum, (list, tuple)) or len(momentum) != len(weights):
            raise ValueError(f"momentum must be a list of {len(weights)} tensors shaped like weights")
        for layer, (s, w) in enumerate(zip(momentum, weights)):
            _expect(f"momentum[{layer}]", s, w.shape, q)
    if open_chunk is not None:
        _check_open_chunk(open_chunk, sizes, q, chunk_size, momentum=eta is not None, decay=alpha is not None)


def check_max_surprise(max_surprise: float | None) -> None:
    """The guard's bound: None (off) or a positive finite number."""
    if max_surprise is not None and (
        isinstance(max_surprise, bool)
        or not isinstance(max_surprise, int | float)
        or not 0 < max_surprise < math.inf
    ):
        raise ValueError(f"max_surprise must be None or a positive finite number, got {max_surprise!r}")


def _check_open_chunk(chunk, sizes, like: Tensor, chunk_size: int, momentum: bool, decay: bool) -> None:
    if not isinstance(chunk, OpenChunk) or not isinstance(chunk.g, Tensor) or chunk.g.dim() != 3:
        raise ValueError(f"open_chunk must be an OpenChunk with g of shape [B, H, p], got {describe(chunk)}")
    batch, heads = like.shape[:2]
    rows = chunk.g.shape[-1]
    if not 0 < rows < chunk_size:
        raise ValueError(f"open_chunk holds {rows} rows; it must hold 1 to chunk_size - 1 = {chunk_size - 1}")
    _expect("open_chunk.g", chunk.g, (batch, heads, rows), like)
    layers = len(sizes) - 1
    if len(chunk.inputs) != layers or len(chunk.deltas) != layers:
        raise ValueError(f"open_chunk must hold inputs and deltas for {layers} layers")
    for layer in range(layers):
        _expect(f"open_chunk.inputs[{layer}]", chunk.inputs[layer], (batch, heads, rows, sizes[layer]), like)
        _expect(
            f"open_chunk.deltas[{layer}]", chunk.deltas[layer], (batch, heads, rows, sizes[layer + 1]), like
        )
    for name, value, expected, shape in (
        ("s", chunk.s, momentum, (batch, heads, rows)),
        ("f", chunk.f, momentum, (batch, heads)),
        ("m", chunk.m, momentum, (batch, heads)),
        ("beta", chunk.beta, decay, (batch, heads)),
    ):
        if (value is not None) != expected:
            state = "on" if expected else "off"
            raise ValueError(
                f"open_chunk.{name} must be {'given' if expected else 'None'}: momentum/decay is {state}"
            )
        if value is not None:
            _expect(f"open_chunk.{name}", value, shape, like)


def _expect(name: str, x, shape, like: Tensor) -> None:
    """A ValueError naming ``name`` unless ``x`` is a tensor of ``shape`` with ``like``'s dtype and device."""
    if (
        not isinstance(x, Tensor)
        or tuple(x.shape) != tuple(shape)
        or x.dtype != like.dtype
        or x.device != like.device
    ):
        raise ValueError(
            f"{name} must be a {like.dtype} tensor of shape {list(shape)} on {like.device}, got {describe(x)}"
        )
