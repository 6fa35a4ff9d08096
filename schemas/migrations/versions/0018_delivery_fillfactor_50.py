"""Delivery pages keep half their room free, so the claim updates its rows in place

The claim changes only unindexed columns (lease, attempts), so PostgreSQL can write the
new version of each row into the same page (a HOT update, no index entries) if the page
has room. At fillfactor 85 a page had room for about 4 of its 25 rows, and most claims
wrote a new entry into each of Delivery's five indexes. At 50 the claims are HOT:
PostgreSQL's CPU for writing, claiming and recording a single-device push was 137.0-139.0
µs at 85 and 126.5-131.0 µs at 50 (`python -m bench.rowcycle`), and since the record's
new versions need room too, the table after the whole cycle was only 5 % larger. Pages
written before this migration keep the room they were written with.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 07:10:00
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE delivery SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE delivery SET (fillfactor = 85)")
