"""The FastAPI application: model, store and engine come up in the lifespan, routes sit on top."""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import torch
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from titans_core import TitansLM
from titans_core.model import PRESETS, shipped
from titans_server import docs, history
from titans_server.auth import Authenticate, Keyring
from titans_server.browsers import SameSite
from titans_server.cpu_pool import CpuPool
from titans_server.engine import Engine
from titans_server.errors import ERROR_RESPONSES, install_error_handlers
from titans_server.json_check import JsonCheck
from titans_server.limits import BodyLimit
from titans_server.metrics import Metrics
from titans_server.pages import PagesStayLocal
from titans_server.request_ids import RequestId
from titans_server.routes import health, openai, playground, sessions, versions
from titans_server.schemas import ErrorBody
from titans_server.service import Service
from titans_server.settings import Settings
from titans_server.store import EmbeddedRedis, SessionStore, connect

log = logging.getLogger("titans_server")


def load_model(name: str, device: str) -> tuple[TitansLM, str]:
    """The model to serve and its id: a preset, a checkpoint directory, or ``default``."""
    if name == "default" and shipped(name) is None:
        log.warning(
            "no trained default model installed: serving 'tiny-random' (random weights, meaningless replies)"
        )
        name = "tiny-random"
    model = TitansLM.from_pretrained(name)
    target = (
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    model_id = name if name in PRESETS or shipped(name) else Path(name).resolve().name
    return model.to(target).eval(), model_id


# How long shutdown waits for the engine's current step (a piece is well under a second on an idle
# machine); requests still running were cancelled by then, so nothing waits for its result.
ENGINE_STOP_SECONDS = 2.0


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Every parallel tensor op runs in the engine thread. OpenMP teams belong to the thread
        # that starts them: once this (HTTP) thread had run parallel ops, the engine's ran 2.6x
        # slower on 2 cores. So this thread keeps one thread for its small tensor work.
        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        app.state.keyring = Keyring(settings.api_keys_file, api_key)
        if app.state.keyring.open:
            log.warning("no API keys configured: anyone who can reach this server can use every session")
        threads = settings.threads or _usable_cores()
        torch.set_num_threads(1)
        model, model_id = load_model(settings.model, settings.device)
        async with AsyncExitStack() as cleanup:  # whatever started is stopped, in reverse order
            if settings.redis_url is None:
                embedded = EmbeddedRedis(settings.data_dir)
                cleanup.callback(embedded.stop)
                client = embedded.client()
            else:
                client = connect(settings.redis_url, settings.redis_cluster)
            cleanup.push_async_callback(client.aclose)
            metrics = app.state.metrics
            cpu = app.state.cpu = CpuPool(
                model.tokenizer.to_str(), settings.cpu_workers, settings.max_cpu_jobs_per_tenant
            )
            cpu.start()
            cleanup.push_async_callback(cpu.close)
            engine = Engine(
                model,
                max_batch_size=settings.max_batch_size,
                max_queue=settings.max_queue,
                piece_tokens=settings.prefill_piece_tokens,
                threads=threads,
            )
            engine.step_observer = metrics.observe_step
            engine.start()
            app.state.engine = engine
            cleanup.push_async_callback(asyncio.to_thread, engine.stop, ENGINE_STOP_SECONDS)
            policy = history.Policy(
                settings.history_versions, settings.history_max_bytes, settings.max_tenant_bytes
            )
            store = SessionStore(
                client,
                wait_replicas=settings.redis_wait_replicas,
                wait_timeout=settings.redis_wait_timeout,
                history_policy=policy,
            )
            cleanup.push_async_callback(store.close)
            app.state.service = Service(settings, model, model_id, store, engine, metrics, cpu)
            log.info(
                "serving %s on %s (%d CPU threads), listening on http://%s:%d",
                model_id,
                engine.device,
                threads,
                settings.host,
                settings.port,
            )
            yield

    errors = {status: {**about, "model": ErrorBody} for status, about in ERROR_RESPONSES.items()}
    # /docs with Swagger UI's assets from the fastapi-offline package, not a CDN; /redoc: titans_server.docs.
    app = FastAPIOffline(
        title="Titans Serve", version="0.1.0", lifespan=lifespan, responses=errors, redoc_url=None
    )
    app.state.metrics = Metrics()  # before the lifespan: the connections count their refusals in it
    install_error_handlers(app)
    app.add_middleware(JsonCheck, settings=settings)  # inside BodyLimit: the body it reads is bounded
    app.add_middleware(BodyLimit, settings=settings)
    # Added last, so it runs first: a request without a key is answered before its body is read.
    app.add_middleware(Authenticate, metrics_auth=settings.metrics_auth)
    app.add_middleware(PagesStayLocal)
    if settings.cors_origins:  # outside the key check: a preflight carries no key
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Session-Id", "X-Session-Version", "X-Request-Id"],
        )
    app.add_middleware(SameSite, settings=settings)  # outermost: an unknown host gets nothing else
    app.add_middleware(RequestId)  # every response echoes X-Request-Id, a refusal's too
    for module in (openai, sessions, versions, health, playground):
        app.include_router(module.router)
    docs.install(app)
    app.mount(playground.PLAYGROUND, playground.assets(), name="playground")
    return app


def _usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one, e.g. not macOS)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
