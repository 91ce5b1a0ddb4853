"""The consumed transcript as a hash chain: stock OpenAI clients resend the whole history each call,
and only what a session has not consumed yet may be fed to its memory again."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence


def extend(chain: str, messages: Sequence[dict]) -> str:
    """The chain hash after ``messages`` (each ``{"role", "content"}``) follow ``chain``."""
    for message in messages:
        canonical = json.dumps([message["role"], message["content"]], ensure_ascii=False)
        chain = hashlib.sha256((chain + canonical).encode()).hexdigest()
    return chain


def unconsumed(chain: str, length: int, messages: Sequence[dict]) -> list[dict]:
    """The messages a session has not seen: the tail after its whole consumed transcript if the
    request starts with it, else every message (new turns appended to the session)."""
    if length and len(messages) >= length and extend("", messages[:length]) == chain:
        return list(messages[length:])
    return list(messages)
