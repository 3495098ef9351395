"""Prometheus metrics of one app instance (its own registry, so tests can build many apps).

Two kinds of task metrics, because the task table is the only place that sees every worker:

- read from the table at scrape time (:class:`TaskCollector`): tasks by status, dead letters,
  how long the oldest claimable task has waited, and the newest lease renewal. These are true
  in both modes, Celery workers included (they expose no ``/metrics``), and every API node on
  one database reports the same values: dashboards and alerts take ``max``, not ``sum``.
  Counters of transitions could not be that: each process would count only its own, and the
  Celery workers' would never be scraped.
- counted in this process as it happens (the embedded workers' hooks): queue wait, retries,
  callback attempts by outcome, loop heartbeats. In distributed mode these stay at zero on API
  nodes; the table's gauges are what the alerts use there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ocrserve.jobs.task import DEAD, DELIVERED, PENDING
from ocrserve.types import PageResult

if TYPE_CHECKING:  # the store brings SQLAlchemy: see ocrserve.jobs.task
    from ocrserve.jobs.store import TaskRow, TaskStats, TaskStore

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
#: A task may wait behind a backlog for long: up to an hour.
QUEUE_WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: A callback attempt's outcome, by the callback state it leaves: a retry is an attempt that
#: failed with retries left (the state stays pending).
CALLBACK_OUTCOMES = {DELIVERED: "delivered", PENDING: "retry", DEAD: "dead"}
#: The reasons the API counts refusals under: a full queue, the deadline (``api.app``), the
#: rate limit (``api.service``).
REJECTION_REASONS = ("queue_full", "deadline", "rate_limited")
#: Why pages went to the second engine (``engine.router``).
FALLBACK_REASONS = ("engine_error", "breaker_open")
#: Line confidences: PP-OCR keeps lines from 0.5 (its default threshold), so the buckets are
#: fine above it, where a model set's drift shows.
CONFIDENCE_BUCKETS = (0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0)


class Metrics:
    """The service's metrics; also the batcher's :class:`~ocrserve.batcher.BatchMetrics` and
    the hooks the embedded workers report through.

    >>> m = Metrics()
    >>> m.heartbeat("worker-0"); m.callback_attempted("pending")
    >>> m.watch_tasks(store, lease_s=30.0)  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # process_resident_memory_bytes, CPU seconds, open fds; python_info. The default
        # registry has them, a registry of our own only when asked.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.requests = Counter(
            "ocrserve_requests",
            "HTTP requests by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "ocrserve_request_seconds", "HTTP request latency.", ["route"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.pages = Counter("ocrserve_pages", "Pages recognised.", registry=r)
        self.batch_pages = Histogram(
            "ocrserve_batch_pages", "Pages per engine call.",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64), registry=r,
        )  # fmt: skip
        self.inference = Histogram(
            "ocrserve_inference_seconds", "Seconds per engine call.",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge("ocrserve_queue_pages", "Pages waiting for a lane.", registry=r)
        # The limit beside the depth, so that a rule can say "near full" without knowing
        # this server's configuration.
        self.queue_limit = Gauge(
            "ocrserve_queue_max_pages",
            "Pages the inference queue holds before answering 503 (OCRSERVE_QUEUE_MAX_PAGES).",
            registry=r,
        )
        self.cache = Counter("ocrserve_cache", "Result cache lookups.", ["result"], registry=r)
        self.rejections = Counter(
            "ocrserve_rejections", "Requests refused for load.", ["reason"], registry=r
        )
        # Labelled counters start at zero (here and below): a rate over a series' first
        # increment is otherwise lost, and the dashboard's panels exist before the first event.
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason)
        self.cache_up = Gauge(
            "ocrserve_cache_up",
            "1 when the shared result cache (Redis) answered the last readiness check, else 0.",
            registry=r,
        )
        self.loop_restarts = Counter(
            "ocrserve_loop_restarts",
            "Background loops (task workers, heartbeat, dispatcher, janitor) that raised and "
            "went on after a backoff.",
            ["loop"],
            registry=r,
        )
        self._model_metrics(r)
        self.task_queue_wait = Histogram(
            "ocrserve_task_queue_wait_seconds",
            "Seconds from a task's submission to the start of its first run (embedded workers).",
            buckets=QUEUE_WAIT_BUCKETS,
            registry=r,
        )
        self.task_retries = Counter(
            "ocrserve_task_retries",
            "Task runs that were not the task's first: a retry after a run raised, or a "
            "takeover after a worker died (embedded workers).",
            registry=r,
        )
        self.callback_attempts = Counter(
            "ocrserve_callback_attempts",
            "Callback attempts by outcome: delivered, retry (failed, retries left), dead "
            "(failed, now a dead letter) (embedded workers).",
            ["outcome"],
            registry=r,
        )
        for outcome in CALLBACK_OUTCOMES.values():
            self.callback_attempts.labels(outcome)
        self.worker_heartbeat = Gauge(
            "ocrserve_worker_last_heartbeat_timestamp_seconds",
            "When each embedded task loop last did its work: a claim attempt, a task's lease "
            "renewed, a callback round, a janitor pass.",
            ["loop"],
            registry=r,
        )

    def _model_metrics(self, r: CollectorRegistry) -> None:
        """By engine and model version: a rollout's A/B, compared on one dashboard."""
        by_model = ["engine", "model"]
        self.page_seconds = Histogram(
            "ocrserve_page_seconds", "Engine seconds per page read, by engine and model version.",
            by_model, buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.line_confidence = Histogram(
            "ocrserve_line_confidence", "Confidence of each line read, by engine and model.",
            by_model, buckets=CONFIDENCE_BUCKETS, registry=r,
        )  # fmt: skip
        self.pages_read = Counter(
            "ocrserve_pages_read",
            "Pages read, by engine, model version and result (text, or empty: no line kept).",
            [*by_model, "result"],
            registry=r,
        )
        self.engine_errors = Counter(
            "ocrserve_engine_errors",
            "Engine calls that failed (not the caller's input), by engine and model version.",
            by_model,
            registry=r,
        )
        self.fallback_pages = Counter(
            "ocrserve_fallback_pages",
            "Pages read by the second engine because PP-OCR failed or its breaker was open.",
            ["reason"],
            registry=r,
        )
        for reason in FALLBACK_REASONS:
            self.fallback_pages.labels(reason)
        self.breaker_open = Gauge(
            "ocrserve_breaker_open",
            "1 while PP-OCR's circuit breaker is open (pages go to the second engine), else 0.",
            registry=r,
        )

    # engine.router.EngineEvents
    def page_read(self, result: PageResult) -> None:
        if result.source != "ocr":
            return  # a text layer says nothing of a model
        labels = (result.engine, result.model)
        self.page_seconds.labels(*labels).observe(result.timings.total)
        histogram = self.line_confidence.labels(*labels)
        for line in result.lines:
            histogram.observe(line.confidence)
        self.pages_read.labels(*labels, "text" if result.lines else "empty").inc()

    def engine_failed(self, engine: str, model: str) -> None:
        self.engine_errors.labels(engine, model).inc()

    def fell_back(self, reason: str, pages: int) -> None:
        self.fallback_pages.labels(reason).inc(pages)

    def breaker_changed(self, state: str) -> None:
        self.breaker_open.set(1 if state == "open" else 0)

    def observe_batch(self, pages: int, items: int, seconds: float) -> None:
        self.pages.inc(pages)
        self.batch_pages.observe(pages)
        self.inference.observe(seconds)

    def set_queue_depth(self, pages: int) -> None:
        self.queue_depth.set(pages)

    def watch_tasks(self, store: TaskStore, *, lease_s: float) -> None:
        """Report the task table's gauges at each scrape (:class:`TaskCollector`)."""
        self.registry.register(TaskCollector(store, lease_s=lease_s))

    # --- the embedded workers' hooks ---------------------------------------------------------

    def loops_started(self, loops: list[str]) -> None:
        """Each loop's restart counter from zero, so an alert's rate sees its first restart."""
        for loop in loops:
            self.loop_restarts.labels(loop)

    def loop_restarted(self, loop: str) -> None:
        self.loop_restarts.labels(loop).inc()

    def heartbeat(self, loop: str) -> None:
        self.worker_heartbeat.labels(loop).set_to_current_time()

    def task_claimed(self, row: TaskRow) -> None:
        # A later run's wait would include the earlier runs and the retry delay: not the
        # queue's doing, so it is counted as a retry instead.
        if row.runs > 1:
            self.task_retries.inc()
        elif row.started_at is not None:
            self.task_queue_wait.observe(max(0.0, row.started_at - row.created_at))

    def callback_attempted(self, state: str) -> None:
        self.callback_attempts.labels(CALLBACK_OUTCOMES.get(state, state)).inc()


class TaskCollector(Collector):
    """The task table's gauges, read when scraped (:meth:`TaskStore.stats`: three statements
    over indexed columns). A database that does not answer turns ``ocrserve_task_store_up``
    to 0 and leaves the other task gauges out, rather than failing the whole scrape.

    >>> registry.register(TaskCollector(store, lease_s=30.0))  # doctest: +SKIP
    """

    def __init__(self, store: TaskStore, *, lease_s: float) -> None:
        self.store = store
        self.lease_s = lease_s

    def describe(self) -> Iterator[Metric]:
        # Names only: the registry checks them for clashes without running a query.
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        try:
            stats = self.store.stats()
        except Exception:
            log.warning("task metrics: the task database did not answer", exc_info=True)
            return iter(self._families()[:1])  # ocrserve_task_store_up 0
        return iter(self._families(stats))

    def _families(self, stats: TaskStats | None = None) -> list[Metric]:
        up = GaugeMetricFamily(
            "ocrserve_task_store_up", "1 when the task database answered this scrape, else 0."
        )
        up.add_metric([], 0.0 if stats is None else 1.0)
        tasks = GaugeMetricFamily(
            "ocrserve_tasks",
            "Tasks in the task table by status (every node on one database reports the same).",
            labels=["status"],
        )
        dead = GaugeMetricFamily(
            "ocrserve_dead_letters", "Callbacks that ended dead, in the task table."
        )
        waiting = GaugeMetricFamily(
            "ocrserve_task_oldest_waiting_seconds",
            "Seconds the longest-waiting claimable task (queued and due, or running under an "
            "expired lease) has waited for a worker; 0 when none waits.",
        )
        lease = GaugeMetricFamily(
            "ocrserve_task_heartbeat_timestamp_seconds",
            "The newest worker heartbeat the task table shows: the latest lease end of a "
            "running task less OCRSERVE_TASK_LEASE_S; 0 when no task runs. Celery workers "
            "included.",
        )
        if stats is None:
            return [up, tasks, dead, waiting, lease]
        for status, n in stats.by_status.items():
            tasks.add_metric([status], n)
        dead.add_metric([], stats.dead_letters)
        waiting.add_metric([], stats.oldest_waiting_s)
        newest = stats.newest_lease_until
        lease.add_metric([], newest - self.lease_s if newest is not None else 0.0)
        return [up, tasks, dead, waiting, lease]
