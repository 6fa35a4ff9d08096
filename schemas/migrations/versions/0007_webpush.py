"""Web Push: VAPID keys and contact per app, subscription keys per registration

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("app", schema=None) as batch_op:
        batch_op.add_column(sa.Column("webpush_private_key_pem", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("webpush_subject", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("webpush_rate_per_minute", sa.Integer(), nullable=True))
    with op.batch_alter_table("registration", schema=None) as batch_op:
        batch_op.add_column(sa.Column("webpush_p256dh", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("webpush_auth", sa.String(length=40), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35 has it): batch mode would copy and
    # drop `app` and `registration` on SQLite, which the rows referencing them forbid
    # (or cascade away: topics, capabilities).
    for column in ("webpush_auth", "webpush_p256dh"):
        op.drop_column("registration", column)
    for column in ("webpush_rate_per_minute", "webpush_subject", "webpush_private_key_pem"):
        op.drop_column("app", column)
