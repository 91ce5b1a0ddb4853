"""Recall tasks: the one place that says how a fact, its question and the answer look.

A recall sample teaches the model to use its neural memory. A document states a fact, ``distance``
tokens of real text follow, then a chat turn asks for the fact and the assistant's reply gives it:

    The passkey is 48213. Remember it. 48213 is the passkey.\\n      <- the document (plain text)
    ...distance tokens of filler text...
    <|user|>\\nWhat is the passkey?<|end|>\\n<|assistant|>\\n          <- the question (chat format)
    48213<|end|>                                                      <- the answer

Far beyond the attention span (MAC's segment, MAG's and MAL's window) only the memory can carry
the fact. This is exactly what a server sees when a session ingests :func:`passkey_document` (the
document encoded as plain text, nothing added) and a chat request then asks ``PASSKEY_QUESTION``:
the chat turn is :meth:`Tokenizer.encode_chat` of that one user message, and a correct reply
contains the passkey. ``distance`` counts the tokens between the end of the statement and the
question's ``<|user|>``.

Besides the passkey, ``kind="facts"`` states two to four key -> value facts ("The code of the red
door is 4721.") and asks for one of them, so the memory learns associations, not one slot.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from titans_core.tokenizer import Tokenizer

PASSKEY_DIGITS = 5
PASSKEY_QUESTION = "What is the passkey?"
FACT_KEYS = (
    "red", "blue", "green", "black", "white", "gold", "silver", "iron", "oak", "stone",
    "north", "south", "east", "west", "river", "garden", "tower", "chapel", "market", "harbour",
)  # fmt: skip
KINDS = ("passkey", "facts")


def random_passkey(rng: random.Random) -> str:
    """A passkey: ``PASSKEY_DIGITS`` decimal digits, the first not 0."""
    return str(rng.randrange(10 ** (PASSKEY_DIGITS - 1), 10**PASSKEY_DIGITS))


def passkey_statement(passkey: str) -> str:
    """The sentence that states the passkey (ends with a newline; the filler follows it)."""
    return f"The passkey is {passkey}. Remember it. {passkey} is the passkey.\n"


def passkey_document(passkey: str, filler: str) -> str:
    """The document a session ingests: the statement, then ``filler`` (start it with a non-space,
    as a line of text does, and it encodes exactly as in training)."""
    return passkey_statement(passkey) + filler


def passkey_messages() -> list[dict[str, str]]:
    """The chat request's messages that ask for the passkey."""
    return [{"role": "user", "content": PASSKEY_QUESTION}]


@dataclass(frozen=True)
class RecallTask:
    statement: str  # the document's opening: the facts, ending with a newline
    question: str  # the user's message
    answer: str  # the assistant's reply (without <|end|>)


def make_task(rng: random.Random, kind: str) -> RecallTask:
    if kind == "passkey":
        passkey = random_passkey(rng)
        return RecallTask(passkey_statement(passkey), PASSKEY_QUESTION, passkey)
    if kind == "facts":
        keys = rng.sample(FACT_KEYS, rng.randint(2, 4))
        values = [str(rng.randrange(1000, 10000)) for _ in keys]
        statement = "".join(f"The code of the {k} door is {v}.\n" for k, v in zip(keys, values))
        asked = rng.randrange(len(keys))
        return RecallTask(statement, f"What is the code of the {keys[asked]} door?", values[asked])
    raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")


@dataclass
class Sample:
    """One training sequence: ``tokens[:-1]`` in, ``tokens[1:]`` predicted with ``weights``.

    ``answers`` are the spans ``[start, end)`` of target positions holding an answer (none for
    plain language modelling).
    """

    tokens: list[int]
    weights: list[float]
    answers: tuple[tuple[int, int], ...] = ()
    kind: str = "lm"
    distance: int = 0


@dataclass(frozen=True)
class RecallLayout:
    """The pieces of a recall sample as token ids, and the loss weight of each."""

    statement: list[int]  # weight 0 (a random value cannot be predicted), but see ``repeats``
    question: list[int]  # weight 1
    answer: list[int]  # answer ids and <|end|>: weight ``answer_weight``
    after: list[int]  # "\n" (the server closes a turn with it) and <|endoftext|>: weight 1
    # statement tokens that repeat the value stated earlier ("... 48213 is the passkey"): copying
    # them is the answer's skill at a short distance, so they weigh ``answer_weight`` too
    repeats: list[bool]

    @classmethod
    def of(cls, task: RecallTask, tokenizer: Tokenizer) -> RecallLayout:
        question = tokenizer.encode_chat([{"role": "user", "content": task.question}])
        value = tokenizer.encode(task.answer)
        answer = [*value, tokenizer.end_of_turn_id]
        after = [*tokenizer.encode("\n"), tokenizer.end_of_text_id]
        statement = tokenizer.encode(task.statement)
        return cls(statement, question, answer, after, _repeats(statement, value))

    def overhead(self) -> int:
        """Tokens besides the filler, up to and including the answer's <|end|>."""
        return len(self.statement) + len(self.question) + len(self.answer)


def _repeats(tokens: list[int], value: list[int]) -> list[bool]:
    """True at the tokens of every occurrence of ``value`` in ``tokens`` after the first (the
    occurrences read left to right without overlapping)."""
    marks = [False] * len(tokens)
    i, seen = 0, False
    while i <= len(tokens) - len(value):
        if tokens[i : i + len(value)] != value:
            i += 1
            continue
        marks[i : i + len(value)] = [seen] * len(value)
        i, seen = i + len(value), True
    return marks


def recall_sample(
    layout: RecallLayout,
    filler: list[int],
    *,
    prefix: list[int] = (),
    suffix: list[int] = (),
    length: int | None = None,
    answer_weight: float = 1.0,
    kind: str = "passkey",
) -> Sample:
    """``prefix`` text, the statement, the ``filler`` tokens, the question, the answer, then
    ``after`` and ``suffix`` text, cut to ``length + 1`` tokens (``length`` None: no suffix)."""
    statement_weights = [answer_weight if repeat else 0.0 for repeat in layout.repeats]
    pieces = [
        (list(prefix), 1.0),
        (layout.statement, statement_weights),
        (list(filler), 1.0),
        (layout.question, 1.0),
        (layout.answer, answer_weight),
    ]
    if length is not None:
        pieces.append((layout.after + list(suffix), 1.0))
    tokens: list[int] = []
    token_weights: list[float] = []
    for ids, weight in pieces:
        tokens += ids
        token_weights += weight if isinstance(weight, list) else [weight] * len(ids)
    answer_end = len(prefix) + layout.overhead() + len(filler)
    if length is not None:
        if answer_end > length + 1:
            raise ValueError(f"the task needs {answer_end} tokens, more than length + 1 = {length + 1}")
        if len(tokens) < length + 1:
            raise ValueError(f"prefix, filler and suffix give {len(tokens)} tokens, fewer than {length + 1}")
        tokens, token_weights = tokens[: length + 1], token_weights[: length + 1]
    # token i is the target at position i - 1
    answer = (answer_end - len(layout.answer) - 1, answer_end - 1)
    return Sample(tokens, token_weights[1:], (answer,), kind, len(filler))
