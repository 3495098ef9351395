"""Every error the API returns, mapped to its HTTP status in this one place.

The body is always ``{"error": {"code", "message"}}``; limits add ``limit`` and ``value``.
"""

from __future__ import annotations

import logging
import math
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ocrserve import errors as e

log = logging.getLogger(__name__)

#: Most specific class first: the first match wins.
STATUS: tuple[tuple[type[e.OCRServeError], int], ...] = (
    (e.UnsupportedFormatError, 415),
    (e.UnsupportedMediaTypeError, 415),
    (e.NotAcceptableError, 406),
    (e.LimitExceededError, 413),
    (e.CorruptFileError, 422),
    (e.URLNotAllowedError, 422),
    (e.URLFetchError, 422),
    (e.InputError, 422),
    (e.OptionError, 422),
    (e.QueueFullError, 503),
    (e.StorageUnavailableError, 503),
    (e.DeadlineExceededError, 504),
    (e.RateLimitedError, 429),
    (e.AuthError, 401),
    (e.NotImplementedInProfileError, 501),
    (e.ModelError, 500),
    (e.EngineError, 500),
)


def status_of(exc: e.OCRServeError) -> int:
    return next((status for cls, status in STATUS if isinstance(exc, cls)), 500)


def error_body(exc: e.OCRServeError) -> dict[str, object]:
    body: dict[str, object] = {"code": exc.code, "message": exc.message}
    if isinstance(exc, e.LimitExceededError):
        body["limit"], body["value"] = exc.limit, exc.value
    if isinstance(exc, e.OptionError):
        body["option"] = exc.option
        if exc.allowed:  # e.g. the languages installed, every engine's
            body["allowed"] = list(exc.allowed)
    return {"error": body}


def error_headers(exc: e.OCRServeError) -> dict[str, str]:
    """What an error's answer says in headers, whatever shape its body has: when to retry,
    how to authenticate."""
    headers = {}
    if isinstance(exc, e.QueueFullError | e.RateLimitedError | e.StorageUnavailableError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, e.AuthError):
        headers["WWW-Authenticate"] = "Bearer"
    return headers


def error_response(exc: e.OCRServeError) -> JSONResponse:
    return JSONResponse(error_body(exc), status_code=status_of(exc), headers=error_headers(exc))


def _allowed(request: Request, served: str) -> str:
    """A 405's ``Allow``: every method the OpenAPI document has for the path. (Starlette names
    only the first matching route's; a path served by two, as ``GET`` and ``DELETE`` on
    ``/task/{task_id}``, lost one.)"""
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        parts = re.split(r"(\{[^}/]+\})", template)
        pattern = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
        if re.fullmatch(pattern, request.url.path):
            methods.update(m.upper() for m in operations)
    return ", ".join(sorted(methods)) if methods else served


def install(app: FastAPI) -> None:
    @app.exception_handler(e.OCRServeError)
    async def ocrserve_error(_: Request, exc: e.OCRServeError) -> JSONResponse:
        if status_of(exc) >= 500:
            log.error("request failed: %s", exc, exc_info=exc)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request"
        return JSONResponse({"error": {"code": "invalid_request", "message": message}}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed(request, headers.get("Allow", ""))
        return JSONResponse(
            {"error": {"code": code, "message": str(exc.detail)}},
            status_code=exc.status_code,
            headers=headers,
        )

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", exc_info=exc)
        return JSONResponse(
            {"error": {"code": "internal_error", "message": "internal server error"}}, 500
        )
