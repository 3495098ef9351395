"""Every error the client SDK raises, under the package's :class:`~ocrserve.errors.OCRServeError`.

Each error says what a caller needs to act on it. ``code`` is the server's error code where the
server gave one (``unsupported_format``, ``queue_full``, ...), else the class's own::

    OCRServeError                      (ocrserve.errors)
    └── ClientError                    client_error        any failure of a client call
        ├── OCRHTTPError               <server's code>     .status .code .message .url
        │   │                                              .request_id .retry_after .attempts
        │   ├── OCRClientError         a 4xx: the request must change (never retried, but 429)
        │   └── OCRServerError         a 5xx after the retries, or a response we cannot read
        ├── OCRConnectionError         connection_error    .url .attempts (refused, reset, DNS)
        ├── OCRTimeoutError            timeout             .url .attempts
        ├── CircuitOpenError           circuit_open        .server .retry_in (failed fast)
        ├── TaskFailedError            <task's code>       .task (ended failed or cancelled)
        └── WaitTimeoutError           wait_timeout        .task_id .status .timeout

A local file that cannot be read raises the package's own
:class:`~ocrserve.errors.UnreadableFileError` before any request is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ocrserve.errors import OCRServeError

if TYPE_CHECKING:
    from ocrserve.client.results import Task


class ClientError(OCRServeError):
    """Base class of every error a client call raises."""

    code = "client_error"


class OCRHTTPError(ClientError):
    """The server answered with an error status; ``code`` and ``message`` are the server's."""

    code = "http_error"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str,
        url: str,
        request_id: str | None = None,
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.url = url
        self.request_id = request_id
        self.retry_after = retry_after
        self.attempts = attempts

    def __str__(self) -> str:
        return f"{self.status} [{self.code}] {self.message}"


class OCRClientError(OCRHTTPError):
    """A 4xx: the request itself is wrong (bad file, bad option, no API key, unknown task)."""


class OCRServerError(OCRHTTPError):
    """A 5xx after every retry, or a response the client cannot read."""


class OCRConnectionError(ClientError):
    """No answer: connection refused or reset, or the name did not resolve, after the retries."""

    code = "connection_error"

    def __init__(self, message: str, *, url: str, attempts: int = 1) -> None:
        super().__init__(message)
        self.url = url
        self.attempts = attempts


class OCRTimeoutError(ClientError):
    """Connecting, sending or reading timed out on every attempt."""

    code = "timeout"

    def __init__(self, message: str, *, url: str, attempts: int = 1) -> None:
        super().__init__(message)
        self.url = url
        self.attempts = attempts


class CircuitOpenError(ClientError):
    """The circuit breaker of ``server`` is open: the call failed fast without being sent."""

    code = "circuit_open"

    def __init__(self, message: str, *, server: str, retry_in: float) -> None:
        super().__init__(message)
        self.server = server
        self.retry_in = retry_in


class TaskFailedError(ClientError):
    """An awaited task ended ``failed`` or ``cancelled``; ``task`` is its final record."""

    code = "task_failed"

    def __init__(self, task: Task) -> None:
        error = task.error
        code = error.code if error is not None else str(task.status)
        detail = error.message if error is not None else f"the task ended {task.status}"
        super().__init__(f"task {task.task_id} {task.status}: {detail}")
        self.task = task
        self.task_id = task.task_id
        self.status = task.status
        self.code = code


class WaitTimeoutError(ClientError):
    """The task was still not finished when ``wait`` gave up; it may still finish later."""

    code = "wait_timeout"

    def __init__(self, *, task_id: str, status: str, timeout: float) -> None:
        super().__init__(f"task {task_id} still {status} after waiting {timeout:g} s")
        self.task_id = task_id
        self.status = status
        self.timeout = timeout
