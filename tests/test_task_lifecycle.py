"""Every accepted task ends, once: retry budget, supervised loops, leases, progress, options.

In-process, on real SQLite (and PostgreSQL where the store's SQL differs), with the real
engine; faults are injected by wrapping the engine or one store method.
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
from PIL import Image
from sqlalchemy.exc import OperationalError

from ocrserve import Engine, Settings
from ocrserve.batcher import Batcher
from ocrserve.decode import DecodeLimits
from ocrserve.errors import StoreError
from ocrserve.jobs.delivery import CallbackPolicy
from ocrserve.jobs.embedded import EmbeddedWorkers
from ocrserve.jobs.lock import DatabaseLock
from ocrserve.jobs.runner import RunnerConfig, execute
from ocrserve.jobs.store import TaskRow, TaskStore
from ocrserve.jobs.task import FAILED, RUNNING, NewTask, encode_options
from ocrserve.types import OCROptions, Page, PageResult, result_dict

from .conftest import FIXTURES, SECRET, Receiver, client_for

pytestmark = pytest.mark.anyio

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
LONG_LINE = (FIXTURES / "en_line_long_text.jpg").read_bytes()
PDF = (FIXTURES / "irs_f1040nr.pdf").read_bytes()
#: A real image of a size nothing else has: the wrapped engine raises on it.
POISON_SIZE = (123, 45)


def poison_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", POISON_SIZE, "white").save(out, format="PNG")
    return out.getvalue()


class FaultyEngine:
    """The real engine, except that a poison page raises a non-OCR error, and a page whose
    index is in ``hold`` waits for ``release`` first."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.hold: set[int] = set()
        self.release = threading.Event()
        self.holding = threading.Event()
        self.calls = 0

    def run(self, pages: Sequence[Page], options: OCROptions | None = None) -> list[PageResult]:
        self.calls += 1
        if any((p.width, p.height) == POISON_SIZE for p in pages):
            raise RuntimeError("the poison page")
        if any(p.index in self.hold for p in pages):
            self.holding.set()
            assert self.release.wait(120)
        return self.engine.run(pages, options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


def new_task(
    data: bytes, callback: str | None = None, max_pages: int = 100, **options: Any
) -> NewTask:
    return NewTask(
        options=encode_options(OCROptions(**options), max_pages),
        input_bytes=data,
        callback_url=callback,
    )


def workers_for(
    store: TaskStore, engine: Any, **config: Any
) -> tuple[EmbeddedWorkers, Batcher, dict[str, int]]:
    restarts: dict[str, int] = {}

    def restarted(loop: str) -> None:
        restarts[loop] = restarts.get(loop, 0) + 1

    batcher = Batcher(engine, lanes=1, max_batch_size=4, max_wait=0.0)
    batcher.start()
    base: dict[str, Any] = {"limits": DecodeLimits(), "model": "test", "lease": 5.0,
                            "retry_delays": (0.05,), "allow_private": True}  # fmt: skip
    workers = EmbeddedWorkers(
        store,
        batcher,
        RunnerConfig(**(base | config)),
        CallbackPolicy(secret=SECRET, retry_delays=(0.1, 0.2), allow_private=True),
        workers=1,
        poll=0.05,
        on_restart=restarted,
    )
    return workers, batcher, restarts


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TaskStore]:
    s = TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}")
    yield s
    s.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TaskStore]:
    if request.param == "sqlite":
        s = TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}")
        yield s
        s.close()
        return
    schema = f"ocrserve_test_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"))
    with admin.begin() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    s = TaskStore(f"{PG_URL}?options=-csearch_path%3D{schema}")
    yield s
    s.close()
    with admin.begin() as conn:
        conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


# --- the retry budget ----------------------------------------------------------------------


async def test_a_poison_task_fails_after_the_budget_with_one_callback(
    engine: Engine, store: TaskStore, receiver: Receiver
) -> None:
    faulty = FaultyEngine(engine)
    workers, batcher, _ = workers_for(store, faulty, max_runs=3)
    try:
        poison, _ = store.create(new_task(poison_png(), receiver.url))
        good, _ = store.create(new_task(LONG_LINE, receiver.url))
        await workers.drain()
    finally:
        batcher.stop()
        await workers.stop()
    row = store.get(poison.id)
    assert row is not None and row.status == FAILED and row.runs == 3
    assert row.error_code == "internal_error" and "poison page" in (row.error_message or "")
    assert faulty.calls >= 3
    ok = store.get(good.id)
    assert ok is not None and ok.status == "succeeded" and ok.runs == 1
    events = {c["event"]["task_id"]: c["event"] for c in receiver.delivered()}
    assert sorted(c["event"]["task_id"] for c in receiver.calls) == sorted([poison.id, good.id])
    assert events[poison.id]["status"] == "failed"
    assert events[poison.id]["error"]["code"] == "internal_error"


