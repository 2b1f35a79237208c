"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 13:24:06.081699
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import outreach.store.types

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "enrollments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("journey", sa.String(length=64), nullable=False),
        sa.Column("journey_version", sa.String(length=32), nullable=False),
        sa.Column("patient", sa.String(length=128), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("anchor_at", outreach.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("journey", "resource_type", "resource_id"),
    )
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_enrollments_patient"), ["patient"], unique=False)

    op.create_table(
        "poll_cursors",
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("last_updated", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("polled_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("resource_type"),
    )
    op.create_table(
        "resource_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("last_updated", outreach.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("received_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("resource_type", "resource_id", "version_id"),
    )
    op.create_table(
        "resource_versions",
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.String(length=128), nullable=False),
        sa.Column("last_updated", outreach.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column(
            "resource", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column("updated_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("resource_type", "resource_id"),
    )
    op.create_table(
        "scheduled_steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uid", sa.String(length=36), nullable=False),
        sa.Column("enrollment_id", sa.Integer(), nullable=False),
        sa.Column("step_id", sa.String(length=64), nullable=False),
        sa.Column("due_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("queued_at", outreach.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("sent_at", outreach.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["enrollments.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("enrollment_id", "step_id"),
        sa.UniqueConstraint("uid"),
    )
    with op.batch_alter_table("scheduled_steps", schema=None) as batch_op:
        batch_op.create_index(
            "ix_scheduled_steps_due",
            ["due_at"],
            unique=False,
            postgresql_where=sa.text("state = 'scheduled'"),
            sqlite_where=sa.text("state = 'scheduled'"),
        )
        batch_op.create_index(
            "ix_scheduled_steps_queued",
            ["queued_at"],
            unique=False,
            postgresql_where=sa.text("state = 'queued'"),
            sqlite_where=sa.text("state = 'queued'"),
        )

    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("step_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("provider_message_id", sa.String(length=255), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", outreach.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["step_id"],
            ["scheduled_steps.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_delivery_attempts_step_id"), ["step_id"], unique=False)

    op.create_table(
        "writebacks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("step_id", sa.Integer(), nullable=True),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("identifier", sa.String(length=255), nullable=False),
        sa.Column(
            "resource", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "next_attempt_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("server_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("done_at", outreach.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["step_id"],
            ["scheduled_steps.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("identifier"),
    )
    with op.batch_alter_table("writebacks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_writebacks_pending",
            ["next_attempt_at"],
            unique=False,
            postgresql_where=sa.text("state = 'pending'"),
            sqlite_where=sa.text("state = 'pending'"),
        )
        batch_op.create_index(batch_op.f("ix_writebacks_step_id"), ["step_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("writebacks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_writebacks_step_id"))
        batch_op.drop_index(
            "ix_writebacks_pending",
            postgresql_where=sa.text("state = 'pending'"),
            sqlite_where=sa.text("state = 'pending'"),
        )

    op.drop_table("writebacks")
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delivery_attempts_step_id"))

    op.drop_table("delivery_attempts")
    with op.batch_alter_table("scheduled_steps", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_scheduled_steps_queued",
            postgresql_where=sa.text("state = 'queued'"),
            sqlite_where=sa.text("state = 'queued'"),
        )
        batch_op.drop_index(
            "ix_scheduled_steps_due",
            postgresql_where=sa.text("state = 'scheduled'"),
            sqlite_where=sa.text("state = 'scheduled'"),
        )

    op.drop_table("scheduled_steps")
    op.drop_table("resource_versions")
    op.drop_table("resource_changes")
    op.drop_table("poll_cursors")
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enrollments_patient"))

    op.drop_table("enrollments")
