"""Engines and schema migrations for PostgreSQL and the embedded SQLite default."""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    Connection,
    Engine,
    String,
    Table,
    TextClause,
    any_,
    bindparam,
    create_engine,
    event,
    text,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool
from sqlalchemy.types import NullType
from sqlmodel import Session

from schemas import jsontext

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 0x7075_7368  # "push": the advisory lock migrating processes take turns on


def normalise_url(url: str) -> str:
    # psycopg 3 is the driver we ship; accept the URLs people paste from elsewhere.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # The API and every worker process write: WAL lets readers run beside the writer and
    # the busy timeout makes writers queue instead of failing with "database is locked".
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str, *, pooled: bool = True, pre_ping: bool = True) -> Engine:
    url = normalise_url(url)
    # Bound values never reach an exception's text or a log line: they hold device tokens,
    # key hashes and whatever a client sent (SQLAlchemy's `[parameters: ...]`).
    kw: dict[str, Any] = {"hide_parameters": True}
    if not pooled:
        kw["poolclass"] = NullPool
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kw)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if pooled:
        kw.update(pool_pre_ping=pre_ping, pool_size=10, max_overflow=20)
    engine = create_engine(url, **kw)
    event.listen(engine, "connect", _pg_session)
    return engine


def _pg_session(dbapi_conn: Any, _record: Any) -> None:
    # psycopg prepares a statement after a few runs, and PostgreSQL then settles on one
    # generic plan. Planned while `delivery` and `message` were nearly empty (a new install,
    # a benchmark) that plan is a sequential scan, kept until the next ANALYZE however large
    # the table grows. Plan every run with its own parameters and the table's current size;
    # parsing is still saved.
    with dbapi_conn.cursor() as cur:
        cur.execute("SET plan_cache_mode = force_custom_plan")
    dbapi_conn.commit()


def among(column: Any, ids: Iterable[str], dialect: str) -> ColumnElement[bool]:
    """`column IN ids`; on PostgreSQL `column = ANY(array)`: one parameter whatever the
    count, so psycopg prepares the statement once instead of parsing 500 `IN` items. The
    array goes as a literal (pg_array) of unknown type, which PostgreSQL reads once as
    the array (a text parameter cast to one would be cast again for every row filtered)."""
    values = list(ids)
    if dialect == "postgresql":
        array = sql_cast(bindparam(None, pg_array(values), NullType()), ARRAY(String))
        return cast(ColumnElement[bool], column == any_(array))
    return cast(ColumnElement[bool], column.in_(values))


def insert_rows(
    conn: Connection,
    target: Table,
    rows: list[dict[str, Any]],
    skip_existing: tuple[str, ...] | None = None,
) -> None:
    """Insert rows (each with the same columns) in one statement. `skip_existing`: the
    unique columns on which a row already there is left alone."""
    insert_together(conn, [(target, rows, skip_existing)])


Rows = tuple[Table, list[dict[str, Any]], tuple[str, ...] | None]


def insert_together(conn: Connection, parts: list[Rows]) -> None:
    """Insert rows into several tables, in order (parents first).

    On PostgreSQL this is one statement whatever the counts: each table's rows go in as
    one JSON document (INSERT ... SELECT FROM json_to_recordset; written by orjson, where
    psycopg would adapt array parameters element by element in Python), the earlier
    tables' inserts as WITH clauses of the last. Its text is the same for every batch, so
    it is parsed and planned once, and outside a transaction it commits alone: one round
    trip. Elsewhere SQLAlchemy's multi-row VALUES, one statement per table."""
    parts = [part for part in parts if part[1]]
    if not parts:
        return
    if conn.dialect.name != "postgresql":
        for target, rows, skip_existing in parts:
            stmt = sqlite_insert(target)
            if skip_existing:
                stmt = stmt.on_conflict_do_nothing(index_elements=list(skip_existing))
            conn.execute(stmt.returning(*target.primary_key.columns), rows)
        return
    shape = tuple((target, tuple(rows[0]), skip) for target, rows, skip in parts)
    documents = {
        f"rows{i}": jsontext.dumps(rows) for i, (_, rows, _) in enumerate(parts)
    }
    fetch_raw(conn, _recordset_insert(shape), documents)


