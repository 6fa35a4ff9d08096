"""seed semantics: one user on one device (token no longer unique), Global User ID history

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 10:00:00
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


#: Tables whose rows cascade from `registration`.
CHILDREN = ("registration_topic", "registration_capability")


def _recreating_registration(change: Callable[[], None]) -> None:
    """Run a batch change of `registration`, keeping its children's rows on SQLite.

    SQLite's batch mode copies the table and drops the old one; with foreign keys on, that
    DROP deletes every row that cascades from it (topics, capabilities)."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        change()
        return
    saved = {
        t: [dict(r) for r in bind.execute(sa.text(f"SELECT * FROM {t}")).mappings()]
        for t in CHILDREN
    }
    change()
    for name, rows in saved.items():
        if rows:
            cols = ", ".join(rows[0])
            values = ", ".join(f":{c}" for c in rows[0])
            bind.execute(sa.text(f"INSERT INTO {name} ({cols}) VALUES ({values})"), rows)


def _drop_token_unique() -> None:
    with op.batch_alter_table("registration", schema=None) as batch_op:
        batch_op.drop_constraint("uq_registration_app_token", type_="unique")
        batch_op.create_index("ix_registration_app_token", ["app_id", "token"], unique=False)


def _restore_token_unique() -> None:
    with op.batch_alter_table("registration", schema=None) as batch_op:
        batch_op.drop_index("ix_registration_app_token")
        batch_op.create_unique_constraint("uq_registration_app_token", ["app_id", "token"])


def upgrade() -> None:
    # SAP: two users on one shared device are two registrations holding the same token.
    _recreating_registration(_drop_token_unique)
    op.create_table(
        "registration_global_user",
        sa.Column("registration_id", sa.String(length=36), nullable=False),
        sa.Column("global_user_id", sa.String(length=255), nullable=False),
        sa.Column("app_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["registration_id"], ["registration.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("registration_id", "global_user_id"),
    )
    op.create_index(
        "ix_registration_global_user_app_guid",
        "registration_global_user",
        ["app_id", "global_user_id", "registration_id"],
        unique=False,
    )
    # Every registration's current Global User ID starts its history.
    op.execute(
        "INSERT INTO registration_global_user (registration_id, global_user_id, app_id, created_at)"
        " SELECT id, global_user_id, app_id, updated_at FROM registration"
        " WHERE global_user_id IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_index("ix_registration_global_user_app_guid", table_name="registration_global_user")
    op.drop_table("registration_global_user")
    _recreating_registration(_restore_token_unique)
