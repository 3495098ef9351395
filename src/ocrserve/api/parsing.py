"""One request parser for ``/ocr``, ``/ocr/batch`` and ``/ocr/async``.

Every route reads its request here, so the same request gets the same answer everywhere:

- a JSON body (``application/json``: :class:`~ocrserve.api.schemas.TaskJSONRequest`, whose
  fields but ``metadata`` and ``callback_url`` are ``/ocr``'s; unknown fields refused,
  ``max_pages`` an integer and ``cls`` a boolean, strictly) or a multipart form (files, and the
  same fields as text parts); options a body does not carry are taken from the query string;
- the document: exactly one of a file part, ``image_base64`` or ``image_url`` for ``/ocr`` and
  ``/ocr/async``; one to ``OCRSERVE_MAX_BATCH_FILES`` file parts for ``/ocr/batch`` (413 past it);
- bytes are checked at once: size (413), base64, and format from the first bytes (415), so
  ``/ocr/async`` refuses what ``/ocr`` would, before anything is queued;
- ``metadata`` and ``callback_url`` belong to ``/ocr/async`` only.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from ocrserve.api.schemas import TaskJSONRequest
from ocrserve.api.service import Service
from ocrserve.config import Settings
from ocrserve.decode import check_format
from ocrserve.errors import (
    FileTooLargeError,
    InputError,
    JSONTooComplexError,
    JSONTooDeepError,
    JSONTooLargeError,
    MetadataTooLargeError,
    OCRServeError,
    OptionError,
    TooManyFilesError,
    UnsupportedMediaTypeError,
)
from ocrserve.fetch import fetch_url
from ocrserve.types import ORIENTATIONS, PDF_TEXT_MODES, OCROptions

#: Multipart parts that carry the document, by route.
FILE_FIELDS = ("image", "file")
BATCH_FIELDS = ("images", "files", "image", "file")
OPTION_FIELDS = ("lang", "precision", "cls", "max_pages", "pdf_text", "orientation", "format")
TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})
TASK_FIELDS = ("metadata", "callback_url")
SOURCE_FIELDS = ("image_base64", "image_url")
#: A task's metadata, as compact JSON: it is stored, returned and sent with every callback.
MAX_METADATA_BYTES = 16 * 1024

JSON_TYPE = "application/json"
FORM_TYPE = "multipart/form-data"
#: A form's text field (Starlette's default): options and URLs, not documents.
MAX_FORM_FIELD_BYTES = 1024 * 1024


class Route(StrEnum):
    OCR = "/ocr"
    BATCH = "/ocr/batch"
    TASK = "/ocr/async"


@dataclass(frozen=True)
class Upload:
    """The bytes of one document, from a file part or ``image_base64``."""

    filename: str | None
    data: bytes


@dataclass(frozen=True)
class Refused:
    """A file refused from its first bytes or its size; in a batch, that file's answer."""

    filename: str | None
    error: OCRServeError


@dataclass(frozen=True)
class ParsedRequest:
    """What a route asked for. ``files`` keeps a batch's refused files in place: one bad file
    is that file's answer, not the batch's."""

    options: OCROptions
    max_pages: int
    files: tuple[Upload | Refused, ...] = ()
    #: The ``format`` option as sent (checked against the formats the route writes there).
    format: str | None = None
    url: str | None = None
    metadata: dict[str, Any] | None = None
    callback_url: str | None = None

    @property
    def upload(self) -> Upload:
        """The one document of ``/ocr`` or ``/ocr/async`` (when it is not a URL)."""
        (item,) = self.files
        if isinstance(item, Refused):
            raise item.error
        return item


