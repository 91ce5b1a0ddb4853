"""The blockwise tied-output cross-entropy is the plain one: values, argmax and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from titans_core.train.loss import linear_cross_entropy


@pytest.mark.parametrize("rows", [1, 7, 64, 1000])
def test_matches_cross_entropy_of_the_logits_in_float64(rows):
    generator = torch.Generator().manual_seed(rows)
    hidden = torch.randn(50, 8, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(33, 8, dtype=torch.float64, generator=generator, requires_grad=True)
    targets = torch.randint(0, 33, (50,), generator=generator)
    incoming = torch.rand(50, dtype=torch.float64, generator=generator)  # per-token loss weights

    losses, predicted = linear_cross_entropy(hidden, weight, targets, rows=rows)
    grads = torch.autograd.grad((losses * incoming).sum(), (hidden, weight))
    logits = hidden @ weight.T
    expected = F.cross_entropy(logits, targets, reduction="none")
    expected_grads = torch.autograd.grad((expected * incoming).sum(), (hidden, weight))

    torch.testing.assert_close(losses, expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(predicted, logits.argmax(dim=-1))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_passes_gradcheck():
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(9, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(6, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    targets = torch.randint(0, 6, (9,), generator=generator)
    assert torch.autograd.gradcheck(
        lambda h, w: linear_cross_entropy(h, w, targets, rows=4)[0], (hidden, weight)
    )


def test_float32_agrees_with_the_float64_loss():
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(300, 16, generator=generator)
    weight = 0.3 * torch.randn(500, 16, generator=generator)
    targets = torch.randint(0, 500, (300,), generator=generator)
    losses, _ = linear_cross_entropy(hidden, weight, targets)
    expected = F.cross_entropy(hidden.double() @ weight.double().T, targets, reduction="none")
    torch.testing.assert_close(losses.double(), expected, rtol=1e-5, atol=1e-5)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="must agree"):
        linear_cross_entropy(torch.zeros(3, 4), torch.zeros(5, 2), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="targets"):
        linear_cross_entropy(torch.zeros(3, 4), torch.zeros(5, 4), torch.zeros(2, dtype=torch.int64))
