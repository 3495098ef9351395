"""The HTTP service: ``create_app(settings)`` builds the FastAPI app and everything it runs.

Routes (each also under ``/v1``): ``POST /ocr``, ``POST /ocr/batch``, ``GET /health``,
``GET /ready``, ``GET /metrics``. All inference goes through one :class:`~ocrserve.batcher.Batcher`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from ocrserve import __version__
from ocrserve.api import errors as api_errors
from ocrserve.api.metrics import Metrics
from ocrserve.api.schemas import BatchError, BatchItem, ErrorOut, Health, OCRJSONRequest, OCRResult
from ocrserve.api.security import KeyCheck, TokenBuckets
from ocrserve.batcher import Batcher
from ocrserve.cache import MemoryCache, RedisCache, ResultCache, cache_key
from ocrserve.config import Settings
from ocrserve.decode import DecodeLimits, decode_bytes
from ocrserve.engine import Engine
from ocrserve.engine.session import CPU, resolve_providers
from ocrserve.errors import (
    FileTooLargeError,
    InputError,
    OCRServeError,
    OptionError,
    QueueFullError,
)
from ocrserve.fetch import fetch_url
from ocrserve.logs import request_id
from ocrserve.types import OCROptions, PageResult

log = logging.getLogger("ocrserve.api")

REQUEST_ID_HEADER = "x-request-id"
CACHE_HEADER = "X-Cache"
FILE_FIELDS = ("image", "file")
BATCH_FIELDS = ("images", "files", "image", "file")
OPTION_FIELDS = ("lang", "precision", "cls", "max_pages")
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}


@dataclass
class Service:
    """Everything a request needs, built once at start-up."""

    settings: Settings
    engine: Engine
    batcher: Batcher
    cache: ResultCache | None
    metrics: Metrics
    keys: KeyCheck
    buckets: TokenBuckets
    http: httpx.AsyncClient
    ready: bool = False


@dataclass(frozen=True)
class Upload:
    filename: str | None
    data: bytes


def create_app(settings: Settings | None = None, *, engine: Engine | None = None) -> FastAPI:
    """Build the app. ``engine`` may be passed in (tests share one); otherwise it is loaded.

    >>> app = create_app(Settings())             # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = await run_in_threadpool(_build_service, settings, engine)
        app.state.service = service
        service.batcher.start()
        await run_in_threadpool(service.engine.warmup)
        service.ready = True
        log.info(
            "ready",
            extra={
                "lanes": service.batcher.lanes,
                "max_batch_size": service.batcher.max_batch_size,
                "providers": list(service.engine.providers),
                "cache": type(service.cache).__name__ if service.cache else None,
                "api_keys": "on" if service.keys.enabled else "off",
            },
        )
        if not service.keys.enabled:
            log.warning("API keys are off: anyone who can reach this port can use it")
        try:
            yield
        finally:
            service.ready = False
            await run_in_threadpool(service.batcher.stop)
            await service.http.aclose()
            if service.cache is not None:
                await service.cache.close()

    app = FastAPI(
        title="ocrserve",
        version=__version__,
        description="Self-hosted OCR: PP-OCR models on ONNX Runtime.",
        lifespan=lifespan,
        responses={413: {"model": ErrorOut}, 415: {"model": ErrorOut}, 422: {"model": ErrorOut}},
    )
    api_errors.install(app)
    for prefix in ("", "/v1"):
        app.include_router(_router(), prefix=prefix)
    app.add_middleware(_RequestContext)
    return app


