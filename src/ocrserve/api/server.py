"""``ocrserve serve``: the app under uvicorn, with the drain wired to its exit signals."""

from __future__ import annotations

import logging
import os
from concurrent.futures import Future
from typing import Any

import uvicorn

from ocrserve.api.app import create_app
from ocrserve.api.drain import Drain
from ocrserve.config import Settings
from ocrserve.engine import Engine


class _Server(uvicorn.Server):
    """uvicorn's server, plus: the first SIGTERM/SIGINT starts the app's drain."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.drain.begin()
        super().handle_exit(sig, frame)


def serve(settings: Settings, *, preloaded: Future[tuple[Engine, int]] | None = None) -> None:
    """Run the HTTP service until a signal, then drain within ``settings.shutdown_timeout_s``.
    ``preloaded``: the engine, loading since before this module was imported (the CLI's)."""
    drain = Drain(settings.shutdown_timeout_s)
    app = create_app(settings, preloaded=preloaded, drain=drain)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # our JSON logging, set up by the caller
        access_log=False,  # the app logs each request itself, with its request id
        # Forwarded headers are the app's to read, from OCRSERVE_TRUSTED_PROXIES only
        # (api.security.ForwardedClient); uvicorn's own would trust 127.0.0.1's.
        proxy_headers=False,
        # Past this uvicorn cancels what still runs; the middleware has answered by then.
        timeout_graceful_shutdown=max(1, int(drain.server_grace)),
    )
    _Server(config, drain).run()
    service = getattr(app.state, "service", None)
    if service is not None and service.batcher.stuck_lanes:
        # A lane still inside onnxruntime when the interpreter tears down crashes the process
        # (SIGSEGV: exit 139 where the drain promised 0). Everything was answered, released and
        # closed by now; leave without the teardown.
        logging.shutdown()
        os._exit(0)
