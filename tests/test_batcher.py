from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import pytest

from ocrserve import Engine, OCROptions, Page, PageResult, decode_path
from ocrserve.batcher import Batcher, WorkItem, ready_pages, take_batch
from ocrserve.errors import DeadlineExceededError, QueueFullError

from .conftest import FIXTURES

pytestmark = pytest.mark.anyio

CH, EN = OCROptions(lang="ch"), OCROptions(lang="en")


def item(n_pages: int, options: OCROptions = CH, deadline: float = 1e18) -> WorkItem:
    page = Page(decode_path(FIXTURES / "en_line_long_text.jpg").pages[0].image)
    return WorkItem(
        pages=[page] * n_pages, options=options, deadline=deadline, on_done=lambda i, o: None
    )


def test_a_batch_is_the_oldest_item_and_those_behind_it_with_its_options() -> None:
    a, b, c, d = item(2), item(1, EN), item(3), item(2, EN)
    q = deque([a, b, c, d])
    batch, expired = take_batch(q, max_pages=8, max_items=100, now=0.0)
    assert batch == [a, c] and expired == []
    assert list(q) == [b, d]  # the others keep their order
    assert ready_pages(q) == 3


def test_the_page_cap_holds_but_an_oversized_item_still_runs_alone() -> None:
    big, small = item(12), item(1)
    q = deque([big, small])
    batch, _ = take_batch(q, max_pages=8, max_items=100, now=0.0)
    assert batch == [big] and list(q) == [small]
    q = deque([item(5), item(4), item(3)])
    batch, _ = take_batch(q, max_pages=8, max_items=100, now=0.0)
    assert [len(w.pages) for w in batch] == [5, 3]  # 4 would pass the cap, 3 still fits


def test_expired_and_cancelled_items_are_dropped_not_run() -> None:
    late, cancelled, live = item(1, deadline=5.0), item(1), item(1)
    cancelled.cancelled = True
    q = deque([late, cancelled, live])
    batch, expired = take_batch(q, max_pages=8, max_items=100, now=10.0)
    assert batch == [live] and expired == [late, cancelled] and not q


def test_batching_off_takes_one_item_at_a_time() -> None:
    q = deque([item(1), item(1)])
    batch, _ = take_batch(q, max_pages=8, max_items=1, now=0.0)
    assert len(batch) == 1 and len(q) == 1


class Recorder:
    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []
        self.depths: list[int] = []

    def observe_batch(self, pages: int, items: int, seconds: float) -> None:
        self.batches.append((pages, items))

    def set_queue_depth(self, pages: int) -> None:
        self.depths.append(pages)


async def test_concurrent_requests_share_engine_calls_and_get_their_own_pages(
    engine: Engine,
) -> None:
    names = [
        "phototest.tif",
        "en_doc_paragraph.jpg",
        "en_line_long_text.jpg",
        "zh_doc_certificate.jpeg",
    ]
    pages = [decode_path(FIXTURES / n).pages[0] for n in names]
    expected = [engine.run([p])[0].text for p in pages]
    metrics = Recorder()
    batcher = Batcher(engine, lanes=1, max_batch_size=8, max_wait=0.2, metrics=metrics)
    batcher.start()
    try:
        got = await asyncio.gather(*(batcher.run([p], CH, timeout=60) for p in pages * 2))
    finally:
        batcher.stop()
    assert [r[0].text for r in got] == expected * 2
    assert max(p for p, _ in metrics.batches) > 1  # requests were batched together
    assert sum(p for p, _ in metrics.batches) == 8
    assert metrics.depths[-1] == 0


async def test_a_full_queue_refuses_with_a_retry_hint(engine: Engine) -> None:
    page = decode_path(FIXTURES / "en_line_long_text.jpg").pages[0]
    batcher = Batcher(engine, lanes=1, max_batch_size=1, queue_max_pages=2)
    # Lanes not started: nothing drains the queue.
    batcher.submit([page, page], CH, deadline=time.monotonic() + 60, on_done=lambda i, o: None)
    with pytest.raises(QueueFullError) as info:
        batcher.submit([page], CH, deadline=time.monotonic() + 60, on_done=lambda i, o: None)
    assert info.value.retry_after >= 1
    assert batcher.queued_pages == 2


