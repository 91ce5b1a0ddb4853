import pytest
import torch
import torch.nn.functional as F


def random_memory_inputs(
    batch=2,
    heads=2,
    length=37,
    dim=8,
    depth=2,
    expansion=2,
    momentum=True,
    decay=True,
    dtype=torch.float64,
    max_lr=0.02,
    requires_grad=False,
):
    """Arguments for memory_update as a model would give them: unit-norm q and k, gates in range.

    The default ``max_lr`` keeps random draws stable (0 of 600 diverged at 0.03; at 0.05, momentum
    without decay diverged about once in 50 runs), so a comparison never meets NaN on both sides.
    """
    shape = (batch, heads, length)
    q = F.normalize(torch.randn(*shape, dim, dtype=dtype), dim=-1)
    k = F.normalize(torch.randn(*shape, dim, dtype=dtype), dim=-1)
    v = torch.randn(*shape, dim, dtype=dtype)
    theta = torch.rand(shape, dtype=dtype) * max_lr
    eta = torch.rand(shape, dtype=dtype) if momentum else None
    alpha = torch.rand(shape, dtype=dtype) * 0.2 if decay else None
    sizes = [dim] + [dim * expansion] * (depth - 1) + [dim]
    weights = [torch.randn(batch, heads, a, b, dtype=dtype) / a**0.5 for a, b in zip(sizes[:-1], sizes[1:])]
    surprise = [0.1 * torch.randn_like(w) for w in weights] if momentum else None
    args = [q, k, v, theta, eta, alpha, weights, surprise]
    if requires_grad:
        for x in [q, k, v, theta, eta, alpha, *weights, *(surprise or [])]:
            if x is not None:
                x.requires_grad_()
    return args


@pytest.fixture
def memory_inputs():
    return random_memory_inputs
