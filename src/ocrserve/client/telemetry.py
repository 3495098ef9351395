"""What a client did: attempts, retries, breaker state changes, as counters on the client
(``client.stats``) and, when the caller passes a registry, as Prometheus metrics."""

from __future__ import annotations

import threading
from collections import Counter as Tally
from dataclasses import dataclass
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

#: The value of the ``ocrserve_client_circuit_state`` gauge per breaker state.
STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}


@dataclass(frozen=True)
class ClientStats:
    """A snapshot of one client's counters.

    >>> client.stats.retries, client.stats.breaker_state  # doctest: +SKIP
    (2, 'closed')
    """

    #: Requests sent to the server (each retry is one more).
    attempts: int
    #: Attempts that were retries of an earlier one.
    retries: int
    #: Calls refused without being sent because the circuit was open.
    rejected: int
    breaker_opened: int
    breaker_half_opened: int
    breaker_closed: int
    #: The breaker of the client's own server: closed, open or half_open (None: no breaker).
    breaker_state: str | None


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        # Imported here: only a caller who passes a registry needs prometheus_client (it is
        # not a dependency of the client extra).
        from prometheus_client import Counter, Gauge

        self.attempts = Counter(
            "ocrserve_client_attempts", "Requests sent, retries included.", ["server"],
            registry=registry,
        )  # fmt: skip
        self.retries = Counter(
            "ocrserve_client_retries", "Retries, by what went wrong.", ["server", "reason"],
            registry=registry,
        )  # fmt: skip
        self.rejected = Counter(
            "ocrserve_client_circuit_rejections", "Calls failed fast by an open circuit.",
            ["server"], registry=registry,
        )  # fmt: skip
        self.transitions = Counter(
            "ocrserve_client_circuit_transitions", "Circuit breaker state changes, by new state.",
            ["server", "state"], registry=registry,
        )  # fmt: skip
        self.state = Gauge(
            "ocrserve_client_circuit_state", "Breaker state: 0 closed, 1 half-open, 2 open.",
            ["server"], registry=registry,
        )  # fmt: skip


# Clients sharing a registry share its metrics (a name may be registered only once).
_by_registry: WeakKeyDictionary[CollectorRegistry, _Metrics] = WeakKeyDictionary()
_by_registry_lock = threading.Lock()


def _metrics_for(registry: CollectorRegistry) -> _Metrics:
    with _by_registry_lock:
        metrics = _by_registry.get(registry)
        if metrics is None:
            metrics = _by_registry[registry] = _Metrics(registry)
        return metrics


class Telemetry:
    """The counters of one client; thread-safe. Transports and breakers report here."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._lock = threading.Lock()
        self._tally: Tally[str] = Tally()
        self._metrics = _metrics_for(registry) if registry is not None else None

    def attempt(self, server: str) -> None:
        with self._lock:
            self._tally["attempts"] += 1
        if self._metrics:
            self._metrics.attempts.labels(server).inc()

    def retry(self, server: str, reason: str) -> None:
        with self._lock:
            self._tally["retries"] += 1
        if self._metrics:
            self._metrics.retries.labels(server, reason).inc()

    def rejected(self, server: str) -> None:
        with self._lock:
            self._tally["rejected"] += 1
        if self._metrics:
            self._metrics.rejected.labels(server).inc()

    def transition(self, server: str, state: str) -> None:
        with self._lock:
            self._tally[f"breaker_{state}"] += 1
        if self._metrics:
            self._metrics.transitions.labels(server, state).inc()
            self._metrics.state.labels(server).set(STATE_VALUES[state])

    def snapshot(self, breaker_state: str | None) -> ClientStats:
        with self._lock:
            t = self._tally
            return ClientStats(
                attempts=t["attempts"],
                retries=t["retries"],
                rejected=t["rejected"],
                breaker_opened=t["breaker_open"],
                breaker_half_opened=t["breaker_half_open"],
                breaker_closed=t["breaker_closed"],
                breaker_state=breaker_state,
            )
