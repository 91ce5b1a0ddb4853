"""Sampling and generation: prefill once, then one token per step from the carried state.

``generate`` yields token ids as they are chosen. Its ``state`` afterwards has consumed the prompt
and every token yielded (even if the caller stops early), so a session's memory always matches
the transcript it was shown.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from titans_core.model import TitansLM
from titans_core.state import ModelState


@dataclass(frozen=True)
class SamplingParams:
    """``temperature`` 0 (below 1e-5) is greedy; ``top_k`` 0 and ``top_p`` 1 switch those filters off."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int):
            raise ValueError(f"max_new_tokens must be an integer, got {self.max_new_tokens!r}")
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if not (isinstance(self.temperature, int | float) and 0 <= self.temperature < float("inf")):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not (isinstance(self.top_p, int | float) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in self.stop_token_ids):
            raise ValueError(f"stop_token_ids must be integers, got {self.stop_token_ids!r}")


def sample(logits: Tensor, params: SamplingParams, generator: torch.Generator | None = None) -> Tensor:
    """Next token ids ``[B]`` from logits ``[B, V]``: greedy, or temperature with top-k / top-p.

    Always ids in ``[0, V)``, whatever the logits hold: a row with NaN gives some id in range, and
    the caller that cares (the server's engine) checks the logits' finiteness itself.
    """
    if params.temperature < 1e-5:  # dividing by less overflows: treat it as the greedy limit it is
        return logits.argmax(dim=-1)
    logits = logits.float() / params.temperature
    if 0 < params.top_k < logits.shape[-1]:
        kth = logits.topk(params.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probabilities = logits.softmax(dim=-1)
    if params.top_p < 1:
        probabilities = _top_p(probabilities, params.top_p)
    return _draw(probabilities, generator).clamp_(max=logits.shape[-1] - 1)  # NaN rows land past the end


# The most likely tokens looked at first. They hold top_p = 0.9 of the mass at 98% of the positions
# of held-out text for the small shipped default, and a top-k of them costs a fifth of a full sort.
TOP_P_PREFIX = 1024


def _top_p(probabilities: Tensor, top_p: float) -> Tensor:
    """Keep the most likely tokens until the ones before the next reach ``top_p`` (the first always
    stays), renormalised. The most likely ``TOP_P_PREFIX`` come first; the whole vocabulary is
    sorted only where they fall short of ``top_p``."""
    ordered, order = probabilities.topk(min(TOP_P_PREFIX, probabilities.shape[-1]), dim=-1)
    cumulative = ordered.cumsum(dim=-1)
    if ordered.shape[-1] < probabilities.shape[-1] and (cumulative[..., -1] < top_p).any():
        ordered, order = probabilities.sort(dim=-1, descending=True)
        cumulative = ordered.cumsum(dim=-1)
    keep = (cumulative - ordered) < top_p
    keep[..., 0] = True  # also when top_p rounds to 0 in float32 (a denormal like 5e-324)
    kept = torch.zeros_like(probabilities).scatter_(-1, order, ordered * keep)
    return kept / kept.sum(dim=-1, keepdim=True)


def _draw(probabilities: Tensor, generator: torch.Generator | None) -> Tensor:
    """One token per row, by inverting the cumulative distribution at a uniform draw: one random
    number per row, where ``torch.multinomial`` costs ten times as much here (an exponential per
    token). A token of probability 0 is never drawn: the draw stays below the total."""
    cumulative = probabilities.double().cumsum(dim=-1)
    total = cumulative[..., -1:]
    uniform = torch.rand(total.shape, generator=generator, dtype=total.dtype, device=total.device)
    point = torch.minimum(uniform * total, total.nextafter(torch.zeros_like(total)))
    return torch.searchsorted(cumulative, point, right=True).squeeze(-1)


class Generation:
    """An iterator of generated token ids; ``state``, ``finish_reason`` and counts as it goes."""

    def __init__(
        self,
        model: TitansLM,
        prompt: Sequence[int] | Tensor,
        state: ModelState | None,
        params: SamplingParams,
    ):
        device = model.embed.weight.device
        self.prompt = torch.as_tensor(prompt, dtype=torch.int64, device=device).reshape(1, -1)
        if self.prompt.shape[1] == 0:
            raise ValueError("the prompt must hold at least one token")
        self.model, self.params, self._state = model, params, state
        self.finish_reason: str | None = None  # "stop" or "length" once finished
        self.completion_tokens = 0
        self._generator = torch.Generator(device=device)
        if params.seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(params.seed)
        self._pending: Tensor | None = None  # the last token yielded, not yet fed
        self._logits: Tensor | None = None
        self._tokens = self._run()

    @property
    def state(self) -> ModelState | None:
        """The state after the prompt and every token yielded so far."""
        self._flush()
        return self._state

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        return next(self._tokens)

    def close(self) -> None:
        """Stop early (``state`` still takes in every token yielded)."""
        self._tokens.close()

    def _run(self) -> Iterator[int]:
        self._logits = self._feed(self.prompt)
        for step in range(self.params.max_new_tokens):
            token = sample(self._logits[:, -1], self.params, self._generator)
            self._pending = token.view(1, 1)
            self.completion_tokens += 1
            yield int(token)
            if int(token) in self.params.stop_token_ids:
                self.finish_reason = "stop"
                return
            if step + 1 < self.params.max_new_tokens:
                self._flush()
        self.finish_reason = "length"

    def _flush(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._logits = self._feed(pending)

    def _feed(self, tokens: Tensor) -> Tensor:
        with torch.inference_mode():
            logits, self._state = self.model(tokens, self._state, logits="last")
        return logits


def generate(
    model: TitansLM,
    prompt: Sequence[int] | Tensor,
    state: ModelState | None = None,
    *,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int | None = None,
    stop_token_ids: Sequence[int] = (),
) -> Generation:
    """Continue ``state`` (a fresh session if None) with ``prompt``, then sample up to ``max_new_tokens``.

    Iterate the result for token ids; a stop token is yielded, then generation ends.
    """
    params = SamplingParams(max_new_tokens, temperature, top_p, top_k, seed, tuple(stop_token_ids))
    return Generation(model, prompt, state, params)
