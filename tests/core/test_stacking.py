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


def test_alternating_batches_keep_stacks_of_their_own():
    """The engine's turn with more sessions than one batch: each batch reuses its own stack."""
    stack = Stacker(capacity=2)
    first = [torch.randn(1, 3) for _ in range(2)]
    second = [torch.randn(1, 3) for _ in range(2)]
    with torch.inference_mode():
        one, two = stack(first), stack(second)
        assert one is not two
        assert stack(first) is one and stack(second) is two  # nothing copied on the next turn
        changed = [first[0], torch.randn(1, 3)]  # one session's chunk closed: a new tensor
        assert stack(changed) is one and torch.equal(one, torch.cat(changed))
        assert torch.equal(two, torch.cat(second))  # the other batch's stack is untouched


def test_beyond_capacity_the_least_recently_used_stack_is_reused():
    stack = Stacker(capacity=2)
    batches = [[torch.randn(1, 3)] for _ in range(3)]
    with torch.inference_mode():
        one, two = stack(batches[0]), stack(batches[1])
        stack(batches[1])  # the first is now the least recently used
        three = stack(batches[2])
        assert three is one and torch.equal(three, batches[2][0])
        assert stack(batches[1]) is two and torch.equal(two, batches[1][0])
