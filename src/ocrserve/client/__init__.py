"""The ocrserve client SDK: typed calls to a server, made safe over an unreliable network.

>>> from ocrserve.client import Client, OCRClientError
>>> with Client("http://localhost:8000", api_key="...") as client:   # doctest: +SKIP
...     print(client.ocr("invoice.pdf", lang="en").text)
...     for item in client.batch(["a.jpg", "b.pdf"]):
...         print(item.filename, getattr(item, "text", None) or item.message)

Each call is an httpx request through two transports around the real one::

    Client ──> RetryTransport ──> GuardTransport ──> httpx.HTTPTransport (or yours)
               (RetryPolicy,      (circuit breaker per server, optional token bucket,
                on tenacity)       counts attempts)

Modules: ``retry`` (what is retried and how long to wait), ``circuit`` (the breaker and the
guard), ``ratelimit`` (the token bucket), ``protocol`` (the server's paths, headers and bodies),
``results`` (typed results), ``errors`` (the exception tree), ``telemetry`` (counters and
Prometheus metrics), ``sync``/``aio`` (the two clients), ``cli`` (``ocrserve client ...``).
"""

from ocrserve.client.aio import AsyncClient
from ocrserve.client.circuit import BreakerPolicy, CircuitBreaker, CircuitState
from ocrserve.client.errors import (
    CircuitOpenError,
    ClientError,
    OCRClientError,
    OCRConnectionError,
    OCRHTTPError,
    OCRServerError,
    OCRTimeoutError,
    TaskFailedError,
    WaitTimeoutError,
)
from ocrserve.client.ratelimit import RateLimit, TokenBucket
from ocrserve.client.results import (
    ErrorInfo,
    FileError,
    OCRLine,
    OCRPage,
    OCRResult,
    OCRWord,
    Task,
    TaskProgress,
    TaskStatus,
)
from ocrserve.client.retry import RetryPolicy
from ocrserve.client.sync import Client
from ocrserve.client.telemetry import ClientStats

__all__ = [
    "AsyncClient",
    "BreakerPolicy",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "Client",
    "ClientError",
    "ClientStats",
    "ErrorInfo",
    "FileError",
    "OCRClientError",
    "OCRConnectionError",
    "OCRHTTPError",
    "OCRLine",
    "OCRPage",
    "OCRResult",
    "OCRServerError",
    "OCRTimeoutError",
    "OCRWord",
    "RateLimit",
    "RetryPolicy",
    "Task",
    "TaskFailedError",
    "TaskProgress",
    "TaskStatus",
    "TokenBucket",
    "WaitTimeoutError",
]
