"""/docs and /redoc as a newcomer meets them: every operation's "Try it out" succeeds as it is
pre-filled, and nothing is loaded from another host.

The request models carry their examples (:mod:`titans_server.schemas`); what the routes do not declare
is added to the schema here: an example for each ``{session_id}`` (Swagger UI sends a required
parameter it cannot fill only after the reader types one), and the bodies of the two routes that read
theirs raw (an ingested document, an imported state), which Swagger UI would otherwise send empty.

ReDoc's sidebar shows Redocly's logo from a CDN, with no option to turn it off: /redoc is served with
fastapi-offline's bundle minus that address (blocked by the pages' CSP, it was a console error).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse

from titans_server.schemas import EXAMPLE_SESSION, IngestText

REDOC = "/redoc"
REDOC_JS = "/docs-assets/redoc.standalone.js"
OFFLINE_STATIC = "/static-offline-docs"  # where fastapi-offline serves its assets
REDOC_BUNDLE = Path(fastapi_offline.__file__).parent / "static" / "redoc.standalone.js"
REDOCLY_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"

INGEST_BODY = {
    "required": True,
    "description": 'the document: plain text, JSON `{"text": ...}`, or a multipart upload of a `file`',
    "content": {
        "text/plain": {
            "schema": {"type": "string"},
            "example": IngestText.model_json_schema()["examples"][0]["text"],
        },
        "application/json": {"schema": IngestText.model_json_schema()},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
    },
}
STATE_BODY = {
    "required": True,
    "description": "a state as `GET /v1/sessions/{session_id}/state` exports it (safetensors bytes)",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}
RAW_BODIES = {
    ("/v1/sessions/{session_id}/ingest", "post"): INGEST_BODY,
    ("/v1/sessions/{session_id}/state", "put"): STATE_BODY,
}


def install(app: FastAPI) -> None:
    """The schema's examples and raw bodies, and /redoc (make the app with ``redoc_url=None``)."""
    app.openapi = _with_examples(app, app.openapi)
    app.add_api_route(REDOC, _redoc_page(app), include_in_schema=False)
    app.add_api_route(REDOC_JS, _redoc_js, include_in_schema=False)


def _with_examples(app: FastAPI, build: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None  # FastAPI builds the schema once and keeps it
        schema = build()
        if fresh:
            add_examples(schema)
        return schema

    return openapi


def add_examples(schema: dict[str, Any]) -> None:
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] == "session_id":
                    parameter["example"] = EXAMPLE_SESSION
            if (path, method) in RAW_BODIES:
                operation["requestBody"] = RAW_BODIES[path, method]


def _redoc_page(app: FastAPI) -> Callable[[Request], HTMLResponse]:
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{REDOC_JS}",
            redoc_favicon_url=f"{root}{OFFLINE_STATIC}/favicon.png",
            with_google_fonts=False,
        )

    return redoc


async def _redoc_js() -> Response:
    return Response(_bundle_without_logo(), media_type="text/javascript")


@cache
def _bundle_without_logo() -> bytes:
    """ReDoc's bundle with the logo's address emptied: its <img> then fails at once, with no request,
    and ReDoc drops it (its own error handler). tests/server/test_docs.py sees any other address."""
    return REDOC_BUNDLE.read_bytes().replace(REDOCLY_LOGO, b"")