def _build_service(settings: Settings, engine: Engine | None) -> Service:
    if engine is None:
        on_gpu = resolve_providers(settings.providers)[0] != CPU
        threads = settings.threads_per_lane(on_gpu)
        engine = Engine.from_settings(settings.model_copy(update={"intra_op_threads": threads}))
    on_gpu = engine.providers[0] != CPU
    metrics = Metrics()
    cache: ResultCache | None = None
    if settings.redis_url:
        cache = RedisCache(settings.redis_url, ttl=settings.cache_ttl_s)
    elif settings.cache_max_entries > 0:
        cache = MemoryCache(settings.cache_max_entries)
    batcher = Batcher(
        engine,
        lanes=settings.lane_count(on_gpu),
        max_batch_size=settings.max_batch_size,
        max_wait=settings.max_wait_ms / 1000,
        queue_max_pages=settings.queue_max_pages,
        batching=settings.batching,
        metrics=metrics,
    )
    return Service(
        settings=settings,
        engine=engine,
        batcher=batcher,
        cache=cache,
        metrics=metrics,
        keys=KeyCheck(settings.api_keys),
        buckets=TokenBuckets(settings.rate_limit_rps, settings.rate_limit_burst),
        http=httpx.AsyncClient(follow_redirects=False),
    )


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def guard(request: Request) -> Service:
    """Dependency of every OCR route: API key, then the caller's rate limit."""
    service = _service(request)
    who = service.keys.identify(request)
    try:
        service.buckets.take(who)
    except OCRServeError:
        service.metrics.rejections.labels("rate_limited").inc()
        raise
    return service


Guarded = Annotated[Service, Depends(guard)]

_OCR_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        "lang": {"type": "string"},
                        "precision": {"type": "string", "enum": ["fp32", "int8"]},
                        "cls": {"type": "boolean"},
                        "max_pages": {"type": "integer"},
                    },
                    "required": ["image"],
                }
            },
            "application/json": {"schema": OCRJSONRequest.model_json_schema()},
        },
        "required": True,
    }
}

_BATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "images": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                        },
                        "lang": {"type": "string"},
                        "precision": {"type": "string"},
                        "cls": {"type": "boolean"},
                        "max_pages": {"type": "integer"},
                    },
                    "required": ["images"],
                }
            }
        },
        "required": True,
    }
}


def _router() -> APIRouter:
    router = APIRouter()

    @router.post(
        "/ocr",
        response_model=OCRResult,
        openapi_extra=_OCR_BODY,
        summary="Recognise one image or document",
    )
    async def ocr(request: Request, service: Guarded) -> Response:
        t0 = time.perf_counter()
        upload, raw_options = await _read_single(request, service)
        options, max_pages = _options(raw_options, service)
        key = cache_key(
            upload.data, options, _extra(max_pages, service), service.engine.model_version
        )
        cached = await _cache_get(service, key)
        if cached is not None:
            return JSONResponse(cached, headers={CACHE_HEADER: "hit"})
        result = await _recognise(service, upload, options, max_pages, t0)
        await _cache_set(service, key, result)
        return JSONResponse(result, headers={CACHE_HEADER: "miss"})

    @router.post(
        "/ocr/batch",
        response_model=list[BatchItem | BatchError],
        openapi_extra=_BATCH_BODY,
        summary="Recognise many files; one bad file never fails the others",
    )
    async def ocr_batch(request: Request, service: Guarded) -> Response:
        t0 = time.perf_counter()
        form = await _form(request, service)
        try:
            files = [f for name in BATCH_FIELDS for f in form.getlist(name)]
            uploads = [f for f in files if isinstance(f, UploadFile)]
            if not uploads:
                raise InputError("no files: send them as repeated multipart fields 'images'")
            if len(uploads) > service.settings.max_batch_files:
                limit = service.settings.max_batch_files
                raise InputError(f"too many files: {len(uploads)}, the limit is {limit}")
            options, max_pages = _options(_form_options(form, request), service)
            items = [await _read_upload(u, service) for u in uploads]
        finally:
            await form.close()

        async def one(item: Upload | OCRServeError, filename: str | None) -> dict[str, object]:
            if isinstance(item, OCRServeError):
                return {"filename": filename, **api_errors.error_body(item)}
            try:
                key = cache_key(
                    item.data, options, _extra(max_pages, service), service.engine.model_version
                )
                cached = await _cache_get(service, key)
                if cached is None:
                    cached = await _recognise(service, item, options, max_pages, t0)
                    await _cache_set(service, key, cached)
                return {"filename": filename, **cached}
            except (InputError, OptionError) as e:
                return {"filename": filename, **api_errors.error_body(e)}

        results = await asyncio.gather(
            *(one(item, upload.filename) for item, upload in zip(items, uploads, strict=True))
        )
        return JSONResponse(list(results))

    @router.get("/health", response_model=Health, summary="Alive: the process answers")
    async def health(request: Request) -> Health:
        service = _service(request)
        return Health(
            status="ok",
            version=__version__,
            model=service.engine.model_version,
            providers=list(service.engine.providers),
        )

    @router.get("/ready", summary="Ready: models loaded and warmed, lanes running")
    async def ready(request: Request) -> JSONResponse:
        service = _service(request)
        checks: dict[str, bool] = {"engine": service.ready}
        if isinstance(service.cache, RedisCache):
            checks["redis"] = await service.cache.ping()
        ok = all(checks.values())
        return JSONResponse(
            {"ready": ok, "checks": checks, "queued_pages": service.batcher.queued_pages},
            status_code=200 if ok else 503,
        )

    @router.get("/metrics", summary="Prometheus metrics")
    async def metrics(request: Request) -> Response:
        registry = _service(request).metrics.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


