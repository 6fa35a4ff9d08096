"""registration attributes topics capabilities

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 18:46:18.022845
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registration_capability",
        sa.Column("registration_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("app_id", sa.String(length=36), nullable=False),
        sa.Column("category", sa.String(length=255), nullable=True),
        sa.Column("value", sa.String(length=1000), nullable=True),
        sa.ForeignKeyConstraint(["registration_id"], ["registration.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("registration_id", "name"),
    )
    with op.batch_alter_table("registration_capability", schema=None) as batch_op:
        batch_op.create_index(
            "ix_registration_capability_app_name",
            ["app_id", "name", "registration_id"],
            unique=False,
        )

    op.create_table(
        "registration_topic",
        sa.Column("registration_id", sa.String(length=36), nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("app_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(["registration_id"], ["registration.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("registration_id", "topic"),
    )
    with op.batch_alter_table("registration_topic", schema=None) as batch_op:
        batch_op.create_index(
            "ix_registration_topic_app_topic", ["app_id", "topic", "registration_id"], unique=False
        )

    with op.batch_alter_table("registration", schema=None) as batch_op:
        batch_op.add_column(sa.Column("external_user_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("phone_number", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("email", sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column("push_group", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("preferred_languages", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("time_zone", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("form_factor", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("device_model", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("device_manufacturer", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("os_version", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("sdk_version", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("app_version", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("device_secure", sa.Boolean(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "notifications_enabled", sa.Boolean(), nullable=False, server_default=sa.true()
            )
        )
        batch_op.add_column(
            sa.Column("primary_device", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("custom_attributes", sa.JSON(), nullable=True))
        batch_op.create_index("ix_registration_app_email", ["app_id", "email"], unique=False)
        batch_op.create_index(
            "ix_registration_app_external_user", ["app_id", "external_user_id"], unique=False
        )
        batch_op.create_index("ix_registration_app_group", ["app_id", "push_group"], unique=False)
        batch_op.create_index("ix_registration_app_phone", ["app_id", "phone_number"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("registration", schema=None) as batch_op:
        batch_op.drop_index("ix_registration_app_phone")
        batch_op.drop_index("ix_registration_app_group")
        batch_op.drop_index("ix_registration_app_external_user")
        batch_op.drop_index("ix_registration_app_email")
        batch_op.drop_column("custom_attributes")
        batch_op.drop_column("primary_device")
        batch_op.drop_column("notifications_enabled")
        batch_op.drop_column("device_secure")
        batch_op.drop_column("app_version")
        batch_op.drop_column("sdk_version")
        batch_op.drop_column("os_version")
        batch_op.drop_column("device_manufacturer")
        batch_op.drop_column("device_model")
        batch_op.drop_column("form_factor")
        batch_op.drop_column("time_zone")
        batch_op.drop_column("preferred_languages")
        batch_op.drop_column("push_group")
        batch_op.drop_column("email")
        batch_op.drop_column("phone_number")
        batch_op.drop_column("external_user_id")

    with op.batch_alter_table("registration_topic", schema=None) as batch_op:
        batch_op.drop_index("ix_registration_topic_app_topic")

    op.drop_table("registration_topic")
    with op.batch_alter_table("registration_capability", schema=None) as batch_op:
        batch_op.drop_index("ix_registration_capability_app_name")

    op.drop_table("registration_capability")
