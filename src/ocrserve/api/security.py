"""API keys (each named: the name is its caller's tenant), the admin key, and the per-key
token-bucket rate limit."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

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

    The table stays small: a bucket left alone for ``burst / rate`` seconds is full again, the
    same as no bucket, so it is dropped and its caller loses nothing; and past ``max_buckets``
    the least recently used go first, so callers that each come once (a key guesser on many
    addresses) cannot grow it without bound.

    >>> buckets = TokenBuckets(rate=5, burst=10)
    >>> buckets.take("key:0")   # raises RateLimitedError(retry_after=...) when empty
    """

    def __init__(self, rate: float, burst: int, *, max_buckets: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_buckets = max_buckets
        # In order of last use, so that expiry only ever looks at the front.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, who: str, now: float | None = None) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            now = time.monotonic() if now is None else now
            self._expire(now)
            b = self._buckets.get(who)
            if b is None:
                b = self._buckets[who] = _Bucket(float(self.burst), now)
            else:
                self._buckets.move_to_end(who)
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

    def _expire(self, now: float) -> None:
        refilled = self.burst / self.rate
        while self._buckets:
            who, oldest = next(iter(self._buckets.items()))
            if now - oldest.stamp < refilled and len(self._buckets) < self.max_buckets:
                return
            del self._buckets[who]


def address_bucket(request: Request) -> str:
    """The rate-limit bucket of the caller's address: every caller when keys are off, and a
    caller whose key is missing or wrong (so guessing keys runs into the limit)."""
    return f"ip:{request.client.host if request.client else '-'}"


# --- the client's address ---------------------------------------------------------------------

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(text: str) -> _Address | None:
    """An address as proxies write it (``1.2.3.4``, ``1.2.3.4:5678``, ``[::1]:80``, ``::1``),
    or None for anything else (``unknown``, an RFC 7239 obfuscated name, garbage)."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    return address


class TrustedProxies:
    """The proxies (``OCRSERVE_TRUSTED_PROXIES``: addresses and CIDRs) whose forwarded headers
    say who the client is. Anyone can send those headers: from any other peer they are
    ignored, or rotating ``X-Forwarded-For`` would give a caller a new rate-limit bucket (and
    a new name in the logs) with every request.

    >>> TrustedProxies(["10.0.0.0/8"]).trusts("10.1.2.3")
    True
    """

    def __init__(self, networks: Iterable[str] = ()) -> None:
        self.networks = tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, host: str | _Address | None) -> bool:
        address = _ip(host) if isinstance(host, str) else host
        # ``in`` does not compare versions: 0.0.0.1 would be "in" ::/96.
        return address is not None and any(
            address.version == n.version and address in n for n in self.networks
        )


def _header(scope: Scope, name: bytes) -> list[str]:
    """Every value of a header, lines and comma-separated items alike, in order."""
    return [
        item.strip()
        for key, value in scope.get("headers", ())
        if key.lower() == name
        for item in value.decode("latin-1").split(",")
    ]


def _forwarded(scope: Scope, parameter: str) -> list[str]:
    """RFC 7239 ``Forwarded``: one parameter's values (``for``, ``proto``), in order."""
    return [
        value
        for element in _header(scope, b"forwarded")
        for name, _, value in (pair.strip().partition("=") for pair in element.split(";"))
        if name.strip().lower() == parameter
    ]


def client_address(scope: Scope, trusted: TrustedProxies) -> str | None:
    """The client's address: the socket peer, or, when the peer is a trusted proxy, the
    address the proxies recorded (``X-Forwarded-For``; RFC 7239 ``Forwarded: for=`` when the
    request has no ``X-Forwarded-For``).

    The recorded hops are read from the right (the nearest proxy appended the last one), past
    every trusted proxy, to the first address that is not one: that is the client. What lies
    to the left of it was written by the client and proves nothing. A hop that is not an
    address stops the walk at the last one that was.
    """
    peer = scope.get("client")
    host: str | None = peer[0] if peer else None
    if not trusted.trusts(host):
        return host
    hops = _header(scope, b"x-forwarded-for") or _forwarded(scope, "for")
    for hop in reversed(hops):
        address = _ip(hop)
        if address is None:
            break
        host = str(address)
        if not trusted.trusts(address):
            break
    return host


def _forwarded_scheme(scope: Scope) -> str | None:
    """The scheme the client used, as the nearest proxy says (the last value)."""
    schemes = _header(scope, b"x-forwarded-proto") or _forwarded(scope, "proto")
    scheme = schemes[-1].strip('"').lower() if schemes else None
    return scheme if scheme in ("http", "https") else None


class ForwardedClient:
    """ASGI middleware: from a trusted proxy, ``scope["client"]`` becomes the client the
    proxies name and ``scope["scheme"]`` the scheme it used (so ``status_url`` and ``Location``
    say https behind a TLS proxy); from any other peer, both stay the socket's.

    Done in the app rather than by the ASGI server (``ocrserve serve`` turns uvicorn's own
    proxy handling off, which trusts 127.0.0.1 by default) so that one rule holds under any
    server and in-process alike; everything after it (the rate limit, logs) sees the client.

    >>> app.add_middleware(ForwardedClient, trusted=TrustedProxies(["10.0.0.0/8"]))
    """

    def __init__(self, app: ASGIApp, trusted: TrustedProxies) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope.get("client")
        if scope["type"] == "http" and peer and self.trusted.trusts(peer[0]):
            scope = dict(scope)
            scope["client"] = (client_address(scope, self.trusted), 0)
            scope["scheme"] = _forwarded_scheme(scope) or scope["scheme"]
        await self.app(scope, receive, send)
