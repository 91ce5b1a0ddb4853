"""``titans eval conversation``: does a session keep what it is told, in conversation, across calls?

Everything goes through the server's HTTP API as a user's program would send it: chat through the
stock ``openai`` SDK, resending the whole history each call; ingestion and resets through
:class:`TitansClient`. Values are drawn from the held-out split (:func:`prompts.held_out`), which
training never used. Four parts:

- ``facts``: call 1 tells a fact ("My name is Ada."); ordinary calls follow (small talk, passages
  of the filler text) until at least ``distance`` tokens of conversation lie between; then the
  canonical question. The ablation resets the session and sends only the question.
- ``passkey``: a document stating a passkey, ``N`` tokens of filler, ingested; three chat calls;
  then the question. Ablation as above.
- ``document``: an ingested document states two to four facts among filler; two chat calls; one
  question about one of them.
- ``ordinary``: 50 everyday prompts; a reply counts if it is words, not a bare number.
- ``stream``: one session takes in ``stream_tokens`` tokens of filler text and chat calls, in
  turns; the server refuses to commit a state that is not finite or out of bounds, so every
  committed piece is a check. Then ``trials`` forks of it each run a ``facts`` trial (name, city,
  number in turn): the memory still learns after a million tokens.
"""

from __future__ import annotations

import random
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from openai import OpenAI

from titans_client import prompts
from titans_client.client import TitansClient
from titans_client.evals import CLASSIC_FILLER, cut, filler_chars_for, forget

PARTS = ("facts", "passkey", "document", "ordinary", "stream")
STREAM_PIECE_TOKENS = 50_000  # ingested per call while streaming; a chat call follows each
DISTANCE_BINS = (0, 256, 512, 1024, 2048, 4096)
REPLY_TOKENS = 48
DOCUMENT_THINGS = ("locker code", "PIN")
LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "pt_PT", "nl_NL", "pl_PL", "sv_SE")
# Everyday prompts for the `ordinary` part, and small talk between statement and question.
ORDINARY_PROMPTS = (
    "Hello!", "Hi, how are you?", "Good evening.", "Hey there!", "How is your day going?",
    "Nice to meet you.", "Good afternoon!", "What's up?", "How have you been?", "Hello, is anyone there?",
    "Thanks a lot.", "See you later.", "Can you help me with something?", "What can you do for me?",
    "Who made you?", "Are you a robot?", "Do you remember things?", "What do you know?",
    "What is the capital of France?", "Why is the sea salty?", "What should I read next?",
    "Tell me a joke.", "Can you tell me a story?", "What is your favourite food?",
    "How do I bake bread?", "What is the best season of the year?", "Is it going to rain today?",
    "What time is it?", "Who won the football game last night?", "How far away is the moon?",
    "What is the meaning of life?", "Do you like music?", "What is your name?", "How old are you?",
    "Where are you from?", "What do you think about cats?", "Can you write a short poem?",
    "What is happiness?", "Should I learn to play the piano?", "How can I sleep better?",
    "What is a good name for a dog?", "Do you dream?", "What makes a good friend?",
    "Tell me something interesting.", "How do plants grow?", "What is the weather like?",
    "Can you keep a secret?", "What are you doing?", "I had a long day.", "Goodbye!",
)  # fmt: skip
PASSAGE_PROMPT = "Here is a passage I like:\n"


@dataclass(frozen=True)
class Trial:
    part: str
    kind: str  # the fact kind, or "passkey" / the distance asked
    value: str
    reply: str
    ablation_reply: str | None
    distance_tokens: int

    @property
    def correct(self) -> bool:
        return self.value in self.reply

    @property
    def ablation_correct(self) -> bool:
        return self.ablation_reply is not None and self.value in self.ablation_reply


def is_words(reply: str) -> bool:
    """A reply in words: some word of two letters or more, and not only digits and punctuation."""
    return bool(re.search(r"[^\W\d_]{2,}", reply)) and not re.fullmatch(r"[\d\s.,:;!?+-]*", reply)


def held_out_value(rng: random.Random, kind: str) -> str:
    """A value of ``kind`` from the held-out split: a Faker name or city, or digits."""
    from faker import Faker

    while True:
        if kind == "number":
            digits = rng.randint(3, 6)
            value = str(rng.randrange(10 ** (digits - 1), 10**digits))
        else:
            fake = Faker(rng.choice(LOCALES))
            fake.seed_instance(rng.getrandbits(64))
            value = fake.first_name() if kind == "name" else fake.city()
        if prompts.usable(value) and prompts.held_out(kind, value):
            return value


class _Conversation:
    """One session's conversation as an SDK user holds it: the history, resent whole each call."""

    def __init__(self, chat: OpenAI, model: str, session: str, reply_tokens: int):
        self.chat, self.model, self.session, self.reply_tokens = chat, model, session, reply_tokens
        self.history: list[dict[str, str]] = []

    def say(self, content: str) -> str:
        self.history.append({"role": "user", "content": content})
        reply = self.ask(self.history)
        self.history.append({"role": "assistant", "content": reply})
        return reply

    def ask(self, messages: list[dict[str, str]]) -> str:
        response = self.chat.chat.completions.create(
            model=self.model,
            messages=messages,
            temperature=0,
            max_tokens=self.reply_tokens,
            extra_headers={"X-Session-Id": self.session},
        )
        return response.choices[0].message.content or ""


