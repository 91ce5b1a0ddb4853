"""``titans-server`` / ``python -m titans_server``: settings from flags and TITANS_* variables, then serve."""

from __future__ import annotations

import logging
import os

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
    engine = getattr(app.state, "engine", None)
    if engine is not None and engine.running:
        # Shutdown left a model step running (Engine.stop). uvicorn re-raises SIGTERM once it is
        # done, which ends most processes here; but the kernel ignores it for PID 1 (a container),
        # and tearing the interpreter down under a busy torch thread crashes (exit 139). The store
        # and Redis are closed and the step commits nothing: leave at once.
        logging.getLogger("titans_server").warning("exiting while the engine finishes a step")
        logging.shutdown()
        os._exit(0)


if __name__ == "__main__":
    main()
