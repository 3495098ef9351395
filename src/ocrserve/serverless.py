"""AWS Lambda entry point: API Gateway (HTTP API v2, REST v1) and ALB events into the app.

The image's ``CMD`` is ``ocrserve.serverless.handler`` (``deploy/serverless/lambda/``). Mangum
(the ``[serverless]`` extra) turns each event into an ASGI request. Mangum runs the app's
lifespan around every event; ours loads the models and warms them up, so it runs here instead,
once per container, at its first event (the cold start), and Mangum's is turned off.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ocrserve.config import Settings

if TYPE_CHECKING:
    from ocrserve.engine import Engine


class LambdaHandler:
    """A Lambda handler that builds the app on its first event and keeps it for the next.

    >>> handler = LambdaHandler()                        # doctest: +SKIP
    >>> handler({"version": "2.0", "rawPath": "/health", ...}, context)  # doctest: +SKIP
    {'statusCode': 200, 'headers': {...}, 'body': '{"status":"ok"}', ...}

    ``settings`` default to ``Settings(profile="serverless")`` with the rest read from the
    function's environment (``OCRSERVE_*``); ``engine`` may be passed in (tests share one).
    """

    def __init__(self, settings: Settings | None = None, *, engine: Engine | None = None) -> None:
        self._settings = settings
        self._engine = engine
        self._adapter: Any = None
        self._lifespan: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.starts = 0  # lifespans run: one per container

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        if self._adapter is None:
            self._start()
        response: dict[str, Any] = self._adapter(event, context)
        return response

    def _start(self) -> None:
        # Imported here: a module that only names the handler stays cheap to import. The
        # models load while the web stack is imported (the cold start of the first event).
        from ocrserve.engine import Engine

        settings = self._settings or Settings(profile="serverless")
        loading = None if self._engine is not None else Engine.preload(settings)

        from mangum import Mangum
        from mangum.protocols import LifespanCycle

        from ocrserve.api.app import create_app

        app = create_app(settings, engine=self._engine, preloaded=loading)
        # Mangum and its lifespan both run on the thread's current event loop; one of our own,
        # kept open for the container's life (its lifespan task waits there between events).
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        lifespan = LifespanCycle(app, "on")  # "on": a failed start-up raises, no silent 500s
        lifespan.__enter__()
        self._lifespan = lifespan
        self.starts += 1
        self._adapter = Mangum(app, lifespan="off")

    def close(self) -> None:
        """Run the app's shutdown and close the loop (tests; Lambda just freezes the container)."""
        if self._lifespan is not None:
            self._lifespan.__exit__(None, None, None)
            self._lifespan = None
        if self._loop is not None:
            self._loop.close()
            asyncio.set_event_loop(None)
            self._loop = None
        self._adapter = None


#: The function's handler: ``ocrserve.serverless.handler``.
handler = LambdaHandler()
