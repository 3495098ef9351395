"""Retries as data (:class:`RetryPolicy`) and as httpx transports that apply it, on tenacity.

Only what can be retried safely and may succeed later is retried: connection errors, timeouts,
5xx and 429. Every other answer, 4xx included, is returned at once. Every route the client
calls may be sent twice: OCR is a pure function of the upload, ``GET`` reads, and a submit
carries an ``Idempotency-Key`` that is the same on every attempt (the request is re-sent as is).

The delay before retry ``n`` (counted from 0) is "full jitter": uniform in
``[0, min(cap, base * 2**n)]``, so a fleet of clients that failed together does not come back
together. A ``Retry-After`` from the server is a floor under that delay; one longer than
``max_retry_after`` ends the retries instead (the error carries it as ``.retry_after``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import tenacity

from ocrserve.client import protocol
from ocrserve.client.telemetry import Telemetry

log = logging.getLogger("ocrserve.client")

#: Transport errors worth another attempt: the server may answer next time.
TRANSIENT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
_MAX_EXPONENT = 62  # 2**n past this only overflows; the cap has long taken over


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How failed attempts are retried. ``RetryPolicy(retries=0)`` turns retries off.

    >>> Client("http://ocr:8000", retry=RetryPolicy(retries=5, cap=30.0))  # doctest: +SKIP
    """

    #: Retries after the first attempt (so at most ``retries + 1`` requests per call).
    retries: int = 3
    #: Seconds: the bound of the first delay; each retry doubles it.
    base: float = 1.0
    #: Seconds: no delay bound goes above this.
    cap: float = 8.0
    #: Seconds: a ``Retry-After`` longer than this is not waited for; the call fails instead.
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, not {self.retries}")
        if self.base < 0 or self.cap < 0 or self.max_retry_after < 0:
            raise ValueError("base, cap and max_retry_after are seconds, >= 0")

    def bound(self, retry: int) -> float:
        """The upper bound of the delay before retry ``retry`` (0 for the first retry)."""
        return min(self.cap, self.base * 2.0 ** min(retry, _MAX_EXPONENT))

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """A delay before retry ``retry``: uniform in ``[0, bound(retry)]`` (full jitter)."""
        bound = self.bound(retry)
        return rng.uniform(0.0, bound) if rng is not None else random.uniform(0.0, bound)


DEFAULT_RETRY = RetryPolicy()


def is_transient(exc: BaseException | None) -> bool:
    return isinstance(exc, TRANSIENT_ERRORS)


def is_retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


class _Schedule:
    """The retry decisions for one request, as tenacity's stop/wait/retry callbacks."""

    def __init__(
        self,
        request: httpx.Request,
        policy: RetryPolicy,
        telemetry: Telemetry,
        rng: random.Random | None,
    ) -> None:
        self.request = request
        self.server = protocol.origin(request.url)
        self.policy = policy
        self.telemetry = telemetry
        self.rng = rng
        self.attempts = 0

    def started(self) -> None:
        self.attempts += 1
        self.request.extensions[protocol.ATTEMPTS_EXTENSION] = self.attempts

    def retry(self, state: tenacity.RetryCallState) -> bool:
        outcome = state.outcome
        if outcome is None:
            return False
        if outcome.failed:
            return is_transient(outcome.exception())
        response: httpx.Response = outcome.result()
        return is_retryable_status(response.status_code)

    def stop(self, state: tenacity.RetryCallState) -> bool:
        if state.attempt_number > self.policy.retries:
            return True
        after = self._retry_after(state)
        return after is not None and after > self.policy.max_retry_after

    def wait(self, state: tenacity.RetryCallState) -> float:
        delay = self.policy.backoff(state.attempt_number - 1, self.rng)
        after = self._retry_after(state)
        return max(delay, after) if after is not None else delay

    def before_sleep(self, state: tenacity.RetryCallState) -> None:
        reason, label = self._reason(state)
        delay = state.upcoming_sleep
        self.telemetry.retry(self.server, label)
        log.info(
            "retrying %s %s in %.2f s (retry %d of %d) after %s",
            self.request.method,
            self.request.url,
            delay,
            state.attempt_number,
            self.policy.retries,
            reason,
            extra={"delay": round(delay, 3), "reason": reason, "retry": state.attempt_number},
        )

    def give_up(self, state: tenacity.RetryCallState) -> httpx.Response:
        """Out of retries: the last answer goes back to the caller, or its error is raised."""
        assert state.outcome is not None
        response: httpx.Response = state.outcome.result()
        return response

    def _retry_after(self, state: tenacity.RetryCallState) -> float | None:
        outcome = state.outcome
        if outcome is None or outcome.failed:
            return None
        response: httpx.Response = outcome.result()
        return protocol.retry_after(response.headers)

    def _reason(self, state: tenacity.RetryCallState) -> tuple[str, str]:
        """A readable reason for the log, and a short label for the metric."""
        assert state.outcome is not None
        if state.outcome.failed:
            exc = state.outcome.exception()
            name = type(exc).__name__
            return (f"{name}: {exc}" if str(exc) else name), name
        response: httpx.Response = state.outcome.result()
        code, _ = protocol.error_code(response)
        return f"{response.status_code} [{code}]", str(response.status_code)


