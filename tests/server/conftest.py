"""Clients of the real server process (see tests/conftest.py): raw HTTP and the openai package."""

from __future__ import annotations

import os
import re

import httpx
import pytest


@pytest.fixture
def client(server) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


@pytest.fixture
def openai_client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture
def session_id(request) -> str:
    """A session id of this test's own."""
    name = re.sub(r"[^A-Za-z0-9._:-]", "-", request.node.name)[:80]
    return f"t-{name}-{os.urandom(3).hex()}"
