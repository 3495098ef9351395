"""Drop-in routes for clients of two other OCR servers, PaddleX serving (its OCR pipeline) and
the RapidOCR API: such a client changes only its host, and gets its answers in its own shape.

Both servers take their requests at ``POST /ocr``, ocrserve's own path. So ``/ocr`` tells a
dialect from the body's shape before its own parser runs (:func:`dialect_answer`):

- JSON with a ``"file"`` key: PaddleX (``{"file": URL or Base64, "fileType": 0 | 1 | null}``).
  ocrserve's own JSON never has one: its document is ``image_base64`` or ``image_url``, and
  it refuses fields it does not know;
- multipart with an ``image_file`` or ``image_data`` field, or a URL-encoded form with
  ``image_data``: RapidOCR. ocrserve's own forms carry the document in ``image`` (or ``file``)
  and refuse fields they do not know; a URL-encoded body it does not read at all;
- anything else: ocrserve's own parser, which sees the request as if nothing had looked.

Looking costs no extra read: the body is read once, within the parser's own limits
(:func:`~ocrserve.api.parsing.read_json_body`, :func:`~ocrserve.api.parsing.read_form`), and
the parser reads what was read. Each dialect is also served at its own path,
``/compat/paddlex/ocr`` and ``/compat/rapidocr/ocr`` (:func:`compat_router`), for proxies that route
by path, and for ``/docs``, which shows their models (:mod:`ocrserve.api.compat_schemas`).

The work is ocrserve's: the same decoding and limits, URL fetching behind the SSRF guard, the
batcher, API keys and rate limits. What each dialect's fields become:

==========================  =====================================================================
PaddleX                     ocrserve
==========================  =====================================================================
useTextlineOrientation      ``cls``
useDocOrientationClassify   ``orientation`` (``auto`` / ``off``)
textRecScoreThresh          the confidence below which lines are dropped (default: the server's)
fileType 1 / 0 / null       one image (a multi-page TIFF's first page) / a PDF's pages, up to
                            ``OCRSERVE_MAX_PAGES`` / told from the bytes (PaddleX: from the URL)
useDocUnwarping, visualize  ignored: no unwarping, no drawn images (``ocrImage`` etc. are null)
textDet*                    ignored: the detector's settings are the server's; ``text_det_params``
                            reports them
RapidOCR                    ocrserve
use_cls                     ``cls``
use_det, use_rec            ``false`` is refused (422): ocrserve always detects and recognises
==========================  =====================================================================

Errors: PaddleX's envelope (``{"logId", "errorCode": status, "errorMsg"}``, with that status)
once a request is known to be PaddleX's; at ``/compat/paddlex/ocr`` also the API key, rate limit
and body errors. What is refused before a dialect is known (on ``/ocr``: the key, the rate limit,
a JSON body too large or deep) and what the middleware refuses (the request body limit, shutting
down) is answered in ocrserve's shape. The RapidOCR API defines no error body (its own are
FastAPI's defaults), so its clients get ocrserve's.

Where the answers differ from the originals: boxes are in the pixels of the page as sent (a
PaddleX page its preprocessor turned has boxes on the turned page); ``dt_polys``, ``dt_scores``
and ``textline_orientation_angles`` are left out (the lines dropped and the line classifier's
verdicts are not kept); lines that read as nothing are never returned; the RapidOCR API reads
no PDF (415). Results are neither looked up in nor written to the result cache.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile

from ocrserve.api import errors as api_errors
from ocrserve.api.compat_schemas import (
    PaddleXDocPreprocessorResult,
    PaddleXError,
    PaddleXImageInfo,
    PaddleXInferResult,
    PaddleXModelSettings,
    PaddleXOCRResult,
    PaddleXPDFInfo,
    PaddleXPDFPageInfo,
    PaddleXPreprocessorSettings,
    PaddleXPrunedResult,
    PaddleXRequest,
    PaddleXResponse,
    PaddleXTextDetParams,
    RapidOCRLine,
    RapidOCRResponse,
)
from ocrserve.api.openapi import GUARDED, error_responses
from ocrserve.api.parsing import (
    FALSE,
    FORM_TYPE,
    JSON_TYPE,
    TRUE,
    Refused,
    Upload,
    checked,
    fetch_upload,
    json_body_limit,
    parse_options,
    read_form,
    read_json_body,
    read_part,
)
from ocrserve.api.service import Authorized, Caller, Service, choose_models
from ocrserve.config import Settings
from ocrserve.decode import sniff_format
from ocrserve.errors import (
    FileTooLargeError,
    InputError,
    OCRServeError,
    OptionError,
    UnsupportedFormatError,
    UnsupportedMediaTypeError,
)
from ocrserve.logs import request_id
from ocrserve.schemas import OCRResult, PageOut
from ocrserve.types import OCROptions

log = logging.getLogger(__name__)

#: ``/ocr``'s work, as the app does it: decode within the limits, recognise through the batcher,
#: and the result in ``/ocr``'s shape (:func:`ocrserve.types.result_dict`).
#: ``(service, upload, options, max_pages, t0) -> result``.
Recognise = Callable[[Service, Upload, OCROptions, int, float], Awaitable[dict[str, object]]]

PREFIX = "/compat"
PADDLEX_PATH = "/paddlex/ocr"
RAPIDOCR_PATH = "/rapidocr/ocr"
URLENCODED_TYPE = "application/x-www-form-urlencoded"

#: The key that makes a JSON body PaddleX's.
PADDLEX_FILE = "file"
#: PaddleX's ``fileType``.
PADDLEX_PDF, PADDLEX_IMAGE = 0, 1
#: The fields that make a form RapidOCR's: the image as a file part, or as Base64.
RAPIDOCR_FILE, RAPIDOCR_DATA = "image_file", "image_data"
RAPIDOCR_FLAGS = ("use_det", "use_cls", "use_rec")

#: A URL, as PaddleX tells one from Base64 (which holds no ':'); only http(s) is fetched.
_URL = re.compile(r"[a-z][a-z0-9+.-]*://", re.IGNORECASE)
#: What pydantic reads as a boolean besides TRUE / FALSE (FastAPI's ``bool = Form()``).
_TRUE, _FALSE = TRUE | {"t", "y"}, FALSE | {"f", "n"}


def compat_router(recognise: Recognise) -> APIRouter:
    """``/compat/paddlex/ocr`` and ``/compat/rapidocr/ocr``: each dialect at a path of its own.

    >>> app.include_router(compat_router(recognise))  # doctest: +SKIP
    """
    paddlex = APIRouter(route_class=_PaddleXRoute)

    @paddlex.post(
        PADDLEX_PATH,
        response_model=PaddleXResponse,
        openapi_extra=_PADDLEX_BODY,
        responses=error_responses(*GUARDED, 415, 422, 504, model=PaddleXError),
        summary="PaddleX serving's OCR API: its request, its answer",
    )
    async def paddlex_ocr(request: Request, caller: Authorized) -> Response:
        """A PaddleX client's ``POST /ocr``, at a path of its own (``/ocr`` serves it too)."""
        body = await read_json_body(request, caller.service)
        try:
            fields = json.loads(body)
        except ValueError as e:
            raise InputError(f"invalid JSON body: {e}") from None
        return await _paddlex(caller, recognise, fields)

    rapidocr = APIRouter()

    @rapidocr.post(
        RAPIDOCR_PATH,
        response_model=RapidOCRResponse,
        openapi_extra=_RAPIDOCR_BODY,
        responses=error_responses(*GUARDED, 415, 422, 504),
        summary="RapidOCR API: its request, its answer",
    )
    async def rapidocr_ocr(request: Request, caller: Authorized) -> Response:
        """A RapidOCR API client's ``POST /ocr``, at a path of its own (``/ocr`` serves it
        too). Errors are ocrserve's: the RapidOCR API defines none."""
        service = caller.service
        kind = _content_type(request)
        if kind not in (FORM_TYPE, URLENCODED_TYPE):
            raise UnsupportedMediaTypeError(
                f"{PREFIX}{RAPIDOCR_PATH} takes a multipart/form-data or {URLENCODED_TYPE} "
                f"body, not {kind or 'one without a Content-Type'!r}"
            )
        return await _rapidocr(caller, recognise, await _read_form(request, service, kind))

    compat = APIRouter(prefix=PREFIX, tags=["compatibility"])
    compat.include_router(paddlex)
    compat.include_router(rapidocr)
    return compat


