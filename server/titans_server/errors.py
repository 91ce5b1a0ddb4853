"""Errors in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with the right status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from titans_server import refusals

log = logging.getLogger("titans_server")

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    422: "state_mismatch_error",
    429: "rate_limit_error",
    503: "service_unavailable",
    504: "timeout_error",
}
ERROR_RESPONSES = {
    status: {"description": kind} for status, kind in {**ERROR_TYPES, 500: "server_error"}.items()
}


class APIError(StarletteHTTPException):
    """An error a client can act on; handlers turn it into OpenAI's JSON shape.

    An HTTP exception, so that FastAPI lets it through when it is raised while a body is read
    (see :mod:`titans_server.limits`) instead of reporting a parse error.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(status, message, headers)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers

    def body(self) -> dict:
        kind = ERROR_TYPES.get(self.status, "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        refusals.count(request.app.state, error.code)
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        # Malformed JSON is located by a byte offset, which is no field a client could fix.
        location = () if first.get("type") == "json_invalid" else first.get("loc", ())
        where = [str(part) for part in location if part not in ("body", "query", "header", "path")]
        param = ".".join(where) or None
        message = f"{param}: {first.get('msg', 'invalid')}" if param else first.get("msg", "invalid request")
        return APIError(400, message, param=param, code="invalid_value").response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return APIError(error.status_code, str(error.detail)).response()

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=error)
        body = {"error": {"message": "internal error", "type": "server_error", "param": None, "code": None}}
        return JSONResponse(body, status_code=500)
