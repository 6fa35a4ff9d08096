"""lean indexes: what a push writes touches fewer of them

Message: `ix_message_app_id` and `ix_message_schedule_id` repeat the leading columns of
`ix_message_app_created` and `uq_message_schedule_run`; the state index holds unfinished
Messages only. Delivery: the two status indexes hold QUEUED rows only, so recording an
outcome adds entries to three indexes instead of five; on PostgreSQL its pages keep 15 %
free, so the claim (lease and attempts, no indexed column) updates rows in place (HOT).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 09:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

OPEN_MESSAGES = "state IN ('accepted', 'dispatched')"
QUEUED_DELIVERIES = "status = 'QUEUED'"


def _partial(name: str, table: str, columns: list[str], where: str) -> None:
    op.create_index(
        name,
        table,
        columns,
        postgresql_where=sa.text(where),
        sqlite_where=sa.text(where),
    )


def upgrade() -> None:
    op.drop_index("ix_message_app_id", table_name="message")
    op.drop_index("ix_message_schedule_id", table_name="message")
    op.drop_index("ix_message_state_created", table_name="message")
    _partial("ix_message_open", "message", ["state", "created_at"], OPEN_MESSAGES)
    op.drop_index("ix_delivery_message_status", table_name="delivery")
    op.drop_index("ix_delivery_status_updated", table_name="delivery")
    _partial("ix_delivery_queued_message", "delivery", ["message_id"], QUEUED_DELIVERIES)
    _partial("ix_delivery_queued_updated", "delivery", ["updated_at"], QUEUED_DELIVERIES)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE delivery SET (fillfactor = 85)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE delivery RESET (fillfactor)")
    op.drop_index("ix_delivery_queued_updated", table_name="delivery")
    op.drop_index("ix_delivery_queued_message", table_name="delivery")
    op.create_index("ix_delivery_status_updated", "delivery", ["status", "updated_at"])
    op.create_index("ix_delivery_message_status", "delivery", ["message_id", "status"])
    op.drop_index("ix_message_open", table_name="message")
    op.create_index("ix_message_state_created", "message", ["state", "created_at"])
    op.create_index("ix_message_schedule_id", "message", ["schedule_id"])
    op.create_index("ix_message_app_id", "message", ["app_id"])
