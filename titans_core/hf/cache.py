"""``TitansCache``: a session's memory (:class:`titans_core.ModelState`) as a Transformers ``Cache``.

A Titans model has no key/value cache to grow: everything a session has read is in its state (the
neural memory's weights and momentum, the open segment's attention cache, the position). The cache
also remembers the last sequence it was given, so ``generate`` can be given either only the new
tokens or that sequence followed by new ones: the part already consumed is never fed again.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers.cache_utils import Cache

from titans_core.config import TitansConfig
from titans_core.state import ModelState, from_bytes, to_bytes


class TitansCache(Cache):
    """The state after ``position`` tokens; ``seen`` ``[B, n]`` is the last input it was given, whose
    tokens are all in the state (None: none known, as for a state loaded from bytes)."""

    def __init__(self, state: ModelState | None = None):
        super().__init__(layers=[])
        self.state = state
        self.seen: Tensor | None = None
        self.tokens_fed = 0  # how many tokens the model has read into this cache: what feeding costs

    @classmethod
    def from_bytes(cls, data: bytes, config: TitansConfig, dtype: torch.dtype = torch.float32) -> TitansCache:
        """A cache holding a state the server exported (``GET /v1/sessions/{id}/state``)."""
        return cls(from_bytes(data, config, dtype))

    def to_bytes(self) -> bytes:
        """The state as the server imports it (``PUT /v1/sessions/{id}/state``)."""
        if self.state is None:
            raise ValueError("the cache holds no state yet: nothing has been fed")
        return to_bytes(self.state)

    def unconsumed(self, input_ids: Tensor) -> Tensor:
        """The tokens of ``input_ids`` not yet in the state: the tail after ``seen`` when the input
        starts with it (a sequence growing step by step, or passed again), else all of them (only
        new tokens)."""
        seen = self.seen
        fits = (
            seen is not None and seen.shape[0] == input_ids.shape[0] and seen.shape[1] <= input_ids.shape[1]
        )
        if fits and torch.equal(input_ids[:, : seen.shape[1]], seen.to(input_ids.device)):
            return input_ids[:, seen.shape[1] :]
        return input_ids

    def consumed(self, input_ids: Tensor, fed: Tensor, state: ModelState) -> None:
        """Record that ``fed``, the :meth:`unconsumed` part of ``input_ids``, gave ``state``."""
        self.state, self.seen = state, input_ids
        self.tokens_fed += fed.numel()

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0 if self.state is None else self.state.position

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1  # a memory has no length limit

    @property
    def batch_size(self) -> int:
        return -1 if self.state is None else self.state.batch_size

    @property
    def is_croppable(self) -> bool:
        return False  # a memory that has learnt from tokens cannot unlearn them

    @property
    def is_initialized(self) -> bool:
        return self.state is not None

    def reset(self) -> None:
        self.state, self.seen = None, None

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove:
            raise NotImplementedError("a Titans memory cannot forget tokens it has learnt from")

    def batch_select_indices(self, indices: Tensor) -> None:
        """Keep the rows ``indices`` (beam search reorders its beams this way): each row's memory
        moves with it, so every beam continues with the memory of its own text."""
        if self.state is not None:
            self.state = self.state.map(lambda t: t.index_select(0, indices.to(t.device)))
        if self.seen is not None:
            self.seen = self.seen.index_select(0, indices.to(self.seen.device))

    def reorder_cache(self, beam_idx: Tensor) -> None:
        self.batch_select_indices(beam_idx)

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Copy each row ``repeats`` times (beams, ``num_return_sequences``): a memory per copy."""
        if self.state is not None:
            self.state = self.state.map(lambda t: t.repeat_interleave(repeats, dim=0))
        if self.seen is not None:
            self.seen = self.seen.repeat_interleave(repeats, dim=0)

    def __repr__(self) -> str:
        return f"TitansCache(position={self.get_seq_length()}, batch={self.batch_size})"
