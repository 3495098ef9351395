"""Async task routes: submit (202), status, cancel/purge, and the callbacks' dead letters.

A task is its tenant's (its API key's name): another tenant's task id reads, cancels and purges
as a missing one, the same 404 body, and idempotency keys are looked up within the tenant.
The dead letters are the admin's (``OCRSERVE_ADMIN_KEY``), every tenant's, URLs redacted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ocrserve.api.openapi import GUARDED, TASK_BODY, error_responses
from ocrserve.api.parsing import Route, parse
from ocrserve.api.schemas import DeadLetter, Replayed, TaskSubmitted, TaskView
from ocrserve.api.service import (
    AdminGuarded,
    Authorized,
    Service,
)
from ocrserve.errors import (
    InputError,
    NotImplementedInProfileError,
    OCRServeError,
)
from ocrserve.fetch import check_url
from ocrserve.jobs.delivery import error_detail
from ocrserve.jobs.embedded import DatabaseLock, EmbeddedWorkers
from ocrserve.jobs.runner import encode_options
from ocrserve.jobs.store import (
    FINISHED,
    QUEUED,
    RUNNING,
    IdempotencyConflict,
    NewTask,
    TaskRow,
    TaskStore,
)
from ocrserve.schemas import iso_time, task_result
from ocrserve.urls import redact_url

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
    lock: DatabaseLock | None = None  # embedded mode: this process owns the database


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


def _backend(service: Service) -> TaskBackend:
    if service.settings.serverless:  # the one place every async route passes through
        raise NotImplementedInProfileError(
            "async tasks are not served under OCRSERVE_PROFILE=serverless (no task store, no "
            "workers): send /ocr or /ocr/batch, or run the distributed mode (ocrserve serve "
            "with OCRSERVE_BROKER_URL and ocrserve worker) for /ocr/async",
            profile=service.settings.profile,
        )
    backend = service.tasks
    if not isinstance(backend, TaskBackend):
        raise InputError("async tasks are not enabled on this server")
    return backend


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
            **error_responses(*GUARDED, 409, 415, 422),
        },
        summary="Submit a document; 202 with a task id",
    )
    async def submit(request: Request, caller: Authorized) -> Response:
        service = caller.service
        backend = _backend(service)
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
        store = _backend(caller.service).store
        row = await run_in_threadpool(lambda: store.get(task_id, tenant=caller.tenant))
        if row is None:
            return _not_found(task_id)
        headers = {} if row.status in FINISHED else {"Retry-After": POLL_HINT_S}
        return JSONResponse(task_view(row, request), headers=headers)

    async def delete_task(task_id: str, request: Request, caller: Authorized) -> Response:
        store, tenant = _backend(caller.service).store, caller.tenant
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
                **error_responses(*GUARDED, 404, 422),
            },
            summary="Task status",
        )
        router.add_api_route(
            path,
            delete_task,
            methods=["DELETE"],
            response_model=TaskView,
            responses={
                200: {"description": "Cancelled: the queued task, now cancelled"},
                204: {"description": "Purged: the finished task is gone"},
                **error_responses(*GUARDED, 404, 409, 422),
            },
            summary="Cancel a queued task, purge a done one",
        )

    # The admin's (OCRSERVE_ADMIN_KEY): every tenant's dead letters. The store is asked for
    # all tenants (no tenant argument); client keys never get here.
    @router.get(
        "/admin/dead-letters",
        response_model=list[DeadLetter],
        responses=error_responses(*GUARDED, 404, 422),
        summary="Callbacks that could not be delivered (admin)",
    )
    async def dead_letters(service: AdminGuarded) -> JSONResponse:
        rows = await run_in_threadpool(_backend(service).store.dead_letters)
        return JSONResponse([_dead_letter(r) for r in rows])

    @router.post(
        "/admin/dead-letters/{task_id}/replay",
        status_code=202,
        response_model=Replayed,
        responses=error_responses(*GUARDED, 404, 422),
        summary="Send a dead callback again (admin)",
    )
    async def replay(task_id: str, service: AdminGuarded) -> JSONResponse:
        backend = _backend(service)
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
    return NewTask(
        options=encode_options(req.options, req.max_pages),
        source_url=req.url,
        input_bytes=upload.data if upload is not None else None,
        filename=upload.filename if upload is not None else (req.url or "").rsplit("/", 1)[-1],
        metadata=req.metadata,
        callback_url=req.callback_url,
    )
