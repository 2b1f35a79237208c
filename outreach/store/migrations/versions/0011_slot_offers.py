"""slot offers (reschedule by text, waitlist backfill) and the patient's stated availability

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 03:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from outreach.store.types import JsonDocument, UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backfills",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("journey", sa.String(64), nullable=False),
        sa.Column("freed_by", sa.String(128), nullable=False, unique=True),
        sa.Column("option", JsonDocument, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("next_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("filled_by", sa.Integer(), nullable=True),
    )
    op.create_index("ix_backfills_next_at", "backfills", ["next_at"])
    op.create_table(
        "slot_offers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("uid", sa.String(32), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("backfill_id", sa.Integer(), sa.ForeignKey("backfills.id"), nullable=True),
        sa.Column("patient", sa.String(128), nullable=False),
        sa.Column("appointment", sa.String(128), nullable=False),
        sa.Column("appointment_version", sa.String(64), nullable=True),
        sa.Column("original_start", UTCDateTime(timezone=True), nullable=True),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("options", JsonDocument, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("answered_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("chosen", sa.Integer(), nullable=True),
        sa.Column("booked_start", UTCDateTime(timezone=True), nullable=True),
        sa.Column("provider_message_id", sa.String(64), nullable=True),
        sa.Column("reason", sa.String(200), nullable=True),
    )
    op.create_index("ix_slot_offers_backfill_id", "slot_offers", ["backfill_id"])
    op.create_index("ix_slot_offers_patient", "slot_offers", ["patient"])
    op.create_index("ix_slot_offers_open_address", "slot_offers", ["address", "state"])
    with op.batch_alter_table("patient_preferences", schema=None) as batch_op:
        batch_op.add_column(sa.Column("availability", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("patient_preferences", schema=None) as batch_op:
        batch_op.drop_column("availability")
    op.drop_table("slot_offers")
    op.drop_table("backfills")
