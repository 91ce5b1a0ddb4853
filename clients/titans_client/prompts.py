"""The prompts the shipped models were trained to answer, as a client sends them.

The training side defines them in ``titans_core.train.recall`` and ``titans_core.train.dialogue``;
the client cannot import that (it installs without torch), so it states them again here, and
``tests/client/test_prompts.py`` holds both sides to the same text.
"""

from __future__ import annotations

import hashlib
import random

PASSKEY_DIGITS = 5
PASSKEY_QUESTION = "What is the passkey?"
FACT_KINDS = ("name", "city", "number")
# the canonical statement and question of each fact kind; {v} is the value, {t} what a number is
STATEMENTS = {"name": "My name is {v}.", "city": "I live in {v}.", "number": "My {t} is {v}."}
QUESTIONS = {"name": "What is my name?", "city": "Where do I live?", "number": "What is my {t}?"}
NUMBER_THING = "locker code"


def random_passkey(rng: random.Random) -> str:
    return str(rng.randrange(10 ** (PASSKEY_DIGITS - 1), 10**PASSKEY_DIGITS))


def passkey_statement(passkey: str) -> str:
    """The document's opening that states the passkey (the filler follows its newline)."""
    return f"The passkey is {passkey}. Remember it. {passkey} is the passkey.\n"


MAX_VALUE_CHARS = 12


def usable(value: str) -> bool:
    """A name or city of the kind the shipped models were trained on: ASCII, at most 12 characters."""
    return value.isascii() and len(value) <= MAX_VALUE_CHARS


def held_out(kind: str, value: str) -> bool:
    """Whether ``value`` of fact ``kind`` is in the split that training never used."""
    return hashlib.sha256(f"{kind}:{value}".encode()).digest()[0] < 32


def statement(kind: str, value: str, thing: str = NUMBER_THING) -> str:
    return STATEMENTS[kind].format(v=value, t=thing)


def question(kind: str, thing: str = NUMBER_THING) -> str:
    return QUESTIONS[kind].format(t=thing)
