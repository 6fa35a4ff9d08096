"""webhook posts: each POST of a batch of events, and the Messages and Deliveries it told of

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_post",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("webhook_id", sa.String(length=36), nullable=False),
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=200), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_webhook_post_at", "webhook_post", ["at"])
    op.create_table(
        "webhook_post_subject",
        sa.Column("post_id", sa.String(length=36), primary_key=True),
        sa.Column("subject_id", sa.String(length=36), primary_key=True),
    )
    op.create_index("ix_webhook_post_subject_subject", "webhook_post_subject", ["subject_id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_post_subject_subject", table_name="webhook_post_subject")
    op.drop_table("webhook_post_subject")
    op.drop_index("ix_webhook_post_at", table_name="webhook_post")
    op.drop_table("webhook_post")
