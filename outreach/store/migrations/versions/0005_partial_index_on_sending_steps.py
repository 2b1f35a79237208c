"""partial index on sending steps

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 15:31:53.448878
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:

    with op.batch_alter_table("scheduled_steps", schema=None) as batch_op:
        batch_op.create_index(
            "ix_scheduled_steps_sending",
            ["updated_at"],
            unique=False,
            postgresql_where=sa.text("state = 'sending'"),
            sqlite_where=sa.text("state = 'sending'"),
        )


def downgrade() -> None:

    with op.batch_alter_table("scheduled_steps", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_scheduled_steps_sending",
            postgresql_where=sa.text("state = 'sending'"),
            sqlite_where=sa.text("state = 'sending'"),
        )
