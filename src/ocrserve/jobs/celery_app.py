"""The distributed mode: API nodes enqueue task ids to Celery; ``ocrserve worker`` runs them.

The broker (RabbitMQ or Redis) carries only "run task X"; the task table in PostgreSQL is the
record. Messages are acknowledged after the task ran (``acks_late``) and given back when a
worker process dies (``reject_on_worker_lost``), one at a time per worker thread
(``prefetch 1``). A message runs its task only if the claim succeeds; a message for a finished
task, for a task a live worker holds (a redelivery after a kill arrives while the dead worker's
lease still runs) or for a retry not yet due is dropped, never sent back into the queue.

The table decides when a task needs a message, and each worker's sweeper sends it, marking the
row in the same statement so that however many sweepers run, one message goes out: once per
expired lease (a worker died; within a lease and a sweep of the death), once when a retry
comes due, and once per ``LOST_AFTER_S`` for a queued task whose message was lost. Each worker
also sends due callbacks and purges finished tasks past retention: callbacks are rows too, so
whichever worker is alive sends them.

``ocrserve worker --burst`` takes messages until the queue is empty, then runs what the table
still holds, sends the callbacks, and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
from celery import Celery, Task
from celery.signals import worker_ready, worker_shutdown

from ocrserve.config import Settings
from ocrserve.engine import Engine, Engines
from ocrserve.fetch import server_client
from ocrserve.jobs.delivery import CallbackPolicy, run_due
from ocrserve.jobs.runner import RunnerConfig, execute
from ocrserve.jobs.store import TaskRow, TaskStore
from ocrserve.jobs.supervisor import BURST_POLL_S, supervise
from ocrserve.jobs.task import FINISHED
from ocrserve.types import OCROptions, Page, PageResult

log = logging.getLogger(__name__)

TASK_NAME = "ocrserve.run_task"
#: How often a worker's sweeper looks for tasks that need a message (at most: a third of the
#: lease, so that a dead worker's task runs again well within two leases).
SWEEP_EVERY_S = 10.0
#: A queued task whose message was sent this long ago and that no worker has taken may have
#: lost it (an API node died between insert and publish; a broker lost a message). Sending
#: another is harmless (claims are atomic, a finished task is skipped) but not free: during a
#: long backlog every waiting task gets one extra message per this period, no more.
LOST_AFTER_S = 600.0
#: What a worker did with one message; logged as ``task message <task id>: <outcome>``.
RAN, SKIPPED, DROPPED = "ran", "skipped", "dropped"


def make_celery(settings: Settings) -> Celery:
    """The Celery app for API nodes (to send) and workers (to run)."""
    app = Celery("ocrserve", broker=settings.broker_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.task_queue,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # Redis as a broker redelivers an unacknowledged message only after this; tasks that
        # run longer must not be handed to a second worker while the first is alive.
        broker_transport_options={"visibility_timeout": 3600},
    )
    app.conf.ocrserve_settings = settings

    @app.task(name=TASK_NAME, bind=True, max_retries=None)
    def run_task(self: Task, task_id: str) -> str:
        return _run(self, task_id)

    return app


def enqueue(app: Celery, task_id: str) -> None:
    app.send_task(TASK_NAME, args=[task_id], queue=app.conf.task_default_queue)


@dataclass
class _Runtime:
    settings: Settings
    store: TaskStore
    engine: Engines
    config: RunnerConfig
    policy: CallbackPolicy
    name: str
    lanes: int


_runtime: _Runtime | None = None
_runtime_lock = threading.Lock()


def runtime(settings: Settings) -> _Runtime:
    """This worker process's engine and store, built once and shared by its threads."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            main, lanes = Engine.for_lanes(settings)
            engine = Engines.from_settings(settings, main)
            _runtime = _Runtime(
                settings=settings,
                store=TaskStore(settings.task_database_url()),
                engine=engine,
                # The worker thread runs the engine itself: one page at a time per task.
                config=RunnerConfig.from_settings(settings, engine, pages_in_flight=1),
                policy=CallbackPolicy.from_settings(settings),
                name=f"{socket.gethostname()}-{os.getpid()}",
                lanes=lanes,
            )
        return _runtime


def _run(task: Task, task_id: str) -> str:
    rt = runtime(task.app.conf.ocrserve_settings)
    return handle(rt, task_id, f"{rt.name}-{threading.get_ident()}")


def handle(rt: _Runtime, task_id: str, worker: str) -> str:
    """What one message does: run the task if this worker can claim it, else nothing."""
    claimed = rt.store.claim(task_id, worker, rt.config.lease, rt.config.max_runs)
    if claimed is None:
        row = rt.store.get(task_id)
        outcome = SKIPPED if row is None or row.status in FINISHED else DROPPED
        log.info("task message %s: %s", task_id, outcome, extra={"task_id": task_id})
        return outcome
    log.info("task message %s: %s", task_id, RAN, extra={"task_id": task_id, "run": claimed.runs})
    return run_claimed(rt, claimed, worker)


