"""Evaluations through the HTTP API, as a user would run them: does a session remember across calls?

``passkey``: call 1 ingests a document that states a random passkey followed by filler text, call 2
(a separate chat request on the same session) asks for it. The ablation runs the same trials with
the session's memory reset between the two calls, so it measures what guessing achieves.

``ingest_loss``: the mean next-token loss on a document's second half after the session ingested its
first half, against the same on a fresh session. A positive gap means the memory helped.
"""

from __future__ import annotations

import math
import random
import secrets
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from titans_client.client import TitansClient
from titans_client.errors import NotFoundError
from titans_client.prompts import PASSKEY_QUESTION, passkey_statement, random_passkey

# The classic passkey filler (Mohtashami & Jaggi, 2023); pass real text to measure on real text.
CLASSIC_FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n"
PROBE_CHARS = 8192
ANSWER_TOKENS = 32  # a reply in a sentence ("The passkey is 48213.") and then some


@dataclass(frozen=True)
class Trial:
    passkey: str
    reply: str
    ablation_reply: str
    distance_tokens: int

    @property
    def correct(self) -> bool:
        return self.passkey in self.reply

    @property
    def ablation_correct(self) -> bool:
        return self.passkey in self.ablation_reply


def passkey(
    client: TitansClient,
    distance: int,
    trials: int,
    *,
    filler: str = CLASSIC_FILLER,
    seed: int = 0,
    on_trial: Callable[[Trial], None] | None = None,
) -> dict:
    """Passkey recall across calls at ``distance`` filler tokens; the report as a JSON-ready dict."""
    rng = random.Random(seed)
    run = "eval-" + secrets.token_hex(4)
    statement_tokens = _tokens(client, run, passkey_statement(random_passkey(rng)))
    filler_chars = filler_chars_for(client, run, filler, distance)
    ask = {"temperature": 0, "max_tokens": ANSWER_TOKENS}
    begin = time.perf_counter()
    done: list[Trial] = []
    for index in range(trials):
        key = random_passkey(rng)
        document = passkey_statement(key) + cut(filler, rng.randrange(len(filler)), filler_chars)
        replies, ingested = [], 0
        for ablate in (False, True):
            session = f"{run}-{index}-{'ablation' if ablate else 'memory'}"
            try:
                ingested = client.ingest(session, document).tokens_ingested
                if ablate:
                    client.reset_session(session)
                replies.append(client.chat(session, [{"role": "user", "content": PASSKEY_QUESTION}], **ask))
            finally:
                forget(client, session)
        done.append(Trial(key, replies[0], replies[1], ingested - statement_tokens))
        if on_trial is not None:
            on_trial(done[-1])
    return {
        "eval": "passkey",
        "accuracy": sum(t.correct for t in done) / trials,
        "ablation_accuracy": sum(t.ablation_correct for t in done) / trials,
        "distance": distance,
        "mean_distance_tokens": sum(t.distance_tokens for t in done) / trials,
        "trials": trials,
        "results": [
            {"passkey": t.passkey, "reply": t.reply, "ablation_reply": t.ablation_reply} for t in done
        ],
        "seed": seed,
        "model": client.models()[0].id,
        "seconds": time.perf_counter() - begin,
    }


def ingest_loss(client: TitansClient, text: str) -> dict:
    """Held-out loss on the second half of ``text`` with and without the first half in memory."""
    middle = text.rfind(" ", 0, len(text) // 2) + 1 or len(text) // 2
    first, second = text[:middle], text[middle:]
    if not first.strip() or not second.strip():
        raise ValueError("the document is too short to split in two halves")
    run = "eval-" + secrets.token_hex(4)
    remembered, fresh = f"{run}-remembered", f"{run}-fresh"
    try:
        before = client.ingest(remembered, first)
        after = client.ingest(remembered, second)
        alone = client.ingest(fresh, second)
    finally:
        for session in (remembered, fresh):
            forget(client, session)
    if after.mean_loss is None or alone.mean_loss is None:
        raise ValueError("the server reported no mean_loss for the ingested halves")
    return {
        "eval": "ingest-loss",
        "loss_after_first_half": after.mean_loss,
        "loss_fresh": alone.mean_loss,
        "gap": alone.mean_loss - after.mean_loss,
        "first_half_tokens": before.tokens_ingested,
        "second_half_tokens": after.tokens_ingested,
        "model": client.models()[0].id,
    }


def _tokens(client: TitansClient, run: str, text: str) -> int:
    """How many tokens the server's tokenizer makes of ``text`` (ingested into a scratch session)."""
    session = f"{run}-probe"
    try:
        return client.ingest(session, text).tokens_ingested
    finally:
        forget(client, session)


def filler_chars_for(client: TitansClient, run: str, filler: str, tokens: int) -> int:
    """How many characters of ``filler`` make about ``tokens`` tokens on this server."""
    return math.ceil(tokens * PROBE_CHARS / _tokens(client, run, cut(filler, 0, PROBE_CHARS)))


def forget(client: TitansClient, session: str) -> None:
    with suppress(NotFoundError):
        client.delete_session(session)


def cut(filler: str, start: int, chars: int) -> str:
    """``chars`` characters of ``filler`` repeated, from ``start``, beginning at a line or word start."""
    repeated = filler * (1 + (start + chars + 1) // len(filler) + 1)
    begin = start
    while begin > 0 and not repeated[begin - 1].isspace():
        begin -= 1
    piece = repeated[begin : begin + chars]
    return piece.lstrip() or filler.lstrip()[:chars]
