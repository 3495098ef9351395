"""API keys (each named: the name is its caller's tenant), the admin key, and the per-key
token-bucket rate limit."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request

from ocrserve.config import DEFAULT_TENANT
from ocrserve.errors import AuthError, RateLimitedError

API_KEY_HEADER = "x-api-key"


def presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get(API_KEY_HEADER)


def _matching(presented: str, keys: Mapping[str, str]) -> str | None:
    """The name of the key that ``presented`` is, or None.

    Every key is compared, each by the digests of both (equal lengths) in constant time, so
    timing tells nothing about a prefix, a length or which key matched.
    """
    digest = hashlib.sha256(presented.encode()).digest()
    found = None
    for name, key in keys.items():
        if hmac.compare_digest(digest, hashlib.sha256(key.encode()).digest()):
            found = name
    return found


class KeyCheck:
    """Off when no key is configured; otherwise every request needs one of the keys. A key's
    name is its caller's tenant: the owner of the tasks and cache entries it makes.

    >>> keys = KeyCheck({"alice": "k1", "bob": "k2"})
    >>> keys.tenant(request)   # "alice" for k1; AuthError without a valid key
    """

    def __init__(self, keys: Mapping[str, str]) -> None:
        self.keys = dict(keys)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def tenant(self, request: Request) -> str:
        """The caller's tenant: its key's name, or the one tenant when keys are off."""
        if not self.enabled:
            return DEFAULT_TENANT
        key = presented_key(request)
        if key is None:
            raise AuthError("an API key is required: Authorization: Bearer KEY or X-API-Key")
        name = _matching(key, self.keys)
        if name is None:
            raise AuthError("the API key is not valid")
        return name

    def identify(self, request: Request) -> str:
        """The caller's identity for rate limiting: its key, or its address when keys are off."""
        if not self.enabled:
            return f"ip:{request.client.host if request.client else '-'}"
        return f"key:{self.tenant(request)}"


class AdminCheck:
    """``/admin/*``: every tenant's dead letters. Off without an admin key: a 404, as if the
    routes did not exist, never open to anyone. With one, only that key: anything else,
    a client key included, is a 401 (the admin realm has one credential; the same answer for
    a client key and a wrong key tells nothing about client keys).

    >>> AdminCheck("admin-secret").check(request)   # AuthError unless the admin key came
    """

    def __init__(self, key: str | None) -> None:
        self.key = key

    def check(self, request: Request) -> None:
        if self.key is None:
            raise HTTPException(404, "Not Found")  # the body of a route that does not exist
        key = presented_key(request)
        if key is None or _matching(key, {"admin": self.key}) is None:
            raise AuthError(
                "the admin key is required: Authorization: Bearer KEY or X-API-Key "
                "(OCRSERVE_ADMIN_KEY; client keys are not accepted here)"
            )


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