async def dialect_answer(request: Request, caller: Caller, recognise: Recognise) -> Response | None:
    """``/ocr``'s answer to a PaddleX or RapidOCR client, in that client's shape; None for a
    request of ocrserve's own, which its parser then reads (the body this read, if any, is
    read from where this left it)."""
    service = caller.service
    kind = _content_type(request)
    if kind == JSON_TYPE:
        fields = _paddlex_fields(await read_json_body(request, service))
        return None if fields is None else await _paddlex(caller, recognise, fields)
    if kind in (FORM_TYPE, URLENCODED_TYPE):
        form = await _read_form(request, service, kind)
        if RAPIDOCR_FILE in form or RAPIDOCR_DATA in form:
            return await _rapidocr(caller, recognise, form)
    return None


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _read_form(request: Request, service: Service, kind: str) -> FormData:
    """A multipart body as ocrserve's parser reads it (it gets this one); a URL-encoded one,
    which only RapidOCR's ``image_data`` comes in, with room for that field."""
    if kind == FORM_TYPE:
        return await read_form(request, service.settings.max_batch_files)
    return await read_form(request, 0, max_part_size=_urlencoded_limit(service.settings))


def _urlencoded_limit(settings: Settings) -> int:
    """The Base64 of the largest file, URL-encoded: ``+``, ``/`` and ``=`` take three bytes."""
    return 3 * json_body_limit(settings)


