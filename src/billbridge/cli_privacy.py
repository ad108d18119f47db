"""`billbridge erase` (one person's personal data, a GDPR erasure request) and `erasures`.

billbridge erase --customer cus_123            # shows what it finds, asks, erases
billbridge erase --email ann@example.com --yes
billbridge erasures                            # the record: hashes, counts, who, status
"""

from __future__ import annotations

import getpass
from typing import Annotated

import typer

from billbridge.cli_common import (
    EXIT_CONFIGURATION,
    echo_error,
    format_time,
    friendly_errors,
    opened_store,
    plural,
    table,
)
from billbridge.config import load_settings
from billbridge.erasure import Eraser
from billbridge.errors import ErasureRequestError
from billbridge.observability import Metrics


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (containers)
        return "cli"


def erase(
    customer: Annotated[
        str | None, typer.Option("--customer", help="The Stripe customer id (cus_...).")
    ] = None,
    email: Annotated[
        str | None, typer.Option("--email", help="The person's email address.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase one person's personal data from every table (a GDPR erasure request).

    Event payloads become stubs (the event ids stay, so duplicates are still refused),
    request and response bodies are cleared, the customer and billing rows are deleted,
    the erasure is recorded without the data, and the Customer.io action of
    BILLBRIDGE_ERASURE_CIO_ACTION (delete, suppress or none) is queued as a delivery that a
    running worker sends.
    """
    with friendly_errors():
        settings = load_settings()
        with opened_store(settings) as (store, _catalog):
            eraser = Eraser(store, settings, Metrics())
            try:
                found = eraser.find(customer_id=customer, email=email)
            except ErasureRequestError as exc:
                echo_error(f"error: {exc}; use --customer cus_... or --email ADDRESS")
                raise typer.Exit(EXIT_CONFIGURATION) from None
            action = settings.erasure_cio_action
            summary = (
                f"Found {plural(found.events, 'event')} and "
                f"{plural(len(found.customers), 'customer')} for this person; Customer.io "
                f"action: {action} (BILLBRIDGE_ERASURE_CIO_ACTION)."
            )
            typer.echo(summary)
            if not yes and not typer.confirm("Erase their personal data? This cannot be undone"):
                typer.echo("Nothing erased.")
                raise typer.Exit(1)
            report = eraser.erase(customer_id=customer, email=email, requested_by=_operator())
        typer.echo(
            f"Erased: {plural(report.events, 'event')} stubbed, "
            f"{plural(report.customers, 'customer')} deleted with their billing rows."
        )
        if report.cio_event_ids:
            typer.echo(
                f"Customer.io {report.cio_action}: queued as "
                f"{plural(len(report.cio_event_ids), 'delivery', 'deliveries')} "
                f"({', '.join(report.cio_event_ids)}); a running worker sends "
                f"{'it' if len(report.cio_event_ids) == 1 else 'them'}."
            )
        else:
            typer.echo(f"Customer.io: {report.cio_action} (nothing queued).")


def erasures(
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first.")] = 20,
) -> None:
    """List the recorded erasures (hash of what was asked, counts, who, Customer.io status)."""
    with friendly_errors():
        settings = load_settings()
        with opened_store(settings) as (store, _catalog):
            records = store.list_erasures(limit)
        if not records:
            typer.echo("No erasure recorded.")
            return
        rows = [
            [
                str(record.erasure_id),
                format_time(record.created_at),
                f"{record.matched_by} sha256:{record.matched_hash[:12]}",
                str(record.customers),
                str(record.events),
                record.requested_by,
                f"{record.cio_action} {','.join(record.cio_statuses) or '-'}",
            ]
            for record in records
        ]
        headers = ["id", "when", "matched", "customers", "events", "by", "customer.io"]
        typer.echo(table(headers, rows))
