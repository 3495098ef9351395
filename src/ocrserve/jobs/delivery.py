"""Signed webhook delivery: one attempt at a time, the schedule as data, dead letters at the end.

A 2xx answer is delivered. Timeouts, connection errors, 5xx and 429 are retried after the
delays of ``OCRSERVE_CALLBACK_RETRY_DELAYS`` (1 s, 5 s, 15 s; a longer ``Retry-After`` wins);
when they are used up, or on any other 4xx at once, the callback is a dead letter, listed by
``GET /admin/dead-letters`` and ``ocrserve dlq list`` and sent again by a replay.

Every attempt ends recorded, whatever went wrong: a secret that cannot sign (configuration:
waiting does not fix it, so a dead letter at once, to replay once the secret is fixed), or an
unexpected exception (retried on the schedule). One callback's failure never holds back the
others due in the same round.

The body is a :class:`ocrserve.schemas.TaskEvent`, the ``ocr-task-finished`` webhook of the
OpenAPI document.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ocrserve import webhooks
from ocrserve.config import Settings
from ocrserve.errors import ConfigError, URLError
from ocrserve.fetch import checked_url
from ocrserve.jobs.store import TaskRow, TaskStore
from ocrserve.jobs.task import DEAD, DELIVERED, PENDING, error_detail
from ocrserve.schemas import TaskEvent, task_result
from ocrserve.urls import redact_url

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackPolicy:
    """How callbacks are sent.

    >>> CallbackPolicy(secret="whsec_...", retry_delays=(1, 5, 15))  # doctest: +SKIP
    """

    secret: str
    retry_delays: tuple[float, ...] = (1.0, 5.0, 15.0)
    timeout: float = 10.0
    allow_private: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> CallbackPolicy:
        """The server's policy; resolving the secret may write it (``webhook_secret_file``)."""
        return cls(
            secret=settings.resolved_webhook_secret(),
            retry_delays=settings.callback_retry_delays,
            timeout=settings.callback_timeout_s,
            allow_private=settings.allow_private_urls,
        )


def event_id(row: TaskRow) -> str:
    """Stable per task event, so a receiver can drop a delivery it has already processed."""
    return f"msg_{row.id}_{row.status}"


def task_event(row: TaskRow) -> TaskEvent:
    """The callback's body for a finished task."""
    return TaskEvent.of(
        task_id=row.id,
        status=row.status,
        metadata=row.meta,
        error=error_detail(row),
        created_at=row.created_at,
        finished_at=row.finished_at,
        result=task_result(row.result),
        pages_total=row.pages_total,
    )


def payload(row: TaskRow) -> dict[str, Any]:
    """The callback's body as JSON-ready data."""
    return task_event(row).model_dump(mode="json")


def next_step(
    attempt_no: int, status: int | None, retry_after: float | None, delays: Sequence[float]
) -> tuple[str, float | None]:
    """After attempt ``attempt_no`` (1-based) ended with ``status`` (None: no answer):
    the new callback state and when to try again.

    >>> next_step(1, 503, None, (1, 5, 15))
    ('pending', 1)
    >>> next_step(4, 503, None, (1, 5, 15))
    ('dead', None)
    >>> next_step(1, 404, None, (1, 5, 15))
    ('dead', None)
    """
    if status is not None and 200 <= status < 300:
        return DELIVERED, None
    retryable = status is None or status >= 500 or status == 429
    if not retryable or attempt_no > len(delays):
        return DEAD, None
    return PENDING, max(delays[attempt_no - 1], retry_after or 0.0)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return min(float(value), 3600.0) if value else None
    except ValueError:
        return None


