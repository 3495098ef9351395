"""The server's HTTP API as the client sees it: paths, headers, request bodies, and the reading
of answers and errors. No I/O beyond reading a local file: shared by Client and AsyncClient."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx

from ocrserve.client.errors import (
    ClientError,
    OCRClientError,
    OCRConnectionError,
    OCRHTTPError,
    OCRServerError,
    OCRTimeoutError,
    TaskFailedError,
    WaitTimeoutError,
)
from ocrserve.client.results import SUCCEEDED, FileError, OCRResult, Task, batch_item
from ocrserve.errors import UnreadableFileError

DEFAULT_URL = "http://127.0.0.1:8000"
#: Reading a long PDF takes a while; a server that is down should be noticed fast.
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=5.0)

OCR_PATH = "/ocr"
BATCH_PATH = "/ocr/batch"
SUBMIT_PATH = "/ocr/async"
TASK_PATH = "/task/{task_id}"
FILE_FIELD = "image"
BATCH_FIELD = "images"

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
RETRY_AFTER_HEADER = "Retry-After"
REQUEST_ID_HEADER = "X-Request-ID"
AUTHORIZATION_HEADER = "Authorization"
USER_AGENT_HEADER = "User-Agent"
#: Where the retry transport notes, on the request, how many attempts it made.
ATTEMPTS_EXTENSION = "ocrserve.attempts"

#: What ``ocr`` and ``batch`` take: a path, the bytes themselves, or an open binary file.
Source = str | os.PathLike[str] | bytes | IO[bytes]

T = TypeVar("T")


def default_headers(api_key: str | None, version: str) -> dict[str, str]:
    headers = {USER_AGENT_HEADER: f"ocrserve-client/{version}"}
    if api_key:
        headers[AUTHORIZATION_HEADER] = f"Bearer {api_key}"
    return headers


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


def origin(url: httpx.URL) -> str:
    """The server a URL belongs to, ``scheme://host:port``: what a circuit breaker guards."""
    return f"{url.scheme}://{url.netloc.decode('ascii')}"


def task_path(task_id: str) -> str:
    if not task_id or "/" in task_id:
        raise ValueError(f"not a task id: {task_id!r}")
    return TASK_PATH.format(task_id=task_id)


# --- requests ---------------------------------------------------------------------------------


def read_source(source: Source, filename: str | None = None) -> tuple[str, bytes]:
    """``(filename, bytes)`` of one input; a path that cannot be read fails here, before sending."""
    if isinstance(source, bytes | bytearray | memoryview):
        return filename or "upload", bytes(source)
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        try:
            return filename or path.name, path.read_bytes()
        except OSError as e:
            raise UnreadableFileError(
                f"cannot read {path}: {e.strerror or e}", path=str(path)
            ) from e
    if hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, bytes):
            raise TypeError("open the file in binary mode ('rb')")
        name = getattr(source, "name", None)
        return filename or (Path(name).name if isinstance(name, str) else "upload"), data
    raise TypeError(f"expected a path, bytes or a binary file, not {type(source).__name__}")


def ocr_form(
    *,
    lang: str | None,
    precision: str | None,
    cls: bool | None,
    max_pages: int | None,
    pdf_text: str | None = None,
    orientation: str | None = None,
) -> dict[str, str]:
    """The options of ``/ocr`` and ``/ocr/batch`` as form fields (only those given)."""
    form: dict[str, str] = {}
    if pdf_text is not None:
        form["pdf_text"] = pdf_text
    if orientation is not None:
        form["orientation"] = orientation
    if lang is not None:
        form["lang"] = lang
    if precision is not None:
        form["precision"] = precision
    if cls is not None:
        form["cls"] = "true" if cls else "false"
    if max_pages is not None:
        form["max_pages"] = str(max_pages)
    return form


