"""Migrations of the task table: real SQLite files and the real PostgreSQL on this machine, one
schema per test; old databases upgraded in place, processes started together, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, Table, func, inspect, select, text
from sqlalchemy.exc import OperationalError

from ocrserve import StoreError
from ocrserve.jobs import schema
from ocrserve.jobs.store import TABLE, Base, TaskRow, TaskStore, make_engine
from ocrserve.jobs.task import DEAD, FAILED, PENDING, SUCCEEDED, IdempotencyConflict, NewTask

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
OCRSERVE = [sys.executable, "-m", "ocrserve"]
MODEL_COLUMNS = {c.name for c in TaskRow.__table__.columns}

# The table as ``create_all`` made it at 80be749, before there were migrations ({blob}: BLOB on
# SQLite, BYTEA on PostgreSQL); indexes as create_all named them.
OLD_DDL = """
CREATE TABLE ocr_tasks (
    id VARCHAR(32) NOT NULL, status VARCHAR(16) NOT NULL, created_at FLOAT NOT NULL,
    started_at FLOAT, finished_at FLOAT, idempotency_key VARCHAR(255),
    request_hash VARCHAR(64) NOT NULL, source_url TEXT, input_bytes {blob},
    filename VARCHAR(255), options JSON NOT NULL, metadata JSON, pages_done INTEGER NOT NULL,
    pages_total INTEGER, result JSON, error_code VARCHAR(64), error_message TEXT,
    lease_until FLOAT, published_at FLOAT, worker VARCHAR(128), runs INTEGER NOT NULL,
    callback_url TEXT, callback_state VARCHAR(16), callback_next_at FLOAT,
    callback_attempts INTEGER NOT NULL, callback_log JSON, callback_last_error TEXT,
    PRIMARY KEY (id), UNIQUE (idempotency_key)
);
CREATE INDEX ix_ocr_tasks_callback_next_at ON ocr_tasks (callback_next_at);
CREATE INDEX ix_ocr_tasks_callback_state ON ocr_tasks (callback_state);
CREATE INDEX ix_ocr_tasks_created_at ON ocr_tasks (created_at);
CREATE INDEX ix_ocr_tasks_finished_at ON ocr_tasks (finished_at);
CREATE INDEX ix_ocr_tasks_status ON ocr_tasks (status)
"""


@pytest.fixture
def pg_schema() -> Iterator[str]:
    # A schema of its own: no rows of another run (or of a benchmark) on the same database.
    name = f"ocrserve_test_{uuid.uuid4().hex[:8]}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {name}"))
    yield name
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {name} CASCADE"))
    admin.dispose()


def schema_url(name: str, *options: str) -> str:
    return f"{PG_URL}?options=" + "%20".join([f"-csearch_path%3D{name}", *options])


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tasks.db'}"
    return schema_url(request.getfixturevalue("pg_schema"))


@pytest.fixture
def engine(url: str) -> Iterator[sqlalchemy.Engine]:
    engine = make_engine(url)
    yield engine
    engine.dispose()


def columns(engine: sqlalchemy.Engine) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns(TABLE)}


def model_diff(engine: sqlalchemy.Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))


def insert_old_rows(engine: sqlalchemy.Engine) -> dict[str, str]:
    """Rows as the previous version wrote them: a queued task with its upload, a running one
    whose worker died (lease over) and a finished one whose callback is a dead letter."""
    now = time.time()
    ids = {"queued": "q" * 32, "running": "r" * 32, "dead": "d" * 32}
    common = {"request_hash": "0" * 64, "options": {"lang": "en"}, "pages_done": 0,
              "callback_attempts": 0}  # fmt: skip
    rows = [
        {**common, "id": ids["queued"], "status": "queued", "created_at": now - 30, "runs": 0,
         "input_bytes": b"%PDF-1.4 queued by the old version", "filename": "old.pdf",
         "idempotency_key": "invoice-1"},
        {**common, "id": ids["running"], "status": "running", "created_at": now - 20,
         "started_at": now - 15, "lease_until": now - 10, "worker": "gone", "runs": 1,
         "source_url": "https://example.invalid/a.pdf"},
        {**common, "id": ids["dead"], "status": SUCCEEDED, "created_at": now - 100,
         "finished_at": now - 90, "runs": 1, "result": {"text": "old"},
         "callback_url": "https://example.invalid/hook", "callback_state": DEAD,
         "callback_attempts": 4, "callback_log": [{"status": 410}],
         "callback_last_error": "HTTP 410"},
    ]  # fmt: skip
    with engine.begin() as conn:
        table = Table(TABLE, MetaData(), autoload_with=conn)
        for row in rows:  # one by one: each names other columns
            conn.execute(table.insert().values(row))
    return ids


# --- old databases ----------------------------------------------------------------------------


def test_a_0001_database_is_upgraded_and_its_tasks_finish_through_the_store(
    url: str, engine: sqlalchemy.Engine
) -> None:
    assert schema.migrate(engine, "0001") == "0001"
    assert columns(engine) == schema.UNVERSIONED["0001"]
    ids = insert_old_rows(engine)

    store = TaskStore(url)
    try:
        assert schema.current(store.engine) == schema.head()
        first = store.claim_next("w1", lease=30, max_runs=3)
        assert first is not None and first.id == ids["queued"]
        assert first.input_bytes == b"%PDF-1.4 queued by the old version"
        assert first.next_attempt_at is None
        assert store.finish(first.id, "w1", SUCCEEDED, result={"text": "new"}, pages_done=1)
        second = store.claim_next("w1", lease=30, max_runs=3)
        assert second is not None and (second.id, second.runs) == (ids["running"], 2)
        assert store.finish(second.id, "w1", FAILED, error=("download_failed", "gone"))
        assert store.claim_next("w1", lease=30, max_runs=3) is None

        assert [row.id for row in store.dead_letters()] == [ids["dead"]]
        assert store.replay(ids["dead"])
        assert store.dead_letters() == []
        replayed = store.get(ids["dead"])
        assert replayed is not None and replayed.callback_state == PENDING
        assert replayed.result == {"text": "old"}
        done = store.get(ids["queued"])
        assert done is not None and (done.status, done.result) == (SUCCEEDED, {"text": "new"})
        assert done.idempotency_key == "invoice-1"
    finally:
        store.close()


def test_0004_gives_earlier_tasks_the_default_tenant_and_idempotency_keys_per_tenant(
    url: str, engine: sqlalchemy.Engine
) -> None:
    assert schema.migrate(engine, "0003") == "0003"
    ids = insert_old_rows(engine)
    store = TaskStore(url)
    try:
        rows = [store.get(i) for i in ids.values()]
        assert [r.tenant for r in rows if r is not None] == ["default"] * len(ids)
        assert store.get(ids["queued"], tenant="alice") is None
        # "invoice-1" was the default tenant's: alice's is another task; the default tenant's
        # is still that one (the old row's hash is no real request: a conflict naming it).
        mine, created = store.create(NewTask(options={}), "invoice-1", tenant="alice")
        assert created and mine.id not in ids.values() and mine.tenant == "alice"
        with pytest.raises(IdempotencyConflict) as info:
            store.create(NewTask(options={}), "invoice-1")
        assert info.value.task_id == ids["queued"]
        assert [r.id for r in store.dead_letters(tenant="alice")] == []
        assert [r.id for r in store.dead_letters(tenant="default")] == [ids["dead"]]
    finally:
        store.close()


@pytest.mark.parametrize("made_by", ["80be749", "28ef753"])
def test_a_table_made_before_migrations_is_stamped_and_upgraded_in_place(
    url: str, engine: sqlalchemy.Engine, made_by: str
) -> None:
    blob = "BYTEA" if engine.dialect.name == "postgresql" else "BLOB"
    with engine.begin() as conn:
        for statement in OLD_DDL.format(blob=blob).split(";"):
            conn.exec_driver_sql(statement)
        if made_by == "28ef753":  # the one version whose create_all also made next_attempt_at
            conn.exec_driver_sql(f"ALTER TABLE {TABLE} ADD COLUMN next_attempt_at FLOAT")
    ids = insert_old_rows(engine)

    assert schema.migrate(engine) == schema.head()
    assert set(inspect(engine).get_table_names()) == {TABLE, schema.VERSION_TABLE}
    assert columns(engine) == MODEL_COLUMNS
    assert model_diff(engine) == []
    with engine.connect() as conn:
        kept = conn.execute(text(f"SELECT id FROM {TABLE}")).scalars().all()
    assert sorted(kept) == sorted(ids.values())
    assert schema.migrate(engine) == schema.head()  # nothing to do, and no error


def test_a_database_of_a_newer_version_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    engine = make_engine(url)
    schema.migrate(engine)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {schema.VERSION_TABLE} SET version_num = '0042'"))
    engine.dispose()
    with pytest.raises(StoreError, match="at revision 0042, which this version") as info:
        TaskStore(url)
    assert info.value.url == url


# --- the model and the head revision ----------------------------------------------------------


def test_the_orm_model_matches_the_head_revision(engine: sqlalchemy.Engine) -> None:
    assert schema.migrate(engine) == schema.head()
    assert model_diff(engine) == []
    # The way down and up again leaves the same table.
    config = schema.alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0001")
    assert columns(engine) == schema.UNVERSIONED["0001"]
    assert schema.migrate(engine) == schema.head()
    assert model_diff(engine) == []


def test_on_postgresql_the_tables_go_in_the_schema_of_the_search_path(pg_schema: str) -> None:
    store = TaskStore(schema_url(pg_schema))
    store.close()
    admin = make_engine(PG_URL)
    with admin.connect() as conn:
        where = conn.execute(
            text(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema = :schema"
            ),
            {"schema": pg_schema},
        ).all()
    admin.dispose()
    assert sorted(where) == [(pg_schema, schema.VERSION_TABLE), (pg_schema, TABLE)]


# --- processes starting together -------------------------------------------------------------

# Each child imports first, says so, and opens the store when the parent says go: the three
# migrations start as close together as the machine allows, with no sleeps.
CHILD = """
import sys
from ocrserve.jobs.store import TaskStore
print("ready", flush=True)
sys.stdin.readline()
TaskStore(sys.argv[1]).close()
print("ok", flush=True)
"""


def test_three_processes_started_at_once_on_an_empty_database_all_come_up(
    url: str, engine: sqlalchemy.Engine
) -> None:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [child.communicate(timeout=120) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert [c.returncode for c in children] == [0, 0, 0], [err for _, err in results]
    assert [out for out, _ in results] == ["ok\n"] * 3
    assert set(inspect(engine).get_table_names()) == {TABLE, schema.VERSION_TABLE}
    with engine.connect() as conn:
        versions = conn.execute(text(f"SELECT version_num FROM {schema.VERSION_TABLE}")).all()
    assert versions == [(schema.head(),)]


def test_on_postgresql_migrating_waits_for_the_advisory_lock_and_releases_it(
    pg_schema: str,
) -> None:
    # lock_timeout makes a wait for the lock an error: proof that migrate waits for it.
    engine = make_engine(schema_url(pg_schema, "-clock_timeout%3D200"))
    holder = make_engine(PG_URL)
    try:
        with holder.connect() as conn:
            conn.execute(select(func.pg_advisory_lock(schema.MIGRATION_LOCK_KEY)))
            with pytest.raises(OperationalError, match="lock timeout"):
                schema.migrate(engine)
            assert not inspect(engine).has_table(TABLE)
            conn.execute(select(func.pg_advisory_unlock(schema.MIGRATION_LOCK_KEY)))
        assert schema.migrate(engine) == schema.head()
        with engine.connect() as conn:  # the pool's one connection: the one that migrated
            pid = conn.execute(select(func.pg_backend_pid())).scalar_one()
        with holder.connect() as conn:
            held = conn.execute(
                text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = :pid"),
                {"pid": pid},
            ).scalar_one()
        assert held == 0
    finally:
        engine.dispose()
        holder.dispose()


# --- the command line ---------------------------------------------------------------------------


def ocrserve_db(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCRSERVE_")}
    env["OCRSERVE_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [*OCRSERVE, "db", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_db_upgrade_makes_the_table_in_a_fresh_data_folder(tmp_path: Path) -> None:
    r = ocrserve_db(tmp_path / "data", "upgrade")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [schema.head(), "(head)"]
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'tasks.db'}")
    assert columns(engine) == MODEL_COLUMNS
    engine.dispose()


def test_db_upgrade_upgrades_a_0001_database(tmp_path: Path) -> None:
    tmp_path.joinpath("data").mkdir()
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'tasks.db'}")
    schema.migrate(engine, "0001")
    ids = insert_old_rows(engine)
    r = ocrserve_db(tmp_path / "data", "current")
    assert (r.returncode, r.stdout.split()) == (0, ["0001"]), r.stderr
    r = ocrserve_db(tmp_path / "data", "upgrade")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [schema.head(), "(head)"]
    assert columns(engine) == MODEL_COLUMNS
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {TABLE}")).scalar_one() == len(ids)
    engine.dispose()
    r = ocrserve_db(tmp_path / "data", "current")
    assert r.stdout.split() == [schema.head(), "(head)"], r.stderr
