"""The API docs as a newcomer meets them: /docs and /redoc render with nothing from another host, and
every operation's "Try it out" succeeds exactly as Swagger UI pre-fills it."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect

WAIT_MS = 60_000  # a busy machine: every wait is on a condition, this is only its ceiling
LOOPBACK = ("127.0.0.1", "localhost")


# The schema's examples, as Swagger UI fills a form from them ------------------------------------


def operations(schema: dict) -> list[tuple[str, str, dict]]:
    return [(path, method, op) for path, ops in schema["paths"].items() for method, op in ops.items()]


def resolved(schema: dict, node: dict) -> dict:
    """A schema with its references followed; of ``anyOf`` (an optional body), the first, as Swagger UI."""
    while "$ref" in node or "anyOf" in node:
        node = (
            node["anyOf"][0]
            if "anyOf" in node
            else schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
        )
    return node


def prefilled(parameter: dict) -> Any:
    """What Swagger UI puts in a parameter's field: its example, else its schema's default."""
    if "example" in parameter:
        return parameter["example"]
    return parameter["schema"].get("default")


def body_of(schema: dict, operation: dict) -> tuple[str, Any] | None:
    """``(content type, example)`` of the body Swagger UI pre-fills: the first content type's example,
    else its schema's first example. A file upload (binary) has none: ``(type, None)``."""
    if "requestBody" not in operation:
        return None
    kind, media = next(iter(operation["requestBody"]["content"].items()))
    if "example" in media:
        return kind, media["example"]
    body_schema = resolved(schema, media["schema"])
    if body_schema.get("format") == "binary":
        return kind, None
    assert body_schema.get("examples"), f"{kind} body without an example: Swagger UI invents one"
    return kind, body_schema["examples"][0]


def sessions_named(schema: dict) -> set[str]:
    """The session ids the examples name: path parameters and bodies' ``session_id``."""
    named = set()
    for _, _, operation in operations(schema):
        named |= {p["example"] for p in operation.get("parameters", []) if p["name"] == "session_id"}
        body = body_of(schema, operation)
        if body and isinstance(body[1], dict) and "session_id" in body[1]:
            named.add(body[1]["session_id"])
    return named


def holding(client: httpx.Client, sessions: set[str]) -> bytes:
    """The server holds each named session, fresh, with a memory that has seen some text; returns
    the state of one of them (what a file chooser would hold for an import)."""
    for session in sessions:
        client.delete(f"/v1/sessions/{session}")
        assert client.post(f"/v1/sessions/{session}/ingest", content="Something to remember.").is_success
    exported = client.get(f"/v1/sessions/{sorted(sessions)[0]}/state")
    assert exported.is_success
    return exported.content


def test_every_operation_succeeds_as_its_example_fills_it(server, client):
    schema = client.get("/openapi.json").json()
    named = sessions_named(schema)
    assert named  # the examples name a session of their own, which this test holds
    sent = 0
    for path, method, operation in operations(schema):
        state = holding(client, named)
        url, query, headers = path, {}, {}
        for parameter in operation.get("parameters", []):
            value = prefilled(parameter)
            if value is None:
                assert not parameter["required"], f"{method} {path}: {parameter['name']} is empty"
            elif parameter["in"] == "path":
                url = url.replace("{" + parameter["name"] + "}", quote(str(value), safe=""))
            elif parameter["in"] == "query":
                query[parameter["name"]] = json.dumps(value) if isinstance(value, bool) else value
            else:
                headers[parameter["name"]] = str(value)
        content = None
        body = body_of(schema, operation)
        if body is not None:
            headers["content-type"], example = body
            if example is None:  # a file upload: the state the server exported
                content = state
            elif headers["content-type"] == "application/json":
                content = json.dumps(example).encode()
            else:
                content = str(example).encode()
        answer = client.request(method, url, params=query, headers=headers, content=content)
        assert answer.is_success, f"{method.upper()} {url}: {answer.status_code} {answer.text[:300]}"
        sent += 1
    assert sent >= 16


