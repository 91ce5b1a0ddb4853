"""Python SDK for Titans Serve: sessions, chat, completions and document ingestion.

>>> from titans_client import TitansClient
>>> with TitansClient("http://127.0.0.1:8000") as client:  # doctest: +SKIP
...     client.ingest("notes", "The passkey is 4417.")
...     client.chat("notes", "What is the passkey?")
"""

from titans_client.client import AsyncTitansClient, TitansClient
from titans_client.errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    RateLimitError,
    RequestTooLargeError,
    ServiceUnavailableError,
    StateMismatchError,
    TitansError,
)
from titans_client.types import (
    IngestProgress,
    IngestResult,
    LayerMemory,
    Model,
    Session,
    SessionMemory,
    SessionPage,
    SessionVersion,
)

__all__ = [
    "APIConnectionError",
    "APIError",
    "AsyncTitansClient",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "IngestProgress",
    "LayerMemory",
    "IngestResult",
    "InternalServerError",
    "Model",
    "NotFoundError",
    "RateLimitError",
    "RequestTooLargeError",
    "ServiceUnavailableError",
    "Session",
    "SessionMemory",
    "SessionPage",
    "SessionVersion",
    "StateMismatchError",
    "TitansClient",
    "TitansError",
]
