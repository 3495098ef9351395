"""The synchronous client."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import httpx

from ocrserve.client import protocol
from ocrserve.client.base import BaseClient
from ocrserve.client.circuit import DEFAULT_BREAKER, BreakerPolicy, GuardTransport
from ocrserve.client.protocol import DEFAULT_TIMEOUT, DEFAULT_URL, Source
from ocrserve.client.ratelimit import RateLimit
from ocrserve.client.results import FileError, OCRResult, Task
from ocrserve.client.retry import DEFAULT_RETRY, RetryPolicy, RetryTransport

if TYPE_CHECKING:  # metrics are optional: prometheus_client is needed only to pass one
    from prometheus_client import CollectorRegistry


class Client(BaseClient):
    """A client of one ocrserve server: retries, a circuit breaker, typed results. Thread-safe.

    >>> with Client("http://localhost:8000") as client:          # doctest: +SKIP
    ...     print(client.ocr("invoice.pdf").text)
    ...     task = client.submit(image_url="https://example.com/scan.pdf")
    ...     print(client.wait(task.task_id, timeout=120).result.text)

    ``transport`` is the innermost httpx transport (default ``httpx.HTTPTransport()``); the
    retries and the breaker wrap it. ``sleep``, ``clock`` and ``rng`` are for tests.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        breaker: BreakerPolicy | None = DEFAULT_BREAKER,
        rate_limit: RateLimit | None = None,
        registry: CollectorRegistry | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key=api_key,
            retry=retry,
            breaker=breaker,
            rate_limit=rate_limit,
            registry=registry,
            clock=clock,
        )
        self._sleep = sleep
        guard = GuardTransport(
            transport or httpx.HTTPTransport(),
            breakers=self._breakers,
            bucket=self._bucket,
            sleep=sleep,
            telemetry=self._telemetry,
        )
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=self._headers,
            timeout=timeout,
            transport=RetryTransport(guard, retry, sleep=sleep, telemetry=self._telemetry, rng=rng),
        )

    def ocr(
        self,
        file: Source,
        *,
        filename: str | None = None,
        lang: str | None = None,
        precision: str | None = None,
        cls: bool | None = None,
        max_pages: int | None = None,
        pdf_text: str | None = None,
        orientation: str | None = None,
    ) -> OCRResult:
        """Read one image or document: a path, its bytes, or an open binary file."""
        name, data = protocol.read_source(file, filename)
        form = protocol.ocr_form(
            lang=lang,
            precision=precision,
            cls=cls,
            max_pages=max_pages,
            pdf_text=pdf_text,
            orientation=orientation,
        )
        response = self._send(
            "POST", protocol.OCR_PATH, files={protocol.FILE_FIELD: (name, data)}, data=form
        )
        return protocol.parse(response, OCRResult.from_json)

    def batch(
        self,
        files: Iterable[Source],
        *,
        lang: str | None = None,
        precision: str | None = None,
        cls: bool | None = None,
        max_pages: int | None = None,
        pdf_text: str | None = None,
        orientation: str | None = None,
    ) -> list[OCRResult | FileError]:
        """Read many files in one request: one item per file, in order, a result or an error."""
        uploads = [protocol.read_source(f) for f in files]
        if not uploads:
            return []
        form = protocol.ocr_form(
            lang=lang,
            precision=precision,
            cls=cls,
            max_pages=max_pages,
            pdf_text=pdf_text,
            orientation=orientation,
        )
        response = self._send(
            "POST",
            protocol.BATCH_PATH,
            files=[(protocol.BATCH_FIELD, upload) for upload in uploads],
            data=form,
        )
        return protocol.parse(response, protocol.batch_items(len(uploads)))

    def submit(
        self,
        *,
        image_url: str | None = None,
        file: Source | None = None,
        callback_url: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        lang: str | None = None,
        idempotency_key: str | None = None,
    ) -> Task:
        """Queue an async task for a URL or a file; returns it as queued.

        Every attempt of this call carries the same ``Idempotency-Key`` (a new one per call
        unless given), so a retried submit never makes a second task.
        """
        body = protocol.submit_body(
            image_url=image_url,
            data=protocol.read_source(file)[1] if file is not None else None,
            callback_url=callback_url,
            metadata=metadata,
            lang=lang,
        )
        key = idempotency_key or protocol.new_idempotency_key()
        response = self._send(
            "POST",
            protocol.SUBMIT_PATH,
            json=body,
            headers={protocol.IDEMPOTENCY_KEY_HEADER: key},
        )
        return protocol.parse(response, Task.from_json)

    def get_task(self, task_id: str) -> Task:
        response = self._send("GET", protocol.task_path(task_id))
        return protocol.parse(response, Task.from_json)

    def wait(
        self, task_id: str, timeout: float | None = 300.0, *, poll_interval: float = 1.0
    ) -> Task:
        """Poll until the task is finished and return it; ``Retry-After`` sets the pace.

        Raises :class:`TaskFailedError` if it ends ``failed`` or ``cancelled``, and
        :class:`WaitTimeoutError` after ``timeout`` seconds (None: wait as long as it takes).
        """
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            response = self._send("GET", protocol.task_path(task_id))
            task = protocol.parse(response, Task.from_json)
            delay = protocol.next_poll(
                task,
                response,
                remaining=None if deadline is None else deadline - self._clock(),
                poll_interval=poll_interval,
                timeout=timeout,
            )
            if delay is None:
                return task
            self._sleep(delay)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.RequestError as e:
            raise protocol.transport_error(e) from e
        if not response.is_success:
            raise protocol.http_error(response)
        return response
