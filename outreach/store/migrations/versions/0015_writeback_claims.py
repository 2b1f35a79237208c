"""write-back rows claimed by the task writing them (batched write-back)

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-03 09:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from outreach.store.types import UTCDateTime

revision = "0015"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: every existing row is unclaimed, and adding it rewrites nothing.
    with op.batch_alter_table("writebacks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_until", UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("writebacks", schema=None) as batch_op:
        batch_op.drop_column("claimed_until")
