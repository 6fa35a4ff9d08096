"""engagement times, key alias and quota, webhooks

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 21:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        for name in ("received_at", "consumed_at", "confirmed_at", "deleted_at"):
            batch_op.add_column(sa.Column(name, sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.add_column(sa.Column("alias", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("requests_per_minute", sa.Integer(), nullable=True))
    op.create_table(
        "webhook",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("app_id", sa.String(length=36), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("secret", sa.String(length=200), nullable=False),
        sa.Column("events", sa.String(length=1000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["app_id"], ["app.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_app_id", "webhook", ["app_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_webhook_app_id", table_name="webhook")
    op.drop_table("webhook")
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.drop_column("requests_per_minute")
        batch_op.drop_column("alias")
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        for name in ("deleted_at", "confirmed_at", "consumed_at", "received_at"):
            batch_op.drop_column(name)
