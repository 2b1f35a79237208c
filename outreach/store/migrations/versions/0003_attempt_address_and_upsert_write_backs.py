"""attempt address and upsert write-backs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 13:43:48.700807
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:

    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("address", sa.String(length=255), nullable=True))
        batch_op.create_index(batch_op.f("ix_delivery_attempts_address"), ["address"], unique=False)

    with op.batch_alter_table("writebacks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("operation", sa.String(length=16), server_default="create", nullable=False)
        )


def downgrade() -> None:

    with op.batch_alter_table("writebacks", schema=None) as batch_op:
        batch_op.drop_column("operation")

    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delivery_attempts_address"))
        batch_op.drop_column("address")
