"""What every route shares: the service object built at start-up, the guard, and the
reading of uploads and options from requests."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, replace
from typing import Annotated

import httpx
from fastapi import Depends, Request
from starlette.datastructures import FormData, UploadFile

from ocrserve.api.metrics import Metrics
from ocrserve.api.schemas import OCRJSONRequest
from ocrserve.api.security import AdminCheck, KeyCheck, TokenBuckets, address_bucket
from ocrserve.batcher import Batcher
from ocrserve.cache import ResultCache
from ocrserve.config import Settings
from ocrserve.engine import Engine
from ocrserve.errors import (
    AuthError,
    FileTooLargeError,
    InputError,
    JSONTooComplexError,
    JSONTooDeepError,
    JSONTooLargeError,
    OCRServeError,
    OptionError,
)
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
    try:
        who = service.keys.identify(request)
    except AuthError:
        # A missing or wrong key pays from its address's bucket: a key guesser runs into
        # the rate limit (429) after the burst, as any caller does.
        _rate_limit(service, address_bucket(request))
        raise
    request.state.tenant = service.keys.tenant(request)
    _rate_limit(service, who)
    return service


def _rate_limit(service: Service, who: str) -> None:
    try:
        service.buckets.take(who)
    except OCRServeError:
        service.metrics.rejections.labels("rate_limited").inc()
        raise


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
    try:
        service.admin.check(request)
    except AuthError:  # guessing the admin key pays from the address's bucket, as for clients
        _rate_limit(service, address_bucket(request))
        raise
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
            body = OCRJSONRequest.model_validate_json(await read_json_body(request, service))
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


#: JSON request bodies. Python's json module and pydantic's parser recurse once per level of
#: nesting: a body nested thousands deep would be a RecursionError, a 500. Refused before parsing.
MAX_JSON_DEPTH = 32
#: Brackets, separators and strings in a JSON body. Each byte of a 16 KiB metadata is at most
#: one, so twice that leaves room for the rest: only a string (image_base64) may be long. This
#: bounds the scan below, and what the parser would build, whatever the body's size.
MAX_JSON_TOKENS = 32 * 1024
#: Room in a JSON body besides the image's base64: options, URLs, metadata.
JSON_ENVELOPE_BYTES = 64 * 1024

_JSON_STRUCTURE = re.compile(rb'["\[\]{},:]')
_JSON_OPEN = frozenset(b"[{")
_JSON_CLOSE = frozenset(b"]}")
_QUOTE, _BACKSLASH = ord('"'), ord("\\")


def json_body_limit(settings: Settings) -> int:
    """The largest JSON body: the base64 of the largest file, and the envelope around it."""
    return 4 * -(-settings.max_file_bytes // 3) + JSON_ENVELOPE_BYTES


async def read_json_body(request: Request, service: Service) -> bytes:
    """A JSON request body, read no further than :func:`json_body_limit` and its shape checked
    (:func:`check_json_shape`); parse it with anything."""
    limit = json_body_limit(service.settings)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise JSONTooLargeError(limit=limit, value=int(declared))
    chunks, size = [], 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise JSONTooLargeError(limit=limit, value=size)
    body = b"".join(chunks)
    check_json_shape(body)
    return body


def check_json_shape(text: bytes | str, what: str = "the JSON body") -> None:
    """Refuse JSON nested deeper than :data:`MAX_JSON_DEPTH`, or with more than
    :data:`MAX_JSON_TOKENS` brackets, separators and strings, without parsing it.

    A scan, not a parser, so that it cannot recurse: a regular expression jumps to the next
    structural character and ``bytes.find`` over each string (both in C), so the Python loop
    runs once per token, at most MAX_JSON_TOKENS times however long the strings are. Anything
    else wrong with the JSON is left to the parser, which says what.
    """
    data = text.encode() if isinstance(text, str) else text
    depth = tokens = pos = 0
    while (match := _JSON_STRUCTURE.search(data, pos)) is not None:
        at = match.start()
        tokens += 1
        if tokens > MAX_JSON_TOKENS:
            raise JSONTooComplexError(limit=MAX_JSON_TOKENS, what=what)
        char = data[at]
        pos = at + 1
        if char == _QUOTE:
            # The closing quote: the next one not escaped by an odd run of backslashes before
            # it. Each escaped quote counts as a token, so this loop is bounded too.
            while (end := data.find(b'"', pos)) >= 0 and data[end - 1] == _BACKSLASH:
                segment = data[pos:end]  # from the last quote: the run cannot start earlier
                if (len(segment) - len(segment.rstrip(b"\\"))) % 2 == 0:
                    break
                tokens += 1
                if tokens > MAX_JSON_TOKENS:
                    raise JSONTooComplexError(limit=MAX_JSON_TOKENS, what=what)
                pos = end + 1
            if end < 0:
                return  # an unterminated string: the parser says so
            pos = end + 1
        elif char in _JSON_OPEN:
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise JSONTooDeepError(limit=MAX_JSON_DEPTH, what=what)
        elif char in _JSON_CLOSE:
            depth -= 1


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
