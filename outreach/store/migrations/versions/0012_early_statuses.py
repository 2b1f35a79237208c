"""delivery statuses that arrive before the send they are about is recorded

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 04:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from outreach.store.types import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "early_statuses",
        sa.Column("provider_message_id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(16), nullable=True),
        sa.Column("received_at", UTCDateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("early_statuses")
