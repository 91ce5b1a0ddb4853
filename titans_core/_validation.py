"""Wording shared by the argument checks, so every ValueError names what it got the same way."""

from torch import Tensor


def describe(x: object) -> str:
    """``float32 tensor of shape [2, 3]`` for a tensor, else the type's name."""
    if isinstance(x, Tensor):
        return f"{x.dtype} tensor of shape {list(x.shape)}"
    return type(x).__name__
