"""Wording shared by the argument checks, so every ValueError names what it got the same way."""

from torch import Tensor


def describe(x: object) -> str:
    """``torch.float32 tensor of shape [2, 3] on cpu`` for a tensor, else the type's name."""
    if isinstance(x, Tensor):
        return f"{x.dtype} tensor of shape {list(x.shape)} on {x.device}"
    return type(x).__name__
