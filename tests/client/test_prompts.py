"""The client's copy of the trained prompts says exactly what the training data says."""

from __future__ import annotations

import random

from titans_client import conversation_eval, prompts
from titans_core.train import dialogue, recall


def test_passkey_prompts_are_the_trained_ones():
    assert prompts.PASSKEY_QUESTION == recall.PASSKEY_QUESTION
    assert prompts.PASSKEY_DIGITS == recall.PASSKEY_DIGITS
    assert prompts.passkey_statement("48213") == recall.passkey_statement("48213")


def test_fact_prompts_are_the_canonical_trained_ones():
    assert prompts.FACT_KINDS == dialogue.FACT_KINDS
    for kind in dialogue.FACT_KINDS:
        fact = dialogue.Fact(kind, "Ada", prompts.NUMBER_THING if kind == "number" else "")
        assert prompts.statement(kind, "Ada") == dialogue.canonical_statement(fact)
        assert prompts.question(kind) == fact.question()
    assert {prompts.NUMBER_THING, *conversation_eval.DOCUMENT_THINGS} <= set(dialogue.NUMBER_THINGS)
    assert set(conversation_eval.LOCALES) <= set(dialogue.LOCALES)


def test_the_held_out_split_is_the_same():
    rng = random.Random(0)
    for kind in dialogue.FACT_KINDS:
        for _ in range(200):
            value = dialogue.draw_value(rng, kind, evaluation=rng.random() < 0.5)
            assert prompts.held_out(kind, value) == dialogue.held_out(kind, value)
    for value in ("Ada", "Lisbon", "Ada Lovelace", "Katarína", "Marco de Canaveses", "4721"):
        assert prompts.usable(value) == dialogue.usable(value)
