"""What Client and AsyncClient share: their settings, breakers, token bucket and counters."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from ocrserve import __version__
from ocrserve.client import protocol
from ocrserve.client.circuit import BreakerPolicy, Breakers
from ocrserve.client.ratelimit import RateLimit, TokenBucket
from ocrserve.client.retry import RetryPolicy
from ocrserve.client.telemetry import ClientStats, Telemetry

if TYPE_CHECKING:  # metrics are optional: prometheus_client is needed only to pass one
    from prometheus_client import CollectorRegistry


class BaseClient:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        retry: RetryPolicy,
        breaker: BreakerPolicy | None,
        rate_limit: RateLimit | None,
        registry: CollectorRegistry | None,
        clock: Callable[[], float],
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"base_url must be an http(s) URL, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self._server = protocol.origin(url)
        self._headers = protocol.default_headers(api_key, __version__)
        self._clock = clock
        self._telemetry = Telemetry(registry)
        self._breakers = (
            Breakers(breaker, clock=clock, telemetry=self._telemetry)
            if breaker is not None
            else None
        )
        self._bucket = TokenBucket(rate_limit, clock=clock) if rate_limit is not None else None

    @property
    def stats(self) -> ClientStats:
        """Attempts, retries and breaker state changes so far (a snapshot)."""
        state = self._breakers.state_of(self._server) if self._breakers is not None else None
        return self._telemetry.snapshot(state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"
