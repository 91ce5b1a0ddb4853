"""Cross-entropy over a tied output layer without materialising the logits of a whole batch.

At the default's shape the 4,096-way output layer is most of a CPU training step, and most of that
is memory traffic: a batch of 8 x 1,024 tokens has 134 MB of float32 logits, written, read by the
softmax, written again by its backward. Here the logits exist one block of rows at a time (a few
MB, cache-sized) and the backward recomputes them from the hidden states: one more matmul, far
less traffic. The loss is exactly the cross-entropy of ``hidden @ weight.T``, up to rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

ROWS = 128  # tokens per block: 128 x 4,096 float32 logits are 2 MB


def linear_cross_entropy(
    hidden: Tensor, weight: Tensor, targets: Tensor, rows: int = ROWS
) -> tuple[Tensor, Tensor]:
    """Each token's cross-entropy of the logits ``hidden @ weight.T`` against ``targets``, and the
    logits' argmax (the prediction, for accuracy; no gradient).

    ``hidden`` ``[N, d]``, ``weight`` ``[V, d]``, ``targets`` ``[N]`` int64 in ``[0, V)``. The
    logits are taken in float32 at least (as ``F.cross_entropy(logits.float(), ...)`` would).
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden [N, d] and weight [V, d] must agree, got {hidden.shape}, {weight.shape}")
    if targets.shape != hidden.shape[:1] or targets.dtype != torch.int64:
        raise ValueError(f"targets must be int64 [{hidden.shape[0]}], got {targets.dtype} {targets.shape}")
    return _LinearCrossEntropy.apply(hidden, weight, targets, rows)


def _logits(hidden: Tensor, weight: Tensor) -> Tensor:
    logits = hidden @ weight.T
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, rows: int):
        count = hidden.shape[0]
        losses = hidden.new_empty(count, dtype=torch.promote_types(hidden.dtype, torch.float32))
        lse = torch.empty_like(losses)
        predicted = torch.empty(count, dtype=torch.int64, device=hidden.device)
        for start in range(0, count, rows):
            block = slice(start, start + rows)
            logits = _logits(hidden[block], weight)
            torch.logsumexp(logits, dim=-1, out=lse[block])
            picked = logits.gather(1, targets[block, None]).squeeze(1)
            torch.sub(lse[block], picked, out=losses[block])
            torch.argmax(logits, dim=-1, out=predicted[block])
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.rows = rows
        ctx.mark_non_differentiable(predicted)
        return losses, predicted

    @staticmethod
    def backward(ctx, grad_losses: Tensor, _grad_predicted: Tensor):
        hidden, weight, targets, lse = ctx.saved_tensors
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=lse.dtype, device=weight.device)
        for start in range(0, hidden.shape[0], ctx.rows):
            block = slice(start, start + ctx.rows)
            # d loss / d logits = softmax - onehot, times each token's incoming gradient
            grad = _logits(hidden[block], weight).sub_(lse[block, None]).exp_()
            rows = torch.arange(grad.shape[0], device=grad.device)
            grad[rows, targets[block]] -= 1
            grad.mul_(grad_losses[block, None])
            grad = grad.to(hidden.dtype)
            torch.mm(grad, weight, out=grad_hidden[block])
            grad_weight.addmm_(grad.T, hidden[block].to(lse.dtype))
        return grad_hidden, grad_weight.to(weight.dtype), None, None
