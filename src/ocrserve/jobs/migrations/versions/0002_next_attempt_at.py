"""A failed run is queued again not before ``next_attempt_at`` (28ef753).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from ocrserve.jobs.migrations import TABLE

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable with no default: rows of the previous version have no retry pending.
    op.add_column(TABLE, sa.Column("next_attempt_at", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column(TABLE, "next_attempt_at")
