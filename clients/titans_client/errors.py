"""Exceptions of the SDK: one per API status, each carrying the server's OpenAI-shaped error."""

from __future__ import annotations

import httpx


class TitansError(Exception):
    """Anything the SDK raises."""


class APIConnectionError(TitansError):
    """The server could not be reached, or did not answer in time."""


class APIError(TitansError):
    """The server answered with an error: ``status``, ``message``, and its ``type``, ``code``, ``param``."""

    def __init__(
        self, status: int, message: str, *, type: str | None = None, code: str | None = None, param=None
    ):
        super().__init__(f"{status}: {message}")
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param


class BadRequestError(APIError):
    """400: the request itself is wrong (fields, ids, documents, states)."""


class AuthenticationError(APIError):
    """401: no API key, or not a valid one."""


class NotFoundError(APIError):
    """404: no such session (for this API key)."""


class ConflictError(APIError):
    """409: the session exists already, or is busy elsewhere."""


class RequestTooLargeError(APIError):
    """413: a document or request over the server's limits."""


class StateMismatchError(APIError):
    """422: an imported state belongs to another model."""


class RateLimitError(APIError):
    """429: the server is at capacity (retried with backoff before it reaches you), or the API key
    holds as many sessions as it may (``code`` ``too_many_sessions``, not retried)."""


class ServiceUnavailableError(APIError):
    """503: the session store is unreachable or the server is shutting down (retried with backoff
    before it reaches you, unless ``code`` is ``commit_uncertain``: the request may have applied)."""


class InternalServerError(APIError):
    """5xx: the server failed."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: RequestTooLargeError,
    422: StateMismatchError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def error_from_body(status: int, body: object) -> APIError:
    """The exception for an error ``body`` (``{"error": {...}}``), whatever shape it came in."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"message": str(body) if body else "no error message"}
    kind = _BY_STATUS.get(status, InternalServerError if status >= 500 else APIError)
    return kind(
        status,
        str(error.get("message")),
        type=error.get("type"),
        code=error.get("code"),
        param=error.get("param"),
    )


# The status each error type of the API stands for: an error inside a stream arrives after the 200.
_STATUS_OF_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "not_found_error": 404,
    "conflict_error": 409,
    "request_too_large": 413,
    "state_mismatch_error": 422,
    "rate_limit_error": 429,
    "service_unavailable": 503,
    "timeout_error": 504,
}


def error_in_stream(body: dict) -> APIError:
    """The exception for an error event in a stream, with the status its type stands for."""
    kind = body.get("error", {}).get("type") if isinstance(body.get("error"), dict) else None
    return error_from_body(_STATUS_OF_TYPE.get(kind, 500), body)


def error_from_response(response: httpx.Response) -> APIError:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return error_from_body(response.status_code, body)
