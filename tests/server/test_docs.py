"""The API docs work offline: /docs and /redoc render in a browser that may reach nothing but the server."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Route


@pytest.mark.parametrize(
    "path, operation",
    [("/docs", ".opblock"), ("/redoc", "[data-section-id^='operation/']")],
)
def test_the_api_docs_render_with_nothing_from_outside(server, browser, path, operation):
    outside: list[str] = []

    def loopback_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page = browser.new_page()
    page.route("**/*", loopback_only)
    page.goto(server.url + path, wait_until="networkidle")
    page.wait_for_selector(operation)
    assert page.locator(operation).count() >= 14  # every operation, as the OpenAPI schema lists them
    assert outside == []
    page.close()
