"""registration token optional (an installation known before its push token: CM events)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL, not "": (app_id, token) is unique, and NULLs never clash in PostgreSQL or SQLite.
    with op.batch_alter_table("registration", schema=None) as batch_op:
        batch_op.alter_column("token", existing_type=sa.String(length=4096), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM registration WHERE token IS NULL")
    with op.batch_alter_table("registration", schema=None) as batch_op:
        batch_op.alter_column("token", existing_type=sa.String(length=4096), nullable=False)
