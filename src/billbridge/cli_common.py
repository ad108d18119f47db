"""Helpers the `billbridge` commands share: error handling, the store, and text formatting.

    with friendly_errors():
        settings = load_settings()
        with opened_store(settings) as (store, catalog):
            ...

A configuration problem prints one line and exits 2; an unreachable database exits 1.
Neither shows a traceback.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from billbridge.config import Settings
from billbridge.errors import ConfigurationError, StoreUnavailableError
from billbridge.store import open_store
from billbridge.store.base import Store
from billbridge.web.operations import parse_duration
from billbridge.workflows.catalog import WorkflowCatalog

EXIT_FAILURE = 1
EXIT_CONFIGURATION = 2  # also what Click uses for usage errors
# The file config.dev_webhook_secret keeps the development secret in (a name, not a secret).
DEV_SECRET_FILE = "dev-webhook-secret"  # noqa: S105


def echo_error(message: str) -> None:
    """One line on stderr."""
    typer.echo(message, err=True)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn the errors a user can fix into one line on stderr and an exit code."""
    try:
        yield
    except ConfigurationError as exc:
        echo_error(f"error: {exc}")
        raise typer.Exit(EXIT_CONFIGURATION) from None
    except StoreUnavailableError as exc:
        echo_error(f"error: {exc}; check DATABASE_URL and that the database is running")
        raise typer.Exit(EXIT_FAILURE) from None


def since_seconds(since: str | None) -> float | None:
    """A `--since` value (`2h`, `30m`, `90s`, `3d`) in seconds, None when not given; a bad
    one is a usage error (exit 2) saying why."""
    if since is None:
        return None
    try:
        return parse_duration(since)
    except ValueError as exc:
        echo_error(f"error: --since: {exc}")
        raise typer.Exit(EXIT_CONFIGURATION) from None


def safe_database_url(database_url: str) -> str:
    """The URL with any password hidden, fit to print."""
    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable DATABASE_URL)"


@contextmanager
def opened_store(
    settings: Settings, *, seed_workflows: bool = False
) -> Iterator[tuple[Store, WorkflowCatalog]]:
    """The store, migrated to the newest schema (as `serve` does at start), and its catalog.

    With `seed_workflows` the default workflows are created as on a first `serve`, so
    `workflows list|export|apply` see what a running service would.
    """
    store = open_store(settings.database_url)
    try:
        store.migrate()
        catalog = WorkflowCatalog(store)
        if seed_workflows:
            catalog.ensure_defaults()
        yield store, catalog
    finally:
        store.close()


def format_time(seconds: float | None) -> str:
    """Unix seconds as `2026-01-31 12:00:05Z` (UTC); `-` when unknown."""
    if seconds is None:
        return "-"
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain left-aligned text table, columns two spaces apart."""
    widths = [len(header) for header in headers]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    lines = []
    for row in (headers, *rows):
        cells = [cell.ljust(widths[index]) for index, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 attempt`, `2 attempts`; `many` for irregular plurals (`deliveries`)."""
    return f"{count} {word if count == 1 else (many or word + 's')}"
