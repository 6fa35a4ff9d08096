"""Huawei Push Kit: app id, client secret and lane rate per app

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 09:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("app", sa.Column("hms_app_id", sa.String(length=64), nullable=True))
    op.add_column("app", sa.Column("hms_client_secret", sa.String(length=255), nullable=True))
    op.add_column("app", sa.Column("hms_rate_per_minute", sa.Integer(), nullable=True))


def downgrade() -> None:
    # Plain DROP COLUMN (as 0007): batch mode would copy and drop `app` on SQLite.
    for column in ("hms_rate_per_minute", "hms_client_secret", "hms_app_id"):
        op.drop_column("app", column)