class ConversationEval:
    """The four parts against one server; each returns its trials."""

    def __init__(self, base_url: str, api_key: str | None, filler: str, seed: int, reply_tokens: int):
        self.client = TitansClient(base_url, api_key=api_key, timeout=3600.0)
        self.chat = OpenAI(base_url=base_url.rstrip("/") + "/v1", api_key=api_key or "unused", timeout=3600.0)
        self.model = self.client.models()[0].id
        self.filler, self.rng, self.reply_tokens = filler, random.Random(seed), reply_tokens
        self.run = "eval-" + secrets.token_hex(4)
        self.sessions = 0

    def close(self) -> None:
        self.client.close()
        self.chat.close()

    def conversation(self) -> _Conversation:
        self.sessions += 1
        return _Conversation(self.chat, self.model, f"{self.run}-{self.sessions}", self.reply_tokens)

    def tokens_seen(self, session: str) -> int:
        return self.client.get_session(session).tokens_seen

    def small_talk(self, talk: _Conversation, tokens: int) -> None:
        """Ordinary calls until the session has taken in ``tokens`` more tokens."""
        goal = self.tokens_seen(talk.session) + tokens
        while self.tokens_seen(talk.session) < goal:
            if self.rng.random() < 0.5:
                talk.say(self.rng.choice(ORDINARY_PROMPTS))
            else:
                chars = self.rng.randint(300, 800)
                talk.say(PASSAGE_PROMPT + cut(self.filler, self.rng.randrange(len(self.filler)), chars))

    def ablation(self, talk: _Conversation, question: str) -> str:
        self.client.reset_session(talk.session)
        return talk.ask([{"role": "user", "content": question}])

    def fact(self, kind: str, distance: int, fork_of: str | None = None) -> Trial:
        talk = self.conversation()
        if fork_of is not None:
            self.client.fork_session(fork_of, talk.session)
        try:
            value = held_out_value(self.rng, kind)
            talk.say(prompts.statement(kind, value))
            told = self.tokens_seen(talk.session)
            self.small_talk(talk, distance)
            between = self.tokens_seen(talk.session) - told
            question = prompts.question(kind)
            reply = talk.say(question)
            part = "facts" if fork_of is None else "stream"
            return Trial(part, kind, value, reply, self.ablation(talk, question), between)
        finally:
            forget(self.client, talk.session)

    def passkey(self, distance: int, filler_chars: int) -> Trial:
        talk = self.conversation()
        try:
            key = prompts.random_passkey(self.rng)
            filler = cut(self.filler, self.rng.randrange(len(self.filler)), filler_chars)
            statement = self.client.ingest(talk.session, prompts.passkey_statement(key)).tokens_ingested
            self.client.ingest(talk.session, filler)
            for _ in range(3):
                talk.say(self.rng.choice(ORDINARY_PROMPTS))
            between = self.tokens_seen(talk.session) - statement
            reply = talk.say(prompts.PASSKEY_QUESTION)
            return Trial(
                "passkey", str(distance), key, reply, self.ablation(talk, prompts.PASSKEY_QUESTION), between
            )
        finally:
            forget(self.client, talk.session)

    def document(self, filler_chars: int) -> Trial:
        talk = self.conversation()
        try:
            kinds = self.rng.sample(["name", "city"], self.rng.randint(1, 2))
            kinds += ["number"] * self.rng.randint(max(0, 2 - len(kinds)), 2)
            things = iter(DOCUMENT_THINGS)
            facts = [(k, held_out_value(self.rng, k), next(things) if k == "number" else "") for k in kinds]
            lines = cut(self.filler, self.rng.randrange(len(self.filler)), filler_chars).split("\n")
            for kind, value, thing in facts:
                lines.insert(self.rng.randrange(len(lines) // 2 + 1), prompts.statement(kind, value, thing))
            self.client.ingest(talk.session, "\n".join(lines) + "\n")
            for _ in range(2):
                talk.say(self.rng.choice(ORDINARY_PROMPTS))
            kind, value, thing = self.rng.choice(facts)
            question = prompts.question(kind, thing or prompts.NUMBER_THING)
            between = self.tokens_seen(talk.session)  # from the document's start
            reply = talk.say(question)
            return Trial("document", kind, value, reply, self.ablation(talk, question), between)
        finally:
            forget(self.client, talk.session)

    def stream(self, tokens: int, on_piece: Callable[[int], None] | None = None) -> str:
        """A session that has taken in ``tokens`` tokens of filler and chat; its id."""
        talk = self.conversation()
        self.client.create_session(talk.session)
        chars = filler_chars_for(self.client, self.run, self.filler, min(tokens, STREAM_PIECE_TOKENS))
        while self.tokens_seen(talk.session) < tokens:
            self.client.ingest(talk.session, cut(self.filler, self.rng.randrange(len(self.filler)), chars))
            talk.history = []  # a new conversation after each document, as a user would start one
            talk.say(self.rng.choice(ORDINARY_PROMPTS))
            if on_piece is not None:
                on_piece(self.tokens_seen(talk.session))
        return talk.session

    def ordinary(self, prompt: str) -> Trial:
        talk = self.conversation()
        try:
            return Trial("ordinary", "prompt", prompt, talk.say(prompt), None, 0)
        finally:
            forget(self.client, talk.session)


def conversation(
    base_url: str,
    api_key: str | None,
    trials: int,
    *,
    distance: int = 512,
    passkey_distances: tuple[int, ...] = (4096, 16384),
    filler: str = CLASSIC_FILLER,
    parts: tuple[str, ...] = PARTS,
    stream_tokens: int = 1_000_000,
    reply_tokens: int = REPLY_TOKENS,
    seed: int = 0,
    on_trial: Callable[[Trial], None] | None = None,
) -> dict:
    """Run ``parts`` (``trials`` each per fact kind and per passkey distance); a JSON-ready report."""
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"parts must be some of {', '.join(PARTS)}, got {', '.join(unknown)}")
    evaluation = ConversationEval(base_url, api_key, filler, seed, reply_tokens)
    begin = time.perf_counter()
    done: list[Trial] = []

    def record(trial: Trial) -> None:
        done.append(trial)
        if on_trial is not None:
            on_trial(trial)

    try:
        if "facts" in parts:
            for _ in range(trials):
                for kind in prompts.FACT_KINDS:
                    record(evaluation.fact(kind, distance))
        if "passkey" in parts:
            for tokens in passkey_distances:
                chars = filler_chars_for(evaluation.client, evaluation.run, filler, tokens)
                for _ in range(trials):
                    record(evaluation.passkey(tokens, chars))
        if "document" in parts:
            chars = filler_chars_for(evaluation.client, evaluation.run, filler, distance)
            for _ in range(trials):
                record(evaluation.document(chars))
        if "ordinary" in parts:
            for prompt in ORDINARY_PROMPTS:
                record(evaluation.ordinary(prompt))
        streamed = None
        if "stream" in parts:
            long = evaluation.stream(stream_tokens)
            try:
                streamed = evaluation.tokens_seen(long)
                for index in range(trials):
                    kind = prompts.FACT_KINDS[index % len(prompts.FACT_KINDS)]
                    record(evaluation.fact(kind, distance, fork_of=long))
            finally:
                forget(evaluation.client, long)
        model = evaluation.model
    finally:
        evaluation.close()
    return {
        "eval": "conversation",
        **_report(done),
        "trials": trials,
        "distance": distance,
        "passkey_distances": list(passkey_distances),
        **({"streamed_tokens": streamed} if streamed is not None else {}),
        "seed": seed,
        "model": model,
        "seconds": time.perf_counter() - begin,
    }


def _report(done: list[Trial]) -> dict:
    def share(trials: list[Trial], correct: Callable[[Trial], bool]) -> dict:
        return {"accuracy": sum(map(correct, trials)) / len(trials), "trials": len(trials)}

    def recall(trials: list[Trial]) -> dict:
        return {
            **share(trials, lambda t: t.correct),
            "ablation_accuracy": sum(t.ablation_correct for t in trials) / len(trials),
            "mean_distance_tokens": sum(t.distance_tokens for t in trials) / len(trials),
            "examples": [
                {"value": t.value, "reply": t.reply, "ablation_reply": t.ablation_reply} for t in trials[:3]
            ],
        }

    report: dict = {}
    groups: dict[tuple[str, str], list[Trial]] = defaultdict(list)
    for trial in done:
        groups[trial.part, trial.kind].append(trial)
    facts = [t for t in done if t.part == "facts"]
    if facts:
        report["facts"] = {kind: recall(ts) for (part, kind), ts in groups.items() if part == "facts"}
        by_distance: dict[str, list[Trial]] = defaultdict(list)
        for trial in facts:
            low = max(b for b in DISTANCE_BINS if b <= trial.distance_tokens)
            by_distance[f">={low}"].append(trial)
        report["facts_by_distance"] = {k: recall(ts) for k, ts in sorted(by_distance.items())}
    passkeys = {kind: recall(ts) for (part, kind), ts in groups.items() if part == "passkey"}
    if passkeys:
        report["passkey"] = passkeys
    streamed = [t for t in done if t.part == "stream"]
    if streamed:
        report["stream"] = recall(streamed)
    documents = [t for t in done if t.part == "document"]
    if documents:
        report["document"] = recall(documents)
    ordinary = [t for t in done if t.part == "ordinary"]
    if ordinary:
        words = share(ordinary, lambda t: is_words(t.reply))
        report["ordinary"] = {
            "words_rate": words["accuracy"],
            "prompts": words["trials"],
            "examples": [{"prompt": t.value, "reply": t.reply} for t in ordinary[:10]],
            "not_words": [{"prompt": t.value, "reply": t.reply} for t in ordinary if not is_words(t.reply)],
        }
    return report
