"""Async task routes: submit (202), status, cancel/purge, and the callbacks' dead letters.

A task is its tenant's (its API key's name): another tenant's task id reads, cancels and purges
as a missing one, the same 404 body, and idempotency keys are looked up within the tenant.
The dead letters are the admin's (``OCRSERVE_ADMIN_KEY``), every tenant's, URLs redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ocrserve.api import representation
from ocrserve.api.openapi import GUARDED, TASK_BODY, error_responses
from ocrserve.api.parsing import Route, parse
from ocrserve.api.schemas import DeadLetter, Replayed, TaskSubmitted, TaskView
from ocrserve.api.service import (
    MODEL_HEADER,
    AdminGuarded,
    Authorized,
    Service,
    choose_models,
)
from ocrserve.errors import (
    InputError,
    NotImplementedInProfileError,
    OCRServeError,
    StorageUnavailableError,
)
from ocrserve.fetch import check_url
from ocrserve.jobs.supervisor import backoff
from ocrserve.jobs.task import (
    FINISHED,
    QUEUED,
    RUNNING,
    IdempotencyConflict,
    NewTask,
    encode_options,
    error_detail,
)
from ocrserve.schemas import iso_time, task_result
from ocrserve.urls import redact_url

if TYPE_CHECKING:  # the store and the workers bring SQLAlchemy: started by TaskStartup
    from ocrserve.jobs.embedded import EmbeddedWorkers
    from ocrserve.jobs.lock import DatabaseLock
    from ocrserve.jobs.store import TaskRow, TaskStore

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "idempotency-key"
POLL_HINT_S = "1"
#: A task's metadata, as compact UTF-8 JSON: it is stored with the task and sent back in
#: every callback and status read.
MAX_METADATA_BYTES = 16 * 1024


@dataclass
class TaskBackend:
    store: TaskStore
    enqueue: Callable[[str], None]  # blocking (a broker publish): call off the event loop
    workers: EmbeddedWorkers | None = None


#: How long a task route waits for a backend still starting before it answers 503.
START_WAIT_S = 10.0
STARTING, UP, DOWN = "starting", "up", "down"


class TaskStartup:
    """A server's task backend, started in the background once the server is ready for
    ``/ocr``, so the synchronous path never waits for (or imports) the task store.

    A start that fails (the database unreachable, a migration refused) is logged and tried
    again after a backoff (0.5 s doubling to 30 s), as the task loops are; until it is up, a
    task route waits up to :data:`START_WAIT_S` for it, then answers 503
    ``storage_unavailable`` with the last error. ``GET /ready`` reports it under ``optional``.

    >>> startup = TaskStartup(lambda: backend.start(service), lock=lock)  # doctest: +SKIP
    >>> (await startup.backend()).store                                   # doctest: +SKIP
    """

    def __init__(
        self,
        start: Callable[[], Awaitable[TaskBackend]],
        *,
        lock: DatabaseLock | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.lock = lock  # embedded mode: this process owns the database
        self.last_error: str | None = None
        self._start = start
        self._on_failure = on_failure
        self._stopping = False
        self._up = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="task backend start")

    @property
    def state(self) -> str:
        if self._up.is_set():
            return UP
        return DOWN if self.last_error is not None else STARTING

    async def _run(self) -> TaskBackend | None:
        failures = 0
        while not self._stopping:
            try:
                backend = await self._start()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                failures += 1
                self.last_error = str(getattr(e, "message", None) or e) or type(e).__name__
                delay = backoff(failures)
                log.exception("the task backend did not start; trying again in %.1f s", delay)
                if self._on_failure is not None:
                    self._on_failure("task_backend_start")
                await asyncio.sleep(delay)
                continue
            self.last_error = None
            self._up.set()
            return backend
        return None

    async def backend(self, wait: float = START_WAIT_S) -> TaskBackend:
        """The running backend; waits for one still starting, up to ``wait`` seconds."""
        if not self._up.is_set() and self.last_error is None:
            deadline = time.monotonic() + wait
            while not self._up.is_set() and self.last_error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._up.wait(), min(left, 0.25))
        if not self._up.is_set():
            why = self.last_error or "it is still starting"
            raise StorageUnavailableError(f"the task store is not available: {why}", retry_after=5)
        backend = self._task.result()
        assert backend is not None
        return backend

    def pause(self) -> None:
        """A drain began: start nothing more, and the embedded workers claim no more tasks."""
        self._stopping = True
        if self._up.is_set() and (workers := self._task.result()) and workers.workers:
            workers.workers.pause()

    async def stop(self, wait: float) -> TaskBackend | None:
        """No further start attempts; the backend if one started (the caller stops it). An
        attempt under way gets ``wait`` seconds to end, then is cancelled."""
        self._stopping = True
        if not self._task.done():
            done, _ = await asyncio.wait({self._task}, timeout=wait)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
                return None
        if self._task.cancelled() or self._task.exception() is not None:
            return None
        return self._task.result()


async def start_backend(service: Service) -> TaskBackend:
    """One start attempt. Its module is imported in a worker thread: SQLAlchemy, Alembic (and
    Celery with a broker) take a few hundred ms of imports that must not stall the event loop
    while it answers ``/ocr``."""
    module = await run_in_threadpool(importlib.import_module, "ocrserve.api.backend")
    backend: TaskBackend = await module.start(service)
    return backend


class _Conflict(OCRServeError):
    code = "idempotency_conflict"


def task_view(row: TaskRow, request: Request) -> dict[str, Any]:
    """``GET /task``'s body. Its result and error are the models and code of the callback's
    (:func:`ocrserve.jobs.delivery.task_event`): one shape, written once."""
    callback = None
    if row.callback_url:
        callback = {
            "url": row.callback_url,
            "state": row.callback_state or "waiting",
            "attempts": row.callback_log or [],
            "last_error": row.callback_last_error,
        }
    result, error = task_result(row.result), error_detail(row)
    return {
        "task_id": row.id,
        "status": row.status,
        "created_at": iso_time(row.created_at),
        "started_at": iso_time(row.started_at),
        "finished_at": iso_time(row.finished_at),
        "progress": {"pages_done": row.pages_done, "pages_total": row.pages_total},
        "result": result.model_dump(mode="json") if result is not None else None,
        "error": error.model_dump(mode="json") if error is not None else None,
        "metadata": row.meta,
        "callback": callback,
        "status_url": str(request.url_for("get_task", task_id=row.id)),
    }


async def _backend(service: Service) -> TaskBackend:
    if service.settings.serverless:  # the one place every async route passes through
        raise NotImplementedInProfileError(
            "async tasks are not served under OCRSERVE_PROFILE=serverless (no task store, no "
            "workers): send /ocr or /ocr/batch, or run the distributed mode (ocrserve serve "
            "with OCRSERVE_BROKER_URL and ocrserve worker) for /ocr/async",
            profile=service.settings.profile,
        )
    startup = service.tasks
    if not isinstance(startup, TaskStartup):
        raise InputError("async tasks are not enabled on this server")
    return await startup.backend()


_SUBMITTED_HEADERS = {
    "Location": {"schema": {"type": "string"}, "required": True, "description": "status_url"},
    "Idempotent-Replayed": {
        "schema": {"type": "string", "enum": ["true"]},
        "description": "The key's task, submitted before: nothing new was queued.",
    },
}
_POLL_HEADER = {"schema": {"type": "integer"}, "description": "Until the task is finished."}


def task_router() -> APIRouter:
    router = APIRouter()

    @router.post(
        "/ocr/async",
        status_code=202,
        response_model=TaskSubmitted,
        openapi_extra=TASK_BODY,
        # 422 also when this server runs no tasks
        responses={
            202: {"headers": _SUBMITTED_HEADERS},
            **error_responses(*GUARDED, 501, 409, 415, 422),
        },
        summary="Submit a document; 202 with a task id",
    )
    async def submit(request: Request, caller: Authorized) -> Response:
        service = caller.service
        backend = await _backend(service)
        new = await _read_submission(request, service)
        key = request.headers.get(IDEMPOTENCY_HEADER)
        try:
            row, created = await run_in_threadpool(
                lambda: backend.store.create(new, key, tenant=caller.tenant)
            )
        except IdempotencyConflict as e:  # the caller's own task: the lookup is per tenant
            err = _Conflict(
                f"Idempotency-Key {key!r} was used for a different request (task {e.task_id})"
            )
            return JSONResponse({"error": {"code": err.code, "message": err.message}}, 409)
        if created:
            await run_in_threadpool(backend.enqueue, row.id)
            if backend.workers is None:  # a broker message went out: the sweeper's clock
                await run_in_threadpool(backend.store.mark_published, row.id)
        status_url = str(request.url_for("get_task", task_id=row.id))
        return JSONResponse(
            {"task_id": row.id, "status": row.status, "status_url": status_url},
            status_code=202,
            headers={
                "Location": status_url,
                **({} if created else {"Idempotent-Replayed": "true"}),
            },
        )

    async def get_task(task_id: str, request: Request, caller: Authorized) -> Response:
        store = (await _backend(caller.service)).store
        row = await run_in_threadpool(lambda: store.get(task_id, tenant=caller.tenant))
        if row is None:
            return _not_found(task_id)
        headers = {} if row.status in FINISHED else {"Retry-After": POLL_HINT_S}
        return JSONResponse(task_view(row, request), headers=headers)

    async def get_result(
        task_id: str, request: Request, caller: Authorized, format: str | None = None
    ) -> Response:
        """A finished task's result alone, in the format the ``format`` query parameter or
        the Accept header asks: JSON, plain text, hOCR or ALTO (the searchable PDF needs the
        document, which a finished task no longer keeps: ask ``/ocr`` for it)."""
        fmt = representation.choose(
            format, request.headers.get("accept"), representation.TASK_FORMATS
        )
        store = (await _backend(caller.service)).store
        row = await run_in_threadpool(lambda: store.get(task_id, tenant=caller.tenant))
        if row is None:
            return _not_found(task_id)
        result = task_result(row.result)
        if result is None:
            status = row.status
            return JSONResponse(
                {"error": {"code": "no_result", "message": f"task {task_id} is {status}: "
                           "it has no result"}},
                409,
                headers={} if status in FINISHED else {"Retry-After": POLL_HINT_S},
            )  # fmt: skip
        return await run_in_threadpool(representation.respond, fmt, result.model_dump(mode="json"))

    async def delete_task(task_id: str, request: Request, caller: Authorized) -> Response:
        store, tenant = (await _backend(caller.service)).store, caller.tenant
        row = await run_in_threadpool(lambda: store.get(task_id, tenant=tenant))
        if row is None:
            return _not_found(task_id)
        if row.status == QUEUED and await run_in_threadpool(
            lambda: store.cancel(task_id, tenant=tenant)
        ):
            cancelled = await run_in_threadpool(lambda: store.get(task_id, tenant=tenant))
            assert cancelled is not None
            return JSONResponse(task_view(cancelled, request))
        if row.status == RUNNING or not await run_in_threadpool(
            lambda: store.delete(task_id, tenant=tenant)
        ):
            return JSONResponse(
                {"error": {"code": "task_running", "message": f"task {task_id} is running"}}, 409
            )
        return Response(status_code=204)

    for path in ("/task/{task_id}", "/tasks/{task_id}"):
        name = "get_task" if path == "/task/{task_id}" else None
        router.add_api_route(
            path,
            get_task,
            methods=["GET"],
            name=name,
            response_model=TaskView,
            responses={
                200: {"headers": {"Retry-After": _POLL_HEADER}},
                **error_responses(*GUARDED, 501, 404, 422),
            },
            summary="Task status",
        )
        router.add_api_route(
            path + "/result",
            get_result,
            methods=["GET"],
            name="get_task_result" if name else None,
            responses={
                200: {
                    "description": "The result: JSON (as in the task's `result`), text, hOCR "
                    "or ALTO",
                    "content": {
                        representation.MEDIA_TYPES[f].split(";")[0]: {}
                        for f in representation.TASK_FORMATS
                    },
                },
                **error_responses(*GUARDED, 501, 404, 406, 409, 422),
            },
            summary="A finished task's result, as JSON, text, hOCR or ALTO",
        )
        router.add_api_route(
            path,
            delete_task,
            methods=["DELETE"],
            response_model=TaskView,
            responses={
                200: {"description": "Cancelled: the queued task, now cancelled"},
                204: {"description": "Purged: the finished task is gone"},
                **error_responses(*GUARDED, 501, 404, 409, 422),
            },
            summary="Cancel a queued task, purge a done one",
        )

    # The admin's (OCRSERVE_ADMIN_KEY): every tenant's dead letters. The store is asked for
    # all tenants (no tenant argument); client keys never get here.
    @router.get(
        "/admin/dead-letters",
        response_model=list[DeadLetter],
        responses=error_responses(*GUARDED, 501, 404, 422),
        summary="Callbacks that could not be delivered (admin)",
    )
    async def dead_letters(service: AdminGuarded) -> JSONResponse:
        rows = await run_in_threadpool((await _backend(service)).store.dead_letters)
        return JSONResponse([_dead_letter(r) for r in rows])

    @router.post(
        "/admin/dead-letters/{task_id}/replay",
        status_code=202,
        response_model=Replayed,
        responses=error_responses(*GUARDED, 501, 404, 422),
        summary="Send a dead callback again (admin)",
    )
    async def replay(task_id: str, service: AdminGuarded) -> JSONResponse:
        backend = await _backend(service)
        if not await run_in_threadpool(backend.store.replay, task_id):
            return _not_found(task_id, "dead letter")
        if backend.workers is not None:
            backend.workers.notify()
        return JSONResponse({"task_id": task_id, "callback": "pending"}, status_code=202)

    return router


def _dead_letter(row: TaskRow) -> dict[str, Any]:
    return {
        "task_id": row.id,
        "tenant": row.tenant,
        "status": row.status,
        # Redacted: the admin needs the receiver, not the tenant's credentials in its URL.
        "callback_url": redact_url(row.callback_url) if row.callback_url else None,
        "attempts": row.callback_attempts,
        "last_error": row.callback_last_error,
        "log": row.callback_log or [],
    }


def _not_found(task_id: str, what: str = "task") -> JSONResponse:
    return JSONResponse(
        {"error": {"code": "not_found", "message": f"no {what} with id {task_id!r}"}}, 404
    )


async def _read_submission(request: Request, service: Service) -> NewTask:
    """The task a submit asks for, read as ``/ocr`` reads its request (one parser), plus what a
    task keeps; URLs are checked now, so that a refused one is a 422 and not a failed task."""
    s = service.settings
    req = await parse(request, service, Route.TASK)
    if req.url is not None:
        await check_url(req.url, allow_private=s.allow_private_urls)
    if req.callback_url is not None:
        await check_url(req.callback_url, allow_private=s.allow_private_urls, require_https=True)
    upload = req.upload if req.url is None else None
    tenant = getattr(request.state, "tenant", "")
    document = upload.data if upload is not None else req.url or ""
    forced = request.headers.get(MODEL_HEADER)
    options = choose_models(service, forced, [document], req.options, tenant)
    return NewTask(
        options=encode_options(options, req.max_pages),
        source_url=req.url,
        input_bytes=upload.data if upload is not None else None,
        filename=upload.filename if upload is not None else (req.url or "").rsplit("/", 1)[-1],
        metadata=req.metadata,
        callback_url=req.callback_url,
    )
