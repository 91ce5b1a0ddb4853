"""Conversations with memory: the one place that says how a user tells facts in chat, how they are
asked for later, and how the assistant answers, laid out token for token as a server session's
memory receives them.

A session's stream is what the server feeds it, call after call: each new user message as
:meth:`Tokenizer.encode_message`, the assistant's turn as :meth:`Tokenizer.generation_prompt`, the
reply's tokens, ``<|end|>`` and a newline (what the server appends after a reply), and ingested
documents as their plain text. A training sample is one such stream from a fresh memory, so the
model learns what a session sees: facts told in one call and asked several calls and hundreds of
turns-worth of tokens later, far beyond the attention span, where only the memory can carry them.

Three kinds of sample (:data:`KINDS`):

- ``chat``: the user tells one to three facts about themselves (a name, a city, a number such as a
  locker code) in varied phrasings among ordinary turns (greetings, small talk, passages of text,
  questions the assistant cannot know, ingested documents); much later each is asked, and the
  assistant answers in a sentence ("Your name is Ada."). Some questions ask for a fact never told,
  answered honestly ("You have not told me your name.").
- ``document``: an ingested document states two to four facts inside its text; chat turns follow,
  then one question.
- ``passkey-chat``: the passkey document of :mod:`titans_core.train.recall`, chat turns, then the
  passkey question, answered "The passkey is 48213.".

Values come from Faker (names and cities across locales, those spelt in ASCII: :func:`usable`) and
random digits. A fixed share of all values is held out (:func:`held_out`, by hash): training never
uses them, evaluations use only them.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from titans_core.tokenizer import Tokenizer
from titans_core.train.recall import PASSKEY_QUESTION, Sample, passkey_statement, random_passkey

KINDS = ("chat", "document", "passkey-chat")
FACT_KINDS = ("name", "city", "number")
# Latin-script locales: their names and cities are words this tokenizer spells in a few pieces
LOCALES = (
    "en_US", "en_GB", "en_IE", "de_DE", "fr_FR", "es_ES", "it_IT", "pt_PT", "pt_BR", "nl_NL",
    "pl_PL", "sv_SE", "da_DK", "fi_FI", "cs_CZ", "ro_RO", "hu_HU", "tr_TR", "id_ID", "es_MX",
)  # fmt: skip
# A few things a number can be: the assistant copies the thing from the question into its answer
# ("Your PIN is ..."), which a small model learns for a few and not for a dozen.
NUMBER_THINGS = ("locker code", "PIN", "room number", "door code")
HELD_OUT_EIGHTHS = 1  # values whose hash's first byte is below 32 (1/8) are held out


MAX_VALUE_CHARS = 12  # with ASCII only: a value of a few tokens for this 4,096-token BPE


def usable(value: str) -> bool:
    """Whether a drawn name or city is one the shipped models are trained on: ASCII letters and at
    most ``MAX_VALUE_CHARS`` characters. "Katarina Simek" spells in 13 pieces of UTF-8 bytes for a
    tokenizer learnt on Shakespeare, which a 64-wide memory cannot hold; "Ada" or "Lisbon" in 2-4."""
    return value.isascii() and len(value) <= MAX_VALUE_CHARS


def held_out(kind: str, value: str) -> bool:
    """Whether ``value`` of fact ``kind`` belongs to the evaluation split (never trained on)."""
    return hashlib.sha256(f"{kind}:{value}".encode()).digest()[0] < 32 * HELD_OUT_EIGHTHS


@functools.cache
def _faker(locale: str):
    from faker import Faker  # the training extra: serving never draws values

    return Faker(locale)


def draw_value(rng: random.Random, kind: str, *, evaluation: bool = False) -> str:
    """A value of fact ``kind`` from the training split (or the held-out one for ``evaluation``)."""
    while True:
        if kind == "number":
            digits = rng.randint(3, 6)
            value = str(rng.randrange(10 ** (digits - 1), 10**digits))
        else:
            fake = _faker(rng.choice(LOCALES))
            fake.seed_instance(rng.getrandbits(64))
            if kind == "name":
                value = (
                    fake.first_name() if rng.random() < 0.75 else f"{fake.first_name()} {fake.last_name()}"
                )
            elif kind == "city":
                value = fake.city()
            else:
                raise ValueError(f"fact kind must be one of {', '.join(FACT_KINDS)}, got {kind!r}")
        if usable(value) and held_out(kind, value) == evaluation:
            return value


# What each kind says. {v} is the value, {t} what a number is. The first statement and question of
# each kind are the canonical ones (what `titans eval conversation` sends).
STATEMENTS = {
    "name": (
        "My name is {v}.", "Hi, I am {v}.", "Hello! My name is {v}.", "Call me {v}.", "I'm {v}.",
        "You can call me {v}.", "Hi there, {v} here.", "My name's {v}, nice to meet you.",
        "Let me introduce myself: I am {v}.", "People call me {v}.",
    ),
    "city": (
        "I live in {v}.", "I'm from {v}.", "My home is in {v}.", "I moved to {v} last year.",
        "These days I live in {v}.", "I am writing to you from {v}, where I live.",
        "Home for me is {v}.", "I live in the city of {v}.",
    ),
    "number": (
        "My {t} is {v}.", "Please remember that my {t} is {v}.", "Note this: my {t} is {v}.",
        "For the record, my {t} is {v}.", "I was given {v} as my {t}.", "My new {t} is {v}.",
    ),
}  # fmt: skip
DOCUMENT_LINES = {
    "name": ("My name is {v}.", "Name: {v}.", "This note belongs to {v}, which is my name."),
    "city": ("I live in {v}.", "City: {v}.", "My address is in {v}."),
    "number": ("My {t} is {v}.", "{T}: {v}.", "Remember that my {t} is {v}."),
}
ACKNOWLEDGEMENTS = {
    "name": (
        "Nice to meet you, {v}.", "Hello, {v}! How can I help you?", "Good to meet you, {v}.",
        "Welcome, {v}. What can I do for you?", "Thank you, {v}. I will remember your name.",
    ),
    "city": (
        "{v} sounds like a good place to live.", "Thank you. I will remember that you live in {v}.",
        "I see, you live in {v}.", "Good to know you live in {v}.",
    ),
    "number": (
        "I will remember that your {t} is {v}.", "Noted: your {t} is {v}.", "Got it, {v}.",
        "Thank you. Your {t} is {v}.",
    ),
}  # fmt: skip
QUESTIONS = {
    "name": ("What is my name?", "Do you remember my name?", "Who am I?", "What did I say my name was?"),
    "city": ("Where do I live?", "Which city do I live in?", "Do you remember where I live?"),
    "number": ("What is my {t}?", "Do you remember my {t}?", "What was my {t} again?"),
}
ANSWERS = {"name": "Your name is {v}.", "city": "You live in {v}.", "number": "Your {t} is {v}."}
UNKNOWN = {
    "name": "You have not told me your name.",
    "city": "You have not told me where you live.",
    "number": "You have not told me your {t}.",
}
PASSKEY_ANSWER = "The passkey is {v}."

# Ordinary turns: what a user says that holds no fact, and a sentence in reply.
GREETINGS = (
    ("Hello!", "Hello! How can I help you today?"),
    ("Hi there.", "Hi! What would you like to talk about?"),
    ("Good morning.", "Good morning! How are you?"),
    ("How are you today?", "I am well, thank you. How are you?"),
    ("Hello! How are you today?", "Hello! I am well, thank you. What can I do for you?"),
    ("I am fine, thanks.", "I am glad to hear it."),
    ("Thank you!", "You are welcome."),
    ("Thanks for your help.", "You are welcome. I am happy to help."),
    ("Goodbye for now.", "Goodbye! Come back any time."),
    ("Are you there?", "Yes, I am here. How can I help?"),
    ("Can you help me?", "Of course. What do you need?"),
    ("Who are you?", "I am a small assistant with a memory. I remember what you tell me."),
    ("What can you do?", "I can talk with you and remember what you tell me."),
    ("Do you have a memory?", "Yes. I remember what you tell me, even much later."),
)
UNKNOWABLE = (
    "What will the weather be tomorrow?", "What time is it now?", "Who will win the next match?",
    "What is the price of gold today?", "What is the news today?", "How old is my neighbour?",
    "What am I thinking about?", "What is the population of the moon?", "What did I eat yesterday?",
    "How many people are in the room with me?",
)  # fmt: skip
UNKNOWABLE_REPLIES = (
    "I cannot know that. I only know what you tell me.",
    "I am sorry, I do not know that.",
    "I do not know. You could tell me, and I will remember it.",
)
OPEN_QUESTIONS = (
    "What is the capital of France?", "Can you tell me a story?", "What do you like to do?",
    "What is your favourite colour?", "Why is the sky blue?", "What should I cook tonight?",
    "Tell me something interesting.", "What is the meaning of life?", "Can you write a poem?",
    "What is a good book to read?", "How do I learn to swim?", "What is love?",
)  # fmt: skip
OPEN_REPLIES = (
    "That is a good question. I am a small model, so I am not sure, but I like to think about it.",
    "I do not know much about that. I am better at remembering what you tell me.",
    "I am not sure. Tell me what you think, and I will remember it.",
    "Let me think. I know little of the world, but I can keep what you tell me.",
)
SMALL_TALK_REPLIES = (
    "I see. Tell me more.", "That is interesting.", "Thank you for telling me.", "I understand.",
    "That sounds good.", "Really? Go on.", "I am listening.", "Thank you. What else?",
)  # fmt: skip
PASSAGE_PROMPTS = (
    "Here is a passage I like:\n",
    "Please read this:\n",
    "I found this text:\n",
    "Read this for me:\n",
)
PASSAGE_REPLIES = (
    "Thank you. I have read it.",
    "I read the passage. It is well written.",
    "I have read it. Thank you.",
)
PASSAGE_QUESTIONS = (
    ("Did you read the text?", "Yes, I read it."),
    ("What did you think of it?", "I liked it. It was interesting to read."),
    ("Was it long?", "It was not too long. I read all of it."),
)


@dataclass(frozen=True)
class Fact:
    kind: str  # one of FACT_KINDS
    value: str
    thing: str = ""  # what a number is ("locker code")

    def fill(self, template: str) -> str:
        thing = self.thing
        return template.format(v=self.value, t=thing, T=thing[:1].upper() + thing[1:])

    def question(self, rng: random.Random | None = None) -> str:
        """The canonical question without ``rng``, else one of the variants."""
        options = QUESTIONS[self.kind]
        return self.fill(options[0] if rng is None else rng.choice(options))

    def answer(self) -> str:
        return self.fill(ANSWERS[self.kind])


def draw_facts(rng: random.Random, kinds: list[str], *, evaluation: bool = False) -> list[Fact]:
    """One fact of each of ``kinds`` (numbers each about a different thing)."""
    things = rng.sample(NUMBER_THINGS, kinds.count("number"))
    return [
        Fact(kind, draw_value(rng, kind, evaluation=evaluation), things.pop() if kind == "number" else "")
        for kind in kinds
    ]


def canonical_statement(fact: Fact) -> str:
    return fact.fill(STATEMENTS[fact.kind][0])


@dataclass
class _Stream:
    """A session's token stream under construction, with each token's loss weight and the answers."""

    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    answers: list[tuple[int, int]] = field(default_factory=list)

    def add(self, ids: list[int], weight: float | list[float] = 1.0) -> None:
        self.tokens += ids
        self.weights += weight if isinstance(weight, list) else [weight] * len(ids)

    def __len__(self) -> int:
        return len(self.tokens)


class ConversationSource:
    """Samples of :data:`KINDS`, ``length + 1`` tokens each, over ``text(rng, n)`` (n tokens of
    plain text: filler, passages, documents) and Faker's sentences, a second source of text."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        text: Callable[[random.Random, int], list[int]],
        *,
        answer_weight: float,
        min_distance: int,
        max_distance: int | None,
    ):
        self.tokenizer, self.text, self.answer_weight = tokenizer, text, answer_weight
        self.min_distance, self.max_distance = min_distance, max_distance
        self.newline = tokenizer.encode("\n")

    # -- the pieces of a stream, as the server feeds them --

    def user(self, stream: _Stream, content: str, values: tuple[str, ...] = ()) -> None:
        """A user message; the values it states are unpredictable, so they carry no loss."""
        ids = self.tokenizer.encode_message("user", content)
        weights = [1.0] * len(ids)
        for value in values:
            at = content.find(value)
            if at < 0:
                continue
            _, marks = self.tokenizer.encode_marked("\n" + content, at + 1, at + 1 + len(value))
            for i, marked in enumerate(marks):
                if marked:
                    weights[1 + i] = 0.0  # ids[0] is <|user|>
        stream.add(ids, weights)

    def assistant(self, stream: _Stream, reply: str, value: str | None = None, answer: bool = False) -> None:
        """The assistant's turn as generated. ``value``'s tokens weigh the answer weight: a recall
        ``answer`` (counted as one), or a copy within the attention span that teaches the skill."""
        stream.add(self.tokenizer.generation_prompt())
        if value is None:
            ids, marks = self.tokenizer.encode(reply), []
        else:
            at = reply.index(value)
            ids, marks = self.tokenizer.encode_marked(reply, at, at + len(value))
        begin = len(stream)
        stream.add(ids, [self.answer_weight if m else 1.0 for m in marks] if marks else 1.0)
        if answer:
            first = begin + marks.index(True)
            last = begin + len(marks) - marks[::-1].index(True)
            stream.answers.append((first - 1, last - 1))  # token i is the target at position i - 1
        stream.add([self.tokenizer.end_of_turn_id, *self.newline])

    def document(self, stream: _Stream, ids: list[int]) -> None:
        stream.add(ids)

    # -- ordinary turns --

    def sentences(self, rng: random.Random, count: int) -> str:
        fake = _faker(rng.choice(("en_US", "en_GB")))
        fake.seed_instance(rng.getrandbits(64))
        return " ".join(fake.sentence(nb_words=rng.randint(4, 12)) for _ in range(count))

    def passage(self, rng: random.Random, tokens: int) -> str:
        if rng.random() < 0.7:
            text = self.tokenizer.decode(self.text(rng, tokens)).strip()
        else:
            text = self.sentences(rng, max(1, tokens // 12))
        return text.replace("<|", "< |") or "..."

    def ordinary_turn(self, rng: random.Random, stream: _Stream, room: int) -> None:
        """One turn holding no fact; long ones (passages, documents) only where ``room`` allows."""
        choice = rng.random()
        if choice < 0.2:
            message, reply = rng.choice(GREETINGS)
            self.user(stream, message)
            self.assistant(stream, reply)
        elif choice < 0.3:
            self.user(stream, rng.choice(UNKNOWABLE))
            self.assistant(stream, rng.choice(UNKNOWABLE_REPLIES))
        elif choice < 0.4:
            self.user(stream, rng.choice(OPEN_QUESTIONS))
            self.assistant(stream, rng.choice(OPEN_REPLIES))
        elif choice < 0.6 or room < 120:
            self.user(stream, self.sentences(rng, rng.randint(1, 3)))
            self.assistant(stream, rng.choice(SMALL_TALK_REPLIES))
        elif choice < 0.85:
            length = min(room - 40, int(math.exp(rng.uniform(math.log(40), math.log(400)))))
            self.user(stream, rng.choice(PASSAGE_PROMPTS) + self.passage(rng, max(20, length)))
            self.assistant(stream, rng.choice(PASSAGE_REPLIES))
            if rng.random() < 0.3:
                question, reply = rng.choice(PASSAGE_QUESTIONS)
                self.user(stream, question)
                self.assistant(stream, reply)
        else:  # a document ingested between calls
            length = min(room, int(math.exp(rng.uniform(math.log(32), math.log(800)))))
            self.document(stream, self.text(rng, max(16, length)))

    def turns(self, rng: random.Random, stream: _Stream, tokens: int, limit: int) -> None:
        """Ordinary turns until ``tokens`` more have been fed (or ``limit`` is near)."""
        goal = min(len(stream) + tokens, limit)
        while len(stream) < goal:
            self.ordinary_turn(rng, stream, max(goal - len(stream), 0))

    # -- samples --

    def distance(self, rng: random.Random, room: int) -> int:
        high = room if self.max_distance is None else min(room, self.max_distance)
        low = min(self.min_distance, high)
        value = int(math.exp(rng.uniform(math.log(max(low, 1)), math.log(max(high, 1)))))
        return max(low, min(high, value))

    def sample(self, rng: random.Random, kind: str, length: int) -> Sample:
        """A sample of ``kind`` holding ``length + 1`` tokens (cut, or filled with more turns)."""
        build = {"chat": self._chat, "document": self._document, "passkey-chat": self._passkey}.get(kind)
        if build is None:
            raise ValueError(f"conversation kind must be one of {', '.join(KINDS)}, got {kind!r}")
        budget = length + 1
        for _ in range(8):  # the drawn distance may leave too little room for the questions
            stream, distance = build(rng, budget)
            if stream.answers and stream.answers[0][1] < budget:
                break
            budget = max(budget // 2, 64)
        else:
            raise ValueError(f"length {length} is too short for {kind} samples")
        self.turns(rng, stream, length + 1 - len(stream), length + 1)
        answers = tuple((a, b) for a, b in stream.answers if b <= length)
        tokens, weights = stream.tokens[: length + 1], stream.weights[1 : length + 1]
        return Sample(tokens, weights, answers, kind, distance)

    def _chat(self, rng: random.Random, budget: int) -> tuple[_Stream, int]:
        stream = _Stream()
        kinds = rng.sample(FACT_KINDS, rng.randint(1, 3))
        if "number" not in kinds and rng.random() < 0.6:  # numbers in most chats: they are learnt first
            kinds[0] = "number"
        facts = draw_facts(rng, kinds)
        if rng.random() < 0.3:
            self.document(stream, self.text(rng, rng.randint(8, max(8, budget // 8))))
        told_at = []
        pending = list(facts)
        while pending:
            if rng.random() < 0.4:
                self.turns(rng, stream, rng.randint(1, 40), budget)
            fact = pending.pop(0)
            together = pending and rng.random() < 0.2  # two facts in one message
            told = [fact, pending.pop(0)] if together else [fact]
            message = " ".join(f.fill(rng.choice(STATEMENTS[f.kind])) for f in told)
            self.user(stream, message, tuple(f.value for f in told))
            ack = told[-1]
            self.assistant(stream, ack.fill(rng.choice(ACKNOWLEDGEMENTS[ack.kind])), ack.value)
            told_at.append(len(stream))
        room = budget - len(stream) - 40 * (len(facts) + 1)
        distance = self.distance(rng, max(room, 1))
        self.turns(rng, stream, distance, budget)
        distance = len(stream) - told_at[-1]
        asked = list(facts)
        rng.shuffle(asked)
        if rng.random() < 0.25:  # a fact never told: the memory must not make one up
            missing = [k for k in FACT_KINDS if k not in {f.kind for f in facts}] or ["number"]
            kind = rng.choice(missing)
            thing = rng.choice([t for t in NUMBER_THINGS if t not in {f.thing for f in facts}])
            asked.insert(rng.randrange(len(asked) + 1), Fact(kind, "", thing if kind == "number" else ""))
        for fact in asked:
            if stream.answers and rng.random() < 0.3:
                self.turns(rng, stream, rng.randint(1, 30), budget)
            self.user(stream, fact.question(rng if rng.random() < 0.5 else None))
            if fact.value:
                self.assistant(stream, fact.answer(), fact.value, answer=True)
            else:
                self.assistant(stream, fact.fill(UNKNOWN[fact.kind]))
        return stream, distance

    def _document(self, rng: random.Random, budget: int) -> tuple[_Stream, int]:
        stream = _Stream()
        kinds = rng.sample(["name", "city"], rng.randint(0, 2))
        kinds += ["number"] * max(2 - len(kinds), rng.randint(0, 2), 0)
        facts = draw_facts(rng, kinds[:4])
        rng.shuffle(facts)
        lines = [f.fill(rng.choice(DOCUMENT_LINES[f.kind])) for f in facts]
        ids: list[int] = []
        weights: list[float] = []
        for line in lines:
            if rng.random() < 0.5:
                ids += self.text(rng, rng.randint(8, 64))
                ids += self.newline
            line_ids = self.tokenizer.encode(line + "\n")
            weights += [1.0] * (len(ids) - len(weights))
            value = next(f.value for f in facts if f.fill("{v}") in line)
            at = line.index(value)
            _, marks = self.tokenizer.encode_marked(line + "\n", at, at + len(value))
            ids += line_ids
            weights += [0.0 if m else 1.0 for m in marks]
        stream.add(ids, weights)
        told = len(stream)
        room = budget - told - 150
        distance = self.distance(rng, max(room, 1))
        self.document(stream, self.text(rng, max(1, distance // 2)))
        self.turns(rng, stream, rng.randint(0, 3) * 30, budget)
        self.turns(rng, stream, distance - (len(stream) - told), budget)
        fact = rng.choice(facts)
        self.user(stream, fact.question(rng if rng.random() < 0.5 else None))
        self.assistant(stream, fact.answer(), fact.value, answer=True)
        return stream, len(stream) - told

    def _passkey(self, rng: random.Random, budget: int) -> tuple[_Stream, int]:
        stream = _Stream()
        passkey = random_passkey(rng)
        statement = passkey_statement(passkey)
        at = statement.rindex(passkey)  # the repeat is copied within attention: the answer's skill
        ids, marks = self.tokenizer.encode_marked(statement, at, at + len(passkey))
        first = statement.index(passkey)
        _, first_marks = self.tokenizer.encode_marked(statement, first, first + len(passkey))
        weights = [self.answer_weight if m else 0.0 if f else 1.0 for m, f in zip(marks, first_marks)]
        stream.add(ids, weights)
        told = len(stream)
        distance = self.distance(rng, max(budget - told - 150, 1))
        turns = rng.randint(0, 3)
        self.document(stream, self.text(rng, max(1, distance - 40 * turns)))
        for _ in range(turns):
            self.ordinary_turn(rng, stream, 60)
        self.user(stream, PASSKEY_QUESTION)
        self.assistant(stream, PASSKEY_ANSWER.format(v=passkey), passkey, answer=True)
        return stream, len(stream) - told