# --- reading requests ------------------------------------------------------------------------


async def _form(request: Request, service: Service) -> FormData:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InputError("expected a multipart/form-data body with the files")
    try:
        return await request.form(max_files=service.settings.max_batch_files + 8)
    except ValueError as e:  # starlette's MultiPartException is not exported
        raise InputError(f"malformed multipart body: {e}") from e
    except Exception as e:
        if type(e).__name__ == "MultiPartException":
            raise InputError(f"malformed multipart body: {e}") from e
        raise


async def _read_upload(upload: UploadFile, service: Service) -> Upload | OCRServeError:
    limit = service.settings.max_file_bytes
    data = await upload.read(limit + 1)
    if len(data) > limit:
        return FileTooLargeError(limit=limit, value=upload.size or len(data))
    return Upload(upload.filename, data)


async def _read_single(request: Request, service: Service) -> tuple[Upload, dict[str, str]]:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            body = OCRJSONRequest.model_validate_json(await request.body())
        except ValueError as e:
            raise InputError(f"invalid JSON body: {e}") from e
        raw = {k: str(v) for k in OPTION_FIELDS if (v := getattr(body, k)) is not None}
        if body.image_base64 is not None:
            try:
                data = base64.b64decode(body.image_base64, validate=True)
            except (binascii.Error, ValueError) as e:
                raise InputError(f"image_base64 is not valid base64: {e}") from e
            if len(data) > service.settings.max_file_bytes:
                raise FileTooLargeError(limit=service.settings.max_file_bytes, value=len(data))
            return Upload(None, data), raw
        if body.image_url is not None:
            data = await fetch_url(
                body.image_url,
                max_bytes=service.settings.max_file_bytes,
                timeout=service.settings.url_timeout_s,
                allow_private=service.settings.allow_private_urls,
                client=service.http,
            )
            return Upload(body.image_url.rsplit("/", 1)[-1] or None, data), raw
        raise InputError("the JSON body needs image_base64 or image_url")
    form = await _form(request, service)
    try:
        file = next(
            (f for n in FILE_FIELDS for f in form.getlist(n) if isinstance(f, UploadFile)), None
        )
        if file is None:
            raise InputError("no file: send it as the multipart field 'image' (or 'file')")
        item = await _read_upload(file, service)
        if isinstance(item, OCRServeError):
            raise item
        return item, _form_options(form, request)
    finally:
        await form.close()


def _form_options(form: FormData, request: Request) -> dict[str, str]:
    """Options from form fields, else from the query string."""
    out: dict[str, str] = {}
    for name in OPTION_FIELDS:
        value = form.get(name)
        if isinstance(value, str):
            out[name] = value
        elif name in request.query_params:
            out[name] = request.query_params[name]
    return out


