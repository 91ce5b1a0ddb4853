"""Request bodies: OpenAI's chat and completion schemas (the fields we honour), and our own resources."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SESSION_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
# The session the examples of /docs name (Swagger UI's "Try it out" sends them as they are).
EXAMPLE_SESSION = "demo"


def is_session_id(text: str) -> bool:
    """Whether ``text`` is a valid session id (``fullmatch``: ``$`` alone lets a trailing newline in)."""
    return re.fullmatch(SESSION_ID[1:-1], text) is not None


class ContentPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]

    def plain(self) -> dict[str, str]:
        """``{"role", "content"}`` with text parts joined; "developer" is OpenAI's new "system"."""
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(BaseModel):
    include_usage: bool = False


class GenerationRequest(BaseModel):
    """What chat and completion requests share (OpenAI names, plus our extensions)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="a name GET /v1/models lists (unset: the served model)")
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="extension: sample from the k most likely tokens (0: all)")
    seed: int | None = Field(None, ge=0, lt=2**63)
    stop: str | list[str] | None = Field(None, validate_default=True)
    n: int = Field(1, ge=1, le=1, description="only 1 is supported")
    stream: bool = False
    stream_options: StreamOptions | None = None
    session_id: str | None = Field(None, pattern=SESSION_ID, description="extension: the session to use")
    ignore_eos: bool = Field(False, description="extension: never stop on the end-of-turn token")
    min_tokens: int = Field(0, ge=0, description="extension: no stop before this many tokens")

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes up to 4 non-empty strings")
        return stops


class ChatCompletionRequest(GenerationRequest):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "default",
                    "messages": [{"role": "user", "content": "My locker code is 4721."}],
                    "max_tokens": 32,
                    "session_id": EXAMPLE_SESSION,
                }
            ]
        }
    )

    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(GenerationRequest):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "default",
                    "prompt": "Once upon a time",
                    "max_tokens": 32,
                    "session_id": EXAMPLE_SESSION,
                }
            ]
        }
    )

    prompt: str = Field(min_length=1)


class SessionCreate(BaseModel):
    # No id in the example: each "Try it out" makes a new session (a named one exists the second time).
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"metadata": {"owner": "ada"}, "ttl_seconds": 86400}]}
    )

    id: str | None = Field(None, pattern=SESSION_ID)
    metadata: dict[str, str] = Field(default_factory=dict)
    ttl_seconds: int | None = Field(None, ge=1, le=10 * 365 * 86400)
    history_versions: int | None = Field(
        None, ge=0, le=64, description="earlier versions to keep for restore (unset: the server's default)"
    )


class SessionRestore(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"version": 1}]})

    version: int = Field(ge=0, description="a version GET /v1/sessions/{id}/versions lists")
    if_version: int | None = Field(
        None, ge=0, description="restore only if the session is at this version (else 409)"
    )


class SessionFork(BaseModel):
    # No id in the example: each "Try it out" makes a new fork.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{}]})

    id: str | None = Field(None, pattern=SESSION_ID)


class IngestText(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"text": "The grass is green. The sky is blue. The passkey is 48213."}]
        }
    )

    text: str = Field(min_length=1)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """Every error, in OpenAI's shape (documented for every route in the OpenAPI schema)."""

    error: ErrorDetail
