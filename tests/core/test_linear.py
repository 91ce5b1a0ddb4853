"""The decode-layout linear layer: the same numbers as ``nn.Linear``, and never a stale weight."""

import pytest
import torch
import torch.nn.functional as F

from titans_core.linear import FAST_ROWS, Linear


@pytest.mark.parametrize("shape", [(1, 64), (2, 64), (1, 1, 64), (2, 1, 64), (1, 2, 64)])
@pytest.mark.parametrize("bias", [True, False])
def test_one_or_two_rows_match_nn_linear(shape, bias):
    torch.manual_seed(0)
    layer = Linear(64, 48, bias=bias).double()
    x = torch.randn(*shape, dtype=torch.float64)
    with torch.inference_mode():
        fast = layer(x)
    expected = F.linear(x, layer.weight, layer.bias)
    assert fast.shape == expected.shape
    torch.testing.assert_close(fast, expected, rtol=1e-12, atol=1e-12)


def test_more_rows_take_nn_linear_itself():
    torch.manual_seed(0)
    layer = Linear(64, 48)
    x = torch.randn(FAST_ROWS + 1, 64)
    with torch.inference_mode():
        assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))


def test_the_copy_follows_every_change_of_the_weight():
    torch.manual_seed(0)
    layer = Linear(16, 8)
    x = torch.randn(1, 16)
    with torch.no_grad():
        layer(x)  # makes the copy
        layer.weight.mul_(-2.0)  # an optimizer step changes the weight in place
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    other = Linear(16, 8)
    layer.load_state_dict(other.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(layer(x), F.linear(x, other.weight, other.bias))
    layer.double()  # a new tensor in another dtype
    with torch.no_grad():
        torch.testing.assert_close(layer(x.double()), F.linear(x.double(), layer.weight, layer.bias))


def test_gradients_flow_through_single_rows():
    torch.manual_seed(0)
    layer = Linear(16, 8)
    x = torch.randn(1, 16, requires_grad=True)
    layer(x).square().sum().backward()
    reference = Linear(16, 8)
    reference.load_state_dict(layer.state_dict())
    x_ref = x.detach().clone().requires_grad_()
    F.linear(x_ref, reference.weight, reference.bias).square().sum().backward()
    torch.testing.assert_close(layer.weight.grad, reference.weight.grad)
    torch.testing.assert_close(x.grad, x_ref.grad)


def test_weights_made_in_inference_mode_are_used_directly():
    with torch.inference_mode():
        layer = Linear(16, 8)  # inference tensors: no version counter to keep a copy honest
        x = torch.randn(1, 16)
        first = layer(x)
        layer.weight.add_(1.0)
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
        assert not torch.equal(first, layer(x))
