"""Task execution inside ``ocrserve serve``: no broker, no other server.

Worker coroutines take tasks from the task table (the queue is the table: ``claim_next``) and
run them through the process's batcher, next to the sync requests. A dispatcher sends due
callbacks; a janitor purges finished tasks past their retention. At start the process owns
the SQLite file alone, so tasks left running by a killed process are queued again at once, and
callbacks left pending are due: nothing accepted is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Sequence

import httpx
from starlette.concurrency import run_in_threadpool

from ocrserve.batcher import Batcher
from ocrserve.jobs.delivery import CallbackPolicy, run_due
from ocrserve.jobs.runner import RunnerConfig, execute
from ocrserve.jobs.store import TaskStore
from ocrserve.types import OCROptions, Page, PageResult

log = logging.getLogger(__name__)


class EmbeddedWorkers:
    """Runs queued tasks and due callbacks in this process's event loop.

    >>> workers = EmbeddedWorkers(store, batcher, config, policy, workers=2)  # doctest: +SKIP
    >>> await workers.start(); workers.notify(); await workers.stop()        # doctest: +SKIP
    """

    def __init__(
        self,
        store: TaskStore,
        batcher: Batcher,
        config: RunnerConfig,
        policy: CallbackPolicy,
        *,
        workers: int = 2,
        retention: float = 24 * 3600,
        request_timeout: float = 3600.0,
        poll: float = 0.5,
    ) -> None:
        self.store = store
        self.batcher = batcher
        self.config = config
        self.policy = policy
        self.workers = workers
        self.retention = retention
        self.request_timeout = request_timeout
        self.poll = poll
        self.name = f"embedded-{os.getpid()}"
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._http = httpx.AsyncClient(follow_redirects=False)

    async def start(self) -> None:
        requeued = await run_in_threadpool(self.store.release_all)
        if requeued:
            log.warning("requeued %d tasks left running by a previous process", requeued)
        loops = [self._work(n) for n in range(self.workers)]
        loops += [self._dispatch(), self._janitor()]
        self._tasks = [asyncio.create_task(c) for c in loops]
        self.notify()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        await self._http.aclose()

    def notify(self) -> None:
        """A task was queued: wake an idle worker now rather than at its next poll."""
        self._wake.set()

    async def _recognise(self, pages: Sequence[Page], options: OCROptions) -> list[PageResult]:
        return await self.batcher.run(pages, options, timeout=self.request_timeout)

    async def _work(self, n: int) -> None:
        worker = f"{self.name}-{n}"
        while True:
            row = await run_in_threadpool(self.store.claim_next, worker, self.config.lease)
            if row is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll)
                continue
            try:
                await execute(
                    row,
                    store=self.store,
                    worker=worker,
                    config=self.config,
                    recognise=self._recognise,
                    http=self._http,
                    run_sync=run_in_threadpool,
                )
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one task must not stop the worker; the lease recovers it
                log.exception("task %s crashed its worker run", row.id)
            self.notify()  # more may be waiting behind it

    async def _dispatch(self) -> None:
        while True:
            try:
                if not await run_due(
                    self.store, self.policy, self._http, run_sync=run_in_threadpool
                ):
                    await asyncio.sleep(0.1)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("callback dispatch failed; retrying")
                await asyncio.sleep(1.0)

    async def _janitor(self) -> None:
        while True:
            try:
                purged = await run_in_threadpool(self.store.purge, time.time() - self.retention)
                if purged:
                    log.info("purged %d finished tasks past retention", purged)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("purge failed")
            await asyncio.sleep(min(60.0, max(self.retention / 4, 0.5)))
