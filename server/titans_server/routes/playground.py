"""The playground: a page in the package (no build step, nothing fetched from elsewhere) that uses
the public API like any client; ``/`` leads there."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from titans_server.pages import PLAYGROUND

ASSETS = Path(__file__).resolve().parent.parent / "playground"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse(PLAYGROUND + "/")


def assets() -> StaticFiles:
    """The page and its scripts, styles and vendored chart library."""
    return StaticFiles(directory=ASSETS, html=True)
