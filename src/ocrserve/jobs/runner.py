"""Running one claimed task: fetch or load its input, decode, recognise page by page, finish.

The same code runs inside ``ocrserve serve`` (embedded workers, through the shared batcher)
and inside ``ocrserve worker`` (Celery). While it runs, a heartbeat extends the task's lease
and records progress; if the process dies, the lease runs out and another worker takes over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx

from ocrserve.config import Settings
from ocrserve.decode import DecodeLimits, decode_bytes
from ocrserve.engine import Engines
from ocrserve.errors import EngineError, OCRServeError, QueueFullError, URLFetchError
from ocrserve.fetch import fetch_url
from ocrserve.jobs.store import TaskRow, TaskStore
from ocrserve.jobs.supervisor import OnRestart
from ocrserve.jobs.task import FAILED, PARTIAL, QUEUED, SUCCEEDED, decode_options
from ocrserve.types import OCROptions, Page, PageResult, result_dict

log = logging.getLogger(__name__)

Recognise = Callable[[Sequence[Page], OCROptions], Awaitable[list[PageResult]]]
RunSync = Callable[..., Awaitable[Any]]

#: The error code of a run that raised something other than an ocrserve error (a bug).
INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunnerConfig:
    limits: DecodeLimits
    model: str
    #: The candidate model set's version under a rollout (a task keeps the set it was given).
    candidate_model: str | None = None
    #: The server's defaults, for options a stored task does not carry (rows of older versions).
    defaults: OCROptions = OCROptions()
    lease: float = 30.0
    #: Runs a task may start; see ``Settings.task_max_runs``.
    max_runs: int = 3
    #: Waits before the next run of a task whose run raised; the last one repeats.
    retry_delays: tuple[float, ...] = (5.0, 30.0)
    #: Pages of one task handed to ``recognise`` at once. Embedded: several, so the batcher
    #: can batch them; Celery: one (the worker thread runs the engine itself).
    pages_in_flight: int = 4
    url_timeout: float = 15.0
    url_retries: tuple[float, ...] = (1.0, 3.0)  # waits before the 2nd and 3rd fetch on a 5xx
    allow_private: bool = False

    @classmethod
    def from_settings(
        cls, settings: Settings, engine: Engines, *, pages_in_flight: int = 4
    ) -> RunnerConfig:
        return cls(
            limits=settings.decode_limits(),
            model=engine.model_version,
            candidate_model=engine.version("candidate") if engine.candidate else None,
            defaults=engine.defaults,
            lease=settings.task_lease_s,
            max_runs=settings.task_max_runs,
            retry_delays=settings.task_retry_delays,
            pages_in_flight=pages_in_flight,
            url_timeout=settings.url_timeout_s,
            allow_private=settings.allow_private_urls,
        )

    def retry_delay(self, runs: int) -> float:
        """The wait after the ``runs``-th run raised.

        >>> RunnerConfig(limits=DecodeLimits(), model="m").retry_delay(1)
        5.0
        """
        if not self.retry_delays:
            return 0.0
        return self.retry_delays[min(runs, len(self.retry_delays)) - 1]


class _Progress:
    """Pages done, written to the task row as each page finishes (which also extends the
    lease); ``lost`` is set once the row says another worker holds the task."""

    def __init__(self, store: TaskStore, task_id: str, worker: str, lease: float,
                 run_sync: RunSync) -> None:  # fmt: skip
        self.store, self.task_id, self.worker, self.lease = store, task_id, worker, lease
        self.run_sync = run_sync
        self.done = 0
        self.total: int | None = None
        self.lost = asyncio.Event()

    async def beat(self) -> None:
        held = await self.run_sync(
            lambda: self.store.heartbeat(
                self.task_id, self.worker, self.lease, self.done, self.total
            )
        )
        if not held:
            self.lost.set()

    async def advance(self, pages: int = 1) -> None:
        self.done += pages
        try:
            await self.beat()
        except Exception:  # progress is a courtesy; the heartbeat loop keeps the lease
            log.warning("task %s: could not record progress", self.task_id, exc_info=True)


async def execute(
    row: TaskRow,
    *,
    store: TaskStore,
    worker: str,
    config: RunnerConfig,
    recognise: Recognise,
    http: httpx.AsyncClient,
    run_sync: RunSync,
    on_restart: OnRestart | None = None,
    on_heartbeat: Callable[[], None] | None = None,
) -> str:
    """Run a task this worker has claimed; returns its status afterwards (``queued`` when a
    run that raised was given back for a retry, ``lost`` when another worker took it over).
    ``on_heartbeat`` (metrics) hears each lease renewal."""
    progress = _Progress(store, row.id, worker, config.lease, run_sync)
    work = asyncio.create_task(_work(row, config, recognise, http, progress))
    beat = asyncio.create_task(_heartbeat(progress, config.lease, on_restart, on_heartbeat))
    lost = asyncio.create_task(progress.lost.wait())
    try:
        await asyncio.wait({work, lost}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (beat, lost, work):
            if not t.done():
                t.cancel()
        await asyncio.gather(beat, lost, return_exceptions=True)
    if not work.done() or work.cancelled():
        await asyncio.gather(work, return_exceptions=True)
        log.warning("task %s: its lease went to another worker; this run stopped", row.id)
        return "lost"
    try:
        status, result, error, done, total = work.result()
    except Exception as e:  # a bug, or an engine failure that is not about the input
        return await _run_failed(row, e, store, worker, config, progress, run_sync)
    finished = await run_sync(
        lambda: store.finish(row.id, worker, status, result=result, error=error,
                             pages_done=done, pages_total=total)
    )  # fmt: skip
    if not finished:
        log.warning("task %s was taken over by another worker; result dropped", row.id)
        return "lost"
    return status


async def _run_failed(
    row: TaskRow,
    exc: Exception,
    store: TaskStore,
    worker: str,
    config: RunnerConfig,
    progress: _Progress,
    run_sync: RunSync,
) -> str:
    """A run raised: queue the task again while runs are left, else end it ``failed``."""
    if isinstance(exc, OCRServeError):
        error = (exc.code, exc.message)
    else:
        error = (INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
    log.error(
        "task %s: run %d of at most %d raised", row.id, row.runs, config.max_runs, exc_info=exc
    )
    if row.runs < config.max_runs:
        delay = config.retry_delay(row.runs)
        if await run_sync(lambda: store.retry_later(row.id, worker, error, delay)):
            return QUEUED
        return "lost"
    finished = await run_sync(
        lambda: store.finish(row.id, worker, FAILED, error=error,
                             pages_done=progress.done, pages_total=progress.total)
    )  # fmt: skip
    return FAILED if finished else "lost"


Outcome = tuple[str, dict[str, Any] | None, tuple[str, str] | None, int, int | None]


async def _work(
    row: TaskRow,
    config: RunnerConfig,
    recognise: Recognise,
    http: httpx.AsyncClient,
    progress: _Progress,
) -> Outcome:
    t0 = time.perf_counter()
    options, max_pages = decode_options(row.options, config.defaults)
    limits = replace(
        config.limits, max_pages=min(max_pages or config.limits.max_pages, config.limits.max_pages)
    )
    try:
        data = row.input_bytes if row.input_bytes is not None else await _fetch(row, config, http)
        doc = await asyncio.to_thread(decode_bytes, data, limits, filename=row.filename)
    except OCRServeError as e:  # the input itself: no other run would read it either
        return FAILED, None, (e.code, e.message), 0, None
    total = len(doc.pages)
    progress.total = total
    await progress.advance(0)
    slots = asyncio.Semaphore(max(1, config.pages_in_flight))
    failed: list[dict[str, Any]] = []
    errors: list[OCRServeError] = []

    async def one(page: Page) -> PageResult | None:
        async with slots:
            try:
                (result,) = await _recognise_page(page, options, recognise)
            except OCRServeError as e:  # this page failed; the others still count
                errors.append(e)
                failed.append({"page": page.index, "code": e.code, "message": e.message})
                result = None
        await progress.advance()
        return result

    pages = [asyncio.create_task(one(p)) for p in doc.pages]
    try:
        outcomes = await asyncio.gather(*pages)
    except BaseException:  # one page raised something else: the run is over, stop the rest
        for t in pages:
            t.cancel()
        await asyncio.gather(*pages, return_exceptions=True)
        raise
    results = [r for r in outcomes if r is not None]
    if not results:
        err = errors[-1] if errors else OCRServeError("no page could be read")
        return FAILED, None, (err.code, err.message), 0, total
    result = result_dict(
        results,
        pages_total=doc.pages_total,
        truncated=doc.truncated,
        model=config.candidate_model
        if options.models == "candidate" and config.candidate_model
        else config.model,
        timings={"total": round(time.perf_counter() - t0, 4)},
    )
    if failed:
        result["failed_pages"] = sorted(failed, key=lambda f: int(f["page"]))
        return PARTIAL, result, None, total, total
    return SUCCEEDED, result, None, total, total


async def _recognise_page(
    page: Page, options: OCROptions, recognise: Recognise
) -> list[PageResult]:
    """One page; a full inference queue (sync traffic) is waited out, not a failure: an
    accepted task has no client to send a 503 to."""
    while True:
        try:
            results = await recognise([page], options)
        except QueueFullError as e:
            await asyncio.sleep(min(max(e.retry_after, 0.1), 5.0))
            continue
        if len(results) != 1:
            raise EngineError(f"recognise returned {len(results)} results for 1 page")
        return results


async def _fetch(row: TaskRow, config: RunnerConfig, http: httpx.AsyncClient) -> bytes:
    url = row.source_url or ""
    waits = (*config.url_retries, None)
    for wait in waits:
        try:
            return await fetch_url(
                url,
                max_bytes=config.limits.max_bytes,
                timeout=config.url_timeout,
                allow_private=config.allow_private,
                client=http,
            )
        except URLFetchError as e:
            retryable = e.status is None or e.status >= 500 or e.status == 429
            if not retryable or wait is None:
                raise
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")


async def _heartbeat(
    progress: _Progress,
    lease: float,
    on_restart: OnRestart | None,
    on_heartbeat: Callable[[], None] | None = None,
) -> None:
    """Extend the lease every third of it until cancelled or the lease is found lost. A
    failed write is retried sooner, and the run goes on: losing the lease is what stops it."""
    interval = max(lease / 3, 0.2)
    while not progress.lost.is_set():
        await asyncio.sleep(interval)
        try:
            await progress.beat()
            interval = max(lease / 3, 0.2)
            if on_heartbeat is not None:
                on_heartbeat()
        except Exception:
            log.exception("task %s: heartbeat failed; trying again", progress.task_id)
            if on_restart is not None:
                on_restart("heartbeat")
            interval = max(lease / 10, 0.1)
