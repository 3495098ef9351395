"""Starting a server's task backend: the task store, and who runs the tasks.

Imported only by :class:`ocrserve.api.tasks.TaskStartup`, in a worker thread, once the server is
ready for ``/ocr``: this module brings SQLAlchemy and Alembic (the store), and Celery in the
distributed mode, none of which the synchronous path needs (see ``bench/coldstart.py``).
"""

from __future__ import annotations

import contextlib

from starlette.concurrency import run_in_threadpool

from ocrserve.api.service import Service
from ocrserve.api.tasks import TaskBackend
from ocrserve.jobs.delivery import CallbackPolicy
from ocrserve.jobs.embedded import EmbeddedWorkers
from ocrserve.jobs.runner import RunnerConfig
from ocrserve.jobs.store import TaskStore


async def start(service: Service) -> TaskBackend:
    """Open the store (migrating it) and start the embedded workers, or, with a broker, the
    Celery sender. The embedded mode's database lock is already held by the caller."""
    s = service.settings
    url = s.task_database_url()
    store = await run_in_threadpool(TaskStore, url)
    workers: EmbeddedWorkers | None = None
    try:
        if s.broker_url:
            from ocrserve.jobs.celery_app import enqueue, make_celery  # the distributed extra

            celery = make_celery(s)
            service.metrics.watch_tasks(store, lease_s=s.task_lease_s)
            return TaskBackend(store=store, enqueue=lambda task_id: enqueue(celery, task_id))
        workers = EmbeddedWorkers(
            store,
            service.batcher,
            RunnerConfig.from_settings(s, service.engine),
            await run_in_threadpool(CallbackPolicy.from_settings, s),
            workers=s.task_workers,
            retention=s.task_retention_s,
            on_restart=service.metrics.loop_restarted,
            on_heartbeat=service.metrics.heartbeat,
            on_claim=service.metrics.task_claimed,
            on_callback=service.metrics.callback_attempted,
        )
        service.metrics.loops_started(workers.loops)
        await workers.start()
    except BaseException:
        if workers is not None:
            with contextlib.suppress(Exception):
                await workers.stop()
        await run_in_threadpool(store.close)
        raise
    service.metrics.watch_tasks(store, lease_s=s.task_lease_s)
    started = workers
    return TaskBackend(store=store, enqueue=lambda _: started.notify(), workers=started)
