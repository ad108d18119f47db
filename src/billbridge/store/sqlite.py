"""SQLite driver: WAL, synchronous=FULL, one group-committing writer thread, pooled readers.

Every write goes through the store's `Writer` (`store/writer.py`): one thread, one
`BEGIN IMMEDIATE` transaction (one fsync) per batch of waiting writes, and a flock on
`<database>.writelock` around each batch so that several processes writing the file take
turns without SQLite's busy-wait sleeps. One writer also means claims can never race.
Readers use their own pooled connections (WAL: they never block the writer, nor it them).

    store = SqliteStore("sqlite:///./var/billbridge.db")
    store.migrate()
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import NullPool

from billbridge.errors import ConfigurationError
from billbridge.store.sql import Insert, SqlStore, run_migrations, unavailable_on_errors
from billbridge.store.statements import load
from billbridge.store.statements.sqlite import NOW
from billbridge.store.writer import Writer, open_write_lock

# The oldest SQLite the statements run on (`INSERT ... RETURNING`, in `insert_events`).
MIN_SQLITE = (3, 35, 0)


def sqlite_path(database_url: str) -> Path:
    """The database file of a `sqlite:///...` URL; in-memory databases are refused."""
    try:
        url = make_url(database_url)
    except sa.exc.ArgumentError:
        raise ConfigurationError(
            "DATABASE_URL is not a valid SQLAlchemy URL; use sqlite:///path/to/file.db"
        ) from None
    database = url.database or ""
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        raise ConfigurationError(
            "DATABASE_URL: an in-memory SQLite database cannot be shared between the "
            "writer and readers; use a file, e.g. sqlite:///./var/billbridge.db"
        )
    return Path(database)


def _make_engine(database_url: str, *, begin: str, busy_timeout: float, pooled: bool) -> Engine:
    engine = sa.create_engine(
        database_url,
        connect_args={"check_same_thread": False, "timeout": busy_timeout},
        hide_parameters=True,  # an error's message never shows the values (tokens, hashes)
        **({"pool_size": 8, "max_overflow": 56} if pooled else {"poolclass": NullPool}),
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        # Take transaction control away from the sqlite3 module: SQLAlchemy's BEGIN (below)
        # and SAVEPOINTs then mean exactly what they say.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # durable on commit, power loss included
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)

    return engine


def require_sqlite(version: tuple[int, int, int]) -> None:
    """Refuse, with a clear error, an SQLite library older than the statements need."""
    if version < MIN_SQLITE:
        have, need = ".".join(map(str, version)), ".".join(map(str, MIN_SQLITE))
        raise ConfigurationError(
            f"this Python's SQLite is {have}; Billbridge needs SQLite {need} or later"
            " (or PostgreSQL: DATABASE_URL=postgresql://...)"
        )


class SqliteStore(SqlStore):
    """Store on one SQLite file: a single group-committing writer thread, pooled readers."""

    def __init__(self, database_url: str, *, busy_timeout: float = 5.0) -> None:
        path = sqlite_path(database_url)  # validates
        require_sqlite(sqlite3.sqlite_version_info)
        # BEGIN IMMEDIATE takes the write lock up front, so another process writing the same
        # file makes us wait (busy_timeout) instead of failing half-way through a batch.
        self._write_engine = _make_engine(
            database_url, begin="BEGIN IMMEDIATE", busy_timeout=busy_timeout, pooled=False
        )
        writer = Writer(
            self._write_engine,
            name="billbridge-sqlite-writer",
            isolate="savepoint",
            lock=open_write_lock(path),
        )
        super().__init__(
            _make_engine(database_url, begin="BEGIN", busy_timeout=busy_timeout, pooled=True),
            writer,
            load("sqlite"),
            sqlite3.Error,
        )

    def _insert(self, table: sa.Table) -> Insert:
        return sqlite.insert(table)

    @property
    def _now_expr(self) -> sa.ColumnElement[float]:
        return sa.literal_column(NOW, type_=sa.Double())

    def migrate(self) -> None:
        with unavailable_on_errors(), self._write_engine.begin() as conn:
            run_migrations(conn)

    def close(self) -> None:
        self._writer.close()
        self._write_engine.dispose()
        self._engine.dispose()
