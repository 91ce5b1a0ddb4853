"""Training sequences: a token stream cut into windows, mixed with recall tasks, reproducibly.

Sample ``i`` of a run depends only on the seed and ``i`` (its own random generator), so the data
position is the step: resuming at step ``s`` continues with exactly the samples an uninterrupted
run would have used, and ranks shard a step's global batch by index like ``DistributedSampler``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
from torch import Tensor

from titans_core.tokenizer import Tokenizer
from titans_core.train import dialogue, drill
from titans_core.train.corpus import Document
from titans_core.train.recall import KINDS, RecallLayout, Sample, make_task, recall_sample


@dataclass
class TokenCorpus:
    """The documents as one token stream (each followed by ``<|endoftext|>``), split into a training
    part and a held-out tail of ``val_fraction`` of the tokens."""

    train: Tensor  # int64 [N]
    val: Tensor  # int64 [M]

    @classmethod
    def of(cls, documents: list[Document], tokenizer: Tokenizer, val_fraction: float) -> TokenCorpus:
        ids: list[int] = []
        for document in documents:
            ids += tokenizer.encode(document.text)
            ids.append(tokenizer.end_of_text_id)
        stream = torch.tensor(ids, dtype=torch.int64)
        held_out = math.ceil(len(stream) * val_fraction) if val_fraction > 0 else 0
        return cls(stream[: len(stream) - held_out], stream[len(stream) - held_out :])


@dataclass(frozen=True)
class Batch:
    inputs: Tensor  # int64 [B, T]
    targets: Tensor  # int64 [B, T]
    weights: Tensor  # float32 [B, T]: the loss weight of each target (0 = not trained on)
    answers: Tensor  # bool [B, T]: the targets that are a recall answer

    @classmethod
    def of(cls, samples: list[Sample]) -> Batch:
        tokens = torch.tensor([s.tokens for s in samples], dtype=torch.int64)
        weights = torch.tensor([s.weights for s in samples], dtype=torch.float32)
        answers = torch.zeros_like(weights, dtype=torch.bool)
        for row, sample in enumerate(samples):
            for start, end in sample.answers:
                answers[row, start:end] = True
        return cls(tokens[:, :-1], tokens[:, 1:], weights, answers)

    def to(self, device: torch.device) -> Batch:
        return Batch(*(t.to(device) for t in (self.inputs, self.targets, self.weights, self.answers)))


class SampleSource:
    """Sample ``index`` of a run: a window of ``seq_len + 1`` tokens of ``tokens``, or (with
    probability ``recall_fraction``) a recall task over filler from ``tokens``.

    Recall distances are log-uniform in ``[min_distance, max_distance]`` (capped by what fits in
    ``seq_len``): many short ones, which attention can answer and which teach the format, and many
    far beyond the attention span, which only the memory can answer. Half of the recall samples
    start with the fact (as an ingested document does); the others after some text. The kinds of
    :data:`titans_core.train.dialogue.KINDS` are conversations over the same text.
    """

    def __init__(
        self,
        tokens: Tensor,
        tokenizer: Tokenizer,
        seq_len: int,
        seed: int,
        *,
        recall_fraction: float = 0.5,
        min_distance: int = 16,
        max_distance: int | None = None,
        answer_weight: float = 1.0,
        kinds: tuple[str, ...] = KINDS,
        salt: str = "train",
    ):
        if len(tokens) < seq_len + 2:
            raise ValueError(f"the text has {len(tokens)} tokens; a sequence needs {seq_len + 2}")
        self.tokens, self.tokenizer, self.seq_len = tokens, tokenizer, seq_len
        self.seed, self.salt = seed, salt
        self.recall_fraction, self.answer_weight, self.kinds = recall_fraction, answer_weight, kinds
        self.min_distance, self.max_distance = min_distance, max_distance
        self.conversations = dialogue.ConversationSource(
            tokenizer,
            self.window,
            answer_weight=answer_weight,
            min_distance=min_distance,
            max_distance=max_distance,
        )
        if recall_fraction > 0:  # refuse now what would fail at some random step
            probe = random.Random(0)
            for kind in kinds:
                if kind in dialogue.KINDS or kind in drill.KINDS:
                    self._conversation(probe, kind)
                    continue
                tasks = (make_task(probe, kind) for _ in range(50))
                longest = max(RecallLayout.of(task, tokenizer).overhead() for task in tasks)
                if longest + min_distance > seq_len + 1:
                    raise ValueError(
                        f"seq_len {seq_len} is too short for {kind} tasks: they take up to {longest} "
                        f"tokens plus min_distance {min_distance}"
                    )

    def rng(self, index: int) -> random.Random:
        return random.Random(f"{self.salt}:{self.seed}:{index}")  # str seeds are stable across runs

    def __getitem__(self, index: int) -> Sample:
        rng = self.rng(index)
        if rng.random() < self.recall_fraction:
            kind = rng.choice(self.kinds)
            if kind in dialogue.KINDS or kind in drill.KINDS:
                return self._conversation(rng, kind)
            return self.recall(rng, kind)
        return Sample(self.window(rng, self.seq_len + 1), [1.0] * self.seq_len)

    def _conversation(self, rng: random.Random, kind: str) -> Sample:
        if kind in drill.KINDS:
            return drill.drill_sample(self.conversations, rng, self.seq_len)
        return self.conversations.sample(rng, kind, self.seq_len)

    def window(self, rng: random.Random, length: int) -> list[int]:
        start = rng.randrange(0, len(self.tokens) - length + 1)
        return self.tokens[start : start + length].tolist()

    def recall(self, rng: random.Random, kind: str, distance: int | None = None) -> Sample:
        """A recall sample of ``seq_len + 1`` tokens at ``distance`` (drawn if None)."""
        layout = RecallLayout.of(make_task(rng, kind), self.tokenizer)
        room = self.seq_len + 1 - layout.overhead()
        if room < 0:
            raise ValueError(
                f"seq_len {self.seq_len} is too short for a {kind} task of {layout.overhead()} tokens"
            )
        if distance is None:
            high = room if self.max_distance is None else min(room, self.max_distance)
            low = min(self.min_distance, high)
            distance = int(math.exp(rng.uniform(math.log(max(low, 1)), math.log(max(high, 1)))))
            distance = max(low, min(high, distance))
        if not 0 <= distance <= room:
            raise ValueError(f"distance {distance} does not fit a sequence of {self.seq_len} tokens")
        slack = room - distance
        prefix = self.window(rng, rng.randint(0, slack)) if rng.random() < 0.5 and slack else []
        filler = self.window(rng, distance)
        suffix = self.window(rng, self.seq_len + 1)
        return recall_sample(
            layout,
            filler,
            prefix=prefix,
            suffix=suffix,
            length=self.seq_len,
            answer_weight=self.answer_weight,
            kind=kind,
        )

    def batch(self, indices: list[int]) -> Batch:
        return Batch.of([self[i] for i in indices])


def shard(step: int, micro: int, grad_accum: int, batch_size: int, rank: int, world: int) -> list[int]:
    """The sample indices of one rank's micro-batch: a step's global batch of ``world * batch_size *
    grad_accum`` samples is cut into micro-batches, and each into ``world`` consecutive shards, so
    the samples a step trains on do not depend on how many ranks share them."""
    base = (step * grad_accum + micro) * world * batch_size + rank * batch_size
    return list(range(base, base + batch_size))