def test_a_task_whose_worker_dies_every_run_ends_worker_crashed(any_store: TaskStore) -> None:
    store = any_store
    row, _ = store.create(new_task(LONG_LINE, "https://hooks.example/x"))
    # A worker that dies leaves its lease to run out; a lease already over stands for it.
    for run in range(1, 4):
        claimed = store.claim(row.id, f"w{run}", lease=-1.0, max_runs=3)
        assert claimed is not None and claimed.runs == run
    assert store.claim(row.id, "w4", lease=-1.0, max_runs=3) is None  # no run left
    assert store.claim_next("w4", lease=-1.0, max_runs=3) is None
    assert store.reap(3) == [row.id]
    assert store.reap(3) == []  # once
    done = store.get(row.id)
    assert done is not None and done.status == FAILED and done.error_code == "worker_crashed"
    assert done.input_bytes is None and done.lease_until is None
    assert done.callback_state == "pending"  # its callback fires
    assert store.due_callbacks(time.time() + 1) == [row.id]


def test_a_retry_is_not_claimed_before_it_is_due(any_store: TaskStore) -> None:
    store = any_store
    row, _ = store.create(new_task(LONG_LINE))
    assert store.claim(row.id, "w1", lease=30, max_runs=3) is not None
    assert store.retry_later(row.id, "w1", ("internal_error", "boom"), delay=3600)
    assert store.claim_next("w2", lease=30, max_runs=3) is None
    assert store.retry_later(row.id, "w1", ("internal_error", "boom"), delay=0) is False  # not w1's
    again = store.get(row.id)
    assert again is not None and again.status == "queued" and again.error_code == "internal_error"


# --- purge, set-based ------------------------------------------------------------------------


def test_purge_deletes_in_batches_and_keeps_pending_callbacks(any_store: TaskStore) -> None:
    store = any_store
    ids = []
    empty = result_dict([], pages_total=1, truncated=False, model="t", timings={"total": 0.0})
    for n in range(7):
        row, _ = store.create(new_task(LONG_LINE, "https://hooks.example/x" if n == 0 else None))
        assert store.claim(row.id, "w", lease=30, max_runs=3) is not None
        assert store.finish(row.id, "w", "succeeded", result=empty)
        ids.append(row.id)
    queued, _ = store.create(new_task(LONG_LINE))
    assert store.purge(time.time() + 1, batch=3) == 6  # 3 + 3 + 0: the loop ends on a short batch
    assert store.get(ids[0]) is not None  # its callback is still pending
    assert store.get(queued.id) is not None
    assert all(store.get(i) is None for i in ids[1:])
    assert store.delete(queued.id) is False and store.delete(ids[0]) is True


# --- the sweeper: one message per expiry, however many sweepers ----------------------------


def test_the_sweeper_sends_one_message_per_expired_lease(any_store: TaskStore) -> None:
    store = any_store
    row, _ = store.create(new_task(LONG_LINE))
    store.mark_published(row.id)
    assert store.unpublished(time.time() - 600, max_runs=3) == []  # its message is out
    with store.session() as s:  # ... sent a while ago, before the run below started
        s.execute(sqlalchemy.update(TaskRow).values(published_at=time.time() - 100))
    assert store.claim(row.id, "w1", lease=-1.0, max_runs=3) is not None  # w1 died
    assert store.unpublished(time.time() - 600, 3) == [row.id]
    assert store.unpublished(time.time() - 600, 3) == []  # the second sweeper sends nothing
    assert store.claim(row.id, "w2", lease=30, max_runs=3) is not None  # w2 alive: nothing
    assert store.unpublished(time.time() - 600, 3) == []
    assert store.retry_later(row.id, "w2", ("internal_error", "boom"), delay=0.0)
    assert store.unpublished(time.time() - 600, 3) == [row.id]  # the retry is due: one message
    assert store.unpublished(time.time() - 600, 3) == []


