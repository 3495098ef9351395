"""A task belongs to a tenant (its API key's name); idempotency keys are unique per tenant.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from ocrserve.jobs.migrations import TABLE

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The tenant of rows made before there were tenants: the one tenant of a server without API
#: keys (a key named "default" owns them too). Written out: this revision is history.
DEFAULT = "default"
UNIQUE = "uq_ocr_tasks_tenant_idempotency_key"
#: What 0001's unnamed UNIQUE (idempotency_key) is called: PostgreSQL names it itself; on SQLite
#: it has no name, so the batch below names what it reflects by this convention.
OLD_UNIQUE = {
    "postgresql": "ocr_tasks_idempotency_key_key",
    "sqlite": "uq_ocr_tasks_idempotency_key",
}
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def upgrade() -> None:
    old = OLD_UNIQUE[op.get_bind().dialect.name]
    # A server default, not just a fill: an API node of the previous version, still running
    # during a rolling upgrade, inserts without the column.
    op.add_column(TABLE, sa.Column("tenant", sa.String(64), nullable=False, server_default=DEFAULT))
    # SQLite cannot drop a constraint: the batch copies the table without it (PostgreSQL
    # alters in place).
    with op.batch_alter_table(TABLE, naming_convention=NAMING) as batch:
        batch.drop_constraint(old, type_="unique")
        batch.create_unique_constraint(UNIQUE, ["tenant", "idempotency_key"])


def downgrade() -> None:
    # Fails if two tenants used one idempotency key: which task should keep it is not ours to say.
    old = OLD_UNIQUE[op.get_bind().dialect.name]
    with op.batch_alter_table(TABLE, naming_convention=NAMING) as batch:
        batch.drop_constraint(UNIQUE, type_="unique")
        batch.create_unique_constraint(old, ["idempotency_key"])
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_column("tenant")
