"""Named SQL statements, one module per dialect defining the same names, loaded once.

The batched algorithms (`store/outbox.py`) call statements by name; a driver only picks
its dialect's set and executes them. Rows travel as ONE JSON text parameter per statement
(`json_each` on SQLite, `json_to_recordset` on PostgreSQL; or, where a dialect binds them
faster, as a VALUES list (`MultiRow`) or one array per column (`Columns`)), so a batch of
any size is the same few statements, and results that are many rows come back as one JSON
text row (or, where a dialect returns big values faster so, as rows: `Rows`).

    statements = load("sqlite")
    statements.sql("claim_due_ids")
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

Dialect = Literal["sqlite", "postgres"]
DIALECTS: tuple[Dialect, ...] = ("sqlite", "postgres")


@dataclass(frozen=True)
class MultiRow:
    """A statement over a VALUES list, where a dialect binds rows faster one parameter per
    value than as JSON (SQLite re-parses a JSON element for every field it extracts):
    `sql` holds `{rows}`, replaced by `row` once per row; parameters go in `columns` order."""

    sql: str
    row: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Columns:
    """A statement over one array parameter per column, where a dialect reads big text
    values faster as arrays than out of JSON (PostgreSQL: a webhook's payload, sent as a
    binary text array, is neither escaped by us nor unescaped by the JSON parser).
    Parameters are the `columns`' values, one list per column, in `columns` order."""

    sql: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Rows:
    """A query whose many rows come back as rows, not as one JSON text value, where a
    dialect returns big text values faster so (PostgreSQL: a claimed delivery's payload is
    not escaped into JSON by the server and parsed again by the worker)."""

    sql: str


Statement = str | MultiRow | Columns | Rows


class Statements:
    """One dialect's statements by name; remembers which names ran (see the tests)."""

    def __init__(self, dialect: Dialect, statements: Mapping[str, Statement]) -> None:
        self.dialect = dialect
        self._statements = dict(statements)
        self._expanded: dict[tuple[str, int], str] = {}
        self.used: set[str] = set()

    def sql(self, name: str, rows: int = 1) -> str:
        """The SQL text of `name` (a `MultiRow` one for `rows` rows); a name the dialect
        does not define is a KeyError."""
        self.used.add(name)
        statement = self._statements[name]
        if isinstance(statement, str):
            return statement
        if isinstance(statement, Columns | Rows):
            return statement.sql
        key = (name, rows)
        sql = self._expanded.get(key)
        if sql is None:
            sql = statement.sql.format(rows=", ".join([statement.row] * rows))
            self._expanded[key] = sql
        return sql

    def multirow(self, name: str) -> MultiRow | None:
        """The `MultiRow` form of `name`, or None when it takes its rows as JSON."""
        statement = self._statements[name]
        return statement if isinstance(statement, MultiRow) else None

    def returns_rows(self, name: str) -> bool:
        """Whether `name` returns its rows as rows (`Rows`) rather than as one JSON value."""
        return isinstance(self._statements[name], Rows)

    def columns(self, name: str) -> Columns | None:
        """The `Columns` form of `name`, or None."""
        statement = self._statements[name]
        return statement if isinstance(statement, Columns) else None

    def names(self) -> frozenset[str]:
        return frozenset(self._statements)


def guarded_conflict(table: str, columns: Iterable[str], kept: Collection[str]) -> str:
    """The ON CONFLICT clause of a billing upsert guarded by `order_key` (both dialects),
    setting `columns`: the new values when the new row is newer (a `kept` column keeps a
    stored value the new row lacks), else the stored ones. An older row still fills in a
    customer id the stored row lacks."""
    newer = f"{table}.order_key < excluded.order_key"

    def assign(column: str) -> str:
        new, old = f"excluded.{column}", f"{table}.{column}"
        if column == "customer_id":
            value = f"CASE WHEN {newer} THEN COALESCE({new}, {old}) ELSE COALESCE({old}, {new}) END"
        elif column in kept:
            value = f"CASE WHEN {newer} THEN COALESCE({new}, {old}) ELSE {old} END"
        else:
            value = f"CASE WHEN {newer} THEN {new} ELSE {old} END"
        return f"{column} = {value}"

    return (
        f" ON CONFLICT (id) DO UPDATE SET {', '.join(map(assign, columns))},"
        f" updated_at = excluded.updated_at WHERE {newer}"
        f" OR ({table}.customer_id IS NULL AND excluded.customer_id IS NOT NULL)"
    )


@functools.cache
def load(dialect: Dialect) -> Statements:
    """The statements of `dialect` (`billbridge.store.statements.<dialect>.STATEMENTS`)."""
    module = importlib.import_module(f"billbridge.store.statements.{dialect}")
    return Statements(dialect, module.STATEMENTS)
