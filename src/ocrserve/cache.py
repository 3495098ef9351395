"""Result cache keyed by the tenant, the SHA-256 of a document's bytes, the options and the
model version.

Each tenant (API key) has its own entries: a hit for bytes another tenant sent would tell the
caller that someone sent that document, and when (a membership oracle), and hand over their
result. So the same document sent by two keys is read twice.

In memory (a bounded LRU) by default; Redis when ``OCRSERVE_REDIS_URL`` is set, so that several
server processes share it. Values are the JSON of a result. A cache that fails (Redis down) is
logged and treated as a miss: the cache may make the service faster, never unavailable.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

from ocrserve.types import OCROptions

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger(__name__)

KEY_PREFIX = "ocrserve:result:"


def cache_key(
    data: bytes, options: OCROptions, extra: str, model_version: str, *, tenant: str
) -> str:
    """``extra`` carries request options outside :class:`OCROptions` (max_pages, dpi).
    ``tenant`` (a key's name: letters, digits, ``._-``) leads, so that one tenant's entries can
    be found or dropped in Redis with ``ocrserve:result:<tenant>:*``."""
    digest = hashlib.sha256(data).hexdigest()
    opts = hashlib.sha256(f"{options!r}|{extra}|{model_version}".encode()).hexdigest()[:16]
    return f"{KEY_PREFIX}{tenant}:{digest}:{opts}"


class ResultCache(Protocol):
    async def get(self, key: str) -> dict[str, object] | None: ...
    async def set(self, key: str, value: dict[str, object]) -> None: ...
    async def close(self) -> None: ...


class MemoryCache:
    """A bounded LRU in this process. Used from the event loop only, so it needs no lock.

    >>> cache = MemoryCache(max_entries=2)
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[str, bytes] = OrderedDict()

    async def get(self, key: str) -> dict[str, object] | None:
        raw = self._data.get(key)
        if raw is None:
            return None
        self._data.move_to_end(key)
        value: dict[str, object] = json.loads(raw)
        return value

    async def set(self, key: str, value: dict[str, object]) -> None:
        if self.max_entries <= 0:
            return
        self._data[key] = json.dumps(value, ensure_ascii=False).encode()
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    async def close(self) -> None:
        self._data.clear()


class RedisCache:
    """Results in Redis with a TTL, shared by every server process that points at it.

    >>> cache = RedisCache("redis://127.0.0.1:6379/0", ttl=3600)  # doctest: +SKIP
    """

    def __init__(self, url: str, *, ttl: int) -> None:
        # Imported here: redis (the distributed extra) is needed only by a server configured
        # with OCRSERVE_REDIS_URL, and costs a laptop's cold start ~80 ms otherwise.
        import redis.asyncio
        from redis.exceptions import RedisError

        self.ttl = ttl
        self._errors: tuple[type[Exception], ...] = (RedisError, OSError)
        self._redis: aioredis.Redis = redis.asyncio.Redis.from_url(
            url, socket_timeout=2.0, socket_connect_timeout=2.0
        )

    async def get(self, key: str) -> dict[str, object] | None:
        try:
            raw = await self._redis.get(key)
        except self._errors as e:
            log.warning("result cache read failed: %s", e)
            return None
        if raw is None:
            return None
        value: dict[str, object] = json.loads(raw)
        return value

    async def set(self, key: str, value: dict[str, object]) -> None:
        try:
            await self._redis.set(key, json.dumps(value, ensure_ascii=False), ex=self.ttl)
        except self._errors as e:
            log.warning("result cache write failed: %s", e)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except self._errors:
            return False

    async def close(self) -> None:
        await self._redis.aclose()
