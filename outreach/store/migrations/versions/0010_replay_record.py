"""a permanent record of every accepted Twilio webhook signature, so none is acted on twice

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 03:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import outreach.store.types

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One table for replies and status callbacks alike, apart from inbound_messages: a reply
    # deleted later (retention, erasure) must not make its signed request usable again.
    op.create_table(
        "webhook_signatures",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("message_sid", sa.String(length=64), nullable=False),
        sa.Column("received_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )


def downgrade() -> None:
    op.drop_table("webhook_signatures")
