"""local time and quiet hours: app zone and quiet hours, Message and Schedule options,
the release groups of local-time runs, registrations by zone

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 10:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "app", sa.Column("timezone", sa.String(length=64), nullable=False, server_default="UTC")
    )
    op.add_column("app", sa.Column("quiet_hours", sa.JSON(), nullable=True))
    op.add_column("message", sa.Column("quiet_hours", sa.JSON(), nullable=True))
    op.add_column("message", sa.Column("local_time", sa.JSON(), nullable=True))
    op.add_column("schedule", sa.Column("local_time", sa.JSON(), nullable=True))
    op.create_table(
        "message_release",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column(
            "message_id",
            sa.String(length=36),
            sa.ForeignKey("message.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("release_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("zones", sa.JSON(), nullable=False),
        sa.Column("devices", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_message_release_message_id", "message_release", ["message_id"])
    op.create_index("ix_message_release_due", "message_release", ["state", "release_at"])
    # A zone's share of a local-time run is walked by id within the zone.
    op.create_index(
        "ix_registration_app_zone", "registration", ["app_id", "time_zone", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_registration_app_zone", table_name="registration")
    op.drop_index("ix_message_release_due", table_name="message_release")
    op.drop_index("ix_message_release_message_id", table_name="message_release")
    op.drop_table("message_release")
    # Plain ADD / DROP COLUMN (as 0007 and 0013): batch mode would copy and drop `app`,
    # `message` and `schedule` on SQLite, which their foreign keys refuse.
    op.drop_column("schedule", "local_time")
    op.drop_column("message", "local_time")
    op.drop_column("message", "quiet_hours")
    op.drop_column("app", "quiet_hours")
    op.drop_column("app", "timezone")
