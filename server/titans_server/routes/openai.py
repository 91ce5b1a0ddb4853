"""OpenAI-compatible endpoints: chat completions, completions, models; SSE streaming as OpenAI does it."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse

from titans_core import SamplingParams
from titans_server import transcript
from titans_server.auth import Tenant, tenant_of
from titans_server.errors import APIError, log
from titans_server.schemas import ChatCompletionRequest, CompletionRequest, GenerationRequest, is_session_id
from titans_server.service import Outcome, Service

router = APIRouter()
STREAMS = {200: {"content": {"application/json": {}, "text/event-stream": {}}}}  # SSE with stream=true


def session_of(body: GenerationRequest, header: str | None) -> str | None:
    """The session named by the body's ``session_id`` or the ``X-Session-Id`` header (None: throwaway)."""
    if header is not None and not is_session_id(header):
        raise APIError(
            400,
            "X-Session-Id must be 1-128 letters, digits or ._:-",
            param="X-Session-Id",
            code="invalid_value",
        )
    if body.session_id and header and body.session_id != header:
        raise APIError(400, "session_id and X-Session-Id name different sessions", param="session_id")
    return body.session_id or header


async def run_chat(
    service: Service, body: ChatCompletionRequest, params: SamplingParams, tenant: str, session_id, on_text
) -> Outcome:
    tokenizer = service.tokenizer
    messages = [m.plain() for m in body.messages]
    newline = service.newline

    def close_turn(generated: list[int]) -> list[int]:
        ended = bool(generated) and generated[-1] == tokenizer.end_of_turn_id
        return ([] if ended else [tokenizer.end_of_turn_id]) + newline

    async with service.session(tenant, session_id, create=True) as opened:
        prompt = await service.encode_chat(tenant, service.unconsumed(opened, messages))
        job, text = await service.generate(opened, prompt, params, body, on_text, epilogue=close_turn)
        reply = {"role": "assistant", "content": text}
        # The chain is the conversation as the client will resend it: these messages and the reply.
        meta = await service.commit(
            opened,
            job.state,
            chain_hash=transcript.extend("", [*messages, reply]),
            chain_length=len(messages) + 1,
            made_by="chat",
        )
    return Outcome(
        text, job.finish_reason, len(prompt), len(job.generated), meta if opened.persistent else None
    )


async def run_completion(
    service: Service, body: CompletionRequest, params: SamplingParams, tenant: str, session_id, on_text
) -> Outcome:
    async with service.session(tenant, session_id, create=True) as opened:
        (prompt,) = await service.encode_prompt(tenant, [body.prompt])
        job, text = await service.generate(opened, prompt, params, body, on_text)
        meta = await service.commit(opened, job.state, made_by="completion")
    return Outcome(
        text, job.finish_reason, len(prompt), len(job.generated), meta if opened.persistent else None
    )


def usage(outcome: Outcome) -> dict:
    return {
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "total_tokens": outcome.prompt_tokens + outcome.completion_tokens,
    }


def session_headers(outcome: Outcome) -> dict[str, str]:
    if outcome.session is None:
        return {}
    return {"X-Session-Id": outcome.session.id, "X-Session-Version": str(outcome.session.version)}


@router.post("/v1/chat/completions", responses=STREAMS)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, tenant: Tenant, x_session_id: str | None = Header(None)
):
    service: Service = request.app.state.service
    service.check_model(body.model)
    service.check_messages(body.messages)
    session_id = session_of(body, x_session_id)
    params = service.sampling(body, [service.tokenizer.end_of_turn_id])  # a bad value is 400, not mid-stream
    ident, created = "chatcmpl-" + secrets.token_hex(12), int(time.time())
    base = {"id": ident, "created": created, "model": service.model_id}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def chunk(delta: dict, finish: str | None) -> dict:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**base, "object": "chat.completion.chunk", "choices": [choice]}

        return stream_response(
            service,
            lambda on_text: run_chat(service, body, params, tenant, session_id, on_text),
            first=chunk({"role": "assistant", "content": ""}, None),
            delta=lambda text: chunk({"content": text}, None),
            last=lambda outcome: chunk({}, outcome.finish_reason),
            usage_chunk=(
                lambda o: {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage(o)}
            )
            if include_usage
            else None,
        )
    outcome = await run_chat(service, body, params, tenant, session_id, None)
    message = {"role": "assistant", "content": outcome.text}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": outcome.finish_reason}
    result = {**base, "object": "chat.completion", "choices": [choice], "usage": usage(outcome)}
    return JSONResponse(result, headers=session_headers(outcome))


