"""Stacker: a decode step's stacked session tensors, copying only the rows whose tensors changed."""

import torch

from titans_core.stacking import Stacker


def test_the_same_tensors_reuse_the_stack_and_changed_rows_are_copied():
    stack = Stacker()
    a, b = torch.randn(1, 3), torch.randn(1, 3)
    with torch.inference_mode():
        first = stack([a, b])
        assert torch.equal(first, torch.cat([a, b]))
        assert stack([a, b]) is first  # nothing changed: nothing copied
        c = torch.randn(1, 3)
        again = stack([a, c])
        assert again is first and torch.equal(again, torch.cat([a, c]))  # only row 1 rewritten
        assert torch.equal(stack([c, a]), torch.cat([c, a]))
        assert torch.equal(stack([a, b, c]), torch.cat([a, b, c]))  # another batch: a new tensor
        assert torch.equal(stack([a, b]), torch.cat([a, b]))


def test_with_autograd_nothing_is_shared():
    stack = Stacker()
    a = torch.randn(1, 2, requires_grad=True)
    assert stack([a, a]) is not stack([a, a])
