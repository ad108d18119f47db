"""Storage: `open_store(database_url)` picks the driver for a SQLAlchemy database URL.

store = open_store("sqlite:///./var/billbridge.db")
store.migrate()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from billbridge.errors import ConfigurationError
from billbridge.store.base import Store
from billbridge.store.sqlite import SqliteStore, sqlite_path

if TYPE_CHECKING:
    from billbridge.store.postgres import PostgresStore

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
        return _postgres_store_class()(url)
    scheme = url.split("://", 1)[0] if "://" in url else "(none)"
    raise ConfigurationError(
        f"DATABASE_URL: unsupported database scheme {scheme!r}; use sqlite:///path/to/file.db "
        "or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"
    )


def _postgres_store_class() -> type[PostgresStore]:
    # Imported on first use: psycopg costs a SQLite process ~10 MB of memory for nothing.
    from billbridge.store.postgres import PostgresStore  # noqa: PLC0415

    return PostgresStore


def __getattr__(name: str) -> Any:
    if name == "PostgresStore":
        return _postgres_store_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PostgresStore", "SqliteStore", "Store", "open_store"]
