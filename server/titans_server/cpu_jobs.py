"""CPU work of a request, written as a job: a generator that yields one small request for the
worker process at a time (see :mod:`titans_server.cpu_worker`) and is sent back the reply.

Between pieces the job can be dropped (the client left, a limit was passed), and other tenants'
pieces run. :func:`drive` runs a job against a tokenizer in this process (tests, tooling).
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Generator, Iterator

# Characters a worker encodes per request: a few ms of one core.
PIECE_CHARS = 16384
_CUT = re.compile(r"\S[ \t\n\r]")  # between a non-space and a space: where a piece may end

Job = Generator[tuple, object, object]


def cuts(text: str, piece: int = PIECE_CHARS) -> Iterator[str]:
    """``text`` in pieces of about ``piece`` characters whose encodings join to the whole text's.

    Pieces end between a non-space and a space, where a byte-level BPE pre-tokenizer always splits;
    a run of ``4 * piece`` characters without a space (no word of any text) is cut where it stands.
    """
    start = 0
    while start < len(text):
        longest = start + 4 * piece
        found = _CUT.search(text, start + piece - 1, longest + 1)
        end = found.start() + 1 if found else longest
        yield text[start:end]
        start = end


def encode_texts(texts: list[str], limit: int, piece: int = PIECE_CHARS) -> Job:
    """Each text's tokens (as ``array('i')``, 4 bytes a token), or None as soon as they add up to
    more than ``limit`` (the rest is never encoded). Short texts share a request."""
    encoded = [array("i") for _ in texts]
    total, batch, owners, size = 0, [], [], 0
    for index, text in enumerate(texts):
        for part in cuts(text, piece) if text else [""]:
            batch.append(part)
            owners.append(index)
            size += len(part)
            if size < piece:
                continue
            total += yield from _send(batch, owners, encoded)
            if total > limit:
                return None
            batch, owners, size = [], [], 0
    if batch:
        total += yield from _send(batch, owners, encoded)
    return None if total > limit else encoded


def _send(batch: list[str], owners: list[int], encoded: list[array]) -> Generator[tuple, object, int]:
    replies = yield ("encode", batch)
    for owner, ids in zip(owners, replies):
        encoded[owner].extend(ids)
    return sum(len(ids) for ids in replies)


def check_json(body: bytes, max_values: int) -> Job:
    """Why ``body`` may not be parsed, or None (see :func:`titans_server.cpu_worker.check_json`)."""
    return (yield ("check_json", body, max_values))


def drive(job: Job, tokenizer) -> object:
    """Run ``job`` here, against ``tokenizer`` (a :class:`titans_core.Tokenizer`)."""
    from titans_server import cpu_worker

    reply = None
    while True:
        try:
            kind, *arguments = job.send(reply)
        except StopIteration as done:
            return done.value
        if kind == "encode":
            reply = [tokenizer.encode(text) for text in arguments[0]]
        else:
            reply = cpu_worker.check_json(*arguments)
