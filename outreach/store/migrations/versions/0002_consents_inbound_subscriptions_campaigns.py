"""consents inbound subscriptions campaigns

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 13:40:00.883496
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import outreach.store.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _old_unique() -> tuple[str, dict[str, str]]:
    """0001 left the (journey, resource) unique constraint unnamed: Postgres named it itself;
    SQLite's batch mode finds it through a naming convention."""
    if op.get_bind().dialect.name == "sqlite":
        return "uq_enrollments_journey_resource_type_resource_id", {
            "uq": "uq_%(table_name)s_%(column_0_N_name)s"
        }
    return "enrollments_journey_resource_type_resource_id_key", {}


def upgrade() -> None:
    op.create_table(
        "campaign_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("journey", sa.String(length=64), nullable=False),
        sa.Column("run_key", sa.String(length=64), nullable=False),
        sa.Column("started_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", outreach.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("matched", sa.Integer(), nullable=False),
        sa.Column("enrolled", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("journey", "run_key"),
    )
    op.create_table(
        "contact_consents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=255), nullable=False),
        sa.Column("patient", sa.String(length=128), nullable=True),
        sa.Column("opted_out", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("changed_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("channel", "address"),
    )
    with op.batch_alter_table("contact_consents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_contact_consents_patient"), ["patient"], unique=False)

    op.create_table(
        "subscription_status",
        sa.Column("subscription_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=True),
        sa.Column("events_since_start", sa.BigInteger(), nullable=False),
        sa.Column("last_event_at", outreach.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "last_heartbeat_at", outreach.store.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "gap_detected_at", outreach.store.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("updated_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subscription_id"),
    )
    op.create_table(
        "inbound_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("provider_message_id", sa.String(length=64), nullable=False),
        sa.Column("from_address", sa.String(length=255), nullable=False),
        sa.Column("to_address", sa.String(length=255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("received_at", outreach.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("patient", sa.String(length=128), nullable=True),
        sa.Column("in_reply_to_step", sa.Integer(), nullable=True),
        sa.Column("intent", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["in_reply_to_step"],
            ["scheduled_steps.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider_message_id"),
    )
    with op.batch_alter_table("inbound_messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inbound_messages_patient"), ["patient"], unique=False)

    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("provider_status", sa.String(length=16), nullable=True))
        batch_op.add_column(
            sa.Column(
                "provider_status_at", outreach.store.types.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch_op.add_column(sa.Column("error_code", sa.String(length=32), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_delivery_attempts_provider_message_id"),
            ["provider_message_id"],
            unique=False,
        )

    old_unique, convention = _old_unique()
    with op.batch_alter_table("enrollments", naming_convention=convention) as batch_op:
        batch_op.drop_constraint(old_unique, type_="unique")
        batch_op.add_column(
            sa.Column("cycle", sa.String(length=32), server_default="", nullable=False)
        )
        batch_op.create_unique_constraint(
            "uq_enrollments_journey_resource_cycle",
            ["journey", "resource_type", "resource_id", "cycle"],
        )

    with op.batch_alter_table("scheduled_steps", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("excluded_channels", sa.String(length=64), server_default="", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("scheduled_steps", schema=None) as batch_op:
        batch_op.drop_column("excluded_channels")

    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_constraint("uq_enrollments_journey_resource_cycle", type_="unique")
        batch_op.drop_column("cycle")
        batch_op.create_unique_constraint(
            _old_unique()[0], ["journey", "resource_type", "resource_id"]
        )

    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delivery_attempts_provider_message_id"))
        batch_op.drop_column("error_code")
        batch_op.drop_column("provider_status_at")
        batch_op.drop_column("provider_status")

    with op.batch_alter_table("inbound_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbound_messages_patient"))

    op.drop_table("inbound_messages")
    op.drop_table("subscription_status")
    with op.batch_alter_table("contact_consents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contact_consents_patient"))

    op.drop_table("contact_consents")
    op.drop_table("campaign_runs")
