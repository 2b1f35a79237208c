"""patient preferences (language, channel, quiet hours, categories opted out of)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 19:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import outreach.store.types

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "patient_preferences",
        sa.Column("patient", sa.String(length=128), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("quiet_from", sa.String(length=5), nullable=True),
        sa.Column("quiet_to", sa.String(length=5), nullable=True),
        sa.Column("categories_off", sa.String(length=64), nullable=False),
        sa.Column("changed_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("patient"),
    )


def downgrade() -> None:
    op.drop_table("patient_preferences")
