"""Named SQL statements, one module per dialect defining the same names, loaded once.

The batched algorithms (`store/outbox.py`) call statements by name; a driver only picks
its dialect's set and executes them. Rows travel as ONE JSON text parameter per statement
(`json_each` on SQLite, `json_to_recordset` on PostgreSQL), so a batch of any size is the
same few statements, and results that are many rows come back as one JSON text row.

    statements = load("sqlite")
    statements.sql("claim_due_ids")
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from typing import Literal

Dialect = Literal["sqlite", "postgres"]
DIALECTS: tuple[Dialect, ...] = ("sqlite", "postgres")


class Statements:
    """One dialect's statements by name; remembers which names ran (see the tests)."""

    def __init__(self, dialect: Dialect, statements: Mapping[str, str]) -> None:
        self.dialect = dialect
        self._statements = dict(statements)
        self.used: set[str] = set()

    def sql(self, name: str) -> str:
        """The SQL text of `name`; a name the dialect does not define is a KeyError."""
        self.used.add(name)
        return self._statements[name]

    def names(self) -> frozenset[str]:
        return frozenset(self._statements)


@functools.cache
def load(dialect: Dialect) -> Statements:
    """The statements of `dialect` (`billbridge.store.statements.<dialect>.STATEMENTS`)."""
    module = importlib.import_module(f"billbridge.store.statements.{dialect}")
    return Statements(dialect, module.STATEMENTS)
