"""The distributed mode: API nodes enqueue task ids to Celery; ``ocrserve worker`` runs them.

The broker (RabbitMQ or Redis) carries only "run task X"; the task table in PostgreSQL is the
record. Messages are acknowledged after the task ran (``acks_late``) and given back when a
worker process dies (``reject_on_worker_lost``), one at a time per worker thread
(``prefetch 1``). A redelivered message for a finished task is skipped; one for a task that a
live worker still holds is retried after that worker's lease; one for a task whose worker died
(lease expired) runs it again. Each worker also runs a sweeper (re-sends queued tasks whose
message was lost, e.g. an API node died between insert and publish) and the callback
dispatcher: callbacks are rows too, so whichever worker is alive sends them.
"""

from __future__ import annotations

import asyncio
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

from ocrserve.jobs.delivery import CallbackPolicy, run_due
from ocrserve.config import Settings
from ocrserve.decode import DecodeLimits
from ocrserve.engine import Engine
from ocrserve.jobs.runner import RunnerConfig, execute
from ocrserve.jobs.store import FINISHED, RUNNING, TaskStore
from ocrserve.types import OCROptions, Page, PageResult

log = logging.getLogger(__name__)

TASK_NAME = "ocrserve.run_task"
SWEEP_EVERY_S = 10.0
#: A queued task whose message was sent this long ago and that no worker has taken may have
#: lost it (an API node died between insert and publish; a broker lost a message). Sending
#: another is harmless (claims are atomic, a finished task is skipped) but not free: during a
#: long backlog every waiting task gets one extra message per this period, no more.
LOST_AFTER_S = 600.0


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
    engine: Engine
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
            engine, lanes = Engine.for_lanes(settings)
            _runtime = _Runtime(
                settings=settings,
                store=TaskStore(settings.task_database_url()),
                engine=engine,
                config=runner_config(settings, engine),
                policy=callback_policy(settings),
                name=f"{socket.gethostname()}-{os.getpid()}",
                lanes=lanes,
            )
        return _runtime


def runner_config(settings: Settings, engine: Engine) -> RunnerConfig:
    return RunnerConfig(
        limits=DecodeLimits(
            max_bytes=settings.max_file_bytes,
            max_pixels=settings.max_pixels,
            max_pages=settings.max_pages,
            pdf_dpi=settings.pdf_dpi,
        ),
        model=engine.model_version,
        lease=settings.task_lease_s,
        url_timeout=settings.url_timeout_s,
        allow_private=settings.allow_private_urls,
    )


def callback_policy(settings: Settings) -> CallbackPolicy:
    return CallbackPolicy(
        secret=settings.resolved_webhook_secret(),
        retry_delays=settings.callback_retry_delays,
        timeout=settings.callback_timeout_s,
        allow_private=settings.allow_private_urls,
    )


def _run(task: Task, task_id: str) -> str:
    rt = runtime(task.app.conf.ocrserve_settings)
    row = rt.store.get(task_id)
    if row is None or row.status in FINISHED:
        return "skipped"  # purged, cancelled, or a redelivery of a task that already finished
    worker = f"{rt.name}-{threading.get_ident()}"
    claimed = rt.store.claim(task_id, worker, rt.config.lease)
    if claimed is None:
        current = rt.store.get(task_id)
        if current is not None and current.status == RUNNING and current.lease_until:
            # A live worker holds it (a duplicate message). If that worker dies its lease
            # runs out; look again then, rather than drop the only message left.
            raise task.retry(countdown=max(1.0, current.lease_until - time.time() + 1.0))
        return "skipped"

    async def recognise(pages: Any, options: OCROptions) -> list[PageResult]:
        result: list[PageResult] = await asyncio.to_thread(
            rt.engine.run, list[Page](pages), options
        )
        return result

    async def main() -> str:
        async with httpx.AsyncClient(follow_redirects=False) as http:
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


class _Background:
    """The worker's sweeper and callback dispatcher, on a thread with its own event loop."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._main, name="ocrserve-background", daemon=True)

    def _main(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        rt = runtime(self.app.conf.ocrserve_settings)
        last_sweep = 0.0
        async with httpx.AsyncClient(follow_redirects=False) as http:
            while not self.stop.is_set():
                try:
                    sent = await run_due(rt.store, rt.policy, http, run_sync=asyncio.to_thread)
                    if time.time() - last_sweep > SWEEP_EVERY_S:
                        last_sweep = time.time()
                        for task_id in rt.store.unpublished(time.time() - LOST_AFTER_S):
                            enqueue(self.app, task_id)
                    if not sent:
                        await asyncio.sleep(0.1)
                except Exception:
                    log.exception("worker background loop failed; retrying")
                    await asyncio.sleep(1.0)


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
        _background.stop.set()


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
