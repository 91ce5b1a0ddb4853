"""The API calls the deploy tests make on a served container: a chat through the official
``openai`` package, and a session's version."""

from __future__ import annotations

import os

import httpx
from openai import OpenAI


def new_session() -> str:
    return "deploy-" + os.urandom(4).hex()


def chat(url: str, session: str, stream: bool = False, model: str = "tiny-random") -> str:
    """A 4-token chat on ``session`` through the official SDK; the reply's text."""
    client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
    asked = {
        "model": model,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 4,
        "extra_headers": {"X-Session-Id": session},
        "extra_body": {"ignore_eos": True},
    }
    if not stream:
        reply = client.chat.completions.create(**asked)
        assert reply.usage.completion_tokens == 4, reply
        return reply.choices[0].message.content
    chunks = list(
        client.chat.completions.create(**asked, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[-1].usage.completion_tokens == 4, chunks[-1]
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


def version(url: str, session: str) -> int:
    shown = httpx.get(f"{url}/v1/sessions/{session}", timeout=30)
    assert shown.status_code == 200, shown.text
    return shown.json()["version"]
