"""Infobip inbox topics and inbox messages, CM's clientId and dismissal time, Backendless
user tokens

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no batch copy): SQLite keeps the rows that cascade from these tables.
    op.add_column("registration", sa.Column("client_id", sa.String(length=255), nullable=True))
    op.add_column("delivery", sa.Column("dismissed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "inbox_topic",
        sa.Column("app_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["app_id"], ["app.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("app_id", "name"),
    )
    op.create_table(
        "inbox_message",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("app_id", sa.String(length=36), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("external_user_id", sa.String(length=255), nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["message_id"], ["message.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id", "external_user_id", name="uq_inbox_message_person"),
    )
    op.create_index(
        "ix_inbox_message_person",
        "inbox_message",
        ["app_id", "external_user_id", "created_at", "id"],
        unique=False,
    )
    op.create_table(
        "user_token",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("app_id", sa.String(length=36), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user", sa.String(length=255), nullable=False),
        sa.Column("publish", sa.String(length=8), nullable=False),
        sa.Column("channels", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["app_id"], ["app.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_user_token_app_id", "user_token", ["app_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_user_token_app_id", table_name="user_token")
    op.drop_table("user_token")
    op.drop_index("ix_inbox_message_person", table_name="inbox_message")
    op.drop_table("inbox_message")
    op.drop_table("inbox_topic")
    # DROP COLUMN in place (SQLite 3.35+), not a batch copy that would lose cascading rows.
    op.execute("ALTER TABLE delivery DROP COLUMN dismissed_at")
    op.execute("ALTER TABLE registration DROP COLUMN client_id")
