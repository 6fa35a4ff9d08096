"""campaigns: Message name, labels and throttle, campaign options on Schedules

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("labels", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("deliver_over_s", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_per_minute", sa.Integer(), nullable=True))
    op.create_index(
        "ix_message_app_created", "message", ["app_id", "created_at", "id"], unique=False
    )
    with op.batch_alter_table("schedule", schema=None) as batch_op:
        batch_op.add_column(sa.Column("campaign", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("schedule", schema=None) as batch_op:
        batch_op.drop_column("campaign")
    op.drop_index("ix_message_app_created", table_name="message")
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_column("max_per_minute")
        batch_op.drop_column("deliver_over_s")
        batch_op.drop_column("labels")
        batch_op.drop_column("name")