def test_sweepers_racing_send_each_task_once(any_store: TaskStore) -> None:
    store = any_store
    ids = [store.create(new_task(b"x"))[0].id for _ in range(20)]
    with store.session() as s:  # submitted a while ago
        s.execute(sqlalchemy.update(TaskRow).values(created_at=time.time() - 100))
    for task_id in ids:  # each run by a worker that died
        assert store.claim(task_id, "dead", lease=-1.0, max_runs=3) is not None
    sent: list[str] = []
    lock = threading.Lock()

    def sweep() -> None:
        ids = store.unpublished(time.time() - 600, 3)
        with lock:
            sent.extend(ids)

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(sent) == sorted(ids)


# --- supervised loops ------------------------------------------------------------------------


async def test_a_database_error_in_claim_next_does_not_kill_the_worker(
    engine: Engine, store: TaskStore
) -> None:
    workers, batcher, restarts = workers_for(store, engine)
    real = store.claim_next
    failures = iter([True, True])

    def flaky(*args: Any) -> Any:
        if next(failures, False):
            raise OperationalError("SELECT ...", {}, Exception("server closed the connection"))
        return real(*args)

    store.claim_next = flaky  # type: ignore[method-assign]
    await workers.start()
    try:
        row, _ = store.create(new_task(LONG_LINE))
        workers.notify()
        deadline = time.monotonic() + 120
        while (current := store.get(row.id)) is None or current.status != "succeeded":
            assert time.monotonic() < deadline, "the worker did not survive the database error"
            await asyncio.sleep(0.05)
    finally:
        await workers.stop()
        batcher.stop()
    assert restarts == {"worker-0": 2}


async def test_stop_closes_everything_even_after_a_loop_died(
    engine: Engine, store: TaskStore
) -> None:
    workers, batcher, _ = workers_for(store, engine)
    await workers.start()
    workers._tasks.append(asyncio.create_task(_raise()))
    await asyncio.sleep(0)
    await workers.stop()  # no exception
    batcher.stop()
    assert workers._http.is_closed


async def _raise() -> None:
    raise RuntimeError("a loop that died")


async def test_a_heartbeat_that_finds_the_lease_lost_stops_the_run(
    engine: Engine, store: TaskStore
) -> None:
    faulty = FaultyEngine(engine)
    faulty.hold = {1}
    batcher = Batcher(faulty, lanes=1, max_batch_size=1, max_wait=0.0)
    batcher.start()
    config = RunnerConfig(limits=DecodeLimits(), model="t", lease=0.6)
    row, _ = store.create(new_task(LONG_LINE))
    claimed = store.claim(row.id, "w1", lease=0.6, max_runs=3)
    assert claimed is not None

    async def recognise(pages: Sequence[Page], options: OCROptions) -> list[PageResult]:
        return await batcher.run(pages, options, timeout=120)

    async def steal() -> None:
        await asyncio.to_thread(faulty.holding.wait, 60)
        with store.session() as s:  # another worker took the task over
            s.execute(
                sqlalchemy.update(TaskRow)
                .where(TaskRow.id == row.id)
                .values(worker="w2", lease_until=time.time() + 600)
            )

    async with httpx.AsyncClient() as http:
        thief = asyncio.create_task(steal())
        try:
            outcome = await execute(
                claimed, store=store, worker="w1", config=config, recognise=recognise,
                http=http, run_sync=asyncio.to_thread,
            )  # fmt: skip
        finally:
            faulty.release.set()
            await thief
            batcher.stop()
    assert outcome == "lost"  # returned while the engine still held the page
    after = store.get(row.id)
    assert after is not None and after.status == RUNNING and after.worker == "w2"


async def test_heartbeat_errors_do_not_stop_the_run(engine: Engine, store: TaskStore) -> None:
    workers, batcher, _ = workers_for(store, engine, lease=0.6)
    real = store.heartbeat
    calls = {"n": 0}

    def flaky(*args: Any) -> bool:
        calls["n"] += 1
        if calls["n"] in (2, 3):
            raise OperationalError("UPDATE ...", {}, Exception("database is locked"))
        return real(*args)

    store.heartbeat = flaky  # type: ignore[method-assign]
    try:
        # recognised (seconds a page), so that the lease is renewed while it runs
        row, _ = store.create(new_task(PDF, max_pages=2, pdf_text="ocr"))
        await workers.drain()
    finally:
        batcher.stop()
        await workers.stop()
    done = store.get(row.id)
    assert done is not None and done.status == "succeeded" and done.runs == 1
    assert calls["n"] >= 3


# --- progress per page, options as /ocr --------------------------------------------------------


