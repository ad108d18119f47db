"""Shared fixtures: real SQLite files, and a throwaway PostgreSQL database per test session.

`store` runs a test once per driver ("sqlite", "postgres"); the PostgreSQL run is marked
`postgres`. PostgreSQL missing is a failure, never a skip.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from billbridge.store import open_store
from billbridge.store.base import Store

PG_ADMIN_URL = os.environ.get(
    "BILLBRIDGE_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
STORE_TABLES = (
    "attempts",
    "deliveries",
    "events",
    "workflows",
    "customers",
    "meta",
    "workers",
)
ACCESS_TABLES = (
    "users",
    "sessions",
    "api_tokens",
    "credentials",
    "alert_settings",
    "alert_state",
    "login_throttle",
    "alert_counts",
    "erasures",
)
FLEET_TABLES = ("rate_limits",)
BILLING_TABLES = (
    "billing_customers",
    "billing_subscriptions",
    "billing_charges",
    "billing_refunds",
    "billing_invoices",
    "billing_disputes",
)


def _admin_connection() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL does not answer at {PG_ADMIN_URL} ({type(exc).__name__}). "
            "Start it (e.g. `service postgresql start`); the postgres tests never skip.",
            pytrace=False,
        )


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file of this test's own (not yet created)."""
    return f"sqlite:///{tmp_path / 'billbridge.db'}"


@contextmanager
def _fresh_postgres_database(prefix: str) -> Iterator[str]:
    """Create an empty PostgreSQL database; yield its SQLAlchemy URL; drop it afterwards."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    with _admin_connection() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with _admin_connection() as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for the session, dropped at the end."""
    with _fresh_postgres_database("billbridge_test") as url:
        yield url


@pytest.fixture
def own_postgres_url() -> Iterator[str]:
    """An empty PostgreSQL database of this test's own (it may kill servers using it or
    refuse connections to it), dropped after the test."""
    with _fresh_postgres_database("billbridge_own") as url:
        yield url


@pytest.fixture(scope="session")
def migrated_postgres_url(postgres_url: str) -> str:
    """The session database, migrated once."""
    store = open_store(postgres_url)
    try:
        store.migrate()
    finally:
        store.close()
    return postgres_url


def _truncate_postgres(url: str) -> None:
    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                sql.SQL(", ").join(
                    sql.Identifier(table)
                    for table in STORE_TABLES + ACCESS_TABLES + BILLING_TABLES + FLEET_TABLES
                )
            )
        )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of either driver (tests using it run once per driver)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
        store = open_store(url)
        try:
            store.migrate()
        finally:
            store.close()
        return url
    url = str(request.getfixturevalue("migrated_postgres_url"))
    _truncate_postgres(url)
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A migrated, empty store on each driver; closed after the test."""
    opened = open_store(store_url)
    try:
        yield opened
    finally:
        opened.close()
