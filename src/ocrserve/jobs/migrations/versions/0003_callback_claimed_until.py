"""A callback attempt in flight holds ``callback_claimed_until``; ``callback_next_at`` stays the
schedule, so a restart can tell a dead process's attempt from a retry that is not due yet.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from ocrserve.jobs.migrations import TABLE

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable with no default: no attempt is in flight while the database is being migrated.
    op.add_column(TABLE, sa.Column("callback_claimed_until", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column(TABLE, "callback_claimed_until")
