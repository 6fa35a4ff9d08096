"""partial unique keys on message: a push without an idempotency key or a schedule adds
nothing to them

Most Messages carry neither an idempotency key nor a schedule run, yet each wrote an entry
(of NULLs) into both unique indexes when inserted, and again when closed (the state change
is not a HOT update): four of the nine index entries a single-device push wrote to
`message`. NULLs never conflict, so the partial indexes refuse exactly what the full ones
did. PostgreSQL only: on SQLite the constraints are part of the table, and dropping one
means rebuilding the table.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 18:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

KEYS = (
    ("uq_message_app_idempotency", ["app_id", "idempotency_key"], "idempotency_key"),
    ("uq_message_schedule_run", ["schedule_id", "run_at"], "schedule_id"),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, columns, present in KEYS:
        op.drop_constraint(name, "message", type_="unique")
        op.create_index(
            name,
            "message",
            columns,
            unique=True,
            postgresql_where=sa.text(f"{present} IS NOT NULL"),
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, columns, _ in KEYS:
        op.drop_index(name, table_name="message")
        op.create_unique_constraint(name, "message", columns)
