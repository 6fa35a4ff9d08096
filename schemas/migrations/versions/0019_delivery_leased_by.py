"""Delivery remembers which process holds its lease

A deliver task leases the rows it claims. When its process dies (a SIGKILL, the OOM
killer), the lease kept the rows from everyone else until it ran out (lease_s), and the
task's Celery message waited for the sweep's grace. Each lease now names its holder (host
and pid, as attempts name the worker); holders beat in Redis, and the scheduler releases
the leases of one that stopped beating and enqueues its rows again at once. The column is
in no index, so the claim still updates its rows in place (HOT).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("delivery", sa.Column("leased_by", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("delivery") as batch:
        batch.drop_column("leased_by")