@router.post("/v1/completions", responses=STREAMS)
async def completions(
    body: CompletionRequest, request: Request, tenant: Tenant, x_session_id: str | None = Header(None)
):
    service: Service = request.app.state.service
    service.check_model(body.model)
    session_id = session_of(body, x_session_id)
    params = service.sampling(body, [service.tokenizer.end_of_text_id])
    ident, created = "cmpl-" + secrets.token_hex(12), int(time.time())
    base = {"id": ident, "created": created, "model": service.model_id, "object": "text_completion"}

    def choice(text: str, finish: str | None) -> dict:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return stream_response(
            service,
            lambda on_text: run_completion(service, body, params, tenant, session_id, on_text),
            first=None,
            delta=lambda text: {**base, "choices": [choice(text, None)]},
            last=lambda outcome: {**base, "choices": [choice("", outcome.finish_reason)]},
            usage_chunk=(lambda o: {**base, "choices": [], "usage": usage(o)}) if include_usage else None,
        )
    outcome = await run_completion(service, body, params, tenant, session_id, None)
    result = {**base, "choices": [choice(outcome.text, outcome.finish_reason)], "usage": usage(outcome)}
    return JSONResponse(result, headers=session_headers(outcome))


@router.get("/v1/models", dependencies=[Depends(tenant_of)])
async def models(request: Request) -> dict:
    service: Service = request.app.state.service
    models = [
        {
            "id": name,
            "object": "model",
            "created": service.started,
            "owned_by": "titans-serve",
            # extension: the sampling defaults applied to fields a request leaves out
            "generation_config": service.generation_defaults.to_dict(),
        }
        for name in service.model_names
    ]
    return {"object": "list", "data": models}


def stream_response(
    service: Service,
    work: Callable[[Callable[[str], None]], Awaitable[Outcome]],
    *,
    first: dict | None,
    delta: Callable[[str], dict],
    last: Callable[[Outcome], dict],
    usage_chunk: Callable[[Outcome], dict] | None,
) -> EventSourceResponse:
    """Server-sent events as OpenAI sends them: ``data: {json}`` chunks, then ``data: [DONE]``.

    A client that goes away cancels the work (nothing is committed); a failure after the first
    byte becomes an error event in OpenAI's error shape.
    """
    if service.engine.load >= service.settings.max_queue:
        raise APIError(
            429,
            "the server is at capacity; try again shortly",
            code="overloaded",
            headers={"Retry-After": "1"},
        )

    async def events() -> AsyncIterator[dict]:
        texts: asyncio.Queue[str | None] = asyncio.Queue()
        task = asyncio.ensure_future(work(texts.put_nowait))
        task.add_done_callback(lambda _: texts.put_nowait(None))
        try:
            if first is not None:
                yield {"data": json.dumps(first)}
            while (text := await texts.get()) is not None:
                yield {"data": json.dumps(delta(text))}
            try:
                outcome = task.result()
            except APIError as error:
                yield {"data": json.dumps(error.body())}
                return
            except Exception as error:  # logged; the client gets the error shape, not a cut stream
                log.exception("streamed request failed", exc_info=error)
                yield {"data": json.dumps(APIError(500, "internal error").body())}
                return
            yield {"data": json.dumps(last(outcome))}
            if usage_chunk is not None:
                yield {"data": json.dumps(usage_chunk(outcome))}
            yield {"data": "[DONE]"}
        finally:
            abandon(task)

    return EventSourceResponse(events(), ping=15)


def abandon(task: asyncio.Future) -> None:
    """Cancel the work of a stream that ended (the client left): nothing is committed, and its outcome,
    wanted by no one, is dropped rather than logged as "Task exception was never retrieved"."""
    task.cancel()
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
