"""``titans-server`` / ``python -m titans_server``: settings from flags and TITANS_* variables, then serve."""

from __future__ import annotations

import logging

import uvicorn
from pydantic_settings import CliApp

from titans_server.app import create_app
from titans_server.connections import guarded
from titans_server.settings import Settings


def main(args: list[str] | None = None) -> None:
    """Serve with ``args`` (None: the command line's)."""
    settings = CliApp.run(Settings, cli_args=args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=settings.shutdown_timeout,
        http=guarded(settings, app.state.metrics),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        timeout_keep_alive=settings.keep_alive_timeout,
    )


if __name__ == "__main__":
    main()
