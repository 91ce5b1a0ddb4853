"""The log-depth associative scan computes the same recurrence as the loop."""

import pytest
import torch

from titans_core.ops import linear_recurrence, linear_scan


@pytest.mark.parametrize("length", [1, 2, 3, 7, 64, 100])
@pytest.mark.parametrize("with_h0", [False, True])
def test_scan_equals_loop(length, with_h0):
    a = torch.rand(3, 5, length, dtype=torch.float64)
    b = torch.randn(3, 5, length, dtype=torch.float64)
    h0 = torch.randn(3, 5, dtype=torch.float64) if with_h0 else None
    torch.testing.assert_close(linear_scan(a, b, h0), linear_recurrence(a, b, h0), rtol=1e-12, atol=1e-12)


def test_scan_broadcasts_coefficients_over_columns():
    a = torch.rand(4, 1, 33, dtype=torch.float64)  # one decay per step, shared by 6 columns
    b = torch.randn(4, 6, 33, dtype=torch.float64)
    torch.testing.assert_close(linear_scan(a, b), linear_recurrence(a, b), rtol=1e-12, atol=1e-12)


def test_scan_handles_exact_zero_and_one_coefficients():
    a = torch.tensor([1.0, 0.0, 1.0, 0.5, 0.0, 1.0, 1.0], dtype=torch.float64)
    b = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], dtype=torch.float64)
    assert linear_scan(a, b).tolist() == [1.0, 2.0, 5.0, 6.5, 5.0, 11.0, 18.0]


def test_scan_gradients_equal_loop_gradients():
    a = torch.rand(2, 19, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 19, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 19, dtype=torch.float64)
    scan = torch.autograd.grad((linear_scan(a, b, h0) * weights).sum(), (a, b, h0))
    loop = torch.autograd.grad((linear_recurrence(a, b, h0) * weights).sum(), (a, b, h0))
    for fast, reference in zip(scan, loop, strict=True):
        torch.testing.assert_close(fast, reference, rtol=1e-10, atol=1e-12)