class RetryTransport(httpx.BaseTransport):
    """Wraps a transport; sends each request again by a :class:`RetryPolicy`.

    >>> transport = RetryTransport(httpx.HTTPTransport(), RetryPolicy(retries=2))
    >>> client = httpx.Client(transport=transport)  # doctest: +SKIP
    """

    def __init__(
        self,
        inner: httpx.BaseTransport,
        policy: RetryPolicy = DEFAULT_RETRY,
        *,
        sleep: Callable[[float], None] = time.sleep,
        telemetry: Telemetry | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._inner = inner
        self._policy = policy
        self._sleep = sleep
        self._telemetry = telemetry or Telemetry()
        self._rng = rng

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()  # every attempt sends the same bytes again
        schedule = _Schedule(request, self._policy, self._telemetry, self._rng)

        def attempt() -> httpx.Response:
            schedule.started()
            response = self._inner.handle_request(request)
            if is_retryable_status(response.status_code):
                response.read()  # may be dropped for a retry: free the connection now
            return response

        # A tenacity object per request: its iteration state is not safe to share.
        retrying = tenacity.Retrying(
            sleep=self._sleep,
            stop=schedule.stop,
            wait=schedule.wait,
            retry=schedule.retry,
            before_sleep=schedule.before_sleep,
            retry_error_callback=schedule.give_up,
        )
        return retrying(attempt)

    def close(self) -> None:
        self._inner.close()


class AsyncRetryTransport(httpx.AsyncBaseTransport):
    """The asyncio twin of :class:`RetryTransport`.

    >>> inner = httpx.AsyncHTTPTransport()
    >>> client = httpx.AsyncClient(transport=AsyncRetryTransport(inner))  # doctest: +SKIP
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        policy: RetryPolicy = DEFAULT_RETRY,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        telemetry: Telemetry | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._inner = inner
        self._policy = policy
        self._sleep = sleep
        self._telemetry = telemetry or Telemetry()
        self._rng = rng

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        schedule = _Schedule(request, self._policy, self._telemetry, self._rng)

        async def attempt() -> httpx.Response:
            schedule.started()
            response = await self._inner.handle_async_request(request)
            if is_retryable_status(response.status_code):
                await response.aread()
            return response

        retrying = tenacity.AsyncRetrying(
            sleep=self._sleep,
            stop=schedule.stop,
            wait=schedule.wait,
            retry=schedule.retry,
            before_sleep=schedule.before_sleep,
            retry_error_callback=schedule.give_up,
        )
        response: httpx.Response = await retrying(attempt)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
