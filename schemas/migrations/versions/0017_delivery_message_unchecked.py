"""delivery.message_id is not checked row by row on PostgreSQL

The foreign key ran a query (SELECT ... FOR KEY SHARE on the Message) for every Delivery
inserted: for a single-device push that was about 40 % of the insert's database CPU, and
it cost each device of a broadcast the same again in the fan-out. Pushline writes a
Delivery only in the statement that writes its Message (producer/dispatch.py), or for a
Message it is fanning out (worker/store.py: insert_deliveries), which nothing deletes: Messages
are deleted only by retention, once finished and after their Deliveries
(schemas/retention.py), or when taken back unqueued, also after their Deliveries. The
column keeps its index. On SQLite the key stays: dropping one means rebuilding the table,
and the embedded default is not where this cost matters.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 00:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

NAME = "delivery_message_id_fkey"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_constraint(NAME, "delivery", type_="foreignkey")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_foreign_key(NAME, "delivery", "message", ["message_id"], ["id"])
