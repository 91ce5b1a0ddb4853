"""The playground's timeline of kept versions, in a real browser against a real server: what made
each version, how far each moved the memory, and a restore that reaches the server."""

from __future__ import annotations

import httpx
from playwright.sync_api import expect
from test_playground import WAIT_MS, open_playground  # noqa: F401 (a fixture)


def test_the_timeline_lists_kept_versions_and_restores_one(server, open_playground):  # noqa: F811
    playground = open_playground(server)
    session_id = playground.new_session()
    playground.chat("My locker code is 4721.", max_tokens=4)
    playground.chat("And my city is Lyon.", max_tokens=4)
    timeline = playground.by("timeline").locator("li")
    expect(timeline).to_have_count(3, timeout=WAIT_MS)
    expect(timeline.nth(0)).to_contain_text("v2 · chat")
    expect(timeline.nth(0)).to_contain_text("(current)")
    expect(timeline.nth(0)).to_contain_text("moved")
    expect(timeline.nth(2)).to_contain_text("v0 · create")

    timeline.nth(1).get_by_test_id("restore-version").click()
    expect(playground.by("session-version")).to_have_text("3", timeout=WAIT_MS)
    expect(timeline.nth(0)).to_contain_text("v3 · restore of version 1")
    expect(playground.page.locator("#chat-log .note").last).to_contain_text("Version 1 was restored")
    listed = httpx.get(f"{server.url}/v1/sessions/{session_id}/versions", timeout=30).json()["data"]
    assert (listed[0]["made_by"], listed[0]["restored_from"]) == ("restore", 1)
    playground.assert_clean()