def submit_body(
    *,
    image_url: str | None,
    data: bytes | None,
    callback_url: str | None,
    metadata: Mapping[str, Any] | None,
    lang: str | None,
) -> dict[str, Any]:
    """The JSON body of ``POST /ocr/async``: exactly one of a URL or the file's bytes."""
    if (image_url is None) == (data is None):
        raise ValueError("submit needs exactly one of image_url= or file=")
    body: dict[str, Any] = (
        {"image_url": image_url}
        if image_url is not None
        else {"image_base64": base64.b64encode(data or b"").decode("ascii")}
    )
    if callback_url is not None:
        body["callback_url"] = callback_url
    if metadata is not None:
        body["metadata"] = dict(metadata)
    if lang is not None:
        body["lang"] = lang
    return body


# --- answers ----------------------------------------------------------------------------------


def retry_after(headers: httpx.Headers, now: datetime | None = None) -> float | None:
    """Seconds the server asks us to wait (``Retry-After``: seconds or an HTTP date), if any."""
    value = headers.get(RETRY_AFTER_HEADER)
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def attempts_of(request: httpx.Request | None) -> int:
    if request is None:
        return 1
    return int(request.extensions.get(ATTEMPTS_EXTENSION, 1))


def error_code(response: httpx.Response) -> tuple[str, str]:
    """The server's ``{"error": {"code", "message"}}``, or a stand-in for a body without one."""
    try:
        error = response.json()["error"]
        return str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()[:200]
        return f"http_{response.status_code}", text or response.reason_phrase


def http_error(response: httpx.Response) -> OCRHTTPError:
    code, message = error_code(response)
    cls = OCRServerError if response.status_code >= 500 else OCRClientError
    return cls(
        message,
        status=response.status_code,
        code=code,
        url=str(response.request.url),
        request_id=response.headers.get(REQUEST_ID_HEADER),
        retry_after=retry_after(response.headers),
        attempts=attempts_of(response.request),
    )


def transport_error(exc: httpx.RequestError) -> ClientError:
    try:
        request: httpx.Request | None = exc.request
    except RuntimeError:  # httpx sets it on every error raised while sending; be safe anyway
        request = None
    url = str(request.url) if request is not None else "?"
    attempts = attempts_of(request)
    tries = f"after {attempts} attempts" if attempts > 1 else "on the only attempt"
    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return OCRTimeoutError(f"{url} timed out {tries} ({reason})", url=url, attempts=attempts)
    return OCRConnectionError(
        f"no answer from {url} {tries} ({reason})", url=url, attempts=attempts
    )


def parse(response: httpx.Response, build: Callable[[Any], T]) -> T:
    """Build a result from a 2xx answer; an answer of the wrong shape is the server's fault."""
    try:
        return build(response.json())
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise OCRServerError(
            f"cannot read the answer to {response.request.method} {response.request.url}: "
            f"{type(e).__name__}: {e}",
            status=response.status_code,
            code="invalid_response",
            url=str(response.request.url),
            request_id=response.headers.get(REQUEST_ID_HEADER),
        ) from e


def batch_items(expected: int) -> Callable[[Any], list[OCRResult | FileError]]:
    def build(data: Any) -> list[OCRResult | FileError]:
        if not isinstance(data, list):
            raise TypeError(f"expected a JSON list, got {type(data).__name__}")
        if len(data) != expected:
            raise ValueError(f"sent {expected} files, got {len(data)} results")
        return [batch_item(item) for item in data]

    return build


def next_poll(
    task: Task,
    response: httpx.Response,
    *,
    remaining: float | None,
    poll_interval: float,
    timeout: float | None,
) -> float | None:
    """What ``wait`` does after a poll: ``None`` when the task is done (raising
    :class:`TaskFailedError` if it failed), else how long to sleep: the server's
    ``Retry-After`` if it sent one, else ``poll_interval``, never past the deadline."""
    if task.finished:
        if task.status not in SUCCEEDED:
            raise TaskFailedError(task)
        return None
    if remaining is not None and remaining <= 0:
        raise WaitTimeoutError(task_id=task.task_id, status=task.status, timeout=timeout or 0.0)
    after = retry_after(response.headers)
    delay = after if after is not None else poll_interval
    return delay if remaining is None else min(delay, remaining)
