"""Request bodies: OpenAI's chat and completion schemas (the fields we honour), and our own resources."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SESSION_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


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
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(GenerationRequest):
    prompt: str = Field(min_length=1)


class SessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, pattern=SESSION_ID)
    metadata: dict[str, str] = Field(default_factory=dict)
    ttl_seconds: int | None = Field(None, ge=1, le=10 * 365 * 86400)


class SessionFork(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, pattern=SESSION_ID)


class IngestText(BaseModel):
    text: str = Field(min_length=1)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """Every error, in OpenAI's shape (documented for every route in the OpenAPI schema)."""

    error: ErrorDetail
