"""Prometheus metrics of one app instance (its own registry, so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """The service's metrics; also the batcher's :class:`~ocrserve.batcher.BatchMetrics`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
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
        self.cache = Counter("ocrserve_cache", "Result cache lookups.", ["result"], registry=r)
        self.rejections = Counter(
            "ocrserve_rejections", "Requests refused for load.", ["reason"], registry=r
        )
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

    def observe_batch(self, pages: int, items: int, seconds: float) -> None:
        self.pages.inc(pages)
        self.batch_pages.observe(pages)
        self.inference.observe(seconds)

    def set_queue_depth(self, pages: int) -> None:
        self.queue_depth.set(pages)
