"""The CPU worker: a process of its own that tokenises and checks JSON bodies for the server.

Tokenising holds the GIL for the whole of each call (the Rust tokenizer never lets go), so done in
a thread of the server it stalls the event loop and the engine's thread at every step; in a process
it costs one core and nothing else. The server (:mod:`titans_server.cpu_pool`) sends it one small
piece of work at a time, so it can stop between pieces, and takes the tenants in turn.

Frames both ways: 8 bytes of little-endian length, then a :mod:`marshal` payload (plain lists,
strings, bytes and numbers; both ends are this package). The first frame is the tokenizer's JSON.
"""

from __future__ import annotations

import json
import marshal
import os
import re
import sys
from typing import BinaryIO

NICENESS = 10  # the worker's scheduling priority, below the server's
# A JSON string (escapes included): cut out before counting the structure around it.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def read_frame(stream: BinaryIO) -> object | None:
    """The next frame's payload; None at the end of the stream."""
    head = stream.read(8)
    if len(head) < 8:
        return None
    return marshal.loads(stream.read(int.from_bytes(head, "little")))


def write_frame(stream: BinaryIO, payload: object) -> None:
    data = marshal.dumps(payload)
    stream.write(len(data).to_bytes(8, "little") + data)
    stream.flush()


def json_values(body: bytes) -> int:
    """An upper bound on the values (objects, arrays, strings, numbers, keys...) of a JSON text,
    counted without parsing it: one, plus one per ``[``, ``,`` and ``:`` outside its strings."""
    bare = _STRING.sub(b'""', body)
    return 1 + bare.count(b"[") + bare.count(b",") + bare.count(b":")


def check_json(body: bytes, max_values: int) -> tuple[str, str, str | None] | None:
    """Why a JSON body may not be parsed by the server, as ``(code, message, param)``; None: it may.

    Its values are counted before it is parsed (130,000 tiny objects took 0.9 s to parse), and
    every string and key must be text: UTF-8 on the wire, no lone surrogate (``"\\ud800"``) once
    decoded. Malformed JSON passes: the server's own parser answers it as for any client.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        return "invalid_text", f"the body is not UTF-8 text: {error}", None
    values = json_values(body)
    if values > max_values:
        message = f"the JSON body has more than {max_values:,} values (--max-json-values)"
        return "too_many_json_values", message, None
    try:
        parsed = json.loads(text)
    except RecursionError:
        return "too_many_json_values", "the JSON body is nested too deeply", None
    except ValueError:
        return None
    return lone_surrogate(parsed)


def lone_surrogate(value: object) -> tuple[str, str, str | None] | None:
    """The first string (or key) of a parsed JSON value that is not text, as a refusal."""
    stack: list[tuple[object, tuple[str, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                stack += [(key, path), (inner, (*path, str(key)))]
        elif isinstance(item, list):
            stack += [(inner, (*path, str(index))) for index, inner in enumerate(item)]
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                param = ".".join(path) or None
                where = f"{param}: " if param else ""
                return "invalid_text", f"{where}a string holds a lone surrogate, which is not text", param
    return None


def main() -> None:
    from tokenizers import Tokenizer  # not torch: the worker stays small

    # Below the engine's threads: on a machine with few cores, the kernel runs the model first
    # and tokenises with what is left, so one tenant's flood of text cannot slow another's chat.
    os.nice(NICENESS)
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    tokenizer = Tokenizer.from_str(read_frame(source))
    tokenizer.encode_special_tokens = True  # as titans_core.Tokenizer: text never turns into control tokens
    while (request := read_frame(source)) is not None:
        kind, *arguments = request
        if kind == "encode":
            (texts,) = arguments
            reply = [tokenizer.encode(text, add_special_tokens=False).ids for text in texts]
        elif kind == "check_json":
            reply = check_json(*arguments)
        else:
            raise ValueError(f"unknown request {kind!r}")
        write_frame(sink, reply)


if __name__ == "__main__":
    main()
