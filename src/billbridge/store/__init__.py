"""Storage: `open_store(database_url)` picks the driver for a SQLAlchemy database URL.

store = open_store("sqlite:///./var/billbridge.db")
store.migrate()
"""

from __future__ import annotations

from billbridge.errors import ConfigurationError
from billbridge.store.base import Store
from billbridge.store.postgres import PostgresStore
from billbridge.store.sqlite import SqliteStore, sqlite_path

POSTGRES_SCHEMES = ("postgresql+psycopg://", "postgresql://", "postgres://")


def open_store(database_url: str) -> Store:
    """The Store for `database_url`: `sqlite:///FILE` or `postgresql+psycopg://...`.

    A SQLite file's parent directory is created. Any other URL is a ConfigurationError.
    """
    url = database_url.strip()
    if url.startswith("sqlite:"):
        sqlite_path(url).parent.mkdir(parents=True, exist_ok=True)
        return SqliteStore(url)
    if url.startswith(POSTGRES_SCHEMES):
        return PostgresStore(url)
    scheme = url.split("://", 1)[0] if "://" in url else "(none)"
    raise ConfigurationError(
        f"DATABASE_URL: unsupported database scheme {scheme!r}; use sqlite:///path/to/file.db "
        "or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"
    )


__all__ = ["PostgresStore", "SqliteStore", "Store", "open_store"]
