"""Alembic's entry point for the task table: always handed a connection by
:func:`ocrserve.jobs.schema.migrate`, which holds the migration lock and the transaction on it
(so there is no alembic.ini, URL or logging setup here)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from ocrserve.jobs.schema import VERSION_TABLE

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run the task table's migrations with ocrserve.jobs.schema.migrate")
context.configure(connection=connection, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