def _log_id() -> str:
    """PaddleX's ``logId``, a UUID: the request's id where it is one (ours are), so that the
    id a client quotes is the one in the logs."""
    try:
        return str(uuid.UUID(hex=request_id.get()))
    except ValueError:
        return str(uuid.uuid4())


def _decode_base64(value: str, field: str, service: Service) -> Upload:
    """``value`` as Base64, whitespace (line breaks) ignored, as both servers decode it."""
    try:
        data = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise InputError(f"{field} is not valid Base64: {e}") from None
    limit = service.settings.max_file_bytes
    if len(data) > limit:
        raise FileTooLargeError(limit=limit, value=len(data))
    return _accepted(checked(Upload(None, data)))


def _accepted(item: Upload | Refused) -> Upload:
    if isinstance(item, Refused):
        raise item.error
    return item


def _corners(box: Sequence[Sequence[float]], page: PageOut) -> list[list[float]]:
    """A line's corners, held to the page: (0, 0) to (width, height)."""
    return [
        [min(max(float(x), 0.0), float(page.width)), min(max(float(y), 0.0), float(page.height))]
        for x, y in box
    ]


# --- PaddleX ----------------------------------------------------------------------------------


def _paddlex_fields(body: bytes) -> Any:
    """The JSON body's value if it is PaddleX's (an object with a ``file`` key), else None."""
    # ocrserve's own bodies (a long image_base64) are not parsed here: no quote can stand in
    # Base64, so a body without the key's text is not PaddleX's.
    if b'"' + PADDLEX_FILE.encode() + b'"' not in body:
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None  # ocrserve's parser says what is wrong with it
    return value if isinstance(value, dict) and PADDLEX_FILE in value else None


class _PaddleXRoute(APIRoute):
    """A route whose errors, those of the API key and the rate limit too, are PaddleX's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def paddlex_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except OCRServeError as e:
                return paddlex_error(e, _log_id())

        return paddlex_handler


def paddlex_error(exc: OCRServeError, log_id: str) -> JSONResponse:
    """``exc`` in PaddleX's envelope, with the status (and headers) ocrserve gives it."""
    status = api_errors.status_of(exc)
    if status >= 500:
        log.error("PaddleX request failed: %s", exc, exc_info=exc)
    body = PaddleXError(logId=log_id, errorCode=status, errorMsg=exc.message).model_dump()
    return JSONResponse(body, status_code=status, headers=api_errors.error_headers(exc))


