"""The playground in a real browser (Debian's Chromium, headless) against real servers: what a person
does on the page reaches the server through the public API, and the page loads nothing from elsewhere."""

from __future__ import annotations

import math
import os
import random
import re
import string
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Route, expect

VIEWPORT = {"width": 1280, "height": 900}
# Where the README's screenshot goes (set by scripts/playground_screenshot.py; a test run writes nothing).
SCREENSHOT = "TITANS_PLAYGROUND_SCREENSHOT"
WAIT_MS = 60_000  # a busy CI machine: every wait is on a condition, this is only its ceiling


# The page's own failed requests (a 413 it shows, a server that is gone) are logged by Chromium as
# console errors; the tests that cause them allow these and nothing else.
FAILED_LOAD = re.compile(r"^Failed to load resource: ")


class Playground:
    """The playground open in a fresh tab, watched: console errors, uncaught page errors, and any
    request for another host (aborted). Confirmation dialogs (reset, delete) are accepted."""

    def __init__(self, browser: Browser, url: str):
        self.context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        self.page: Page = self.context.new_page()
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.outside: list[str] = []
        self.loaded: list[str] = []
        self.page.on("console", self.on_console)
        self.page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        self.page.on("dialog", lambda dialog: dialog.accept())
        self.page.route("**/*", self.loopback_only)
        self.page.goto(url + "/")  # / leads to /playground/
        expect(self.page).to_have_url(url + "/playground/")

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def loopback_only(self, route: Route) -> None:
        if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
            self.loaded.append(urlsplit(route.request.url).path)
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def by(self, test_id: str):
        return self.page.get_by_test_id(test_id)

    @property
    def alert(self):
        return self.page.get_by_role("alert")

    def picked(self) -> str:
        return self.by("session-id").inner_text()

    def new_session(self) -> str:
        """Creates a session on the page; the page picks it."""
        before = self.picked()
        self.by("new-session").click()
        expect(self.by("session-id")).not_to_have_text(before, timeout=WAIT_MS)
        return self.picked()

    def pick(self, session_id: str) -> None:
        """Picks a session made elsewhere, paging the list ("More sessions") until it shows: the
        suite's shared server holds many sessions, and the list shows 20 a page."""
        item = self.by("session-list").locator(f"li[data-session-id='{session_id}'] button")
        more = self.page.locator("#more-sessions")
        expect(self.by("session-list").locator("li").first).to_be_visible(timeout=WAIT_MS)
        while item.count() == 0:
            expect(more).to_be_visible(timeout=WAIT_MS)  # not there, and no further page: fail
            shown = self.by("session-list").locator("li").count()
            more.click()
            expect(self.by("session-list").locator("li")).not_to_have_count(shown, timeout=WAIT_MS)
        item.click()

    def chat(self, text: str, max_tokens: int = 40):
        """Sends ``text`` with Enter and waits for the whole reply; returns the reply's element."""
        self.page.get_by_label("Reply up to").fill(str(max_tokens))
        replies = self.by("chat-reply").count()
        self.by("chat-input").fill(text)
        self.by("chat-input").press("Enter")
        reply = self.by("chat-reply").nth(replies)
        expect(reply).to_have_attribute("aria-busy", "false", timeout=WAIT_MS)
        return reply

    def ingest(self) -> None:
        """Starts the ingestion of what is in the form and waits until the page says it is done."""
        self.by("ingest-start").click()
        expect(self.page.locator("#ingest-numbers")).to_contain_text("done", timeout=WAIT_MS)

    def assert_clean(self, allowed_console=None) -> None:
        """Nothing went wrong in the page and nothing was asked of another host."""
        assert self.outside == []
        assert self.page_errors == []
        unexpected = [e for e in self.console_errors if not (allowed_console and allowed_console.match(e))]
        assert unexpected == []
        assert "/playground/vendor/uplot/uPlot.iife.min.js" in self.loaded  # the routing saw the page load


@pytest.fixture
def open_playground(browser):
    opened: list[Playground] = []

    def open_(server) -> Playground:
        opened.append(Playground(browser, server.url))
        return opened[-1]

    yield open_
    for playground in opened:
        playground.context.close()


