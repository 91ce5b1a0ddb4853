"""Dense recall drills: many facts in one sequence, each told, acknowledged and later asked.

The chat samples of :mod:`titans_core.train.dialogue` hold about one supervised answer per 800
tokens. A drill holds one per few dozen: a user tells facts about the people and things around
them ("My sister's name is Ada.", "My PIN is 4721.", a passkey), the assistant acknowledges each
(copying the value within the attention span: the skill recall builds on), ordinary turns pass,
and each fact is asked once its drawn distance has passed, in a varied phrasing. The distances
come from ``[min_distance, max_distance]`` (log-uniform), so a curriculum moves the questions from
inside a segment to far beyond it by changing two options.

Phrasings are split like values: :data:`HELD_OUT_STATEMENTS` and :data:`HELD_OUT_QUESTIONS` are
never trained on; ``evaluation=True`` uses only them (with held-out values), so an evaluation can
report recall in unseen words apart from recall in trained ones.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from titans_core.train import dialogue
from titans_core.train.recall import PASSKEY_QUESTION, Sample, random_passkey

KINDS = ("drill",)
SUBJECTS = ("sister", "brother", "friend", "manager", "neighbour", "cousin", "teacher", "doctor")
THINGS = (*dialogue.NUMBER_THINGS, "bike lock code", "flight number", "table number", "ticket number")
DRILL_KINDS = ("name", "city", "number", "passkey")
# {s}: whose (a subject), {t}: what a number is, {v}: the value
STATEMENTS = {
    "name": ("My {s}'s name is {v}.", "My {s} is called {v}.", "The name of my {s} is {v}."),
    "city": ("My {s} lives in {v}.", "My {s} moved to {v}.", "My {s} has a home in {v}."),
    "number": ("My {t} is {v}.", "Please remember that my {t} is {v}.", "Note this: my {t} is {v}."),
    "passkey": ("The passkey is {v}.", "Remember the passkey: {v}.", "Here is the passkey: {v}."),
}
HELD_OUT_STATEMENTS = {
    "name": ("Everyone calls my {s} {v}.", "You should know my {s}: {v}."),
    "city": ("My {s} is settled in {v} now.", "These days my {s} is based in {v}."),
    "number": ("Write this down, my {t} is {v}.", "They gave me {v} as my {t}."),
    "passkey": ("Keep this passkey safe: {v}.", "The passkey you need is {v}."),
}
QUESTIONS = {
    "name": ("What is my {s}'s name?", "What is my {s} called?", "What did I say my {s}'s name was?"),
    "city": ("Where does my {s} live?", "Which city does my {s} live in?"),
    "number": ("What is my {t}?", "What was my {t} again?"),
    "passkey": (PASSKEY_QUESTION, "Which passkey did I give you?"),
}
HELD_OUT_QUESTIONS = {
    "name": ("Do you remember who my {s} is?",),
    "city": ("Do you recall the town my {s} lives in?",),
    "number": ("Can you tell me my {t}?",),
    "passkey": ("Tell me the passkey, please.",),
}
ACKNOWLEDGEMENTS = {
    "name": ("Noted: your {s}'s name is {v}.", "I will remember that your {s} is {v}."),
    "city": ("Noted: your {s} lives in {v}.", "I will remember that your {s} lives in {v}."),
    "number": ("Noted: your {t} is {v}.", "I will remember that your {t} is {v}."),
    "passkey": ("Noted: the passkey is {v}.", "I will remember the passkey {v}."),
}
ANSWERS = {
    "name": "Your {s}'s name is {v}.",
    "city": "Your {s} lives in {v}.",
    "number": "Your {t} is {v}.",
    "passkey": "The passkey is {v}.",
}


@dataclass(frozen=True)
class DrillFact:
    kind: str  # one of DRILL_KINDS
    value: str
    about: str  # the subject (name, city) or thing (number); "" for a passkey

    def fill(self, template: str) -> str:
        return template.format(v=self.value, s=self.about, t=self.about)


def draw_facts(rng: random.Random, count: int, *, evaluation: bool = False) -> list[DrillFact]:
    """``count`` facts, each about a different subject or thing, values from the split asked for."""
    subjects, things = rng.sample(SUBJECTS, len(SUBJECTS)), rng.sample(THINGS, len(THINGS))
    facts = []
    for _ in range(count):
        kind = rng.choice(DRILL_KINDS)
        if kind == "passkey" and any(f.kind == "passkey" for f in facts):
            kind = "number"
        if kind in ("name", "city") and subjects:
            facts.append(
                DrillFact(kind, dialogue.draw_value(rng, kind, evaluation=evaluation), subjects.pop())
            )
        elif kind == "passkey":
            facts.append(DrillFact(kind, _passkey(rng, evaluation), ""))
        elif things:
            facts.append(
                DrillFact("number", dialogue.draw_value(rng, "number", evaluation=evaluation), things.pop())
            )
    return facts


def _passkey(rng: random.Random, evaluation: bool) -> str:
    while True:
        value = random_passkey(rng)
        if dialogue.held_out("passkey", value) == evaluation:
            return value


def drill_sample(
    source: dialogue.ConversationSource, rng: random.Random, length: int, *, evaluation: bool = False
) -> Sample:
    """A drill of ``length + 1`` tokens: facts told and asked at drawn distances until it is full.

    Every fact is asked at most once, after its distance has passed; facts still unasked at the end
    are simply cut off. ``evaluation`` draws held-out values and phrasings only.
    """
    statements = HELD_OUT_STATEMENTS if evaluation else STATEMENTS
    questions = HELD_OUT_QUESTIONS if evaluation else QUESTIONS
    budget = length + 1
    stream = dialogue._Stream()
    facts = draw_facts(rng, 16, evaluation=evaluation)
    waiting: list[tuple[int, DrillFact]] = []  # (position at which it is due, fact)
    distances: list[int] = []
    room = lambda stream: budget - len(stream) - 40  # noqa: E731  # the distance a fact told now can have
    while len(stream) < budget:
        due = [item for item in waiting if item[0] <= len(stream)]
        if due:
            told_at, fact = min(due, key=lambda item: item[0])
            waiting.remove((told_at, fact))
            source.user(stream, fact.fill(rng.choice(questions[fact.kind])))
            source.assistant(stream, fact.fill(ANSWERS[fact.kind]), fact.value, answer=True)
        elif facts and room(stream) >= source.min_distance and (not waiting or rng.random() < 0.6):
            fact = facts.pop()
            source.user(stream, fact.fill(rng.choice(statements[fact.kind])), (fact.value,))
            source.assistant(stream, fact.fill(rng.choice(ACKNOWLEDGEMENTS[fact.kind])), fact.value)
            distance = source.distance(rng, max(room(stream), 1))
            distances.append(distance)
            waiting.append((len(stream) + distance, fact))
        else:
            gap = min(waiting, key=lambda item: item[0])[0] - len(stream) if waiting else budget
            source.turns(rng, stream, min(max(gap, 1), 200), budget)
    answers = tuple((a, b) for a, b in stream.answers if b <= length)
    distance = round(sum(distances) / len(distances)) if distances else 0
    return Sample(stream.tokens[:budget], stream.weights[1:budget], answers, "drill", distance)
