"""API keys and the per-key token-bucket rate limit."""

from __future__ import annotations

import hmac
import threading
import time
from dataclasses import dataclass

from starlette.requests import Request

from ocrserve.errors import AuthError, RateLimitedError

API_KEY_HEADER = "x-api-key"


def presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get(API_KEY_HEADER)


class KeyCheck:
    """Off when no key is configured; otherwise every request needs one of the keys."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = tuple(k for k in keys if k)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def identify(self, request: Request) -> str:
        """The caller's identity for rate limiting: its key, or its address when keys are off."""
        if not self.enabled:
            return f"ip:{request.client.host if request.client else '-'}"
        key = presented_key(request)
        if key is None:
            raise AuthError("an API key is required: Authorization: Bearer KEY or X-API-Key")
        # Compare against every key in constant time, so timing tells nothing about a prefix.
        if not any(hmac.compare_digest(key.encode(), k.encode()) for k in self.keys):
            raise AuthError("the API key is not valid")
        return f"key:{self.keys.index(key)}"


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class TokenBuckets:
    """A token bucket per caller, in this process.

    Written out rather than taken from a library: it is a dozen lines, and the rate-limiting
    packages we looked at offer fixed or sliding windows, not the bucket (burst, then a steady
    rate) that the service promises.

    >>> buckets = TokenBuckets(rate=5, burst=10)
    >>> buckets.take("key:0")   # raises RateLimitedError(retry_after=...) when empty
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, who: str, now: float | None = None) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            b = self._buckets.setdefault(who, _Bucket(float(self.burst), now))
            b.tokens = min(float(self.burst), b.tokens + (now - b.stamp) * self.rate)
            b.stamp = now
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                return
            wait = (1.0 - b.tokens) / self.rate
        raise RateLimitedError(
            f"rate limit of {self.rate:g} requests/s (burst {self.burst}) exceeded",
            retry_after=wait,
        )