async def _paddlex(caller: Caller, recognise: Recognise, fields: Any) -> Response:
    log_id = _log_id()
    t0 = time.perf_counter()
    try:
        try:
            req = PaddleXRequest.model_validate(fields)
        except ValidationError as e:
            raise InputError(f"invalid request body: {_validation_message(e)}") from None
        result = await _paddlex_result(caller, recognise, req, t0)
    except OCRServeError as e:
        return paddlex_error(e, log_id)
    except Exception:
        # PaddleX answers its own failures in its envelope too; ocrserve's handler would not.
        log.exception("PaddleX request failed unexpectedly")
        error = PaddleXError(logId=log_id, errorCode=500, errorMsg="Internal server error")
        return JSONResponse(error.model_dump(), status_code=500)
    return JSONResponse(PaddleXResponse(logId=log_id, result=result).model_dump(mode="json"))


def _validation_message(e: ValidationError) -> str:
    first = e.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg"))


async def _paddlex_result(
    caller: Caller, recognise: Recognise, req: PaddleXRequest, t0: float
) -> PaddleXInferResult:
    service = caller.service
    if _URL.match(req.file):
        upload = await fetch_upload(service, req.file)  # http(s) only, behind the SSRF guard
    else:
        upload = _decode_base64(req.file, PADDLEX_FILE, service)
    fmt = sniff_format(upload.data)  # known: the upload was checked
    is_pdf = fmt == "pdf"
    if req.fileType == PADDLEX_PDF and not is_pdf:
        raise InputError(f"fileType 0 says a PDF, but the file is a {fmt} image")
    if req.fileType == PADDLEX_IMAGE and is_pdf:
        raise InputError("fileType 1 says an image, but the file is a PDF")
    options, max_pages = _paddlex_options(service, req)
    # Under a rollout, by the hash of the request alone: these clients send no model header.
    options = choose_models(service, None, [upload.data], options, caller.tenant)
    # An image is one page, as PaddleX reads it (the first of a multi-page TIFF).
    result = OCRResult.model_validate(
        await recognise(service, upload, options, max_pages if is_pdf else 1, t0)
    )
    params = _det_params(service.settings)
    pages = [_paddlex_page(page, options, params) for page in result.pages]
    info: PaddleXImageInfo | PaddleXPDFInfo
    if is_pdf:
        sizes = [PaddleXPDFPageInfo(width=p.width, height=p.height) for p in result.pages]
        info = PaddleXPDFInfo(numPages=len(sizes), pages=sizes)
    else:
        info = PaddleXImageInfo(width=result.pages[0].width, height=result.pages[0].height)
    return PaddleXInferResult(ocrResults=pages, dataInfo=info)


def _paddlex_options(service: Service, req: PaddleXRequest) -> tuple[OCROptions, int]:
    raw: dict[str, str] = {}
    if req.useTextlineOrientation is not None:
        raw["cls"] = "true" if req.useTextlineOrientation else "false"
    if req.useDocOrientationClassify is not None:
        raw["orientation"] = "auto" if req.useDocOrientationClassify else "off"
    options, max_pages = parse_options(raw, service)
    if (thresh := req.textRecScoreThresh) is not None:
        if not 0.0 <= thresh <= 1.0:
            raise OptionError(
                f"textRecScoreThresh must be from 0 to 1, not {thresh!r}",
                option="textRecScoreThresh",
                value=thresh,
            )
        options = replace(options, min_confidence=thresh)
    return options, max_pages


def _det_params(settings: Settings) -> PaddleXTextDetParams:
    """The detector's settings, which the engine is built from (``Engine.from_settings``)."""
    return PaddleXTextDetParams(
        limit_side_len=settings.det_limit_side,
        limit_type="min",  # the short side is scaled towards limit_side_len
        thresh=settings.det_thresh,
        max_side_limit=settings.det_max_side,
        box_thresh=settings.det_box_thresh,
        unclip_ratio=settings.det_unclip_ratio,
    )


def _paddlex_page(
    page: PageOut, options: OCROptions, params: PaddleXTextDetParams
) -> PaddleXOCRResult:
    polys = [[[round(x), round(y)] for x, y in _corners(line.box, page)] for line in page.lines]
    orient = options.orientation == "auto"
    preprocessed = PaddleXDocPreprocessorResult(
        model_settings=PaddleXPreprocessorSettings(
            use_doc_orientation_classify=True, use_doc_unwarping=False
        ),
        angle=page.angle,
    )
    pruned = PaddleXPrunedResult(
        model_settings=PaddleXModelSettings(
            use_doc_preprocessor=orient, use_textline_orientation=options.use_cls
        ),
        doc_preprocessor_res=preprocessed if orient else None,
        text_det_params=params,
        text_rec_score_thresh=options.min_confidence,
        rec_texts=[line.text for line in page.lines],
        rec_scores=[line.confidence for line in page.lines],
        rec_polys=polys,
        rec_boxes=[
            [min(x for x, _ in p), min(y for _, y in p), max(x for x, _ in p), max(y for _, y in p)]
            for p in polys
        ],
    )
    return PaddleXOCRResult(prunedResult=pruned)