async def parse(request: Request, service: Service, route: Route) -> ParsedRequest:
    """Read ``request`` as ``route`` takes it; a bad request raises the error it gets."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == JSON_TYPE:
        if route is Route.BATCH:
            raise UnsupportedMediaTypeError(
                f"{route} takes a multipart/form-data body with the files as 'images' parts"
            )
        fields = await _json_fields(request, service)
        files: list[Upload | Refused] = []
    elif content_type == FORM_TYPE:
        fields, files = await _form_fields(request, service, route)
    else:
        kinds = "multipart/form-data" if route is Route.BATCH else "multipart/form-data or JSON"
        raise UnsupportedMediaTypeError(
            f"{route} takes a {kinds} body, not {content_type or 'one without a Content-Type'!r}"
        )
    for name in OPTION_FIELDS:  # what the body does not say, the query string may
        if name not in fields and name in request.query_params:
            fields[name] = request.query_params[name]
    raw = {k: _text(fields[k]) for k in OPTION_FIELDS if fields.get(k) is not None}
    options, max_pages = parse_options(raw, service)
    extra = sorted(k for k in TASK_FIELDS if fields.get(k) is not None)
    if extra and route is not Route.TASK:
        raise InputError(f"{', '.join(extra)}: only /ocr/async takes it")
    if route is Route.TASK and "format" in raw:
        raise InputError(
            "format: a task's result is had in a format from GET /task/{id}/result?format=..."
        )
    # The request's own fields first, then the document's bytes: a bad field is the same
    # answer whatever document comes with it.
    metadata = _metadata(fields.get("metadata"))
    callback_url = _optional_text(fields.get("callback_url"), "callback_url")
    if fields.get("image_base64") is not None:
        files.append(_base64_upload(fields["image_base64"], service))
    url = fields.get("image_url")
    if route is Route.BATCH:
        if not files:
            raise InputError("no files: send them as repeated multipart parts 'images'")
        if url is not None:
            raise InputError("/ocr/batch reads files; send a URL to /ocr or /ocr/async")
    else:
        given = len(files) + (url is not None)
        if given != 1:
            raise InputError(
                "send exactly one document: a file part 'image', image_base64 or image_url "
                f"({given} were sent)"
            )
        if files and isinstance(files[0], Refused):
            raise files[0].error
    return ParsedRequest(
        options=options,
        max_pages=max_pages,
        format=raw.get("format"),
        files=tuple(files),
        url=str(url) if url is not None else None,
        metadata=metadata,
        callback_url=callback_url,
    )


async def _json_fields(request: Request, service: Service) -> dict[str, Any]:
    # Read with the task's model on every route, so that metadata sent to /ocr gets the same
    # answer as from a form ("only /ocr/async takes it"), not a bare "extra field".
    body = await read_json_body(request, service)
    try:
        parsed = TaskJSONRequest.model_validate_json(body)
    except ValidationError as e:
        raise InputError(f"invalid JSON body: {_first_error(e)}") from None
    return parsed.model_dump(exclude_none=True)


async def _form_fields(
    request: Request, service: Service, route: Route
) -> tuple[dict[str, Any], list[Upload | Refused]]:
    limit = service.settings.max_batch_files
    form = await read_form(request, limit)
    try:
        names = BATCH_FIELDS if route is Route.BATCH else FILE_FIELDS
        parts = [f for n in names for f in form.getlist(n) if isinstance(f, UploadFile)]
        if len(parts) > limit:
            raise TooManyFilesError(limit=limit, value=len(parts))
        known = {*OPTION_FIELDS, *TASK_FIELDS, *SOURCE_FIELDS, *names}
        if unknown := sorted({k for k in form if k not in known}):
            raise InputError(
                f"unknown form fields: {', '.join(unknown)}; the document goes in a file part "
                f"{names[0]!r}, options in {', '.join(OPTION_FIELDS)}"
            )
        fields: dict[str, Any] = {}
        for name, value in form.multi_items():
            if isinstance(value, str):
                if name in fields:
                    raise InputError(f"the form field {name!r} was sent more than once")
                fields[name] = value
        files = [await read_part(part, service) for part in parts]
    finally:
        await form.close()
    return fields, files


async def read_form(
    request: Request, max_files: int, *, max_part_size: int = MAX_FORM_FIELD_BYTES
) -> FormData:
    """The form body (multipart, or URL-encoded). One file more than the limit is let
    through, so that the count is checked (413 with the figures) here rather than by
    Starlette (a bare 400). Starlette keeps the form on ``request``: a second call returns it.
    """
    try:
        return await request.form(
            max_files=max_files + 1, max_fields=1000, max_part_size=max_part_size
        )
    except HTTPException as e:  # Starlette turns its MultiPartException into a 400
        if "Too many files" in str(e.detail):
            raise TooManyFilesError(limit=max_files, value=max_files + 1) from None
        raise InputError(f"malformed multipart body: {e.detail}") from None
    except Exception as e:
        if type(e).__name__ == "MultiPartException":  # not exported by Starlette
            raise InputError(f"malformed multipart body: {e}") from None
        raise


async def read_part(part: UploadFile, service: Service) -> Upload | Refused:
    """A file part, read no further than the file size limit, and :func:`checked`."""
    limit = service.settings.max_file_bytes
    data = await part.read(limit + 1)
    if len(data) > limit:
        return Refused(part.filename, FileTooLargeError(limit=limit, value=part.size or len(data)))
    return checked(Upload(part.filename, data))


def _base64_upload(value: Any, service: Service) -> Upload | Refused:
    try:
        data = base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError) as e:
        raise InputError(f"image_base64 is not valid base64: {e}") from None
    if len(data) > service.settings.max_file_bytes:
        raise FileTooLargeError(limit=service.settings.max_file_bytes, value=len(data))
    return checked(Upload(None, data))


async def fetch_upload(service: Service, url: str) -> Upload:
    """The document at ``url`` (an ``image_url``), fetched within the service's limits and
    SSRF guard (:func:`~ocrserve.fetch.fetch_url`), and checked as an upload is."""
    s = service.settings
    data = await fetch_url(
        url, max_bytes=s.max_file_bytes, timeout=s.url_timeout_s,
        allow_private=s.allow_private_urls, client=service.http,
    )  # fmt: skip
    item = checked(Upload(url.rsplit("/", 1)[-1] or None, data))
    if isinstance(item, Refused):
        raise item.error
    return item


def checked(upload: Upload) -> Upload | Refused:
    """The upload, or why its first bytes already refuse it (empty, not a format we read)."""
    try:
        check_format(upload.data, f"{upload.filename}: " if upload.filename else "")
    except OCRServeError as e:
        return Refused(upload.filename, e)
    return upload


def _metadata(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str):  # a form field carries it as JSON text
        check_json_shape(value, "metadata")
        try:
            value = json.loads(value)
        except ValueError as e:
            raise InputError(f"metadata must be a JSON object: {e}") from None
    if not isinstance(value, dict):
        raise InputError("metadata must be a JSON object")
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_METADATA_BYTES:
        raise MetadataTooLargeError(limit=MAX_METADATA_BYTES, value=size)
    return value


def _optional_text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{name} must be a string")
    return value


def _text(value: Any) -> str:
    """An option as the text a form or query string would carry (JSON types were checked by
    the body's model: ``cls`` a boolean, ``max_pages`` an integer)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _first_error(e: ValidationError) -> str:
    first = e.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg"))


#: JSON request bodies. Python's json module and pydantic's parser recurse once per level of
#: nesting: a body nested thousands deep would be a RecursionError, a 500. Refused before parsing.
MAX_JSON_DEPTH = 32
#: Brackets, separators and strings in a JSON body. Each byte of a 16 KiB metadata is at most
#: one, so twice that leaves room for the rest: only a string (image_base64) may be long. This
#: bounds the scan below, and what the parser would build, whatever the body's size.
MAX_JSON_TOKENS = 32 * 1024
#: Room in a JSON body besides the image's base64: options, URLs, metadata.
JSON_ENVELOPE_BYTES = 64 * 1024

#: Where :func:`read_json_body` keeps the body it read: in the request's own ASGI scope
#: (``request.state`` may be the lifespan's, shared by every request).
_JSON_BODY_SCOPE = "ocrserve.json_body"
_JSON_STRUCTURE = re.compile(rb'["\[\]{},:]')
_JSON_OPEN = frozenset(b"[{")
_JSON_CLOSE = frozenset(b"]}")
_QUOTE, _BACKSLASH = ord('"'), ord("\\")


def json_body_limit(settings: Settings) -> int:
    """The largest JSON body: the base64 of the largest file, and the envelope around it."""
    return 4 * -(-settings.max_file_bytes // 3) + JSON_ENVELOPE_BYTES


async def read_json_body(request: Request, service: Service) -> bytes:
    """A JSON request body, read no further than :func:`json_body_limit` and its shape checked
    (:func:`check_json_shape`); parse it with anything. Read once: a second call for the same
    request (``/ocr`` looks at a body before it knows whose dialect it is) returns the bytes
    the first one read."""
    if isinstance(read := request.scope.get(_JSON_BODY_SCOPE), bytes):
        return read
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
    request.scope[_JSON_BODY_SCOPE] = body
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


def _choice(raw: dict[str, str], name: str, allowed: tuple[str, ...]) -> str:
    value = raw[name].strip().lower()
    if value not in allowed:
        raise OptionError(
            f"{name} must be one of {', '.join(allowed)}, not {raw[name]!r}",
            option=name,
            value=raw[name],
            allowed=allowed,
        )
    return value


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
    if "pdf_text" in raw:
        options = replace(options, pdf_text=_choice(raw, "pdf_text", PDF_TEXT_MODES))  # type: ignore[arg-type]
    if "orientation" in raw:
        options = replace(options, orientation=_choice(raw, "orientation", ORIENTATIONS))  # type: ignore[arg-type]
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
