"""Stacker: the same inputs give the same stacked tensor without copying again; new inputs restack."""

import torch

from titans_core.stacking import Stacker


def test_the_same_tensors_reuse_the_stack_and_others_restack():
    stack = Stacker()
    a, b = torch.randn(1, 3), torch.randn(1, 3)
    with torch.inference_mode():
        first = stack([a, b])
        assert stack([a, b]) is first and torch.equal(first, torch.cat([a, b]))
        c = b.clone()  # equal values, another object: restacked (identity is the contract)
        assert stack([a, c]) is not first
        assert torch.equal(stack([b, a]), torch.cat([b, a]))


def test_with_autograd_nothing_is_shared():
    stack = Stacker()
    a = torch.randn(1, 2, requires_grad=True)
    assert stack([a, a]) is not stack([a, a])
