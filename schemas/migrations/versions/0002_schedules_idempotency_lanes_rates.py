"""schedules idempotency lanes rates

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 18:28:44.533428
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedule",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("app_id", sa.String(length=36), nullable=False),
        sa.Column("target", sa.JSON(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("lane", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("publish_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("repeat_every_s", sa.Integer(), nullable=True),
        sa.Column("repeat_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cron", sa.String(length=120), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"],
            ["app.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("schedule", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_schedule_app_id"), ["app_id"], unique=False)
        batch_op.create_index("ix_schedule_state_next", ["state", "next_run_at"], unique=False)

    with op.batch_alter_table("app", schema=None) as batch_op:
        batch_op.add_column(sa.Column("apns_rate_per_minute", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("fcm_rate_per_minute", sa.Integer(), nullable=True))

    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.create_index("ix_delivery_status_updated", ["status", "updated_at"], unique=False)

    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("lane", sa.String(length=16), nullable=False, server_default="bulk")
        )
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("request_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("schedule_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("run_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_message_schedule_id"), ["schedule_id"], unique=False)
        batch_op.create_index("ix_message_state_created", ["state", "created_at"], unique=False)
        batch_op.create_unique_constraint(
            "uq_message_app_idempotency", ["app_id", "idempotency_key"]
        )
        batch_op.create_unique_constraint("uq_message_schedule_run", ["schedule_id", "run_at"])


def downgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_constraint("uq_message_schedule_run", type_="unique")
        batch_op.drop_constraint("uq_message_app_idempotency", type_="unique")
        batch_op.drop_index("ix_message_state_created")
        batch_op.drop_index(batch_op.f("ix_message_schedule_id"))
        batch_op.drop_column("run_at")
        batch_op.drop_column("schedule_id")
        batch_op.drop_column("request_hash")
        batch_op.drop_column("idempotency_key")
        batch_op.drop_column("lane")

    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_index("ix_delivery_status_updated")

    with op.batch_alter_table("app", schema=None) as batch_op:
        batch_op.drop_column("fcm_rate_per_minute")
        batch_op.drop_column("apns_rate_per_minute")

    with op.batch_alter_table("schedule", schema=None) as batch_op:
        batch_op.drop_index("ix_schedule_state_next")
        batch_op.drop_index(batch_op.f("ix_schedule_app_id"))

    op.drop_table("schedule")