@cache
def _recordset_insert(
    shape: tuple[tuple[Table, tuple[str, ...], tuple[str, ...] | None], ...],
) -> TextClause:
    inserts = [_one_insert(i, *part) for i, part in enumerate(shape)]
    if len(inserts) == 1:
        return text(inserts[0])
    ctes = ", ".join(f"i{i} AS ({sql})" for i, sql in enumerate(inserts[:-1]))
    return text(f"WITH {ctes} {inserts[-1]}")


def _one_insert(
    i: int, target: Table, names: tuple[str, ...], skip_existing: tuple[str, ...] | None
) -> str:
    pg = postgresql.dialect()
    columns = [target.c[name] for name in names]
    listed = ", ".join(f'"{c.name}"' for c in columns)
    picked = ", ".join(_picked(c, pg) for c in columns)
    shape = ", ".join(f'"{c.name}" {_record_type(c, pg)}' for c in columns)
    sql = (
        f"INSERT INTO {target.name} ({listed}) SELECT {picked} "
        f"FROM json_to_recordset(CAST(:rows{i} AS json)) AS v({shape})"
    )
    if skip_existing:
        sql += f" ON CONFLICT ({', '.join(skip_existing)}) DO NOTHING"
    return sql


def fetch_raw(conn: Connection, stmt: TextClause, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Run a text() statement on PostgreSQL through psycopg's own cursor; its rows as
    tuples ([] for a statement that returns none).

    For a text() statement SQLAlchemy builds the result's column map on every execution
    (a psycopg Column, a keymap entry and a processor lookup per column): for the claim's
    fifty columns that was a quarter of a deliver task's CPU. Values are the same, since
    untyped text() columns get no SQLAlchemy processing. Errors come out as SQLAlchemy's,
    and a connection found lost is invalidated, as with conn.execute."""
    sql = _pyformat(stmt, conn.dialect)
    fairy = conn.connection
    cursor = fairy.cursor()
    try:
        cursor.execute(sql, params)
        rows = cursor.fetchall() if cursor.pgresult.status == _TUPLES_OK else []
        return cast(list[tuple[Any, ...]], rows)  # psycopg's list, not copied
    except conn.dialect.loaded_dbapi.Error as err:
        lost = conn.dialect.is_disconnect(err, fairy.dbapi_connection, cursor)
        if lost:
            conn.invalidate(err)
        raise DBAPIError.instance(
            sql,
            params,
            err,
            conn.dialect.loaded_dbapi.Error,
            hide_parameters=conn.engine.hide_parameters,  # tokens never reach a log line
            connection_invalidated=lost,
        ) from err
    finally:
        cursor.close()


_TUPLES_OK = 2  # libpq's PGRES_TUPLES_OK


@lru_cache(maxsize=64)
def _pyformat(stmt: TextClause, dialect: Any) -> str:
    """The statement as psycopg takes it (%(name)s parameters, % doubled)."""
    return str(stmt.compile(dialect=dialect))


@cache
def direct(engine: Engine) -> Engine:
    """The engine's database with every statement committing alone (no BEGIN, no COMMIT: on
    PostgreSQL each is a round trip of its own). For paths whose every write is one
    statement.

    On PostgreSQL a pool of its own, whose connections are in autocommit from the start:
    switching a pooled connection in and out of it on every checkout (SQLAlchemy's
    isolation_level option) cost a deliver task more CPU than building its payloads.
    Its pool does not ping a connection before handing it over (a round trip per
    checkout on the hot paths): a lost one fails its first statement, which invalidates
    the pool, and a caller retries that statement where it is safe to."""
    if engine.dialect.name != "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return _autocommit_twin(engine)


def _autocommit_twin(engine: Engine) -> Engine:
    pool = engine.pool
    twin = create_engine(
        engine.url,
        hide_parameters=engine.hide_parameters,
        isolation_level="AUTOCOMMIT",
        **({"poolclass": NullPool} if isinstance(pool, NullPool) else {"pool_size": 4}),
    )
    event.listen(twin, "connect", _pg_session)
    born = os.getpid()

    def _disposed(_engine: Engine) -> None:
        # A forked child disposes without closing: the parent still uses those sockets.
        twin.dispose(close=os.getpid() == born)

    event.listen(engine, "engine_disposed", _disposed)
    return twin


def pg_array(values: Iterable[object]) -> str:
    """`values` as a PostgreSQL array literal, for CAST(:p AS text[]) or int[]: psycopg
    adapts a list parameter element by element in Python, at several times the cost."""
    items = [str(v) for v in values]
    if all(_PLAIN_ITEM.fullmatch(v) for v in items):  # ids and numbers: the common case
        return "{" + ",".join(items) + "}"
    return "{" + ",".join(_quoted_item(v) for v in items) + "}"


# What an array literal takes unquoted: not empty, no separator, quote, brace, backslash
# or space, and not NULL (which would be read as a null element).
_PLAIN_ITEM = re.compile(r"(?!(?i:null)$)[0-9A-Za-z_.:+-]+")


def _quoted_item(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _record_type(column: Column[Any], pg: Any) -> str:
    # A JSON column is read as json, so the document's own text is stored as it came.
    return "json" if isinstance(column.type, JSON) else str(column.type.compile(dialect=pg))


def _picked(column: Column[Any], pg: Any) -> str:
    name = f'v."{column.name}"'
    if isinstance(column.type, JSON):
        # json_to_recordset reads a JSON null as SQL NULL; SQLAlchemy writes None as JSON
        # null unless the column says none_as_null: keep what the ORM would have written.
        if not column.type.none_as_null:
            name = f"COALESCE({name}, 'null'::json)"
        return f"CAST({name} AS {column.type.compile(dialect=pg)})"
    return name


@lru_cache(maxsize=8)
def engine_for(url: str, *, pre_ping: bool = True) -> Engine:
    """One engine (one pool) per URL per process.

    `pre_ping=False` saves a round trip per checkout where the caller retries on a
    connection error anyway (the worker's tasks): a stale connection fails once, the pool
    is invalidated, the retry connects afresh."""
    return make_engine(url, pre_ping=pre_ping)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database to `revision` (the API, worker and demo call this on start).

    Several API processes start at once: on PostgreSQL they take turns (an advisory lock),
    so only the first migrates a fresh database and the others find it done."""
    from alembic import command

    if not normalise_url(url).startswith("postgresql"):
        with _file_lock(url):
            command.upgrade(alembic_config(url), revision)
        return
    engine = make_engine(url, pooled=False)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
            try:
                command.upgrade(alembic_config(url), revision)
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
    finally:
        engine.dispose()


@contextmanager
def _file_lock(url: str) -> Iterator[None]:
    """SQLite: several processes migrating one file take turns (a lock file beside it)."""
    path = normalise_url(url).removeprefix("sqlite:///")
    if not path or path == ":memory:" or path.startswith("file:"):
        yield
        return
    with open(f"{path}.migrate-lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def current_revision(url: str) -> str | None:
    """The Alembic revision the database is at (None: not migrated)."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url, pooled=False)
    try:
        with engine.connect() as conn:
            rev = MigrationContext.configure(conn).get_current_revision()
            return str(rev) if rev is not None else None
    finally:
        engine.dispose()


def migration_history() -> list[tuple[str, str]]:
    """(revision, first line of its description), oldest first."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    revs = list(script.walk_revisions())
    return [(str(r.revision), (r.doc or "").splitlines()[0]) for r in reversed(revs)]
