"""Graceful shutdown: on SIGTERM, stop taking work, let what runs finish for a while, then end it
cleanly, all within ``OCRSERVE_SHUTDOWN_TIMEOUT_S`` (25 s, under Kubernetes' default 30 s grace).

The timeline, from the signal::

    0 s          draining: new requests get 503 shutting_down + Retry-After, /ready is 503,
                 embedded workers stop claiming tasks
    budget - 5 s requests still running are answered 503 shutting_down (JSON, like every error)
    budget - 3 s the server stops waiting for connections; the app shuts down: running tasks are
                 stopped and their leases released (queued again, the run not counted), the
                 batcher's queue is failed, the lanes get what is left
    budget       the process has exited
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Seconds before the end of the budget that running requests are given up.
REQUESTS_MARGIN_S = 5.0
#: Seconds before the end that the server stops waiting for connections and the app shuts down.
SERVER_MARGIN_S = 3.0
#: What a client is told to wait before trying again (another replica, or this one restarted).
RETRY_AFTER_S = 5


class Drain:
    """The drain's state, shared by the signal handler, the middleware and the workers.

    >>> drain = Drain(budget=25.0)
    >>> drain.draining
    False
    """

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self.draining = False
        self.started: float | None = None
        self._expired: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_begin: list[Callable[[], None]] = []

    def on_begin(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the drain begins (e.g. workers stop claiming tasks)."""
        self._on_begin.append(callback)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the server's event loop (at start-up)."""
        self._loop = loop
        self._expired = asyncio.Event()

    def begin(self) -> None:
        """Start draining (idempotent). Call from the event loop's thread."""
        if self.draining:
            return
        self.draining = True
        self.started = time.monotonic()
        grace = max(self.budget - REQUESTS_MARGIN_S, 0.0)
        log.warning("draining: no new work; running requests have %.1f s", grace)
        if self._loop is not None and self._expired is not None:
            self._loop.call_later(grace, self._expired.set)
        for callback in self._on_begin:
            try:
                callback()
            except Exception:  # the drain goes on whatever one part does
                log.exception("a drain hook failed")

    @property
    def requests_grace(self) -> float:
        return max(self.budget - REQUESTS_MARGIN_S, 0.0)

    @property
    def server_grace(self) -> float:
        return max(self.budget - SERVER_MARGIN_S, 0.5)

    def left(self) -> float:
        """Seconds of the whole budget left (the full budget before the drain began)."""
        if self.started is None:
            return self.budget
        return max(self.budget - (time.monotonic() - self.started), 0.0)

    async def expired(self) -> None:
        """Returns once running requests must be given up."""
        if self._expired is None:
            await asyncio.Event().wait()  # never: not bound to a server
            return
        await self._expired.wait()
