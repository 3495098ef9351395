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
from dataclasses import dataclass
from typing import Any

import httpx

from ocrserve.decode import DecodeLimits, decode_bytes
from ocrserve.errors import OCRServeError, URLFetchError
from ocrserve.fetch import fetch_url
from ocrserve.jobs.store import FAILED, PARTIAL, SUCCEEDED, TaskRow, TaskStore
from ocrserve.types import OCROptions, Page, PageResult, result_dict

log = logging.getLogger(__name__)

Recognise = Callable[[Sequence[Page], OCROptions], Awaitable[list[PageResult]]]
RunSync = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunnerConfig:
    limits: DecodeLimits
    model: str
    lease: float = 30.0
    pages_per_step: int = 4
    url_timeout: float = 15.0
    url_retries: tuple[float, ...] = (1.0, 3.0)  # waits before the 2nd and 3rd fetch on a 5xx
    allow_private: bool = False


def options_of(row: TaskRow) -> OCROptions:
    o = row.options
    return OCROptions(
        lang=o.get("lang") or "ch",
        use_cls=bool(o.get("cls", True)),
        precision=o.get("precision"),
    )


async def execute(
    row: TaskRow,
    *,
    store: TaskStore,
    worker: str,
    config: RunnerConfig,
    recognise: Recognise,
    http: httpx.AsyncClient,
    run_sync: RunSync,
) -> str:
    """Run a task this worker has claimed; returns its final status."""
    progress = {"done": 0, "total": None}
    beat = asyncio.create_task(_heartbeat(store, row.id, worker, config.lease, progress, run_sync))
    try:
        status, result, error, done, total = await _work(row, config, recognise, http, progress)
    finally:
        beat.cancel()
    finished = await run_sync(
        lambda: store.finish(row.id, worker, status, result=result, error=error,
                             pages_done=done, pages_total=total)
    )  # fmt: skip
    if not finished:
        log.warning("task %s was taken over by another worker; result dropped", row.id)
    return status


async def _work(
    row: TaskRow,
    config: RunnerConfig,
    recognise: Recognise,
    http: httpx.AsyncClient,
    progress: dict[str, Any],
) -> tuple[str, dict[str, Any] | None, tuple[str, str] | None, int, int | None]:
    t0 = time.perf_counter()
    options = options_of(row)
    max_pages = int(row.options.get("max_pages") or config.limits.max_pages)
    limits = DecodeLimits(
        max_bytes=config.limits.max_bytes,
        max_pixels=config.limits.max_pixels,
        max_pages=min(max_pages, config.limits.max_pages),
        pdf_dpi=config.limits.pdf_dpi,
    )
    try:
        data = row.input_bytes if row.input_bytes is not None else await _fetch(row, config, http)
        doc = await asyncio.to_thread(decode_bytes, data, limits, filename=row.filename)
    except OCRServeError as e:
        return FAILED, None, (e.code, e.message), 0, None
    total = len(doc.pages)
    progress["total"] = total
    results: list[PageResult] = []
    failed: list[dict[str, Any]] = []
    last_error: OCRServeError | None = None
    for start in range(0, total, config.pages_per_step):
        chunk = doc.pages[start : start + config.pages_per_step]
        try:
            results += await recognise(chunk, options)
        except OCRServeError as e:  # these pages failed; the others still count
            last_error = e
            failed += [{"page": p.index, "code": e.code, "message": e.message} for p in chunk]
        progress["done"] = len(results) + len(failed)
    if not results:
        err = last_error or OCRServeError("no page could be read")
        return FAILED, None, (err.code, err.message), 0, total
    result = result_dict(
        results,
        pages_total=doc.pages_total,
        truncated=doc.truncated,
        model=config.model,
        timings={"total": round(time.perf_counter() - t0, 4)},
    )
    if failed:
        result["failed_pages"] = failed
        return PARTIAL, result, None, total, total
    return SUCCEEDED, result, None, total, total


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
    store: TaskStore,
    task_id: str,
    worker: str,
    lease: float,
    progress: dict[str, Any],
    run_sync: RunSync,
) -> None:
    while True:
        await asyncio.sleep(max(lease / 3, 0.2))
        await run_sync(
            lambda: store.heartbeat(task_id, worker, lease, progress["done"], progress["total"])
        )
