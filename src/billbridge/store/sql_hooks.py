"""The driver hooks every part of the SQL store is written against; `SqlStore` (and its
SQLite and PostgreSQL subclasses) provide them."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from billbridge.store.base import Store
from billbridge.store.outbox import Db

T = TypeVar("T")
Insert = sqlite.Insert | postgresql.Insert


class SqlHooks(Store):
    """What the SQL store's mixins (access, throttle, ops, billing, fleet, privacy) call."""

    @abstractmethod
    def _write(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` in a write transaction (the writer's), durable when this returns."""

    @abstractmethod
    def _read(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` in a read transaction of its own."""

    @abstractmethod
    def _db(self, conn: Connection) -> Db:
        """The named statements on `conn`'s DB-API connection (same transaction)."""

    @abstractmethod
    def _insert(self, table: sa.Table) -> Insert:
        """The dialect's INSERT (with ON CONFLICT support)."""

    @property
    @abstractmethod
    def _now_expr(self) -> sa.ColumnElement[float]:
        """SQL for the database clock in Unix seconds."""

    @abstractmethod
    def _db_now(self, conn: Connection) -> float:
        """The database clock in Unix seconds, read in `conn`'s transaction."""
