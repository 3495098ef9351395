"""The HTTP service: ``create_app(settings)`` builds the FastAPI app and everything it runs.

Routes (each also under ``/v1``): ``POST /ocr``, ``POST /ocr/batch``, ``GET /health``,
``GET /ready``, ``GET /metrics``; and PaddleX's and RapidOCR's OCR APIs, at ``/ocr`` and
under ``/compat`` (:mod:`ocrserve.api.compat`). All inference goes through one
:class:`~ocrserve.batcher.Batcher`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from ocrserve import __version__
from ocrserve.api import errors as api_errors
from ocrserve.api import openapi, page, representation
from ocrserve.api.callbacks import declare_callbacks
from ocrserve.api.compat import compat_router, dialect_answer
from ocrserve.api.drain import RETRY_AFTER_S, Drain
from ocrserve.api.metrics import Metrics
from ocrserve.api.openapi import BATCH_BODY, GUARDED, OCR_BODY, OCR_FORMATS, error_responses
from ocrserve.api.parsing import ParsedRequest, Refused, Route, Upload, fetch_upload, parse
from ocrserve.api.schemas import BatchError, BatchItem, Health, OCRResult, Ready
from ocrserve.api.security import (
    AdminCheck,
    ForwardedClient,
    KeyCheck,
    TokenBuckets,
    TrustedProxies,
)
from ocrserve.api.service import MODEL_HEADER, Authorized, Service, choose_models, service_of
from ocrserve.api.tasks import TaskStartup, start_backend, task_router
from ocrserve.batcher import Batcher
from ocrserve.cache import MemoryCache, RedisCache, ResultCache, cache_key
from ocrserve.config import Settings
from ocrserve.decode import decode_bytes
from ocrserve.engine import Engine, Engines
from ocrserve.engine.session import CPU
from ocrserve.errors import (
    DeadlineExceededError,
    EngineError,
    FileTooLargeError,
    OCRServeError,
    PixelBudgetError,
    QueueFullError,
    ShuttingDownError,
)
from ocrserve.fetch import server_client
from ocrserve.jobs.lock import DatabaseLock
from ocrserve.logs import request_id
from ocrserve.types import Document, OCROptions, PageResult, result_dict

log = logging.getLogger("ocrserve.api")

REQUEST_ID_HEADER = "x-request-id"
CACHE_HEADER = "X-Cache"


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | Engines | None = None,
    preloaded: Future[tuple[Engine, int]] | None = None,
    drain: Drain | None = None,
) -> FastAPI:
    """Build the app. ``engine`` may be passed in (tests share one), or be loading already
    (``preloaded``: :meth:`Engine.preload`, a server's cold start); otherwise it is loaded at
    start-up. ``drain`` is started by the server on SIGTERM (:mod:`ocrserve.api.server`).

    >>> app = create_app(Settings())             # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    settings = settings or Settings()
    drain = drain or Drain(settings.shutdown_timeout_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        drain.bind(asyncio.get_running_loop())
        service = await run_in_threadpool(_build_service, settings, engine, preloaded)
        app.state.service = service
        service.batcher.start()
        # Checked before ready, and cheap: a second server on this data folder, or an unusable
        # webhook secret, must stop this one from starting at all.
        lock = None if settings.serverless else await run_in_threadpool(_claim_tasks, settings)
        try:
            await run_in_threadpool(service.engine.warmup)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        if not settings.serverless:  # a function instance keeps no tasks: see api.tasks
            startup = TaskStartup(
                lambda: start_backend(service), lock=lock, on_failure=service.metrics.loop_restarted
            )
            service.tasks = startup
            drain.on_begin(startup.pause)
        service.ready = True
        log.info(
            "ready",
            extra={
                "lanes": service.batcher.lanes,
                "max_batch_size": service.batcher.max_batch_size,
                "providers": list(service.engine.providers),
                "cache": type(service.cache).__name__ if service.cache else None,
                "api_keys": "on" if service.keys.enabled else "off",
                "tenants": list(service.keys.keys),  # the keys' names
                "admin_routes": "on" if service.admin.key else "off",
            },
        )
        if not service.keys.enabled:
            log.warning("API keys are off: anyone who can reach this port can use it")
        try:
            yield
        finally:
            service.ready = False
            await _shut_down(service, drain)

    # /docs and /redoc load Swagger UI and ReDoc from the fastapi-offline package, served
    # here, not from a CDN: the service promises to run with no network.
    app = FastAPIOffline(
        title="ocrserve",
        version=__version__,
        description="Self-hosted OCR: PP-OCR models on ONNX Runtime.",
        lifespan=lifespan,
    )
    openapi.install(app)
    app.state.drain = drain
    api_errors.install(app)
    declare_callbacks(app.webhooks)
    # PaddleX's and RapidOCR's OCR APIs, each at a path of its own (/ocr serves them too).
    app.include_router(compat_router(_recognise))
    for prefix in ("", "/v1"):
        app.include_router(_router(), prefix=prefix)
        app.include_router(task_router(), prefix=prefix)
    app.include_router(page.router())  # GET /: a page to try the service (api/page.py)
    app.add_middleware(_RequestContext)
    # Added last, so outermost: the access log and the rate limit see the client it names.
    app.add_middleware(ForwardedClient, trusted=TrustedProxies(settings.trusted_proxies))
    return app


def _claim_tasks(settings: Settings) -> DatabaseLock | None:
    """The embedded mode's claim on its database (refusing a non-SQLite one, and a second
    process), and the webhook secret its workers sign with, made or checked now."""
    if settings.broker_url:  # distributed: the Celery workers run tasks and send callbacks
        return None
    lock = DatabaseLock.for_url(settings.task_database_url())
    lock.acquire()
    try:
        settings.resolved_webhook_secret()
    except BaseException:
        lock.release()
        raise
    return lock


async def _shut_down(service: Service, drain: Drain) -> None:
    """Stop what runs, then close what is open; each step runs even if one before failed.
    Embedded task runs are stopped and released (queued again for the next process, the run
    not counted); the batcher fails what is still queued and waits for its lanes only as long
    as the drain's budget allows."""
    steps: list[tuple[str, Callable[[], Awaitable[object]]]] = []
    if isinstance(startup := service.tasks, TaskStartup):
        backend = await startup.stop(max(drain.left() - 1, 0.5))
        if backend is not None:
            if (workers := backend.workers) is not None:
                steps.append(("task workers", workers.stop))
            store = backend.store
            steps.append(("task store", lambda: run_in_threadpool(store.close)))
        if (lock := startup.lock) is not None:
            steps.append(("database lock", lambda: run_in_threadpool(lock.release)))
    steps.append(
        ("batcher", lambda: run_in_threadpool(service.batcher.stop, max(drain.left() - 1, 0.5)))
    )
    steps.append(("HTTP client", service.http.aclose))
    if service.cache is not None:
        steps.append(("cache", service.cache.close))
    for name, step in steps:
        try:
            await step()
        except Exception:
            log.exception("shutting down the %s failed", name)


def _build_service(
    settings: Settings,
    engine: Engine | Engines | None,
    preloaded: Future[tuple[Engine, int]] | None,
) -> Service:
    settings.check_extras()
    if preloaded is not None:
        engine, lanes = preloaded.result()
    elif engine is None:
        engine, lanes = Engine.for_lanes(settings)
    else:  # an engine passed in (tests share one): lanes as its providers suggest
        lanes = settings.lane_count(engine.providers[0] != CPU)
    # PP-OCR with its candidate model set and the second engine (languages, fallback).
    engines = engine if isinstance(engine, Engines) else Engines.from_settings(settings, engine)
    metrics = Metrics()
    engines.events = metrics
    metrics.queue_limit.set(settings.queue_max_pages)
    cache: ResultCache | None = None
    if settings.redis_url:
        cache = RedisCache(settings.redis_url, ttl=settings.cache_ttl_s)
    elif settings.cache_max_entries > 0:
        cache = MemoryCache(settings.cache_max_entries)
    batcher = Batcher(
        engines,
        lanes=lanes,
        max_batch_size=settings.max_batch_size,
        max_wait=settings.max_wait_ms / 1000,
        queue_max_pages=settings.queue_max_pages,
        batching=settings.batching,
        metrics=metrics,
    )
    return Service(
        settings=settings,
        engine=engines,
        batcher=batcher,
        cache=cache,
        metrics=metrics,
        keys=KeyCheck(settings.api_keys),
        admin=AdminCheck(settings.admin_key),
        buckets=TokenBuckets(settings.rate_limit_rps, settings.rate_limit_burst),
        http=server_client(allow_private=settings.allow_private_urls),
    )


def _router() -> APIRouter:
    router = APIRouter()

    @router.post(
        "/ocr",
        response_model=OCRResult,
        openapi_extra=OCR_BODY,
        responses={**OCR_FORMATS, **error_responses(*GUARDED, 406, 415, 422, 504)},
        summary="Recognise one image or document",
    )
    async def ocr(request: Request, caller: Authorized) -> Response:
        t0 = time.perf_counter()
        service = caller.service
        if (answer := await dialect_answer(request, caller, _recognise)) is not None:
            return answer  # a PaddleX or RapidOCR client's request, in its shape
        req = await parse(request, service, Route.OCR)
        upload = await _document(service, req)
        max_pages = req.max_pages
        options = choose_models(
            service, request.headers.get(MODEL_HEADER), [upload.data], req.options, caller.tenant
        )
        key = cache_key(
            upload.data,
            options,
            _extra(max_pages, service),
            service.engine.version(options.models),
            tenant=caller.tenant,
        )
        # The format is chosen before any work: a 406 costs no recognition.
        fmt = representation.choose(req.format, request.headers.get("accept"))
        cached = await _cache_get(service, key)
        if cached is None:
            result = await _recognise(service, upload, options, max_pages, t0)
            await _cache_set(service, key, result)
        else:
            result = cached
        return await run_in_threadpool(
            representation.respond,
            fmt,
            result,
            document=upload.data,
            filename=upload.filename,
            dpi=service.settings.pdf_dpi,
            headers={CACHE_HEADER: "miss" if cached is None else "hit"},
        )

    @router.post(
        "/ocr/batch",
        response_model=list[BatchItem | BatchError],
        openapi_extra=BATCH_BODY,
        responses=error_responses(*GUARDED, 406, 415, 422, 504),
        summary="Recognise many files; one bad file never fails the others",
    )
    async def ocr_batch(request: Request, caller: Authorized) -> Response:
        t0 = time.perf_counter()
        service = caller.service
        req = await parse(request, service, Route.BATCH)
        max_pages = req.max_pages
        documents = [item.data for item in req.files if not isinstance(item, Refused)]
        options = choose_models(
            service, request.headers.get(MODEL_HEADER), documents, req.options, caller.tenant
        )
        # One JSON list: a document format is asked of /ocr, one document at a time.
        representation.choose(req.format, request.headers.get("accept"), (representation.JSON,))

        # Every file is read, looked up and decoded before any is queued, so that the batch is
        # admitted in one step: all of its pages, or a 503 with nothing queued.
        prepared = await asyncio.gather(
            *(_prepare(service, item, options, max_pages, caller.tenant) for item in req.files)
        )
        answers: list[dict[str, object]] = [{} for _ in prepared]
        todo: list[tuple[int, _Decoded]] = []
        for n, p in enumerate(prepared):
            if isinstance(p, _Decoded):
                todo.append((n, p))
            else:
                answers[n] = p
        # One request's pixels, as for /ocr: a batch is one request (each file was held to it
        # alone when decoded).
        if (pixels := sum(p.doc.pixels for _, p in todo)) > service.settings.max_request_pixels:
            pages = sum(len(p.doc.pages) for _, p in todo)
            limit = service.settings.max_request_pixels
            raise PixelBudgetError(limit=limit, value=pixels, pages=pages)
        if todo:
            t_infer = time.perf_counter()
            try:
                outcomes = await service.batcher.run_many(
                    [p.doc.pages for _, p in todo],
                    options,
                    timeout=service.settings.request_timeout_s,
                )
            except OCRServeError as e:
                _count_rejection(service, e)
                raise
            done: list[tuple[str, dict[str, object]]] = []
            for (n, p), outcome in zip(todo, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    if isinstance(outcome, OCRServeError):
                        _count_rejection(service, outcome)
                    answers[n] = _item_error(p.filename, outcome)
                    continue
                result = _result(
                    service, p.doc, outcome, options, t0=t0, decode_s=p.decode_s, t_infer=t_infer
                )
                done.append((p.key, result))
                answers[n] = {"filename": p.filename, **result}
            await asyncio.gather(*(_cache_set(service, key, result) for key, result in done))
        return JSONResponse(answers)

    # The probes are answered while draining (no 503 then): only the body limit stops them.
    @router.get(
        "/health",
        response_model=Health,
        responses=error_responses(413),
        summary="Alive: the process answers",
    )
    async def health(request: Request) -> Health:
        service = service_of(request)
        return Health(
            status="ok",
            version=__version__,
            model=service.engine.model_version,
            providers=list(service.engine.providers),
        )

    @router.get(
        "/ready",
        response_model=Ready,
        responses={**error_responses(413), 503: {"model": Ready, "description": "Not ready"}},
        summary="Ready: models loaded and warmed, lanes running",
    )
    async def ready(request: Request) -> JSONResponse:
        """Ready means "can serve": only what stops ``/ocr`` fails it. The result cache is
        optional (a cache outage is misses, not errors), so its state is reported in
        ``optional`` and in ``ocrserve_cache_up``, and never pulls the replica."""
        service = service_of(request)
        drain: Drain = request.app.state.drain
        checks: dict[str, bool] = {"engine": service.ready, "accepting": not drain.draining}
        optional: dict[str, bool] = {}
        if isinstance(service.cache, RedisCache):
            optional["redis"] = await service.cache.ping()
            service.metrics.cache_up.set(1 if optional["redis"] else 0)
        ok = all(checks.values())
        return JSONResponse(
            {"ready": ok, "checks": checks, "optional": optional,
             "queued_pages": service.batcher.queued_pages,
             "tasks": tasks.state if isinstance(tasks := service.tasks, TaskStartup) else None},
            status_code=200 if ok else 503,
        )  # fmt: skip

    @router.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={
            **error_responses(413),
            200: {"description": "The Prometheus text exposition format"},
        },
        summary="Prometheus metrics",
    )
    async def metrics(request: Request) -> Response:
        registry = service_of(request).metrics.registry
        # Off the event loop: the task gauges query the database at each scrape.
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router


async def _document(service: Service, req: ParsedRequest) -> Upload:
    """``/ocr``'s document: the upload, or the bytes at its ``image_url``, checked alike."""
    if req.url is None:
        return req.upload
    return await fetch_upload(service, req.url)


def _extra(max_pages: int, service: Service) -> str:
    return f"pages={max_pages};dpi={service.settings.pdf_dpi}"


# --- doing the work --------------------------------------------------------------------------


async def _recognise(
    service: Service, upload: Upload, options: OCROptions, max_pages: int, t0: float
) -> dict[str, object]:
    t_decode = time.perf_counter()
    doc = await _decode(service, upload, max_pages)
    t_infer = time.perf_counter()
    try:
        pages = await service.batcher.run(
            doc.pages, options, timeout=service.settings.request_timeout_s
        )
    except OCRServeError as e:
        _count_rejection(service, e)
        raise
    return _result(
        service, doc, pages, options, t0=t0, decode_s=t_infer - t_decode, t_infer=t_infer
    )


async def _decode(service: Service, upload: Upload, max_pages: int) -> Document:
    limits = service.settings.decode_limits(max_pages)
    return await run_in_threadpool(decode_bytes, upload.data, limits, filename=upload.filename)


def _result(
    service: Service,
    doc: Document,
    pages: list[PageResult],
    options: OCROptions,
    *,
    t0: float,
    decode_s: float,
    t_infer: float,
) -> dict[str, object]:
    t_end = time.perf_counter()
    return result_dict(
        pages,
        pages_total=doc.pages_total,
        truncated=doc.truncated,
        model=service.engine.version(options.models),
        timings={
            "decode": round(decode_s, 4),
            "inference": round(t_end - t_infer, 4),
            "total": round(t_end - t0, 4),
        },
    )


def _count_rejection(service: Service, e: OCRServeError) -> None:
    if isinstance(e, QueueFullError):
        service.metrics.rejections.labels("queue_full").inc()
    elif isinstance(e, DeadlineExceededError):
        service.metrics.rejections.labels("deadline").inc()


@dataclass(frozen=True, slots=True)
class _Decoded:
    """A batch file that needs inference."""

    filename: str | None
    key: str  # its cache key
    doc: Document
    decode_s: float


async def _prepare(
    service: Service,
    item: Upload | Refused,
    options: OCROptions,
    max_pages: int,
    tenant: str,
) -> dict[str, object] | _Decoded:
    """A batch file's answer when it needs no inference (an error, a cache hit), else its pages."""
    filename = item.filename
    if isinstance(item, Refused):
        return _item_error(filename, item.error)
    version = service.engine.version(options.models)
    key = cache_key(item.data, options, _extra(max_pages, service), version, tenant=tenant)
    cached = await _cache_get(service, key)
    if cached is not None:
        return {"filename": filename, **cached}
    t_decode = time.perf_counter()
    try:
        doc = await _decode(service, item, max_pages)
    except Exception as e:  # one file's decoder failure is that file's, never the batch's
        return _item_error(filename, e)
    return _Decoded(filename, key, doc, time.perf_counter() - t_decode)


def _item_error(filename: str | None, exc: BaseException) -> dict[str, object]:
    """One batch file's failure as its item in the list; the others still get their results."""
    error = exc if isinstance(exc, OCRServeError) else None
    if error is None:
        log.error("batch file %r failed unexpectedly", filename, exc_info=exc)
        error = EngineError("internal error while recognising this file")
    elif api_errors.status_of(error) >= 500:
        log.error("batch file %r failed: %s", filename, error, exc_info=error)
    return {"filename": filename, **api_errors.error_body(error)}


async def _cache_get(service: Service, key: str) -> dict[str, object] | None:
    if service.cache is None:
        return None
    value = await service.cache.get(key)
    service.metrics.cache.labels("hit" if value is not None else "miss").inc()
    return value


async def _cache_set(service: Service, key: str, value: dict[str, object]) -> None:
    if service.cache is not None:
        await service.cache.set(key, value)


# --- middleware ------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _RequestContext:
    """Request id (``X-Request-ID`` honoured or made, and echoed), access log, HTTP metrics,
    and the request body limit (413 before a byte of an oversized body is parsed)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        rid = headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        token = request_id.set(rid[:128])
        t0 = time.perf_counter()
        status = 500
        started = False
        service: Service | None = getattr(scope["app"].state, "service", None)
        # Made here, so the guard's request.state.tenant lands in a dict this log line reads.
        state: dict[str, Any] = scope.setdefault("state", {})

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (REQUEST_ID_HEADER.encode(), rid[:128].encode("latin-1")),
                ]
            await send(message)

        drain: Drain | None = getattr(scope["app"].state, "drain", None)
        try:
            limit = _body_limit(service)
            declared = headers.get("content-length", "")
            if limit and declared.isdigit() and int(declared) > limit:
                err = FileTooLargeError(limit=limit, value=int(declared))
                await api_errors.error_response(err)(scope, receive, send_with_id)
                return
            if drain is not None and drain.draining and scope.get("path") not in _PROBES:
                await api_errors.error_response(_shutting_down())(scope, receive, send_with_id)
                return
            call = self.app(scope, _counting(receive, limit), send_with_id)
            if drain is None:
                await call
            else:
                await _until_drained(call, drain, scope, receive, send_with_id, lambda: started)
        finally:
            elapsed = time.perf_counter() - t0
            route = _route_name(scope)
            if service is not None:
                service.metrics.requests.labels(route, str(status)).inc()
                service.metrics.latency.labels(route).observe(elapsed)
            log.info(
                "request",
                extra={
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": status,
                    "ms": round(elapsed * 1000, 1),
                    "tenant": state.get("tenant"),  # the key's name, never the key
                },
            )
            request_id.reset(token)


#: Answered while draining: a load balancer reads readiness and scrapes metrics to the end.
_PROBES = frozenset(p + r for p in ("", "/v1") for r in ("/health", "/ready", "/metrics"))


def _shutting_down() -> ShuttingDownError:
    return ShuttingDownError(
        "the server is shutting down; send the request again (another replica takes it)",
        retry_after=RETRY_AFTER_S,
    )


async def _until_drained(
    call: Awaitable[None],
    drain: Drain,
    scope: Scope,
    receive: Receive,
    send: Send,
    started: Callable[[], bool],
) -> None:
    """Run the request; if the drain's grace for requests runs out first, stop it and answer
    a JSON 503 (unless its response has begun, which then ends as it can)."""
    task = asyncio.ensure_future(call)
    expired = asyncio.ensure_future(drain.expired())
    try:
        await asyncio.wait({task, expired}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        expired.cancel()
    if task.done():
        task.result()
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    if not started():
        await api_errors.error_response(_shutting_down())(scope, receive, send)


def _body_limit(service: Service | None) -> int:
    return service.settings.max_request_bytes if service is not None else 0


def _counting(receive: Receive, limit: int) -> Receive:
    """Stop reading a body without Content-Length (chunked) once it passes the limit."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if limit and message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise FileTooLargeError(limit=limit, value=seen)
        return message

    return wrapped


def _route_name(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"
