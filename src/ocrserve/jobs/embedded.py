"""Task execution inside ``ocrserve serve``: no broker, no other server.

Worker coroutines take tasks from the task table (the queue is the table: ``claim_next``) and
run them through the process's batcher, next to the sync requests. A dispatcher sends due
callbacks; a janitor ends tasks out of runs and purges finished ones past their retention.
Every loop runs under :func:`~ocrserve.jobs.supervisor.supervise`.

Embedded mode owns its SQLite database alone: it holds an exclusive lock on a file beside it
for as long as it runs, so a second ``ocrserve serve`` on the same data folder refuses to
start instead of taking the first one's tasks. Holding the lock, the process knows every lease
in the table belongs to a process that is gone: at start those leases end at once (the runs
count against the budget) and callbacks a dead process was sending are due again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence

from starlette.concurrency import run_in_threadpool

from ocrserve.batcher import Batcher
from ocrserve.fetch import server_client
from ocrserve.jobs.delivery import CallbackPolicy, run_due
from ocrserve.jobs.runner import RunnerConfig, execute
from ocrserve.jobs.store import TaskRow, TaskStore
from ocrserve.jobs.supervisor import BURST_POLL_S, OnRestart, supervise
from ocrserve.types import OCROptions, Page, PageResult

log = logging.getLogger(__name__)

#: Hooks the embedded workers report through (metrics; the jobs package does not import api/):
#: a loop did its work (its name), a task was claimed (the row, as claimed), a callback
#: attempt ended (the callback state it left).
OnHeartbeat = Callable[[str], None]
OnClaim = Callable[[TaskRow], None]
OnCallback = Callable[[str], None]


class EmbeddedWorkers:
    """Runs queued tasks and due callbacks in this process's event loop.

    >>> workers = EmbeddedWorkers(store, batcher, config, policy, workers=2)  # doctest: +SKIP
    >>> await workers.start(); workers.notify(); await workers.stop()        # doctest: +SKIP
    >>> await workers.drain()   # burst: run what is queued and due, then return  # doctest: +SKIP
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
        on_restart: OnRestart | None = None,
        on_heartbeat: OnHeartbeat | None = None,
        on_claim: OnClaim | None = None,
        on_callback: OnCallback | None = None,
    ) -> None:
        self.store = store
        self.batcher = batcher
        self.config = config
        self.policy = policy
        self.workers = workers
        self.retention = retention
        self.request_timeout = request_timeout
        self.poll = poll
        self.on_restart = on_restart
        self.on_heartbeat = on_heartbeat
        self.on_claim = on_claim
        self.on_callback = on_callback
        self.name = f"embedded-{os.getpid()}"
        self.paused = False
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # One client for fetches and callbacks: private targets only if both may reach them.
        self._http = server_client(allow_private=config.allow_private and policy.allow_private)

    @property
    def loops(self) -> list[str]:
        """The names of the loops :meth:`start` runs (as ``on_restart`` and ``on_heartbeat``
        name them), plus ``heartbeat``, a task run's lease renewal."""
        return [*(f"worker-{n}" for n in range(self.workers)), "dispatcher", "janitor", "heartbeat"]

    def _beat(self, loop: str) -> None:
        if self.on_heartbeat is None:
            return
        try:
            self.on_heartbeat(loop)
        except Exception:  # a metrics hook must not be what stops a loop
            log.exception("loop heartbeat hook failed")

    async def start(self) -> None:
        """Recover what a dead process left, then start the loops. The caller holds the
        database's :class:`DatabaseLock`."""
        expired = await run_in_threadpool(self.store.expire_leases)
        if expired:
            log.warning("took back %d tasks left running by a previous process", expired)
        resent = await run_in_threadpool(self.store.release_callbacks)
        if resent:
            log.warning("%d callbacks a previous process was sending are due again", resent)
        loops = [
            supervise(f"worker-{n}", self._work_step(f"{self.name}-{n}", f"worker-{n}"),
                      on_restart=self.on_restart, wake=self._wake)
            for n in range(self.workers)
        ]  # fmt: skip
        loops += [
            supervise("dispatcher", self._dispatch_step, on_restart=self.on_restart),
            supervise("janitor", self._janitor_step, on_restart=self.on_restart),
        ]
        self._tasks = [asyncio.create_task(c) for c in loops]
        self.notify()

    def pause(self) -> None:
        """Claim no more tasks (a drain has begun); runs in progress go on."""
        self.paused = True

    async def stop(self) -> None:
        """Cancel the loops, give back the tasks they were running (queued again at once, the
        interrupted run not counted: another process, or this one restarted, takes them), and
        close the HTTP client, whatever state the loops are in."""
        try:
            for t in self._tasks:
                t.cancel()
            outcomes = await asyncio.gather(*self._tasks, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, Exception):
                    log.error("a task loop had ended with an error", exc_info=outcome)
            self._tasks.clear()
            released = await run_in_threadpool(self.store.release, f"{self.name}-")
            if released:
                log.warning("released %d running tasks for the next process", released)
        finally:
            await self._http.aclose()

    def notify(self) -> None:
        """A task was queued: wake an idle worker now rather than at its next poll."""
        self._wake.set()

    async def drain(self) -> None:
        """Burst mode: run every task that is queued (waiting out retry delays), send every
        callback (waiting out its schedule), then return. For tests and one-off runs; the
        loops of :meth:`start` must not be running."""
        run_one = self._work_step(f"{self.name}-burst", "worker-burst")
        while True:
            ran = await run_one() == 0
            sent = await run_due(self.store, self.policy, self._http, run_sync=run_in_threadpool,
                                 on_attempt=self.on_callback)  # fmt: skip
            await run_in_threadpool(self.store.reap, self.config.max_runs)
            if ran or sent:
                continue
            if not await run_in_threadpool(self.store.outstanding):
                return
            await asyncio.sleep(BURST_POLL_S)  # a retry or a callback is not due yet

    async def _recognise(self, pages: Sequence[Page], options: OCROptions) -> list[PageResult]:
        return await self.batcher.run(pages, options, timeout=self.request_timeout)

    def _work_step(self, worker: str, loop: str) -> _WorkStep:
        return _WorkStep(self, worker, loop)

    async def _dispatch_step(self) -> float:
        sent = await run_due(self.store, self.policy, self._http, run_sync=run_in_threadpool,
                             on_attempt=self.on_callback)  # fmt: skip
        self._beat("dispatcher")
        return 0.0 if sent else 0.1

    async def _janitor_step(self) -> float:
        ended = await run_in_threadpool(self.store.reap, self.config.max_runs)
        if ended:
            log.error("%d tasks failed: their worker stopped on every run", len(ended))
        purged = await run_in_threadpool(self.store.purge, time.time() - self.retention)
        if purged:
            log.info("purged %d finished tasks past retention", purged)
            await run_in_threadpool(self.store.compact)  # the files shrink, not only the rows
        self._beat("janitor")
        return min(60.0, max(self.retention / 4, 0.5))


class _WorkStep:
    """One worker's step: claim the oldest claimable task and run it. Returns 0 after a run
    (more may be waiting), else the poll interval."""

    def __init__(self, workers: EmbeddedWorkers, worker: str, loop: str) -> None:
        self.w = workers
        self.worker = worker
        self.loop = loop

    async def __call__(self) -> float:
        w = self.w
        if w.paused:
            return w.poll
        row = await run_in_threadpool(
            w.store.claim_next, self.worker, w.config.lease, w.config.max_runs
        )
        # After the claim, not before: a loop whose claims fail (the database is down) is
        # not taking tasks, and its heartbeat must say so.
        w._beat(self.loop)
        if row is None:
            return w.poll
        if w.on_claim is not None:
            try:
                w.on_claim(row)
            except Exception:  # a metrics hook must not be what fails a claimed task
                log.exception("task claim hook failed")
        await execute(
            row,
            store=w.store,
            worker=self.worker,
            config=w.config,
            recognise=w._recognise,
            http=w._http,
            run_sync=run_in_threadpool,
            on_restart=w.on_restart,
            on_heartbeat=lambda: w._beat("heartbeat"),
        )
        w.notify()  # more may be waiting behind it
        return 0.0
