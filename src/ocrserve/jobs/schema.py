"""The task table's schema: Alembic migrations that every process runs at start.

::

    (empty) ──0001──> the table of ocrserve before migrations ──0002──> + next_attempt_at ──> …

A table made before there were migrations (no ``alembic_version``) is recognised by its columns,
stamped with the revision it equals and upgraded in place, its rows kept; a table that is no
known revision is refused with :class:`~ocrserve.errors.StoreError`, untouched.

Any number of processes (API nodes, workers) may start at once on an empty database. On
PostgreSQL they take turns on one advisory lock, held on the connection that migrates; without
it two of them both run CREATE TABLE and one dies on ``pg_type_typname_nsp_index``. SQLite takes
its write lock before looking (``BEGIN IMMEDIATE``), so the second process waits (busy_timeout)
and then finds the table made.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from ocrserve.errors import StoreError
from ocrserve.jobs.migrations import TABLE

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"
#: The PostgreSQL advisory lock key of schema changes ("ocrserve" in ASCII). Advisory locks are
#: per database, so every schema in one database shares it; the wait is only as long as a
#: migration, and a process finding the table up to date holds it for a few catalog queries.
MIGRATION_LOCK_KEY = 0x6F63727365727665

_COLUMNS_0001 = frozenset({
    "id", "status", "created_at", "started_at", "finished_at", "idempotency_key",
    "request_hash", "source_url", "input_bytes", "filename", "options", "metadata",
    "pages_done", "pages_total", "result", "error_code", "error_message", "lease_until",
    "published_at", "worker", "runs", "callback_url", "callback_state", "callback_next_at",
    "callback_attempts", "callback_log", "callback_last_error",
})  # fmt: skip
#: Tables that ``create_all`` made before there were migrations, by the revision each equals.
#: A closed list: every version since records its revision in ``alembic_version``.
UNVERSIONED: dict[str, frozenset[str]] = {
    "0001": _COLUMNS_0001,
    "0002": _COLUMNS_0001 | {"next_attempt_at"},
}


def alembic_config() -> Config:
    """The migrations as Alembic sees them, from the installed package (no alembic.ini)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head() -> str:
    """The revision this version of ocrserve migrates to."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if revision is None:
        raise RuntimeError(f"no migrations in {MIGRATIONS}")
    return revision


def current(engine: Engine) -> str | None:
    """The revision the database is at; None before the first migration (or before 0001 was
    recorded: a table of an older version is stamped by :func:`migrate`)."""
    with engine.connect() as conn:
        return _context(conn).get_current_revision()


def migrate(engine: Engine, revision: str = "head") -> str:
    """Bring the task table to ``revision`` (the head by default); return the revision reached.

    >>> migrate(make_engine("sqlite:////tmp/tasks.db")) == head()   # doctest: +SKIP
    True
    """
    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    url = engine.url.render_as_string(hide_password=True)
    with engine.connect() as conn, _migration_lock(conn), conn.begin():
        if conn.dialect.name == "sqlite":
            # The write lock before the first read: a second process waits here and then finds
            # the table made, instead of both reading "no table" and one failing on CREATE.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        config.attributes["connection"] = conn
        _adopt_unversioned(conn, config, url)
        at = _context(conn).get_current_revision()
        if at is not None and at not in {s.revision for s in script.walk_revisions()}:
            raise StoreError(
                f"the task table in {url} is at revision {at}, which this version of ocrserve "
                "does not know (a newer version migrated it); run that version or a newer one",
                url=url,
            )
        command.upgrade(config, revision)
        reached = _context(conn).get_current_revision()
    if reached is None:
        raise RuntimeError(f"migrating {url} to {revision} recorded no revision")
    return reached


def _context(conn: Connection) -> MigrationContext:
    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})


@contextmanager
def _migration_lock(conn: Connection) -> Iterator[None]:
    if conn.dialect.name != "postgresql":
        yield
        return
    # Committed before the migration's transaction starts: under REPEATABLE READ a snapshot
    # taken while waiting would not see the table the lock holder made.
    with conn.begin():
        conn.execute(select(func.pg_advisory_lock(MIGRATION_LOCK_KEY)))
    try:
        yield
    finally:
        try:
            with conn.begin():
                conn.execute(select(func.pg_advisory_unlock(MIGRATION_LOCK_KEY)))
        except SQLAlchemyError:
            # The lock belongs to the session: a connection that may still hold it must not go
            # back to the pool (closing it releases the lock).
            conn.invalidate()


def _adopt_unversioned(conn: Connection, config: Config, url: str) -> None:
    """Stamp a table made before migrations with the revision it equals, or refuse it."""
    inspector = inspect(conn)
    if not inspector.has_table(TABLE) or inspector.has_table(VERSION_TABLE):
        return
    have = {c["name"] for c in inspector.get_columns(TABLE)}
    for revision, columns in UNVERSIONED.items():
        if have == columns:
            command.stamp(config, revision)
            return
    nearest = min(UNVERSIONED.values(), key=lambda columns: len(columns ^ have))
    missing, unknown = sorted(nearest - have), sorted(have - nearest)
    differences = [
        *([f"no column {', '.join(missing)}"] if missing else []),
        *([f"unknown column {', '.join(unknown)}"] if unknown else []),
    ]
    raise StoreError(
        f"the task table in {url} was made by another version of ocrserve and is no revision "
        f"this one can migrate ({'; '.join(differences)}); move the database aside or point "
        "OCRSERVE_DATABASE_URL at a new one",
        url=url,
    )
