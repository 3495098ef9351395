"""The durable task record: SQLite (WAL) by default, PostgreSQL when the service is distributed.

The task table is the source of truth in both modes; a queue message (Celery) only says "look
at task X". Every state change is one conditional UPDATE, so two workers can never both claim
a task, and a worker killed mid-task leaves a row whose lease runs out and is claimed again::

    queued ──claim──> running ──finish──> succeeded | partial_success | failed
      │                  │ lease expired (worker died): claimable again
      └──cancel──> cancelled

Callbacks live on the same row: ``callback_state`` pending -> delivered | dead, with
``callback_next_at`` the time of the next attempt and every attempt logged.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Float,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    case,
    create_engine,
    delete,
    event,
    func,
    select,
    true,
    update,
)
from sqlalchemy.engine import Engine as SQLEngine
from sqlalchemy.exc import IntegrityError, InterfaceError, InternalError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from ocrserve.config import DEFAULT_TENANT
from ocrserve.errors import StorageUnavailableError
from ocrserve.jobs.schema import migrate
from ocrserve.jobs.task import (
    CANCELLED,
    DEAD,
    FAILED,
    FINISHED,
    PENDING,
    QUEUED,
    RUNNING,
    WORKER_CRASHED,
    IdempotencyConflict,
    NewTask,
)

TABLE = "ocr_tasks"
#: SQLite's auto_vacuum mode 2: free pages can be cut off the file by ``incremental_vacuum``.
SQLITE_INCREMENTAL = 2
WAL_SIZE_LIMIT = 16 * 1024 * 1024
#: Rows per DELETE when purging: short statements, short locks.
PURGE_BATCH = 500


class Base(DeclarativeBase):
    pass


class TaskRow(Base):
    __tablename__ = TABLE
    # Idempotency keys are each tenant's own: another tenant's "invoice-42" is another task.
    __table_args__ = (
        UniqueConstraint("tenant", "idempotency_key", name="uq_ocr_tasks_tenant_idempotency_key"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: Who made it: the name of its API key (never the key), DEFAULT_TENANT when keys are off.
    #: Reads, cancels, purges and idempotency lookups of the API are scoped to it.
    tenant: Mapped[str] = mapped_column(String(64), server_default=DEFAULT_TENANT)
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    source_url: Mapped[str | None] = mapped_column(Text)
    input_bytes: Mapped[bytes | None] = mapped_column(LargeBinary)
    filename: Mapped[str | None] = mapped_column(String(255))
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    pages_done: Mapped[int] = mapped_column(Integer, default=0)
    pages_total: Mapped[int | None] = mapped_column(Integer)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    lease_until: Mapped[float | None] = mapped_column(Float)
    #: When a queue message for it was last sent (Celery mode): the sweeper's clock.
    published_at: Mapped[float | None] = mapped_column(Float)
    worker: Mapped[str | None] = mapped_column(String(128))
    runs: Mapped[int] = mapped_column(Integer, default=0)
    #: A run that failed with an error is queued again, not before this time (the retry budget
    #: is ``runs``; the schedule is data on the row, as the callback's is).
    next_attempt_at: Mapped[float | None] = mapped_column(Float)
    callback_url: Mapped[str | None] = mapped_column(Text)
    callback_state: Mapped[str | None] = mapped_column(String(16), index=True)
    callback_next_at: Mapped[float | None] = mapped_column(Float, index=True)
    #: Set while a dispatcher makes an attempt (a hold, in case it dies mid-attempt).
    callback_claimed_until: Mapped[float | None] = mapped_column(Float)
    callback_attempts: Mapped[int] = mapped_column(Integer, default=0)
    callback_log: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    callback_last_error: Mapped[str | None] = mapped_column(Text)


@dataclass(frozen=True, slots=True)
class TaskStats:
    """What the table says about the queue, for metrics (see :meth:`TaskStore.stats`)."""

    #: Tasks by status; every status present, zero when no row has it.
    by_status: dict[str, int]
    #: Callbacks that ended dead (the dead letters).
    dead_letters: int
    #: Seconds the longest-waiting claimable task has waited since it could run (queued and
    #: due, or running under an expired lease); 0 when none waits.
    oldest_waiting_s: float
    #: The latest lease end among running tasks (None: nothing runs). A worker extends its
    #: lease by a heartbeat, so this minus the lease length is when the newest heartbeat was.
    newest_lease_until: float | None


def make_engine(url: str) -> SQLEngine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _: Any) -> None:
            # WAL: readers never block the writer; synchronous=NORMAL is durable across a
            # process crash (SIGKILL), which is what we promise, at a fraction of FULL's cost.
            cur = conn.cursor()
            # Before any table exists this makes the file shrinkable (see compact()); on a
            # file made without it, TaskStore converts it once with a VACUUM.
            cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
            cur.execute("PRAGMA journal_mode=WAL")
            # A checkpoint cuts the WAL back to this size, rather than leaving it at its peak.
            cur.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


class TaskStore:
    """All reads and writes of task rows. Thread-safe; call from threads, not the event loop.

    >>> store = TaskStore("sqlite:////tmp/tasks.db")   # doctest: +SKIP
    >>> task, created = store.create(NewTask(options={"lang": "en"}, source_url=url))
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        try:
            migrate(self.engine)
            self._make_shrinkable()
        except BaseException:
            self.engine.dispose()
            raise
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def _make_shrinkable(self) -> None:
        """A SQLite file made without incremental auto-vacuum (by an earlier version) never
        gives space back; one VACUUM switches it over."""
        if not self.is_sqlite:
            return
        with self.engine.connect() as conn:
            if conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() == SQLITE_INCREMENTAL:
                return
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"PRAGMA auto_vacuum={SQLITE_INCREMENTAL}")
            conn.exec_driver_sql("VACUUM")

    def compact(self) -> None:
        """Give the space of deleted rows back to the file system (SQLite; PostgreSQL's
        autovacuum does this itself): free pages off the end of the file, then a checkpoint
        that truncates the WAL."""
        if not self.is_sqlite:
            return
        raw = self.engine.raw_connection()
        try:
            # executescript steps each statement to its end: through execute(), Python's
            # sqlite3 steps incremental_vacuum once, which frees a single page.
            raw.driver_connection.executescript(  # type: ignore[union-attr]
                "PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);"
            )
        finally:
            raw.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction. A database that cannot take it now (disk full, read-only, down)
        raises :class:`StorageUnavailableError`, which callers answer with a 503."""
        try:
            with self._session.begin() as s:
                yield s
        except (OperationalError, InterfaceError, InternalError) as e:
            raise StorageUnavailableError(
                f"the task database is unavailable: {e.orig or e}".splitlines()[0]
            ) from e

    def close(self) -> None:
        self.engine.dispose()

    # --- submit, read, delete ----------------------------------------------------------------

    def create(
        self, new: NewTask, idempotency_key: str | None = None, *, tenant: str = DEFAULT_TENANT
    ) -> tuple[TaskRow, bool]:
        """Insert a queued task of ``tenant``; with a key this tenant already used, return that
        task (or conflict). Another tenant's use of the same key is another task."""
        digest = new.request_hash
        if idempotency_key is not None:
            existing = self._by_key(tenant, idempotency_key)
            if existing is not None:
                return self._same_request(existing, digest), False
        row = TaskRow(
            id=uuid.uuid4().hex,
            status=QUEUED,
            created_at=time.time(),
            tenant=tenant,
            idempotency_key=idempotency_key,
            request_hash=digest,
            source_url=new.source_url,
            input_bytes=new.input_bytes,
            filename=new.filename,
            options=new.options,
            meta=new.metadata,
            pages_done=0,
            runs=0,
            callback_url=new.callback_url,
            callback_attempts=0,
        )
        try:
            with self.session() as s:
                s.add(row)
        except IntegrityError:
            # Two submits with one key raced; the other one's row won.
            existing = self._by_key(tenant, idempotency_key or "")
            if existing is None:
                raise
            return self._same_request(existing, digest), False
        return row, True

    def _by_key(self, tenant: str, key: str) -> TaskRow | None:
        with self.session() as s:
            return s.scalars(
                select(TaskRow).where(TaskRow.tenant == tenant, TaskRow.idempotency_key == key)
            ).first()

    @staticmethod
    def _same_request(row: TaskRow, digest: str) -> TaskRow:
        if row.request_hash != digest:
            raise IdempotencyConflict(row.id)
        return row

    @staticmethod
    def _of(tenant: str | None) -> ColumnElement[bool]:
        """Rows of ``tenant``; every row with None (the workers, ``ocrserve dlq``, the admin).
        The API passes its caller's tenant, so another's task is, to it, no task at all."""
        return TaskRow.tenant == tenant if tenant is not None else true()

    def get(self, task_id: str, *, tenant: str | None = None) -> TaskRow | None:
        with self.session() as s:
            row = s.get(TaskRow, task_id)
            return row if row is not None and (tenant is None or row.tenant == tenant) else None

    def cancel(self, task_id: str, *, tenant: str | None = None) -> bool:
        """Cancel a queued task; False if it is not queued (any more) or not ``tenant``'s."""
        with self.session() as s:
            done = s.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id, self._of(tenant), TaskRow.status == QUEUED)
                .values(status=CANCELLED, finished_at=time.time(), input_bytes=None)
            )
            return bool(done.rowcount)  # type: ignore[attr-defined]

    def delete(self, task_id: str, *, tenant: str | None = None) -> bool:
        """Purge a finished task; False if it is not finished or not ``tenant``'s."""
        with self.session() as s:
            done = s.execute(
                delete(TaskRow).where(
                    TaskRow.id == task_id, self._of(tenant), TaskRow.status.in_(FINISHED)
                )
            )
            return bool(done.rowcount)  # type: ignore[attr-defined]

    def purge(self, older_than: float, batch: int = PURGE_BATCH) -> int:
        """Delete tasks finished before ``older_than`` whose callback is settled.

        Set-based, ``batch`` rows per statement: several janitors (API nodes, workers) may run
        it at once, and a row another one deleted first is simply not there any more.
        """
        total = 0
        while True:
            expired = (
                select(TaskRow.id)
                .where(
                    TaskRow.status.in_(FINISHED),
                    TaskRow.finished_at < older_than,
                    (TaskRow.callback_state.is_(None)) | (TaskRow.callback_state != PENDING),
                )
                .limit(batch)
            )
            with self.session() as s:
                done = s.execute(delete(TaskRow).where(TaskRow.id.in_(expired)))
                n = int(done.rowcount)  # type: ignore[attr-defined]
            total += n
            if n < batch:
                return total

    # --- workers -----------------------------------------------------------------------------

    @staticmethod
    def _claimable(now: float, max_runs: int) -> ColumnElement[bool]:
        """Queued and due, or running with an expired lease (a dead worker) and runs to spare."""
        return (
            (TaskRow.status == QUEUED)
            & (TaskRow.next_attempt_at.is_(None) | (TaskRow.next_attempt_at <= now))
        ) | ((TaskRow.status == RUNNING) & (TaskRow.lease_until < now) & (TaskRow.runs < max_runs))

    def claim(self, task_id: str, worker: str, lease: float, max_runs: int) -> TaskRow | None:
        """Take one task to run: queued and due, or running with an expired lease and runs left.

        A task whose worker died ``max_runs`` times is not claimable: :meth:`reap` ends it.
        """
        now = time.time()
        with self.session() as s:
            done = s.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id, self._claimable(now, max_runs))
                .values(status=RUNNING, worker=worker, lease_until=now + lease,
                        started_at=now, runs=TaskRow.runs + 1, next_attempt_at=None)
            )  # fmt: skip
            if not done.rowcount:  # type: ignore[attr-defined]
                return None
            return s.get(TaskRow, task_id)

    def claim_next(self, worker: str, lease: float, max_runs: int) -> TaskRow | None:
        """Claim the oldest claimable task, if any (the embedded workers' queue)."""
        now = time.time()
        for _ in range(5):  # another worker may win the race for the head: try the next one
            with self.session() as s:
                task_id = s.scalars(
                    select(TaskRow.id)
                    .where(self._claimable(now, max_runs))
                    .order_by(TaskRow.created_at)
                    .limit(1)
                ).first()
            if task_id is None:
                return None
            row = self.claim(task_id, worker, lease, max_runs)
            if row is not None:
                return row
        return None

    def next_due(self) -> float | None:
        """When the earliest task waiting for a retry becomes due (None: none waits)."""
        with self.session() as s:
            due: float | None = s.scalar(
                select(func.min(TaskRow.next_attempt_at)).where(TaskRow.status == QUEUED)
            )
            return due

    def outstanding(self) -> int:
        """Tasks not finished, and callbacks not settled: what a burst run waits for."""
        with self.session() as s:
            n = s.scalar(
                select(func.count())
                .select_from(TaskRow)
                .where(TaskRow.status.in_((QUEUED, RUNNING)) | (TaskRow.callback_state == PENDING))
            )
            return int(n or 0)

    def stats(self) -> TaskStats:
        """The queue as metrics see it, in three statements over indexed columns (status,
        callback_state), so a scrape costs an index scan, not a read of the rows' results."""
        now = time.time()
        # When a claimable row became claimable: a queued one when it was due (its retry
        # time, else its creation); a running one whose lease ran out (its worker died) then.
        due_since = case(
            (TaskRow.status == QUEUED, func.coalesce(TaskRow.next_attempt_at, TaskRow.created_at)),
            else_=TaskRow.lease_until,
        )
        lease = case((TaskRow.status == RUNNING, TaskRow.lease_until), else_=None)
        with self.session() as s:
            by_status = select(TaskRow.status, func.count()).group_by(TaskRow.status)
            counts = {status: n for status, n in s.execute(by_status)}
            dead = s.scalar(
                select(func.count()).select_from(TaskRow).where(TaskRow.callback_state == DEAD)
            )
            oldest, newest = s.execute(
                select(func.min(due_since), func.max(lease)).where(
                    TaskRow.status.in_((QUEUED, RUNNING))
                )
            ).one()
        return TaskStats(
            by_status={st: int(counts.get(st, 0)) for st in (QUEUED, RUNNING, *FINISHED)},
            dead_letters=int(dead or 0),
            oldest_waiting_s=max(0.0, now - oldest) if oldest is not None else 0.0,
            newest_lease_until=newest,
        )

    def reap(self, max_runs: int) -> list[str]:
        """End tasks whose worker died while running them ``max_runs`` times: ``failed``
        with code ``worker_crashed``, callback armed. Returns their ids."""
        now = time.time()
        with self.session() as s:
            done = s.execute(
                update(TaskRow)
                .where(
                    TaskRow.status == RUNNING,
                    TaskRow.lease_until < now,
                    TaskRow.runs >= max_runs,
                )
                .values(
                    status=FAILED,
                    finished_at=now,
                    lease_until=None,
                    input_bytes=None,
                    error_code=WORKER_CRASHED,
                    error_message=(
                        f"the worker running this task stopped {max_runs} times without "
                        "finishing it (a crash, a kill or running out of memory)"
                    ),
                    callback_state=case((TaskRow.callback_url.is_not(None), PENDING), else_=None),
                    callback_next_at=case((TaskRow.callback_url.is_not(None), now), else_=None),
                )
                .returning(TaskRow.id)
            )
            return list(done.scalars())

    def retry_later(self, task_id: str, worker: str, error: tuple[str, str], delay: float) -> bool:
        """Give a task whose run raised back to the queue, due in ``delay`` seconds; the error
        is kept as the last one. False if the task is no longer this worker's."""
        with self.session() as s:
            done = s.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id, TaskRow.worker == worker, TaskRow.status == RUNNING)
                .values(status=QUEUED, lease_until=None, next_attempt_at=time.time() + delay,
                        error_code=error[0], error_message=error[1])
            )  # fmt: skip
            return bool(done.rowcount)  # type: ignore[attr-defined]

    def mark_published(self, task_id: str) -> None:
        with self.session() as s:
            s.execute(update(TaskRow).where(TaskRow.id == task_id).values(published_at=time.time()))

    def unpublished(self, lost_before: float, max_runs: int) -> list[str]:
        """Tasks that need a queue message (Celery mode), each marked sent in the same statement
        so that concurrent sweepers never both send one:

        - queued, with no message sent since ``lost_before`` (an API node died between insert
          and publish, a broker lost it);
        - queued for a retry that is now due, with no message sent since it became due;
        - running, whose worker died (lease over), with runs left, and no message sent since
          the lease ran out: once per expiry, however many sweepers look.
        """
        now = time.time()
        published = func.coalesce(TaskRow.published_at, TaskRow.created_at)
        with self.session() as s:
            done = s.execute(
                update(TaskRow)
                .where(
                    (
                        (TaskRow.status == QUEUED)
                        & TaskRow.next_attempt_at.is_(None)
                        & (published < lost_before)
                    )
                    | (
                        (TaskRow.status == QUEUED)
                        & (TaskRow.next_attempt_at <= now)
                        & (published < TaskRow.next_attempt_at)
                    )
                    | (
                        (TaskRow.status == RUNNING)
                        & (TaskRow.lease_until < now)
                        & (TaskRow.runs < max_runs)
                        & (published < TaskRow.lease_until)
                    )
                )
                .values(published_at=now)
                .returning(TaskRow.id)
            )
            return list(done.scalars())

    def release(self, worker_prefix: str) -> int:
        """Give back the running tasks of workers named ``worker_prefix...`` (a process that is
        stopping): queued again at once, and the interrupted run not counted."""
        with self.session() as s:
            done = s.execute(
                update(TaskRow)
                .where(TaskRow.status == RUNNING, TaskRow.worker.startswith(worker_prefix))
                .values(status=QUEUED, lease_until=None, worker=None, runs=TaskRow.runs - 1)
            )
            return int(done.rowcount)  # type: ignore[attr-defined]

    def expire_leases(self) -> int:
        """At start of the embedded process, which holds the database's lock: every lease
        belongs to a process that is gone, so it is over now (each such run counts)."""
        now = time.time()
        with self.session() as s:
            done = s.execute(
                update(TaskRow)
                .where(TaskRow.status == RUNNING, TaskRow.lease_until >= now)
                .values(lease_until=now - 1e-3)
            )
            return int(done.rowcount)  # type: ignore[attr-defined]

    def heartbeat(self, task_id: str, worker: str, lease: float, pages_done: int,
                  pages_total: int | None) -> bool:  # fmt: skip
        """Extend the lease and record progress; False if the task is no longer ours."""
        with self.session() as s:
            done = s.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id, TaskRow.worker == worker, TaskRow.status == RUNNING)
                .values(lease_until=time.time() + lease, pages_done=pages_done,
                        pages_total=pages_total)
            )  # fmt: skip
            return bool(done.rowcount)  # type: ignore[attr-defined]

    def finish(
        self,
        task_id: str,
        worker: str,
        status: str,
        *,
        result: dict[str, Any] | None = None,
        error: tuple[str, str] | None = None,
        pages_done: int = 0,
        pages_total: int | None = None,
    ) -> bool:
        """Record the outcome (only the worker holding the task may); arm the callback."""
        now = time.time()
        with self.session() as s:
            row = s.get(TaskRow, task_id, with_for_update=True)
            if row is None or row.status != RUNNING or row.worker != worker:
                return False
            row.status = status
            row.finished_at = now
            row.result = result
            row.error_code, row.error_message = error if error else (None, None)
            row.pages_done, row.pages_total = pages_done, pages_total
            row.lease_until = None
            row.input_bytes = None  # the result is what is kept; the upload is not needed now
            if row.callback_url:
                row.callback_state = PENDING
                row.callback_next_at = now
            return True

    # --- callbacks ---------------------------------------------------------------------------

    @staticmethod
    def _callback_due(now: float) -> ColumnElement[bool]:
        return (
            (TaskRow.callback_state == PENDING)
            & (TaskRow.callback_next_at <= now)
            & (TaskRow.callback_claimed_until.is_(None) | (TaskRow.callback_claimed_until < now))
        )

    def due_callbacks(self, now: float, limit: int = 32) -> list[str]:
        with self.session() as s:
            return list(
                s.scalars(
                    select(TaskRow.id)
                    .where(self._callback_due(now))
                    .order_by(TaskRow.callback_next_at)
                    .limit(limit)
                )
            )

    def claim_callback(self, task_id: str, hold: float) -> TaskRow | None:
        """Take a due callback for one attempt, held for ``hold`` seconds (if this dispatcher
        dies mid-attempt, another takes it after the hold)."""
        now = time.time()
        with self.session() as s:
            done = s.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id, self._callback_due(now))
                .values(callback_claimed_until=now + hold)
            )
            if not done.rowcount:  # type: ignore[attr-defined]
                return None
            return s.get(TaskRow, task_id)

    def release_callbacks(self) -> int:
        """At start of the embedded process (which holds the database's lock): attempts in
        flight were a dead process's; their callbacks are due again now, not after the hold."""
        with self.session() as s:
            done = s.execute(
                update(TaskRow)
                .where(TaskRow.callback_claimed_until.is_not(None))
                .values(callback_claimed_until=None)
            )
            return int(done.rowcount)  # type: ignore[attr-defined]

    def record_attempt(
        self, task_id: str, attempt: dict[str, Any], *, state: str, next_at: float | None
    ) -> None:
        with self.session() as s:
            row = s.get(TaskRow, task_id, with_for_update=True)
            if row is None:
                return
            row.callback_log = [*(row.callback_log or []), attempt]
            row.callback_attempts += 1
            row.callback_state = state
            row.callback_next_at = next_at
            row.callback_claimed_until = None
            row.callback_last_error = attempt.get("error")

    def dead_letters(self, *, tenant: str | None = None) -> list[TaskRow]:
        with self.session() as s:
            return list(
                s.scalars(
                    select(TaskRow)
                    .where(TaskRow.callback_state == DEAD, self._of(tenant))
                    .order_by(TaskRow.finished_at)
                )
            )

    def replay(self, task_id: str, *, tenant: str | None = None) -> bool:
        """Send a dead callback again, through the whole retry schedule."""
        with self.session() as s:
            done = s.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id, self._of(tenant), TaskRow.callback_state == DEAD)
                .values(callback_state=PENDING, callback_next_at=time.time(),
                        callback_claimed_until=None, callback_attempts=0)
            )  # fmt: skip
            return bool(done.rowcount)  # type: ignore[attr-defined]