async def test_past_its_deadline_a_request_fails_and_its_pages_leave_the_queue(
    engine: Engine,
) -> None:
    page = decode_path(FIXTURES / "phototest.tif").pages[0]
    batcher = Batcher(engine, lanes=1, max_batch_size=1)
    with pytest.raises(DeadlineExceededError):
        await batcher.run([page] * 3, CH, timeout=0.01)  # no lane yet: it cannot finish
    assert batcher.queued_pages == 3
    batcher.start()  # the lane finds the items cancelled and drops them unrun
    try:
        for _ in range(100):
            if batcher.queued_pages == 0:
                break
            await asyncio.sleep(0.01)
        assert batcher.queued_pages == 0
        assert len(await batcher.run([page], CH, timeout=60)) == 1  # and it still works
    finally:
        batcher.stop()


def page_of(name: str) -> Page:
    return decode_path(FIXTURES / name).pages[0]


async def test_several_documents_are_admitted_all_together_or_not_at_all(engine: Engine) -> None:
    page = page_of("en_line_long_text.jpg")
    batcher = Batcher(engine, lanes=1, max_batch_size=1, queue_max_pages=4)
    # Lanes not started: the queue keeps what it is given.
    batcher.submit([page], CH, deadline=time.monotonic() + 60, on_done=lambda i, o: None)
    with pytest.raises(QueueFullError) as info:  # 1 + 4 pages: room for 3 more, not 4
        await batcher.run_many([[page, page], [page], [page]], CH, timeout=60)
    assert info.value.retry_after >= 1
    assert batcher.queued_pages == 1  # not one page of the refused documents was queued
    batcher.start()
    try:  # 1 + 3 pages fit
        got = await batcher.run_many([[page, page], [page]], CH, timeout=60)
    finally:
        batcher.stop()
    assert [len(o) for o in got if isinstance(o, list)] == [2, 1]


class Poisoned:
    """The real engine, but a page of one size (a poison file) raises; records every call."""

    def __init__(self, engine: Engine, poison: Page) -> None:
        self.engine = engine
        self.poison = poison.image.shape
        self.calls: list[int] = []  # pages per call

    def run(self, pages: Sequence[Page], options: OCROptions | None = None) -> list[PageResult]:
        self.calls.append(len(pages))
        if any(p.image.shape == self.poison for p in pages):
            raise RuntimeError("poison page")
        return self.engine.run(pages, options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


async def test_an_engine_error_on_one_document_leaves_the_others_results_intact(
    engine: Engine,
) -> None:
    good, bad, other = (
        page_of(n) for n in ("phototest.tif", "zh_doc_certificate.jpeg", "en_line_long_text.jpg")
    )
    expected = [engine.run([p], CH)[0].text for p in (good, other)]
    poisoned = Poisoned(engine, bad)
    # The lane waits for a full batch, and all three pages come in one admission: they share
    # the first engine call, the one the poison page breaks.
    batcher = Batcher(poisoned, lanes=1, max_batch_size=3, max_wait=30.0)  # type: ignore[arg-type]
    batcher.start()
    try:
        a, b, c = await batcher.run_many([[good], [bad], [other]], CH, timeout=60)
    finally:
        batcher.stop()
    assert isinstance(b, RuntimeError)
    assert isinstance(a, list) and isinstance(c, list)
    assert [a[0].text, c[0].text] == expected
    assert poisoned.calls == [3, 1, 1, 1]  # the mixed call failed; each document ran alone


class Gated:
    """Instant fake results, but a page of one size waits for the gate (a stuck engine call)."""

    def __init__(self, stuck: Page) -> None:
        self.stuck = stuck.image.shape
        self.gate = threading.Event()
        self.calls: list[tuple[int, ...]] = []  # page shapes per call

    def run(self, pages: Sequence[Page], options: OCROptions | None = None) -> list[PageResult]:
        self.calls.append(tuple(p.image.shape[0] for p in pages))
        if any(p.image.shape == self.stuck for p in pages):
            self.gate.wait(60)
        return [PageResult(p.index, p.width, p.height, (), f"{p.width}x{p.height}") for p in pages]


async def test_a_deadline_fails_only_the_unfinished_documents_and_drops_their_pages() -> None:
    fast, stuck, behind = (
        page_of(n) for n in ("phototest.tif", "zh_doc_certificate.jpeg", "en_line_long_text.jpg")
    )
    gated = Gated(stuck)
    batcher = Batcher(gated, lanes=1, max_batch_size=1, batching=False)  # type: ignore[arg-type]
    batcher.start()
    try:
        a, b, c = await batcher.run_many([[fast], [stuck], [behind, behind]], CH, timeout=2)
    finally:
        gated.gate.set()
        batcher.stop()
    assert isinstance(a, list) and a[0].text == "640x480"
    assert isinstance(b, DeadlineExceededError) and isinstance(c, DeadlineExceededError)
    # the pages queued behind the stuck call were dropped unrun
    assert gated.calls == [(480,), (368,)]
    assert batcher.queued_pages == 0