def run_claimed(rt: _Runtime, claimed: TaskRow, worker: str) -> str:
    """Run a task this worker has claimed, on this thread; returns the status it ends in."""

    async def recognise(pages: Any, options: OCROptions) -> list[PageResult]:
        result: list[PageResult] = await asyncio.to_thread(
            rt.engine.run, list[Page](pages), options
        )
        return result

    async def main() -> str:
        async with _http_client(rt.settings) as http:
            return await execute(
                claimed,
                store=rt.store,
                worker=worker,
                config=rt.config,
                recognise=recognise,
                http=http,
                run_sync=asyncio.to_thread,
            )

    return asyncio.run(main())


def _http_client(settings: Settings) -> httpx.AsyncClient:
    return server_client(allow_private=settings.allow_private_urls)


def sweep_every(settings: Settings) -> float:
    return min(SWEEP_EVERY_S, settings.task_lease_s / 3)


class _Loops:
    """A worker's background loops (callback dispatcher, sweeper, janitor), each supervised."""

    def __init__(self, app: Celery, rt: _Runtime, http: httpx.AsyncClient) -> None:
        self.app, self.rt, self.http = app, rt, http

    async def dispatch(self) -> float:
        sent = await run_due(self.rt.store, self.rt.policy, self.http, run_sync=asyncio.to_thread)
        return 0.0 if sent else 0.1

    async def sweep(self) -> float:
        """Send a message for every task that needs one; end tasks out of runs."""
        await asyncio.to_thread(self.sweep_once)
        return sweep_every(self.rt.settings)

    def sweep_once(self) -> int:
        store, max_runs = self.rt.store, self.rt.config.max_runs
        for task_id in store.reap(max_runs):
            log.error("task failed: its worker stopped on every run", extra={"task_id": task_id})
        ids = store.unpublished(time.time() - LOST_AFTER_S, max_runs)
        for task_id in ids:
            enqueue(self.app, task_id)
        if ids:
            log.info("sweeper sent task messages", extra={"tasks": len(ids)})
        return len(ids)

    async def janitor(self) -> float:
        retention = self.rt.settings.task_retention_s
        purged = await asyncio.to_thread(self.rt.store.purge, time.time() - retention)
        if purged:
            log.info("purged %d finished tasks past retention", purged)
        return min(60.0, max(retention / 4, 0.5))


class _Background:
    """The worker's background loops, on a thread with its own event loop."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.thread = threading.Thread(target=self._main, name="ocrserve-background", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main_task: asyncio.Task[None] | None = None

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._main_task = asyncio.current_task()
        rt = runtime(self.app.conf.ocrserve_settings)
        async with _http_client(rt.settings) as http:
            loops = _Loops(self.app, rt, http)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(
                    supervise("dispatcher", loops.dispatch),
                    supervise("sweeper", loops.sweep),
                    supervise("janitor", loops.janitor),
                )

    def stop(self) -> None:
        if self._loop is not None and self._main_task is not None:
            self._loop.call_soon_threadsafe(self._main_task.cancel)


_background: _Background | None = None


@worker_ready.connect
def _start_background(sender: Any = None, **_: Any) -> None:
    global _background
    app = sender.app if sender is not None and hasattr(sender, "app") else None
    if app is None or not hasattr(app.conf, "ocrserve_settings"):
        return
    _background = _Background(app)
    _background.thread.start()


@worker_shutdown.connect
def _stop_background(**_: Any) -> None:
    if _background is not None:
        _background.stop()


def run_burst(settings: Settings) -> int:
    """``ocrserve worker --burst``: take messages until the queue is empty, run what the table
    still holds (retries, tasks of dead workers), send every callback, then return the number
    of tasks this process ran. Tests and batch jobs use it instead of sleeping."""
    app = make_celery(settings)
    rt = runtime(settings)
    worker = f"{rt.name}-burst"
    ran = 0

    async def callbacks() -> int:
        async with _http_client(rt.settings) as http:
            return await run_due(rt.store, rt.policy, http, run_sync=asyncio.to_thread)

    with app.connection_for_read() as conn:
        queue = conn.SimpleQueue(settings.task_queue)
        try:
            while True:
                message = _next_message(queue)
                if message is not None:
                    args = message.payload[0]  # Celery's message body: [args, kwargs, embed]
                    ran += handle(rt, str(args[0]), worker) not in (SKIPPED, DROPPED)
                    message.ack()
                    continue
                rt.store.reap(rt.config.max_runs)
                row = rt.store.claim_next(worker, rt.config.lease, rt.config.max_runs)
                if row is not None:
                    run_claimed(rt, row, worker)
                    ran += 1
                    continue
                if asyncio.run(callbacks()):
                    continue
                if not rt.store.outstanding():
                    rt.store.purge(time.time() - settings.task_retention_s)
                    return ran
                time.sleep(BURST_POLL_S)  # a retry or a callback is not due yet
        finally:
            queue.close()


def _next_message(queue: Any) -> Any:
    from queue import Empty

    try:
        return queue.get(block=False)
    except Empty:
        return None


def run_worker(settings: Settings) -> None:
    """``ocrserve worker``: a Celery worker with one thread per inference lane."""
    app = make_celery(settings)
    rt = runtime(settings)  # load models before taking the first message
    app.worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={rt.lanes}",
            f"--queues={settings.task_queue}",
            # A node name of its own: two workers on one host must not share celery@host.
            f"--hostname=ocrserve-{os.getpid()}@{socket.gethostname()}",
            f"--loglevel={settings.log_level.upper()}",
            "--without-gossip",
            "--without-mingle",
        ]
    )