async def test_progress_moves_page_by_page(engine: Engine, tmp_path: Path) -> None:
    faulty = FaultyEngine(engine)
    faulty.hold = {2}
    # two lanes: page 3 goes past page 2, which the engine holds
    settings = Settings(data_dir=tmp_path, lanes=2, max_batch_size=1, log_json=False)
    async for client in client_for(settings, faulty):  # type: ignore[arg-type]
        r = await client.post(
            "/ocr/async", files={"image": ("f.pdf", PDF)}, data={"max_pages": "3"}
        )
        task_id = r.json()["task_id"]
        await asyncio.to_thread(faulty.holding.wait, 120)
        deadline = time.monotonic() + 120
        while (t := (await client.get(f"/task/{task_id}")).json())["progress"]["pages_done"] < 2:
            assert time.monotonic() < deadline, t
            await asyncio.sleep(0.05)
        # pages 1 and 3 are read, page 2 is still in the engine
        assert t["status"] == "running" and t["progress"] == {"pages_done": 2, "pages_total": 3}
        faulty.release.set()
        while (t := (await client.get(f"/task/{task_id}")).json())["status"] == "running":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert t["status"] == "succeeded" and t["progress"]["pages_done"] == 3


async def test_async_reads_as_sync_with_the_servers_min_confidence(
    engine: Engine, tmp_path: Path
) -> None:
    image = (FIXTURES / "zh_scene_poster_ch_en_num.jpg").read_bytes()
    texts = {}
    for min_conf in (0.5, 0.95):
        settings = Settings(data_dir=tmp_path / str(min_conf), lanes=1, log_json=False,
                            min_confidence=min_conf)  # fmt: skip
        served = FaultyEngine(engine)  # the real engine with the defaults such settings give
        served.defaults = OCROptions(min_confidence=min_conf)
        async for client in client_for(settings, served):  # type: ignore[arg-type]
            sync = (await client.post("/ocr", files={"image": ("p.jpg", image)})).json()
            r = await client.post(
                "/ocr/async", json={"image_base64": base64.b64encode(image).decode()}
            )
            task_id = r.json()["task_id"]
            deadline = time.monotonic() + 120
            while (t := (await client.get(f"/task/{task_id}")).json())["status"] in (
                "queued", "running",
            ):  # fmt: skip
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert t["result"]["text"] == sync["text"]
            texts[min_conf] = sync["text"]
    assert texts[0.5] != texts[0.95]  # the setting matters on this image: the test can fail


# --- one process per data folder; restart recovery ------------------------------------------


def test_embedded_mode_refuses_a_shared_database_and_a_second_process(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="SQLite only"):
        DatabaseLock.for_url(PG_URL)
    first = DatabaseLock.for_url(f"sqlite:///{tmp_path / 'tasks.db'}")
    first.acquire()
    try:
        second = DatabaseLock.for_url(f"sqlite:///{tmp_path / 'tasks.db'}")
        with pytest.raises(StoreError, match="another ocrserve process"):
            second.acquire()
    finally:
        first.release()
    DatabaseLock.for_url(f"sqlite:///{tmp_path / 'tasks.db'}").acquire()


async def test_embedded_server_on_postgresql_does_not_start(engine: Engine, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, lanes=1, database_url=PG_URL, log_json=False)
    with pytest.raises(StoreError, match="OCRSERVE_BROKER_URL"):
        async for _ in client_for(settings, engine):
            pass


async def test_a_callback_a_dead_process_was_sending_goes_out_at_restart(
    engine: Engine, store: TaskStore, receiver: Receiver
) -> None:
    row, _ = store.create(new_task(LONG_LINE, receiver.url))
    assert store.claim(row.id, "gone", lease=30, max_runs=3) is not None
    empty = result_dict([], pages_total=1, truncated=False, model="t", timings={"total": 0.0})
    assert store.finish(row.id, "gone", "succeeded", result=empty)
    # the dead process had taken it for an attempt, with an hour's hold
    assert store.claim_callback(row.id, hold=3600) is not None
    workers, batcher, _ = workers_for(store, engine)
    await workers.start()
    try:
        deadline = time.monotonic() + 60
        while not receiver.delivered():
            assert time.monotonic() < deadline, "the callback waited for the dead process's hold"
            await asyncio.sleep(0.05)
    finally:
        await workers.stop()
        batcher.stop()
    assert [c["event"]["task_id"] for c in receiver.calls] == [row.id]
