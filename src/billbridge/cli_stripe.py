"""`billbridge reconcile`, `billbridge backfill` and `billbridge setup-webhook`: Stripe-side jobs.

    billbridge reconcile --since 2h        # store the events Stripe has and we missed
    billbridge backfill --dry-run          # every Stripe customer's profile, sent nowhere
    billbridge setup-webhook --url https://billing.example.com/webhooks/stripe
    billbridge setup-webhook --sync        # the endpoint's events := the workflows' triggers

All three need STRIPE_API_KEY. None prints a key or a secret.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from billbridge.backfill import DEFAULT_BATCH_SIZE, Backfill, BackfillOptions, BackfillSummary
from billbridge.cli_common import (
    EXIT_CONFIGURATION,
    EXIT_FAILURE,
    echo_error,
    friendly_errors,
    since_seconds,
)
from billbridge.composition import build_reconciler, build_services
from billbridge.config import Settings, load_settings
from billbridge.errors import ConfigurationError, DeliveryError, StripeAPIError
from billbridge.services import Services
from billbridge.stripe.endpoint_sync import endpoint_url, needed_types, sync_endpoint
from billbridge.stripe.listing import StripeLister
from billbridge.stripe.reconcile import reconcile_types
from billbridge.stripe.webhook_setup import PINNED_API_VERSION, SavedWebhookSecrets
from billbridge.stripe.webhook_setup import setup_webhook as create_or_update_endpoint


@contextmanager
def _stripe_job(settings: Settings) -> Iterator[tuple[Services, StripeLister]]:
    """Services and a rate-limited Stripe lister; Stripe failures exit 1 with one line."""
    services = build_services(settings)
    lister: StripeLister | None = None
    try:
        lister = StripeLister.from_settings(settings)
        yield services, lister
    except StripeAPIError as exc:
        echo_error(f"error: {exc}")
        raise typer.Exit(EXIT_FAILURE) from None
    finally:
        if lister is not None:
            lister.close()
        asyncio.run(services.aclose())


def _settings() -> Settings:
    settings = load_settings()
    if settings.stripe_api_key is None:
        echo_error("error: STRIPE_API_KEY is not set; this command reads the Stripe API")
        raise typer.Exit(EXIT_CONFIGURATION)
    return settings


def reconcile(
    since: Annotated[
        str | None,
        typer.Option(
            help="Look back this far (30m, 2h, 1d; at most 30d). Default: from the last "
            "reconcile, or 3 days on the first run."
        ),
    ] = None,
) -> None:
    """Store the events Stripe has that never arrived as webhooks.

    Lists Stripe's Events API for the types the enabled workflows use and stores every
    event missing here through the webhook's own path; the worker delivers them.
    """
    seconds = since_seconds(since)
    with friendly_errors():
        settings = _settings()
        with _stripe_job(settings) as (services, lister):
            report = build_reconciler(services, lister).run(seconds)
    typer.echo(
        f"Reconciled events created after {report.since} ({len(report.types)} types): "
        f"{report.listed} listed, {report.recovered} recovered (missing here, now stored), "
        f"{report.listed - report.recovered} already stored; {report.requests} Stripe "
        f"requests in {report.seconds:.1f} s."
    )
    typer.echo(
        f"Late: {report.late} of the recovered events are more than 72 h old; their "
        "Customer.io events follow each workflow's late_events policy (record, the default: "
        "sent with Stripe's time, they start no campaign; trigger; skip)."
    )


def _progress_bar() -> tuple[Progress, Callable[[int], None]]:
    console = Console(stderr=True)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed} customers"),
        TimeElapsedColumn(),
        console=console,
        disable=not sys.stderr.isatty(),
        transient=True,
    )
    task = progress.add_task("backfill", total=None)

    def advance(done: int) -> None:
        progress.update(task, completed=done)

    return progress, advance


def _print_summary(summary: BackfillSummary) -> None:
    if summary.resumed_after is not None:
        typer.echo(f"Resumed after customer {summary.resumed_after}.")
    mode = (
        "dry run, nothing sent" if summary.dry_run else f"sent to the {summary.workspace} workspace"
    )
    typer.echo(
        f"Backfill ({mode}, strategy {summary.strategy}): {summary.customers} customers, "
        f"{summary.sent} accepted by Customer.io, {summary.errors} errors; "
        f"{summary.stripe_requests} Stripe requests ({summary.stripe_rate_limited} rate "
        f"limited and retried), {summary.cio_requests} Customer.io requests; "
        f"{summary.seconds:.1f} s."
    )
    typer.echo(
        "Late events: 0. Backfill sends identify calls (person attributes), which carry no "
        "event time; the late_events policy applies to event deliveries only."
    )
    if not summary.complete:
        typer.echo(
            "Stopped before the last customer: continue with `billbridge backfill --resume`."
        )
    for message in summary.error_messages[:10]:
        typer.echo(f"  error: {message}")
    if summary.dry_run and summary.sample_operation is not None:
        typer.echo("Sample operation (POST /api/v2/batch):")
        typer.echo(json.dumps(summary.sample_operation, indent=2, sort_keys=True))


async def _run_backfill(
    job: Backfill, options: BackfillOptions, services: Services
) -> BackfillSummary:
    """The run and the Customer.io client's close in one event loop (its connections
    belong to the loop that opened them)."""
    try:
        return await job.run(options)
    finally:
        await services.cio.aclose()


def backfill(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Compute every profile; send nothing.")
    ] = False,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many customers.")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue after the last checkpoint.")
    ] = False,
    batch_size: Annotated[
        int, typer.Option(min=1, max=1000, help="Identify operations per Customer.io request.")
    ] = DEFAULT_BATCH_SIZE,
) -> None:
    """Import every existing Stripe customer into Customer.io with its billing profile.

    Lists customers, subscriptions, charges, refunds, disputes and invoices within Stripe's
    rate limits, and sends one identify per customer through the Track v2 batch API.
    Resumable: `--resume` continues after the last batch Customer.io accepted.
    """
    with friendly_errors():
        settings = _settings()
        with _stripe_job(settings) as (services, lister):
            progress, advance = _progress_bar()
            job = Backfill(
                settings=settings,
                store=services.store,
                resolver=services.resolver,
                lister=lister,
                cio=services.cio,
                progress=advance,
            )
            options = BackfillOptions(
                dry_run=dry_run, limit=limit, resume=resume, batch_size=batch_size
            )
            with progress:
                try:
                    summary = asyncio.run(_run_backfill(job, options, services))
                except DeliveryError as exc:
                    echo_error(f"error: {exc}; continue later with `billbridge backfill --resume`")
                    raise typer.Exit(EXIT_FAILURE) from None
    _print_summary(summary)
    if summary.errors:
        raise typer.Exit(EXIT_FAILURE)


def setup_webhook(
    url: Annotated[
        str | None,
        typer.Option(
            help="The public URL of POST /webhooks/stripe (with --sync: default from "
            "BILLBRIDGE_PUBLIC_URL, else the endpoint setup-webhook created).",
            show_default=False,
        ),
    ] = None,
    sync: Annotated[
        bool,
        typer.Option(
            "--sync",
            help="Only bring the existing endpoint's events in line with the enabled "
            "workflows (never creates one).",
        ),
    ] = False,
) -> None:
    """Create or update the Stripe webhook endpoint for URL.

    Subscribes exactly the event types the enabled workflows use, pins the API version,
    and saves the signing secret (returned only at creation) for `serve`. With --sync,
    updates the existing endpoint's enabled events (and enables it) to what the enabled
    workflows need.
    """
    if url is not None and not url.startswith(("https://", "http://")):
        echo_error("error: --url must be an http(s) URL, e.g. https://example.com/webhooks/stripe")
        raise typer.Exit(EXIT_CONFIGURATION)
    if sync:
        _sync_endpoint(url)
        return
    if url is None:
        echo_error("error: --url is required (or --sync to update the existing endpoint)")
        raise typer.Exit(EXIT_CONFIGURATION)
    with friendly_errors():
        settings = _settings()
        with _stripe_job(settings) as (services, lister):
            types = reconcile_types(services.catalog)
            if not types:
                echo_error("error: no enabled workflow: enable one before creating the endpoint")
                raise typer.Exit(EXIT_CONFIGURATION)
            result = create_or_update_endpoint(
                lister,
                url=url.strip(),
                event_types=types,
                secrets=SavedWebhookSecrets(services.store, services.secret_box, settings.var_dir),
            )
    typer.echo(f"{result.action.capitalize()} webhook endpoint {result.endpoint_id}")
    typer.echo(f"  url: {result.url}")
    typer.echo(f"  status: {result.status}, api_version: {result.api_version or '-'}")
    typer.echo(f"  events ({len(result.enabled_events)}): {', '.join(result.enabled_events)}")
    if result.secret_saved:
        typer.echo(
            "  signing secret: saved in the database (encrypted); every `billbridge serve` "
            "reads it at start"
        )
    for note in result.notes:
        typer.echo(f"  note: {note}")


def _sync_endpoint(url: str | None) -> None:
    """`setup-webhook --sync`: the endpoint's enabled events := the workflows' triggers."""
    with friendly_errors():
        settings = _settings()
        with _stripe_job(settings) as (services, lister):
            try:
                result = sync_endpoint(
                    lister,
                    needed=needed_types(services.catalog.all()),
                    url=url.strip() if url else endpoint_url(settings.public_url),
                )
            except ConfigurationError as exc:
                echo_error(f"error: {exc}")
                raise typer.Exit(EXIT_CONFIGURATION) from None
    after = result.after
    if not result.changed:
        typer.echo(f"Webhook endpoint {after.endpoint_id} is in sync already.")
    else:
        typer.echo(f"Synced webhook endpoint {after.endpoint_id}")
        if result.added:
            typer.echo(f"  added ({len(result.added)}): {', '.join(result.added)}")
        if result.removed:
            typer.echo(f"  removed ({len(result.removed)}): {', '.join(result.removed)}")
        if result.before.disabled:
            typer.echo("  enabled (it was disabled)")
    typer.echo(f"  url: {after.url}")
    typer.echo(f"  events ({len(after.enabled_events)}): {', '.join(after.enabled_events)}")
    if after.version_differs:
        typer.echo(
            f"  note: its api_version is {after.api_version or 'not pinned'}, not "
            f"{PINNED_API_VERSION} (Stripe cannot change it): delete the endpoint and run "
            "`billbridge setup-webhook --url ...` to re-create it"
        )
