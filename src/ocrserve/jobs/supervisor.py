"""One way to keep a background loop alive: every loop of the task system runs under it.

A loop is a *step* called again and again; the step returns how long to wait before the next
one. A step that raises is logged with its traceback and counted (``on_restart``), and the
loop goes on after a backoff that doubles with each failure in a row (0.5 s up to 30 s), so a
database that is down for a minute costs a few log lines, not a dead worker. Only
cancellation ends a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Step = Callable[[], Awaitable[float]]
OnRestart = Callable[[str], None]

#: Longest sleep of a burst run waiting for a retry or a callback to come due.
BURST_POLL_S = 0.5
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0


def backoff(failures: int) -> float:
    """Seconds to wait after ``failures`` failed steps in a row.

    >>> [backoff(n) for n in (1, 2, 3, 10)]
    [0.5, 1.0, 2.0, 30.0]
    """
    return float(min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (failures - 1)))


async def supervise(
    name: str,
    step: Step,
    *,
    on_restart: OnRestart | None = None,
    wake: asyncio.Event | None = None,
) -> None:
    """Run ``step`` until cancelled; ``wake`` (if given) cuts a wait short.

    >>> task = asyncio.create_task(supervise("janitor", purge_once))  # doctest: +SKIP
    """
    failures = 0
    while True:
        if wake is not None:
            wake.clear()  # before the step: a wake-up during it cuts the next wait short
        try:
            delay = await step()
            failures = 0
        except asyncio.CancelledError:
            raise
        except Exception:
            failures += 1
            delay = backoff(failures)
            log.exception(
                "background loop %s failed (%d in a row); going on in %.1f s",
                name, failures, delay,
            )  # fmt: skip
            if on_restart is not None:
                try:
                    on_restart(name)
                except Exception:  # a metrics hook must not be what kills the loop
                    log.exception("loop restart hook failed")
        if delay > 0:
            await pause(delay, wake if failures == 0 else None)


async def pause(seconds: float, wake: asyncio.Event | None = None) -> None:
    """Wait ``seconds``, or less if ``wake`` is set (or already was)."""
    if wake is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), seconds)