def test_swagger_ui_try_it_out_succeeds_for_every_operation(server, client, browser):
    """Each operation in /docs, as a reader does it: open it, "Try it out", "Execute" without typing
    (the import's file chooser gets the state the server exported), and see a 2xx."""
    schema = client.get("/openapi.json").json()
    named = sessions_named(schema)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server.url + "/docs")
    blocks = page.locator(".opblock")
    expect(blocks).to_have_count(len(operations(schema)), timeout=WAIT_MS)
    for index in range(blocks.count()):
        state = holding(client, named)
        block = blocks.nth(index)
        name = block.locator(".opblock-summary-path").inner_text()
        block.locator(".opblock-summary-control").click()
        block.get_by_role("button", name="Try it out").click()
        chooser = block.locator("input[type=file]")
        if chooser.count():
            upload = {"name": "state.safetensors", "mimeType": "application/octet-stream", "buffer": state}
            chooser.set_input_files(upload)
        block.get_by_role("button", name="Execute").click()
        status = block.locator(".live-responses-table td.response-col_status:not(.col_header)")
        expect(status).to_have_text(re.compile(r"^\d{3}"), timeout=WAIT_MS)
        answered = status.inner_text()
        assert answered.startswith("2"), (
            f"{name}: {answered} {block.locator('.live-responses-table').inner_text()}"
        )
        block.locator(".opblock-summary-control").click()  # closed again: one open form at a time
    page.close()


# Nothing from another host ------------------------------------------------------------------------

# Every Content-Security-Policy violation, which Chromium blocks before any request is visible to
# routing (so a test that only routes requests would not see it).
CSP_WATCH = """
window.violations = [];
document.addEventListener("securitypolicyviolation", (event) => window.violations.push(event.blockedURI));
window.redoclyLogoTried = false;
new MutationObserver((records) => {
  const added = records.flatMap((record) => [...record.addedNodes]);
  if (added.some((node) => node.matches?.("img[alt='redocly logo']"))) window.redoclyLogoTried = true;
}).observe(document, { childList: true, subtree: true });
"""


class RequestLog:
    """Every request the page makes, console errors, and CSP violations; other hosts are aborted."""

    def __init__(self, page: Page):
        self.page, self.requests, self.console_errors = page, [], []
        page.add_init_script(CSP_WATCH)
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        page.route(
            "**/*", lambda route: route.abort() if self.outside(route.request.url) else route.continue_()
        )

    def loopback_only(self, route: Route) -> None:
        route.abort() if self.outside(route.request.url) else route.continue_()

    @staticmethod
    def outside(url: str) -> bool:
        return urlsplit(url).scheme in ("http", "https") and urlsplit(url).hostname not in LOOPBACK

    def assert_local(self) -> None:
        assert self.requests, "the log saw no request at all"
        assert [url for url in self.requests if self.outside(url)] == []
        assert self.page.evaluate("() => window.violations") == []
        assert self.console_errors == []


@pytest.mark.parametrize(
    "path, rendered",
    [
        ("/docs", ".opblock"),
        ("/redoc", "[data-section-id^='operation/']"),
        ("/playground/", "#session-list"),
    ],
)
def test_no_page_loads_anything_from_another_host(server, browser: Browser, path, rendered):
    page = browser.new_page()
    log = RequestLog(page)
    page.goto(server.url + path, wait_until="load")
    page.wait_for_selector(rendered, timeout=WAIT_MS)
    if path == "/redoc":  # its sidebar's logo comes after the rest: until it was tried
        page.wait_for_function("() => window.redoclyLogoTried", timeout=WAIT_MS)
        assert page.locator("[data-section-id^='operation/']").count() >= 14  # every operation
    page.wait_for_load_state("networkidle", timeout=WAIT_MS)
    log.assert_local()
    page.close()
