"""what the outcome reports count: a message's language and SMS segments, a reply's score
(with its scale, and whether it opened service recovery)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 20:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("language", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("segments", sa.Integer(), nullable=True))
    with op.batch_alter_table("inbound_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("score", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("score_min", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("score_max", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("score_low", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inbound_messages", schema=None) as batch_op:
        batch_op.drop_column("score_low")
        batch_op.drop_column("score_max")
        batch_op.drop_column("score_min")
        batch_op.drop_column("score")
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.drop_column("segments")
        batch_op.drop_column("language")
