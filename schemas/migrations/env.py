"""Alembic environment: migrations run on PostgreSQL and SQLite alike."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import schemas.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from schemas.db import make_engine

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url
    engine = make_engine(url, pooled=False)
    with engine.connect() as connection:
        # Batch mode lets ALTER-style migrations run on SQLite too.
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