def session_on(server, session_id: str, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{server.url}/v1/sessions/{session_id}", headers=headers, timeout=30)


def test_new_session_is_created_on_the_server_and_picked(server, open_playground):
    playground = open_playground(server)
    session_id = playground.new_session()
    assert session_on(server, session_id).json()["version"] == 0
    item = playground.by("session-list").locator(f"li[data-session-id='{session_id}'] button")
    expect(item).to_have_attribute("aria-pressed", "true")
    playground.assert_clean()


def test_every_field_has_a_label(server, open_playground):
    """Keyboard and screen-reader use: each input, text area and file chooser is named by a <label>."""
    playground = open_playground(server)
    expect(playground.by("new-session")).to_be_enabled()
    unlabelled = playground.page.evaluate(
        "() => [...document.querySelectorAll('input, textarea')].filter(f => !f.labels.length).map(f => f.id)"
    )
    assert unlabelled == []
    playground.assert_clean()


def test_the_reply_streams_in_token_by_token(server, open_playground):
    """The reply grows on the page while its stream is still open, not all at once at the end."""
    playground = open_playground(server)
    session_id = playground.new_session()
    # The reply's length at each rendering while the page still marks it as streaming (aria-busy).
    playground.page.evaluate(
        """() => {
            window.replyLengths = [];
            const log = document.getElementById("chat-log");
            new MutationObserver(() => {
                const replies = log.querySelectorAll("[data-testid=chat-reply]");
                const reply = replies[replies.length - 1];
                if (reply?.getAttribute("aria-busy") === "true") {
                    window.replyLengths.push(reply.textContent.length);
                }
            }).observe(log, { childList: true, subtree: true, characterData: true });
        }"""
    )
    reply = playground.chat("Tell me a story.", max_tokens=100)
    final = reply.evaluate("element => element.textContent.length")
    growing = {n for n in playground.page.evaluate("() => window.replyLengths") if 0 < n < final}
    assert len(growing) >= 2, f"seen while streaming: {sorted(growing)}, final {final}"
    expect(playground.by("chat-input")).to_have_value("")  # sent
    assert session_on(server, session_id).json()["version"] == 1  # the session took it in
    playground.assert_clean()


def test_an_ingested_file_reaches_its_total_and_plots_one_point_per_bin(server, open_playground, tmp_path):
    playground = open_playground(server)
    session_id = playground.new_session()
    document = tmp_path / "notes.txt"
    document.write_text("The memory learns as the text streams in; each bin is plotted as it is done.\n" * 80)
    playground.by("ingest-file").set_input_files(document)
    playground.page.get_by_label("Tokens per bin").fill("50")
    playground.ingest()
    total = session_on(server, session_id).json()["tokens_seen"]  # a fresh session: the document's tokens
    assert total > 2048  # more than one piece, so more than one progress event
    progress = playground.by("ingest-progress")
    expect(progress).to_have_attribute("data-total", str(total))
    expect(progress).to_have_attribute("data-done", str(total))
    assert progress.evaluate("bar => [bar.value, bar.max]") == [total, total]
    expect(playground.by("surprise-plot")).to_have_attribute("data-points", str(math.ceil(total / 50)))
    playground.assert_clean()


def test_the_inspector_shows_the_sessions_tokens_and_version(server, open_playground):
    playground = open_playground(server)
    session_id = playground.new_session()
    playground.chat("Remember this.")
    playground.page.get_by_label("Paste a text").fill("A short text for the memory. " * 20)
    playground.ingest()
    meta = session_on(server, session_id).json()
    assert meta["version"] == 2
    expect(playground.by("session-tokens")).to_have_text(str(meta["tokens_seen"]))
    expect(playground.by("session-version")).to_have_text(str(meta["version"]))
    memory = httpx.get(f"{server.url}/v1/sessions/{session_id}/memory").json()
    rows = playground.page.locator("#memory-layers tr")
    expect(rows).to_have_count(len(memory["layers"]))
    playground.assert_clean()


def test_fork_reset_and_delete_act_on_the_server(server, open_playground):
    playground = open_playground(server)
    source = playground.new_session()
    playground.chat("Something to remember.")
    seen = session_on(server, source).json()["tokens_seen"]
    assert seen > 0

    playground.by("fork-session").click()
    expect(playground.by("session-id")).not_to_have_text(source, timeout=WAIT_MS)
    fork = playground.picked()
    forked = session_on(server, fork).json()
    assert forked["tokens_seen"] == seen  # the memory was copied

    playground.by("reset-session").click()
    expect(playground.by("session-tokens")).to_have_text("0", timeout=WAIT_MS)
    reset = session_on(server, fork).json()
    assert (reset["tokens_seen"], reset["version"]) == (0, forked["version"] + 1)
    assert session_on(server, source).json()["tokens_seen"] == seen  # the source is untouched

    playground.by("delete-session").click()
    expect(playground.by("session-id")).to_have_text("No session picked", timeout=WAIT_MS)
    assert session_on(server, fork).status_code == 404
    expect(playground.by("session-list").locator(f"li[data-session-id='{fork}']")).to_have_count(0)
    playground.assert_clean()


def test_an_exported_state_imports_back_into_the_session(server, open_playground, tmp_path):
    """Export downloads the state the server holds; import puts a memory back after a reset."""
    playground = open_playground(server)
    session_id = playground.new_session()
    playground.chat("Keep this.")
    held = httpx.get(f"{server.url}/v1/sessions/{session_id}/state")
    with playground.page.expect_download() as download:
        playground.by("export-session").click()
    assert download.value.suggested_filename == f"{session_id}.safetensors"
    saved = tmp_path / "state.safetensors"
    download.value.save_as(saved)
    assert saved.read_bytes() == held.content

    memory = httpx.get(f"{server.url}/v1/sessions/{session_id}/memory").json()["layers"]
    playground.by("reset-session").click()
    expect(playground.by("session-tokens")).to_have_text("0", timeout=WAIT_MS)
    playground.by("import-state").set_input_files(saved)
    expect(playground.by("session-version")).to_have_text("3", timeout=WAIT_MS)
    assert httpx.get(f"{server.url}/v1/sessions/{session_id}/memory").json()["layers"] == memory
    playground.assert_clean()


def test_with_keys_a_wrong_key_shows_the_servers_error_and_the_right_one_lists_sessions_by_page(
    start_server, open_playground
):
    key = "playground-key-0123456789abcdef"
    server = start_server(None, "--api-key", key, "--session-list-limit", "20")
    made = [
        httpx.post(f"{server.url}/v1/sessions", json={}, headers={"Authorization": f"Bearer {key}"}).json()[
            "id"
        ]
        for _ in range(23)
    ]
    playground = open_playground(server)
    key_field = playground.page.get_by_label("API key")
    expect(key_field).to_be_visible()
    expect(playground.alert).to_contain_text("API key")

    key_field.fill(key + "x")
    key_field.press("Enter")
    expect(playground.alert).to_have_text("the API key is not valid")  # the server's own words
    expect(playground.by("session-list").locator("li")).to_have_count(0)

    key_field.fill(key)
    key_field.press("Enter")
    expect(playground.alert).to_be_hidden()
    expect(playground.by("session-list").locator("li")).to_have_count(20)
    playground.page.get_by_role("button", name="More sessions").click()
    expect(playground.by("session-list").locator("li")).to_have_count(23)
    listed = (
        playground.by("session-list")
        .locator("li")
        .evaluate_all("items => items.map(i => i.dataset.sessionId)")
    )
    assert listed == made
    expect(playground.page.get_by_role("button", name="More sessions")).to_be_hidden()
    # The key is kept for this tab only.
    assert playground.page.evaluate("() => [sessionStorage.length, localStorage.length]") == [1, 0]
    playground.assert_clean(allowed_console=FAILED_LOAD)  # the 401s of the probe and of the wrong key


def test_bad_input_and_a_stopped_server_get_a_message_and_nothing_typed_is_lost(
    start_server, open_playground, tmp_path
):
    server = start_server(None, "--max-ingest-tokens", "100")
    playground = open_playground(server)
    playground.new_session()

    playground.by("chat-input").press("Shift+Enter")  # a new line, not a send
    expect(playground.by("chat-input")).to_have_value("\n")
    playground.by("chat-input").press("Enter")
    expect(playground.alert).to_contain_text("empty message")
    expect(playground.by("chat-reply")).to_have_count(0)

    too_large = tmp_path / "large.txt"
    with too_large.open("wb") as sparse:  # no bytes on disk, and the page refuses it before reading
        sparse.truncate(64 * 1024 * 1024 + 1)
    playground.by("ingest-file").set_input_files(too_large)
    playground.by("ingest-start").click()
    expect(playground.alert).to_contain_text("too large: 67,108,865 bytes")
    playground.by("ingest-file").set_input_files([])

    text = "A document longer than this server takes. " * 40
    playground.page.get_by_label("Paste a text").fill(text)
    playground.by("ingest-start").click()
    expect(playground.alert).to_have_text("the document has more than 100 tokens (--max-ingest-tokens)")
    expect(playground.by("ingest-text")).to_have_value(text)

    server.stop()
    playground.by("chat-input").fill("Are you there?")
    playground.by("chat-input").press("Enter")
    expect(playground.alert).to_contain_text("not answering")
    expect(playground.by("chat-input")).to_have_value("Are you there?")
    playground.assert_clean(allowed_console=FAILED_LOAD)  # the 413, the refused connection


def test_each_session_shows_its_own_ingestion_and_none_after_a_reset(server, open_playground):
    """The plot and "N tokens · done" belong to the session that ingested: another session, new or
    just reset to 0 tokens, shows an empty plot and no numbers; coming back shows them again."""
    playground = open_playground(server)
    plot, numbers = playground.by("surprise-plot"), playground.page.locator("#ingest-numbers")
    first = playground.new_session()
    playground.page.get_by_label("Paste a text").fill("A text for the first session's memory. " * 30)
    playground.page.get_by_label("Tokens per bin").fill("16")
    playground.ingest()
    points = plot.get_attribute("data-points")
    assert int(points) > 1
    done = numbers.inner_text()

    playground.new_session()
    expect(plot).to_have_attribute("data-points", "0")
    expect(numbers).to_have_text("")
    expect(playground.by("ingest-progress")).not_to_have_attribute("data-done", re.compile(".*"))

    playground.by("session-list").locator(f"li[data-session-id='{first}'] button").click()
    expect(plot).to_have_attribute("data-points", points, timeout=WAIT_MS)
    expect(numbers).to_have_text(done)

    playground.by("reset-session").click()
    expect(playground.by("session-tokens")).to_have_text("0", timeout=WAIT_MS)
    expect(plot).to_have_attribute("data-points", "0")
    expect(numbers).to_have_text("")
    playground.assert_clean()


def test_a_session_used_through_the_api_says_its_log_is_this_tabs(server, open_playground, session_id):
    """The server keeps a session's memory, not its transcript: the page says so, and a session
    chatted with elsewhere shows its version and tokens in its log instead of an empty log."""
    for text in ("My locker code is 4721.", "And my city is Lyon."):
        chat = {"messages": [{"role": "user", "content": text}], "max_tokens": 4, "session_id": session_id}
        assert httpx.post(f"{server.url}/v1/chat/completions", json=chat, timeout=60).is_success
    meta = session_on(server, session_id).json()
    assert meta["version"] == 2
    playground = open_playground(server)
    expect(playground.by("chat-about")).to_contain_text("not its transcript")
    playground.pick(session_id)
    past = playground.page.locator("#chat-log .note")
    expect(past).to_contain_text(f"version 2, {meta['tokens_seen']:,} tokens", timeout=WAIT_MS)
    expect(past).to_contain_text("no transcript")
    expect(playground.by("chat-reply")).to_have_count(0)

    playground.chat("What is my locker code?", max_tokens=4)  # the tab's own lines follow the note
    expect(playground.page.locator("#chat-log li")).to_have_count(3)
    expect(past).to_have_count(1)
    playground.assert_clean()


def test_reset_and_import_notes_come_into_view(server, open_playground, tmp_path):
    """A note at the end of a long log (scrolled back to its top, as a reader does) is scrolled to."""
    playground = open_playground(server)
    session_id = playground.new_session()
    playground.chat("A long message that fills the log. " * 60, max_tokens=1)
    log = playground.page.locator("#chat-log")
    assert log.evaluate("log => log.scrollHeight > 2 * log.clientHeight")  # the note would be out of view
    saved = tmp_path / "state.safetensors"
    saved.write_bytes(httpx.get(f"{server.url}/v1/sessions/{session_id}/state", timeout=60).content)

    log.evaluate("log => { log.scrollTop = 0; }")
    playground.by("reset-session").click()
    expect(log.locator(".note", has_text="reset")).to_be_in_viewport(timeout=WAIT_MS)

    log.evaluate("log => { log.scrollTop = 0; }")
    playground.by("import-state").set_input_files(saved)
    expect(log.locator(".note", has_text="state.safetensors")).to_be_in_viewport(timeout=WAIT_MS)
    playground.assert_clean()


def test_the_readme_screenshot_shows_a_reply_and_a_plot_of_the_default_model(start_server, open_playground):
    """The page of docs/playground.png, as the README shows it: the shipped model after a chat and an
    ingestion. scripts/playground_screenshot.py runs this test to take the picture."""
    server = start_server(None, "--model", "default")
    playground = open_playground(server)
    expect(playground.page.locator("#model-name")).to_have_text("default")
    playground.new_session()
    playground.chat("My locker code is 4721.", max_tokens=60)
    playground.page.get_by_label("Paste a text").fill(soliloquy_with_noise_between())
    playground.page.get_by_label("Tokens per bin").fill("32")
    playground.ingest()
    expect(playground.by("surprise-plot")).not_to_have_attribute("data-points", "0")
    playground.page.get_by_label("Paste a text").evaluate("area => { area.scrollTop = 0; }")  # its beginning
    playground.page.mouse.move(0, 0)  # no hover on the plot: its legend shows the series' names
    expect(playground.by("chat-reply")).not_to_have_text("")
    if os.environ.get(SCREENSHOT):
        playground.page.screenshot(path=os.environ[SCREENSHOT], full_page=True)
    playground.assert_clean()


SOLILOQUY = """\
To be, or not to be, that is the question:
Whether 'tis nobler in the mind to suffer
The slings and arrows of outrageous fortune,
Or to take arms against a sea of troubles
And by opposing end them. To die: to sleep;
No more; and by a sleep to say we end
The heart-ache and the thousand natural shocks
That flesh is heir to, 'tis a consummation
Devoutly to be wish'd. To die, to sleep;
To sleep: perchance to dream: ay, there's the rub;
For in that sleep of death what dreams may come
When we have shuffled off this mortal coil,
Must give us pause: there's the respect
That makes calamity of so long life;
For who would bear the whips and scorns of time,
The oppressor's wrong, the proud man's contumely,
The pangs of despised love, the law's delay,
The insolence of office and the spurns
That patient merit of the unworthy takes,
When he himself might his quietus make
With a bare bodkin? who would fardels bear,
To grunt and sweat under a weary life,
But that the dread of something after death,
The undiscover'd country from whose bourn
No traveller returns, puzzles the will
And makes us rather bear those ills we have
Than fly to others that we know not of?
Thus conscience does make cowards of us all;
And thus the native hue of resolution
Is sicklied o'er with the pale cast of thought,
And enterprises of great pith and moment
With this regard their currents turn awry,
And lose the name of action.
"""


def soliloquy_with_noise_between() -> str:
    """Hamlet's soliloquy, a block of random characters, the soliloquy again: the plot shows the write
    strength leap where the noise begins and fall as the memory takes it in, and the loss with it."""
    draw = random.Random(1)
    letters = string.ascii_lowercase + string.digits
    noise = "".join(" ".join("".join(draw.choices(letters, k=8)) for _ in range(8)) + "\n" for _ in range(12))
    return SOLILOQUY + noise + SOLILOQUY
