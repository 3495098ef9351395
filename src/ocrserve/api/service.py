"""What every route shares: the service object built at start-up, the guard, and the
reading of uploads and options from requests."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, replace
from typing import Annotated

import httpx
from fastapi import Depends, Request
from starlette.datastructures import FormData, UploadFile

from ocrserve.api.metrics import Metrics
from ocrserve.api.schemas import OCRJSONRequest
from ocrserve.api.security import AdminCheck, KeyCheck, TokenBuckets
from ocrserve.batcher import Batcher
from ocrserve.cache import ResultCache
from ocrserve.config import Settings
from ocrserve.engine import Engine
from ocrserve.errors import FileTooLargeError, InputError, OCRServeError, OptionError
from ocrserve.fetch import fetch_url
from ocrserve.types import OCROptions

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
    admin: AdminCheck
    buckets: TokenBuckets
    http: httpx.AsyncClient
    #: The async-task backend (api.tasks.TaskBackend); typed loosely to keep imports one-way.
    tasks: object | None = None
    ready: bool = False


@dataclass(frozen=True)
class Upload:
    filename: str | None
    data: bytes


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def guard(request: Request) -> Service:
    """Dependency of every OCR route: API key, then the caller's rate limit. The caller's
    tenant goes on ``request.state.tenant``: for :func:`caller`, and the access log."""
    service = service_of(request)
    who = service.keys.identify(request)
    request.state.tenant = service.keys.tenant(request)
    try:
        service.buckets.take(who)
    except OCRServeError:
        service.metrics.rejections.labels("rate_limited").inc()
        raise
    return service


Guarded = Annotated[Service, Depends(guard)]


@dataclass(frozen=True)
class Caller:
    """Who calls (``tenant``: its key's name; one tenant when keys are off) and the service.
    Routes that read or write a tenant's things (tasks, cached results) take this."""

    service: Service
    tenant: str


def caller(request: Request, service: Guarded) -> Caller:
    return Caller(service, request.state.tenant)


Authorized = Annotated[Caller, Depends(caller)]


def admin_guard(request: Request) -> Service:
    """Dependency of the /admin routes: the admin key (404 when none is configured)."""
    service = service_of(request)
    service.admin.check(request)
    return service


AdminGuarded = Annotated[Service, Depends(admin_guard)]


async def read_form(request: Request, service: Service) -> FormData:
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


async def read_upload(upload: UploadFile, service: Service) -> Upload | OCRServeError:
    limit = service.settings.max_file_bytes
    data = await upload.read(limit + 1)
    if len(data) > limit:
        return FileTooLargeError(limit=limit, value=upload.size or len(data))
    return Upload(upload.filename, data)


async def read_single(request: Request, service: Service) -> tuple[Upload, dict[str, str]]:
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
    form = await read_form(request, service)
    try:
        file = next(
            (f for n in FILE_FIELDS for f in form.getlist(n) if isinstance(f, UploadFile)), None
        )
        if file is None:
            raise InputError("no file: send it as the multipart field 'image' (or 'file')")
        item = await read_upload(file, service)
        if isinstance(item, OCRServeError):
            raise item
        return item, form_options(form, request)
    finally:
        await form.close()


def form_options(form: FormData, request: Request) -> dict[str, str]:
    """Options from form fields, else from the query string."""
    out: dict[str, str] = {}
    for name in OPTION_FIELDS:
        value = form.get(name)
        if isinstance(value, str):
            out[name] = value
        elif name in request.query_params:
            out[name] = request.query_params[name]
    return out


def parse_options(raw: dict[str, str], service: Service) -> tuple[OCROptions, int]:
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
