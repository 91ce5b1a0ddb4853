"""Clients of the real server process (see tests/conftest.py): raw HTTP, the openai package, and a
real browser."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest

# Debian's chromium: Playwright's own browser download is not reachable everywhere.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven by Playwright (skips where Debian's ``chromium`` is not installed)."""
    if not CHROMIUM.exists():
        pytest.skip(f"no {CHROMIUM} (Debian's chromium: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


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
