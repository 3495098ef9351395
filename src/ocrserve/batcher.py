"""Dynamic batching: every page a process recognises goes through one :class:`Batcher`.

Requests put work items (a few pages and their options) on one bounded queue. Inference lanes,
each a thread, take a batch from the head of the queue: the oldest item plus the items behind
it that share its options, up to ``max_batch_size`` pages, waiting at most ``max_wait`` after the
oldest item arrived for more to come. The engine runs on the lane's thread, never on the event
loop. :func:`take_batch` is the pure decision; :class:`Batcher` is the loop around it.

A request of several documents (``/ocr/batch``) is admitted in one step, all of its pages or
none, and gets one outcome per document: one document's failure is never its siblings'.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ocrserve.errors import (
    DeadlineExceededError,
    EngineError,
    InputError,
    QueueFullError,
    ShuttingDownError,
)
from ocrserve.types import OCROptions, Page, PageResult

log = logging.getLogger(__name__)

Outcome = list[PageResult] | BaseException


@dataclass(eq=False, kw_only=True)
class WorkItem:
    pages: Sequence[Page]
    options: OCROptions
    deadline: float  # time.monotonic() past which nobody waits for the result
    on_done: Callable[[int, Outcome], None]  # (index of this item in its request, outcome)
    index: int = 0
    enqueued: float = field(default_factory=time.monotonic)
    #: Set by the waiter when it gives up; a cancelled item is dropped, never run.
    cancelled: bool = False


def take_batch(
    pending: deque[WorkItem], *, max_pages: int, max_items: int, now: float
) -> tuple[list[WorkItem], list[WorkItem]]:
    """Remove from ``pending`` the next batch and every expired or cancelled item.

    The batch is the oldest live item plus the live items behind it with the same options,
    while the pages fit in ``max_pages`` (the first item always fits: a longer item is run
    alone rather than never). Items with other options keep their places.

    >>> q = deque([item_a, item_b_other_lang, item_c])       # doctest: +SKIP
    >>> take_batch(q, max_pages=8, max_items=64, now=t)      # doctest: +SKIP
    ([item_a, item_c], [])
    """
    expired = [w for w in pending if w.cancelled or w.deadline <= now]
    live = [w for w in pending if not (w.cancelled or w.deadline <= now)]
    batch: list[WorkItem] = []
    rest: list[WorkItem] = []
    pages = 0
    for w in live:
        fits = not batch or (
            w.options == batch[0].options
            and pages + len(w.pages) <= max_pages
            and len(batch) < max_items
        )
        if fits:
            batch.append(w)
            pages += len(w.pages)
        else:
            rest.append(w)
    pending.clear()
    pending.extend(rest)
    return batch, expired


def ready_pages(pending: deque[WorkItem]) -> int:
    """Pages waiting that could join a batch led by the oldest item."""
    if not pending:
        return 0
    head = pending[0].options
    return sum(len(w.pages) for w in pending if w.options == head and not w.cancelled)


class Reader(Protocol):
    """What a lane runs: an engine (``engine.Engines``, or one ``engine.Engine``)."""

    def run(self, pages: Sequence[Page], options: OCROptions | None = None) -> list[PageResult]: ...


class BatchMetrics(Protocol):
    def observe_batch(self, pages: int, items: int, seconds: float) -> None: ...
    def set_queue_depth(self, pages: int) -> None: ...


class _NoMetrics:
    def observe_batch(self, pages: int, items: int, seconds: float) -> None:
        pass

    def set_queue_depth(self, pages: int) -> None:
        pass


class Batcher:
    """Feeds the engine from every concurrent caller.

    >>> batcher = Batcher(engine, lanes=2, max_batch_size=8, max_wait=0.005)  # doctest: +SKIP
    >>> batcher.start()                                                       # doctest: +SKIP
    >>> results = await batcher.run(doc.pages, OCROptions(), timeout=60)      # doctest: +SKIP
    """

    def __init__(
        self,
        engine: Reader,
        *,
        lanes: int = 1,
        max_batch_size: int = 8,
        max_wait: float = 0.005,
        queue_max_pages: int = 256,
        batching: bool = True,
        metrics: BatchMetrics | None = None,
    ) -> None:
        self.engine = engine
        self.lanes = lanes
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait if batching else 0.0
        self.max_items = 1_000_000 if batching else 1
        self.queue_max_pages = queue_max_pages
        self.metrics: BatchMetrics = metrics or _NoMetrics()
        self._pending: deque[WorkItem] = deque()
        self._queued_pages = 0
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        #: Lanes still inside an engine call when :meth:`stop` gave up waiting for them.
        self.stuck_lanes = 0
        #: Seconds one page has recently taken, for Retry-After when the queue is full.
        self._page_seconds = 0.5

    @property
    def queued_pages(self) -> int:
        return self._queued_pages

    def start(self) -> None:
        for n in range(self.lanes):
            t = threading.Thread(target=self._lane, name=f"ocrserve-lane-{n}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 30.0) -> None:
        """Take no more work, fail what is still queued (its waiters hear ShuttingDownError),
        and wait up to ``timeout`` in all for the lanes to finish the batches they run. Lanes
        are daemon threads: one stuck in a long engine call does not hold the process."""
        with self._cond:
            self._stopping = True
            dropped = list(self._pending)
            self._pending.clear()
            self._queued_pages = 0
            self.metrics.set_queue_depth(0)
            self._cond.notify_all()
        for w in dropped:
            if not w.cancelled:
                _tell(w, ShuttingDownError("the server is shutting down", retry_after=5.0))
        end = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(end - time.monotonic(), 0.0))
        self.stuck_lanes = sum(t.is_alive() for t in self._threads)
        self._threads.clear()

    def submit(
        self,
        pages: Sequence[Page],
        options: OCROptions,
        *,
        deadline: float,
        on_done: Callable[[int, Outcome], None],
    ) -> list[WorkItem]:
        """Queue pages in items of at most ``max_batch_size``; all of them or none."""
        [items] = self.submit_many([pages], options, deadline=deadline, on_done=[on_done])
        return items

    def submit_many(
        self,
        docs: Sequence[Sequence[Page]],
        options: OCROptions,
        *,
        deadline: float,
        on_done: Sequence[Callable[[int, Outcome], None]],
    ) -> list[list[WorkItem]]:
        """Queue several documents' pages, each in items of at most ``max_batch_size``, with
        one check of the queue's room for all of them: every item is queued, or none is.

        ``on_done[d]`` hears of document ``d``'s items, by their index within the document.
        Raises :class:`QueueFullError` with a ``retry_after`` hint when they do not fit.
        """
        size = self.max_batch_size
        items = [
            [
                WorkItem(
                    pages=pages[start : start + size],
                    options=options,
                    deadline=deadline,
                    on_done=done,
                    index=n,
                )
                for n, start in enumerate(range(0, len(pages), size))
            ]
            for pages, done in zip(docs, on_done, strict=True)
        ]
        total = sum(len(pages) for pages in docs)
        with self._cond:
            if self._stopping:
                raise ShuttingDownError("the server is shutting down", retry_after=5.0)
            # A request larger than the whole queue still runs when the queue is empty.
            if self._queued_pages and self._queued_pages + total > self.queue_max_pages:
                wait = self._queued_pages * self._page_seconds / max(self.lanes, 1)
                raise QueueFullError(
                    f"the inference queue is full ({self._queued_pages} pages waiting, "
                    f"limit {self.queue_max_pages}, {total} more asked for)",
                    retry_after=max(1.0, math.ceil(wait)),
                )
            for doc_items in items:
                self._pending.extend(doc_items)
            self._queued_pages += total
            self.metrics.set_queue_depth(self._queued_pages)
            self._cond.notify_all()
        return items

    async def run(
        self, pages: Sequence[Page], options: OCROptions, *, timeout: float
    ) -> list[PageResult]:
        """Recognise ``pages`` through the queue; :class:`DeadlineExceededError` past timeout."""
        [outcome] = await self.run_many([pages], options, timeout=timeout)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def run_many(
        self, docs: Sequence[Sequence[Page]], options: OCROptions, *, timeout: float
    ) -> list[Outcome]:
        """Recognise several documents' pages, admitted to the queue together or not at all.

        Raises :class:`QueueFullError` when the queue cannot take every page (then nothing is
        queued). Otherwise returns one outcome per document, in order: its page results, or
        the exception that failed it alone; a document unfinished after ``timeout`` gets a
        :class:`DeadlineExceededError` and its queued items are dropped unrun.

        >>> docs = [doc.pages, bad.pages]                                 # doctest: +SKIP
        >>> await batcher.run_many(docs, OCROptions(), timeout=60)        # doctest: +SKIP
        [[PageResult(...)], ModelError(...)]
        """
        outcomes: list[Outcome | None] = [None if pages else [] for pages in docs]
        if all(o is not None for o in outcomes):
            return [[] for _ in docs]
        loop = asyncio.get_running_loop()
        size = self.max_batch_size
        chunks: list[list[list[PageResult] | None]] = [
            [None] * -(-len(pages) // size) for pages in docs
        ]
        settled = loop.create_future()

        def settle(doc: int, index: int, outcome: Outcome) -> None:
            if outcomes[doc] is not None:
                return  # failed already, or given up at the deadline
            if isinstance(outcome, BaseException):
                outcomes[doc] = outcome
                self._cancel(items[doc])  # its other pages would be run for nobody
            else:
                chunks[doc][index] = outcome
                done = [c for c in chunks[doc] if c is not None]
                if len(done) < len(chunks[doc]):
                    return
                outcomes[doc] = [page for chunk in done for page in chunk]
            if all(o is not None for o in outcomes) and not settled.done():
                settled.set_result(None)

        def on_done(doc: int, index: int, outcome: Outcome) -> None:  # on a lane's thread
            if not loop.is_closed():  # a closed loop: nobody is left to tell
                loop.call_soon_threadsafe(settle, doc, index, outcome)

        items = self.submit_many(
            docs,
            options,
            deadline=time.monotonic() + timeout,
            on_done=[functools.partial(on_done, d) for d in range(len(docs))],
        )
        try:
            await asyncio.wait_for(settled, timeout)
        except TimeoutError:
            late = [d for d, o in enumerate(outcomes) if o is None]
            self._cancel(w for d in late for w in items[d])
            for d in late:
                outcomes[d] = DeadlineExceededError(
                    f"the request did not finish within {timeout:g} s", timeout=timeout
                )
        except BaseException:
            self._cancel(w for doc_items in items for w in doc_items)
            raise
        return [o if o is not None else [] for o in outcomes]  # every one is set by now

    def _cancel(self, items: Iterable[WorkItem]) -> None:
        with self._cond:
            for item in items:
                item.cancelled = True

    def _lane(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:
                    return  # stopping, and nothing left
                wait_until = self._pending[0].enqueued + self.max_wait
                while (
                    self.max_items > 1
                    and not self._stopping
                    and ready_pages(self._pending) < self.max_batch_size
                    and (left := wait_until - time.monotonic()) > 0
                ):
                    self._cond.wait(left)
                    if not self._pending:
                        break
                # A fair share, not all of it: the other lanes are as fast, and a lane runs its
                # batch page after page, so one lane taking everything would leave the others
                # idle and make every request wait for the whole batch.
                share = -(-ready_pages(self._pending) // self.lanes)
                batch, expired = take_batch(
                    self._pending,
                    max_pages=max(1, min(self.max_batch_size, share)),
                    max_items=self.max_items,
                    now=time.monotonic(),
                )
                self._queued_pages -= sum(len(w.pages) for w in batch + expired)
                self.metrics.set_queue_depth(self._queued_pages)
            for w in expired:
                if not w.cancelled:
                    _tell(w, DeadlineExceededError("deadline passed", timeout=0.0))
            if batch:
                self._run(batch)

    def _run(self, batch: list[WorkItem]) -> None:
        pages = [p for w in batch for p in w.pages]
        t0 = time.perf_counter()
        try:
            results = self.engine.run(pages, batch[0].options)
            if len(results) != len(pages):
                raise EngineError(f"engine returned {len(results)} results for {len(pages)} pages")
        except Exception as e:
            if len(batch) > 1:
                # Pages of several documents shared this call, and one poison file must not fail
                # its siblings: run each item alone once, and the error reaches only the items
                # that fail again. Item by item is document by document here: every item of a
                # document but its last fills an engine call alone, so none of them share one.
                log.warning(
                    "batch of %d pages from %d items failed (%r); running each alone",
                    len(pages), len(batch), e,
                )  # fmt: skip
                for w in batch:
                    if w.cancelled:
                        continue
                    if w.deadline <= time.monotonic():
                        _tell(w, DeadlineExceededError("deadline passed", timeout=0.0))
                        continue
                    self._run([w])
                return
            if isinstance(e, InputError):  # a page decoded only now proved corrupt: no bug
                log.info("batch of %d pages refused: %s", len(pages), e)
            else:
                log.exception("batch of %d pages failed", len(pages))
            _tell(batch[0], e)
            return
        except BaseException as e:  # every waiter hears of it; the lane lives on
            log.exception("batch of %d pages failed", len(pages))
            for w in batch:
                _tell(w, e)
            return
        elapsed = time.perf_counter() - t0
        self._page_seconds = 0.8 * self._page_seconds + 0.2 * elapsed / len(pages)
        self.metrics.observe_batch(len(pages), len(batch), elapsed)
        start = 0
        for w in batch:
            _tell(w, results[start : start + len(w.pages)])
            start += len(w.pages)


def _tell(item: WorkItem, outcome: Outcome) -> None:
    """Hand an outcome to its waiter; a waiter's failure must never kill the lane."""
    try:
        item.on_done(item.index, outcome)
    except Exception:
        log.exception("could not deliver a result")
