"""Numerical kernels of the neural memory: the closed-form chunked update, its reference, the scan."""

from titans_core.ops.chunked_memory import OpenChunk, commit_chunk, memory_step, memory_stream, memory_update
from titans_core.ops.reference import memory_mlp, memory_update_reference
from titans_core.ops.scan import linear_recurrence, linear_scan

__all__ = [
    "OpenChunk",
    "commit_chunk",
    "linear_recurrence",
    "linear_scan",
    "memory_mlp",
    "memory_step",
    "memory_stream",
    "memory_update",
    "memory_update_reference",
]
