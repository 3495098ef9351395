"""A client-side token bucket: at most ``rate`` requests a second, ``burst`` at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class RateLimit:
    """Client-side pacing, so a client stays under the server's own rate limit.

    >>> Client("http://ocr:8000", rate_limit=RateLimit(rate=5, burst=10))  # doctest: +SKIP
    """

    #: Requests per second, on average.
    rate: float
    #: Requests that may go at once after a quiet spell.
    burst: int = 1

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, not {self.rate} and {self.burst}")


class TokenBucket:
    """Hands out reservations: each caller takes a token now and is told how long to wait for it.

    Taking a token never blocks and needs no lock held while waiting, so it suits threads and
    coroutines alike; waiting callers are served in the order they asked.

    >>> bucket = TokenBucket(RateLimit(rate=2, burst=2))
    >>> [round(bucket.reserve(), 1) for _ in range(3)]  # doctest: +SKIP
    [0.0, 0.0, 0.5]
    """

    def __init__(self, limit: RateLimit, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = limit.rate
        self._burst = float(limit.burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = self._burst
        self._last = clock()

    def reserve(self) -> float:
        """Take one token; return the seconds to wait before using it (0.0 if it was there)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self._rate