def _options(raw: dict[str, str], service: Service) -> tuple[OCROptions, int]:
    options = service.engine.defaults
    if "lang" in raw:
        options = replace(options, lang=raw["lang"])
    if "precision" in raw:
        options = replace(options, precision=raw["precision"])  # type: ignore[arg-type]
    if "cls" in raw:
        flag = raw["cls"].strip().lower()
        if flag not in TRUE | FALSE:
            raise OptionError(
                f"cls must be true or false, not {raw['cls']!r}", option="cls", value=raw["cls"]
            )
        options = replace(options, use_cls=flag in TRUE)
    max_pages = service.settings.max_pages
    if "max_pages" in raw:
        try:
            requested = int(raw["max_pages"])
        except ValueError:
            requested = 0
        if requested < 1:
            raise OptionError(
                f"max_pages must be a positive integer, not {raw['max_pages']!r}",
                option="max_pages",
                value=raw["max_pages"],
            )
        max_pages = min(requested, max_pages)
    service.engine.resolve(options)  # a bad lang or precision fails here, before any work
    return options, max_pages


def _extra(max_pages: int, service: Service) -> str:
    return f"pages={max_pages};dpi={service.settings.pdf_dpi}"


# --- doing the work --------------------------------------------------------------------------


async def _recognise(
    service: Service, upload: Upload, options: OCROptions, max_pages: int, t0: float
) -> dict[str, object]:
    s = service.settings
    limits = DecodeLimits(
        max_bytes=s.max_file_bytes, max_pixels=s.max_pixels, max_pages=max_pages, pdf_dpi=s.pdf_dpi
    )
    t_decode = time.perf_counter()
    doc = await run_in_threadpool(decode_bytes, upload.data, limits, filename=upload.filename)
    t_infer = time.perf_counter()
    try:
        pages = await service.batcher.run(doc.pages, options, timeout=s.request_timeout_s)
    except QueueFullError:
        service.metrics.rejections.labels("queue_full").inc()
        raise
    except OCRServeError as e:
        if e.code == "deadline_exceeded":
            service.metrics.rejections.labels("deadline").inc()
        raise
    t_end = time.perf_counter()
    return result_dict(
        pages,
        pages_total=doc.pages_total,
        truncated=doc.truncated,
        model=service.engine.model_version,
        timings={
            "decode": round(t_infer - t_decode, 4),
            "inference": round(t_end - t_infer, 4),
            "total": round(t_end - t0, 4),
        },
    )


def result_dict(
    pages: list[PageResult],
    *,
    pages_total: int,
    truncated: bool,
    model: str,
    timings: dict[str, float],
) -> dict[str, object]:
    """The ``/ocr`` result shape (also the body of async task results and callbacks)."""
    confidences = [line.confidence for p in pages for line in p.lines]
    out_pages = []
    for p in pages:
        d = p.to_dict()
        d.pop("timings", None)
        out_pages.append(d)
    return {
        "text": "\n\n".join(p.text for p in pages),
        "avg_confidence": round(sum(confidences) / len(confidences), 5) if confidences else 0.0,
        "pages": out_pages,
        "page_count": len(pages),
        "pages_total": pages_total,
        "truncated": truncated,
        "model": model,
        "timings": timings,
    }


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
        service: Service | None = getattr(scope["app"].state, "service", None)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (REQUEST_ID_HEADER.encode(), rid[:128].encode("latin-1")),
                ]
            await send(message)

        try:
            limit = _body_limit(service)
            declared = headers.get("content-length", "")
            if limit and declared.isdigit() and int(declared) > limit:
                err = FileTooLargeError(limit=limit, value=int(declared))
                await api_errors.error_response(err)(scope, receive, send_with_id)
                return
            await self.app(scope, _counting(receive, limit), send_with_id)
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
                },
            )
            request_id.reset(token)


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