# --- RapidOCR ---------------------------------------------------------------------------------


async def _rapidocr(caller: Caller, recognise: Recognise, form: FormData) -> Response:
    t0 = time.perf_counter()
    service = caller.service
    try:
        options = _rapidocr_options(form, service)
        upload = await _rapidocr_upload(form, service)
    finally:
        await form.close()
    if sniff_format(upload.data) == "pdf":
        raise UnsupportedFormatError(
            "the RapidOCR API reads images, not PDFs; send a PDF to /ocr", detected="pdf"
        )
    options = choose_models(service, None, [upload.data], options, caller.tenant)
    result = OCRResult.model_validate(await recognise(service, upload, options, 1, t0))
    page = result.pages[0]
    lines = {
        str(n): RapidOCRLine(
            rec_txt=line.text, dt_boxes=_corners(line.box, page), score=line.confidence
        )
        for n, line in enumerate(page.lines)
    }
    return JSONResponse(RapidOCRResponse(lines).model_dump(mode="json"))


def _rapidocr_options(form: FormData, service: Service) -> OCROptions:
    flags: dict[str, bool] = {}
    for name in RAPIDOCR_FLAGS:
        if (value := form.get(name)) is None:
            continue
        text = value.strip().lower() if isinstance(value, str) else ""
        if text not in _TRUE | _FALSE:
            raise OptionError(f"{name} must be true or false", option=name, value=text)
        flags[name] = text in _TRUE
    for name in ("use_det", "use_rec"):
        if flags.get(name) is False:
            raise OptionError(
                f"{name}=false is not served: ocrserve always detects and recognises lines",
                option=name,
                value=False,
            )
    raw = {"cls": "true" if flags["use_cls"] else "false"} if "use_cls" in flags else {}
    options, _ = parse_options(raw, service)
    return options


async def _rapidocr_upload(form: FormData, service: Service) -> Upload:
    """The image: the ``image_file`` part, else the Base64 in ``image_data`` (as RapidOCR
    takes them)."""
    part = form.get(RAPIDOCR_FILE)
    if part is not None:
        if not isinstance(part, UploadFile):
            raise InputError(f"{RAPIDOCR_FILE} must be a file part, not a text field")
        return _accepted(await read_part(part, service))
    data = form.get(RAPIDOCR_DATA)
    if not isinstance(data, str):
        raise InputError(
            f"send the image as a file part {RAPIDOCR_FILE!r}, or as Base64 in the field "
            f"{RAPIDOCR_DATA!r}"
        )
    # A '+' sent unencoded in a URL-encoded form arrives as a space; Base64 holds no space.
    return _decode_base64(data.replace(" ", "+"), RAPIDOCR_DATA, service)


# --- the OpenAPI document: these routes read their bodies themselves ----------------------------

_PADDLEX_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PaddleXRequest.model_json_schema()}},
    }
}
_RAPIDOCR_FIELDS: dict[str, Any] = {
    RAPIDOCR_DATA: {"type": "string", "description": "The image as Base64, instead of a file"},
    "use_det": {"type": "boolean", "description": "false is refused: lines are always found"},
    "use_cls": {"type": "boolean", "description": "Turn upside-down lines (`cls`)"},
    "use_rec": {"type": "boolean", "description": "false is refused: lines are always read"},
}
_RAPIDOCR_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            FORM_TYPE: {
                "schema": {
                    "type": "object",
                    "properties": {
                        RAPIDOCR_FILE: {"type": "string", "format": "binary"},
                        **_RAPIDOCR_FIELDS,
                    },
                }
            },
            URLENCODED_TYPE: {"schema": {"type": "object", "properties": _RAPIDOCR_FIELDS}},
        },
    }
}
