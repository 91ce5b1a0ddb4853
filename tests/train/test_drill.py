"""Dense recall drills: many answers per sequence, at the distances asked for, values and
phrasings of the held-out split never trained on."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

import titans_core
from titans_core.tokenizer import Tokenizer
from titans_core.train import dialogue, drill
from titans_core.train.data import SampleSource

TOKENIZER = Path(titans_core.__file__).parent / "pretrained" / "default" / "tokenizer.json"
TEXT = "It was the best of times, it was the worst of times.\nHe said no more, and went away.\n" * 400


def source(tokenizer: Tokenizer, low: int, high: int | None) -> SampleSource:
    tokens = torch.tensor(tokenizer.encode(TEXT))
    return SampleSource(
        tokens, tokenizer, 1024, seed=3, recall_fraction=1.0, answer_weight=30.0, kinds=("drill",),
        min_distance=low, max_distance=high,
    )  # fmt: skip


def fragments(templates: dict[str, tuple[str, ...]]) -> list[str]:
    """The fixed words of each template (its longest piece between placeholders)."""
    pieces = []
    for options in templates.values():
        for template in options:
            parts = template.replace("{v}", "|").replace("{s}", "|").replace("{t}", "|").split("|")
            pieces.append(max(parts, key=len).strip())
    return pieces


@pytest.mark.parametrize(
    "tokenizer", [Tokenizer.from_file(TOKENIZER), Tokenizer.byte_level()], ids=["bpe", "byte"]
)
def test_answers_are_the_told_values_and_many_per_sequence(tokenizer):
    samples = [source(tokenizer, 0, 40)[i] for i in range(8)]
    assert min(len(s.answers) for s in samples) >= 4  # the chats hold about one per 800 tokens
    for sample in samples:
        assert len(sample.tokens) == 1025 and sample.kind == "drill"
        for start, end in sample.answers:
            value = tokenizer.decode(sample.tokens[start + 1 : end + 1]).strip()
            told = tokenizer.decode(sample.tokens[: start + 1])
            assert value and told.count(value) >= 2  # stated and acknowledged before it is asked
            assert sample.weights[start:end] == [30.0] * (end - start)


def test_questions_come_at_the_curriculum_distances():
    tokenizer = Tokenizer.from_file(TOKENIZER)
    near = [source(tokenizer, 0, 40)[i].distance for i in range(10)]
    far = [source(tokenizer, 256, None)[i].distance for i in range(10)]
    assert max(near) <= 40 and min(far) >= 256


def test_held_out_phrasings_and_values_stay_out_of_training():
    tokenizer = Tokenizer.from_file(TOKENIZER)
    conversations = source(tokenizer, 0, 200).conversations
    trained = " ".join(
        tokenizer.decode(drill.drill_sample(conversations, random.Random(i), 1024).tokens) for i in range(20)
    )
    evaluated = " ".join(
        tokenizer.decode(drill.drill_sample(conversations, random.Random(i), 1024, evaluation=True).tokens)
        for i in range(20)
    )
    assert not any(
        f in trained for f in fragments(drill.HELD_OUT_STATEMENTS) + fragments(drill.HELD_OUT_QUESTIONS)
    )
    assert any(f in evaluated for f in fragments(drill.HELD_OUT_STATEMENTS))
    replies = " ".join(t for options in drill.ACKNOWLEDGEMENTS.values() for t in options) + str(drill.ANSWERS)
    trained_only = [f for f in fragments(drill.STATEMENTS) + fragments(drill.QUESTIONS) if f not in replies]
    assert trained_only and not any(f in evaluated for f in trained_only)
    rng = random.Random(0)
    for evaluation in (False, True):
        facts = drill.draw_facts(rng, 200, evaluation=evaluation)
        assert {f.kind for f in facts} == set(drill.DRILL_KINDS)
        assert all(dialogue.held_out(f.kind, f.value) == evaluation for f in facts)
