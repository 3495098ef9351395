"""Circuit breaking per server, and the transport that guards each attempt with it.

A breaker is closed while the server answers. A failure is an attempt that got no answer
(connection error, timeout) or a 5xx; any other answer, 4xx and 429 included, is a success:
the server is up. After ``failures`` failures in a row (or, when ``failure_ratio`` is set, that
share of failures among the last ``window`` attempts) it opens: calls fail fast with
:class:`CircuitOpenError` and nothing is sent. After ``cooldown`` seconds it is half-open: one
probe goes through while every other call still fails fast; the probe's success closes it,
its failure opens it again for another cool-down::

    closed ──(failures)──> open ──(cooldown)──> half_open ──(probe ok)──> closed
                            ^                       │
                            └─────(probe failed)────┘
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

import httpx

from ocrserve.client import protocol
from ocrserve.client.errors import CircuitOpenError
from ocrserve.client.ratelimit import TokenBucket
from ocrserve.client.retry import is_transient
from ocrserve.client.telemetry import Telemetry


class CircuitState(StrEnum):
    closed = "closed"
    open = "open"
    half_open = "half_open"


@dataclass(frozen=True, kw_only=True)
class BreakerPolicy:
    """When a server's circuit opens and for how long. ``Client(..., breaker=None)``: no breaker.

    >>> policy = BreakerPolicy(failures=3, cooldown=10.0)
    >>> Client("http://ocr:8000", breaker=policy)  # doctest: +SKIP
    """

    #: Failed attempts in a row that open the circuit.
    failures: int = 5
    #: Seconds the circuit stays open before one probe is let through.
    cooldown: float = 30.0
    #: Also open when this share (0-1] of the last ``window`` attempts failed (None: off).
    failure_ratio: float | None = None
    window: int = 20
    #: The ratio is judged only once the window holds this many attempts.
    min_calls: int = 10

    def __post_init__(self) -> None:
        if self.failures < 1 or self.cooldown < 0:
            raise ValueError("failures must be >= 1 and cooldown >= 0")
        if self.failure_ratio is not None and not 0 < self.failure_ratio <= 1:
            raise ValueError(f"failure_ratio must be in (0, 1], not {self.failure_ratio}")
        if not 1 <= self.min_calls <= self.window:
            raise ValueError("min_calls must be between 1 and window")


DEFAULT_BREAKER = BreakerPolicy()


class CircuitBreaker:
    """The breaker of one server. Thread-safe; it never awaits, so it is safe in asyncio too.

    >>> breaker = CircuitBreaker("http://ocr:8000", BreakerPolicy(failures=2))
    >>> probe = breaker.acquire()        # raises CircuitOpenError while open
    >>> breaker.failure(probe=probe)     # or breaker.success(probe=probe)
    """

    def __init__(
        self,
        server: str,
        policy: BreakerPolicy = DEFAULT_BREAKER,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, CircuitState], None] | None = None,
    ) -> None:
        self.server = server
        self._policy = policy
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = CircuitState.closed
        self._consecutive = 0
        self._window: deque[bool] = deque(maxlen=policy.window)
        self._opened_at = 0.0
        self._why = ""
        self._probing = False

    @property
    def state(self) -> CircuitState:
        return self._state

    def acquire(self) -> bool:
        """Let an attempt through, or raise :class:`CircuitOpenError`.

        Returns True when this attempt is the half-open probe; pass that back to
        :meth:`success`, :meth:`failure` or :meth:`release`.
        """
        with self._lock:
            if self._state is CircuitState.open:
                wait = self._opened_at + self._policy.cooldown - self._clock()
                if wait > 0:
                    raise CircuitOpenError(
                        f"circuit open for {self.server} ({self._why}); "
                        f"the next probe goes in {wait:.1f} s",
                        server=self.server,
                        retry_in=wait,
                    )
                self._become(CircuitState.half_open)
            if self._state is CircuitState.half_open:
                if self._probing:
                    raise CircuitOpenError(
                        f"circuit half-open for {self.server}: waiting for the probe's answer",
                        server=self.server,
                        retry_in=0.0,
                    )
                self._probing = True
                return True
            return False

    def success(self, *, probe: bool) -> None:
        with self._lock:
            if self._state is CircuitState.half_open:
                if probe:
                    self._probing = False
                    self._consecutive = 0
                    self._window.clear()
                    self._become(CircuitState.closed)
            elif self._state is CircuitState.closed:
                self._consecutive = 0
                self._window.append(True)
            # open: an answer to a request sent before it opened changes nothing

    def failure(self, *, probe: bool) -> None:
        with self._lock:
            if self._state is CircuitState.half_open:
                if probe:
                    self._probing = False
                    self._trip("the probe failed")
            elif self._state is CircuitState.closed:
                self._consecutive += 1
                self._window.append(False)
                self._trip_if_due()

    def release(self, *, probe: bool) -> None:
        """The attempt ended without a verdict (cancelled, or an error on our side)."""
        with self._lock:
            if probe and self._state is CircuitState.half_open:
                self._probing = False

    def _trip_if_due(self) -> None:
        p = self._policy
        if self._consecutive >= p.failures:
            self._trip(f"{self._consecutive} failures in a row")
            return
        if p.failure_ratio is not None and len(self._window) >= p.min_calls:
            failed = self._window.count(False)
            if failed / len(self._window) >= p.failure_ratio:
                self._trip(f"{failed} of the last {len(self._window)} attempts failed")

    def _trip(self, why: str) -> None:
        self._why = why
        self._opened_at = self._clock()
        self._become(CircuitState.open)

    def _become(self, state: CircuitState) -> None:
        self._state = state
        if self._on_change is not None:
            self._on_change(self.server, state)


class Breakers:
    """One :class:`CircuitBreaker` per server, made on first use."""

    def __init__(
        self,
        policy: BreakerPolicy = DEFAULT_BREAKER,
        *,
        clock: Callable[[], float] = time.monotonic,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._telemetry = telemetry or Telemetry()
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, server: str) -> CircuitBreaker:
        with self._lock:
            breaker = self._breakers.get(server)
            if breaker is None:
                breaker = self._breakers[server] = CircuitBreaker(
                    server, self._policy, clock=self._clock, on_change=self._telemetry.transition
                )
            return breaker

    def state_of(self, server: str) -> CircuitState:
        with self._lock:
            breaker = self._breakers.get(server)
        return breaker.state if breaker is not None else CircuitState.closed


class _Guard:
    """What the sync and async transports share: admission and verdicts."""

    def __init__(
        self, breakers: Breakers | None, bucket: TokenBucket | None, telemetry: Telemetry | None
    ) -> None:
        self.breakers = breakers
        self.bucket = bucket
        self.telemetry = telemetry or Telemetry()

    def admit(self, request: httpx.Request) -> tuple[str, CircuitBreaker | None, bool]:
        server = protocol.origin(request.url)
        if self.breakers is None:
            return server, None, False
        breaker = self.breakers.get(server)
        try:
            return server, breaker, breaker.acquire()
        except CircuitOpenError:
            self.telemetry.rejected(server)
            raise

    def pace(self) -> float:
        return self.bucket.reserve() if self.bucket is not None else 0.0

    @staticmethod
    def answered(breaker: CircuitBreaker | None, response: httpx.Response, probe: bool) -> None:
        if breaker is None:
            return
        if response.status_code >= 500:
            breaker.failure(probe=probe)
        else:
            breaker.success(probe=probe)

    @staticmethod
    def raised(breaker: CircuitBreaker | None, exc: BaseException, probe: bool) -> None:
        if breaker is None:
            return
        if is_transient(exc):
            breaker.failure(probe=probe)
        else:
            breaker.release(probe=probe)


class GuardTransport(httpx.BaseTransport):
    """In front of each attempt: the server's circuit breaker, then the token bucket.

    Sits under :class:`~ocrserve.client.retry.RetryTransport`, so every retry is judged too.

    >>> guard = GuardTransport(httpx.HTTPTransport(), breakers=Breakers(BreakerPolicy()))
    >>> client = httpx.Client(transport=RetryTransport(guard))  # doctest: +SKIP
    """

    def __init__(
        self,
        inner: httpx.BaseTransport,
        *,
        breakers: Breakers | None = None,
        bucket: TokenBucket | None = None,
        sleep: Callable[[float], None] = time.sleep,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._inner = inner
        self._guard = _Guard(breakers, bucket, telemetry)
        self._sleep = sleep

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        server, breaker, probe = self._guard.admit(request)
        try:
            delay = self._guard.pace()
            if delay > 0:
                self._sleep(delay)
            self._guard.telemetry.attempt(server)
            response = self._inner.handle_request(request)
        except BaseException as exc:
            self._guard.raised(breaker, exc, probe)
            raise
        self._guard.answered(breaker, response, probe)
        return response

    def close(self) -> None:
        self._inner.close()


class AsyncGuardTransport(httpx.AsyncBaseTransport):
    """The asyncio twin of :class:`GuardTransport`.

    >>> guard = AsyncGuardTransport(httpx.AsyncHTTPTransport(), breakers=Breakers())
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        *,
        breakers: Breakers | None = None,
        bucket: TokenBucket | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._inner = inner
        self._guard = _Guard(breakers, bucket, telemetry)
        self._sleep = sleep

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        server, breaker, probe = self._guard.admit(request)
        try:
            delay = self._guard.pace()
            if delay > 0:
                await self._sleep(delay)
            self._guard.telemetry.attempt(server)
            response = await self._inner.handle_async_request(request)
        except BaseException as exc:
            self._guard.raised(breaker, exc, probe)
            raise
        self._guard.answered(breaker, response, probe)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