async def deliver(
    store_row: TaskRow, policy: CallbackPolicy, client: httpx.AsyncClient
) -> tuple[dict[str, Any], str, float | None]:
    """Make one attempt; returns (the attempt's record, the new state, seconds to the next).

    Never raises (bar cancellation): whatever goes wrong is the attempt's recorded error.
    """
    url = store_row.callback_url or ""
    attempt_no = store_row.callback_attempts + 1
    started = time.time()
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    try:
        webhooks.parse_secret(policy.secret)
    except ValueError as e:
        # Configuration: no wait fixes it. A dead letter, replayed once the secret is fixed.
        log.error("callback of task %s not sent, a dead letter: %s", store_row.id, e)
        return _record(started, None, f"{ConfigError.code}: {e}", attempt_no), DEAD, None
    try:
        # The address of a name is checked where ``client`` (a fetch.server_client) connects.
        target = checked_url(url, allow_private=policy.allow_private, require_https=True)
        body = task_event(store_row).model_dump_json().encode()
        headers = webhooks.headers_for(event_id(store_row), body, policy.secret)
        response = await client.post(target, content=body, headers=headers, timeout=policy.timeout)
        status = response.status_code
        retry_after = _retry_after(response)
        if not 200 <= status < 300:
            error = f"HTTP {status}"
    except URLError as e:
        # A callback target we may not call is final: no schedule makes it allowed.
        return _record(started, None, f"{e.code}: {e.message}", attempt_no), DEAD, None
    except httpx.HTTPError as e:
        error = _describe(e)
    except Exception as e:
        return _unexpected(e, started, attempt_no, policy)
    record = _record(started, status, error, attempt_no)
    state, delay = next_step(attempt_no, status, retry_after, policy.retry_delays)
    return record, state, delay


def _unexpected(
    e: Exception, started: float, attempt_no: int, policy: CallbackPolicy
) -> tuple[dict[str, Any], str, float | None]:
    """A bug or an unforeseen failure: logged with its traceback, retried on the schedule."""
    log.exception("callback attempt %d failed unexpectedly", attempt_no)
    state, delay = next_step(attempt_no, None, None, policy.retry_delays)
    return _record(started, None, _describe(e), attempt_no), state, delay


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _record(started: float, status: int | None, error: str | None, n: int) -> dict[str, Any]:
    return {
        "attempt": n,
        "at": started,
        "status_code": status,
        "error": error,
        "duration_ms": round((time.time() - started) * 1000, 1),
    }


async def run_due(
    store: TaskStore,
    policy: CallbackPolicy,
    client: httpx.AsyncClient,
    *,
    run_sync: Any,
    on_attempt: Callable[[str], None] | None = None,
) -> int:
    """Attempt every callback that is due, concurrently; returns how many were attempted.

    Concurrently, so that one slow receiver (up to ``policy.timeout``) does not hold back the
    callbacks due behind it. ``run_sync`` runs a blocking store call off the event loop;
    ``on_attempt`` (metrics) hears the state each recorded attempt left.
    """
    due = await run_sync(store.due_callbacks, time.time())

    async def one(task_id: str) -> bool:
        row = await run_sync(store.claim_callback, task_id, policy.timeout + 30.0)
        if row is None:
            return False  # another dispatcher took it
        record, state, delay = await deliver(row, policy, client)
        next_at = time.time() + delay if delay is not None else None
        await run_sync(lambda: store.record_attempt(task_id, record, state=state, next_at=next_at))
        if on_attempt is not None:
            try:
                on_attempt(state)
            except Exception:  # a metrics hook must not turn a recorded attempt into an error
                log.exception("callback attempt hook failed")
        log.info(
            "callback attempt",
            extra={"task_id": task_id, "url": redact_url(row.callback_url or ""), "state": state,
                   "status_code": record["status_code"], "error": record["error"],
                   "next_in": delay},
        )  # fmt: skip
        return True

    # return_exceptions: a store error on one callback (its claim runs out and it is tried
    # again later) must not cancel or lose the others of this round.
    outcomes = await asyncio.gather(*(one(t) for t in due), return_exceptions=True)
    for task_id, outcome in zip(due, outcomes, strict=True):
        if isinstance(outcome, Exception):
            log.error("callback round failed for task %s", task_id, exc_info=outcome)
        elif isinstance(outcome, BaseException):
            raise outcome  # cancellation, KeyboardInterrupt: not ours to swallow
    return sum(outcome is True for outcome in outcomes)
