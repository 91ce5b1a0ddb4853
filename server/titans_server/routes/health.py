"""Liveness, readiness and Prometheus metrics: open to probes (metrics optionally not), no session data."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter()


@router.get("/health")
async def health() -> dict:
    """The process is up and serving HTTP."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """The model is loaded and the store answers: send traffic here."""
    service = request.app.state.service
    store = await service.store.ping()
    body = {"status": "ready" if store else "unavailable", "model": service.model_id, "store": store}
    return JSONResponse(body, status_code=200 if store else 503)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request) -> Response:
    """Prometheus metrics (``titans:`` prefix); behind an API key with ``--metrics-auth``."""
    service = request.app.state.service  # --metrics-auth: the key was checked (auth.Authenticate)
    service.metrics.cache_hits.set(service.store.cache.hits)
    service.metrics.cpu_jobs.set(service.cpu.jobs)
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
