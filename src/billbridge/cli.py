"""The `billbridge` command: serve, worker, migrate, trigger, events, replay, workflows, doctor.

    billbridge serve --dev                 # what `make run` does
    billbridge trigger invoice.paid        # a signed sample event to the running service

Every command but `serve`, `worker` and `trigger` works on the database directly; none
needs the server running. Configuration comes from the environment and `.env` (SPEC §2).
"""

from __future__ import annotations

import json
from typing import Annotated

import httpx
import typer

from billbridge import __version__
from billbridge.cli_admin import admin_app, tokens_app
from billbridge.cli_common import (
    DEV_SECRET_FILE,
    EXIT_CONFIGURATION,
    EXIT_FAILURE,
    echo_error,
    friendly_errors,
    safe_database_url,
)
from billbridge.cli_doctor import doctor
from billbridge.cli_events import events_app, replay
from billbridge.cli_privacy import erase, erasures
from billbridge.cli_stripe import backfill, reconcile, setup_webhook
from billbridge.cli_workflows import workflows_app
from billbridge.config import Settings, dev_webhook_secret, load_settings
from billbridge.observability import configure_logging, settings_secrets
from billbridge.store import open_store
from billbridge.stripe.samples import SAMPLE_EVENT_TYPES, sample_event
from billbridge.stripe.signature import sign_payload

DEFAULT_WEBHOOK_URL = "http://127.0.0.1:8000/webhooks/stripe"
TRIGGER_TIMEOUT = 15.0  # seconds

app = typer.Typer(
    name="billbridge",
    help="Stripe webhooks in, Customer.io calls out: nothing lost, nothing doubled.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
app.add_typer(events_app, name="events")
app.add_typer(workflows_app, name="workflows")
app.add_typer(admin_app, name="admin")
app.add_typer(tokens_app, name="tokens")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"billbridge {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Stripe webhooks in, Customer.io calls out: nothing lost, nothing doubled."""


@app.command()
def serve(
    *,
    host: Annotated[
        str, typer.Option(envvar="BILLBRIDGE_HOST", help="Interface to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="BILLBRIDGE_PORT", min=1, max=65535, help="TCP port.")
    ] = 8000,
    no_worker: Annotated[
        bool,
        typer.Option("--no-worker", help="HTTP only; run `billbridge worker` separately."),
    ] = False,
    dev: Annotated[
        bool,
        typer.Option(
            "--dev",
            help="Without STRIPE_WEBHOOK_SECRET, use a generated development secret kept "
            "in BILLBRIDGE_VAR_DIR (./var) and print it.",
        ),
    ] = False,
    log_json: Annotated[bool, typer.Option("--log-json", help="Log JSON lines.")] = False,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            "--forwarded-allow-ips",
            help="Reverse proxies (addresses or networks, comma-separated, or *) whose "
            "X-Forwarded-For/-Proto are believed; overrides BILLBRIDGE_FORWARDED_ALLOW_IPS. "
            "Default: none (the TCP peer is the client).",
        ),
    ] = None,
) -> None:
    """Run the service: HTTP plus, by default, the worker.

    Serves the Stripe webhook, the JSON API, health and metrics. Migrates the database
    at start.
    """
    import uvicorn  # noqa: PLC0415 - only `serve` needs the server

    from billbridge.app import create_app  # noqa: PLC0415 - keeps other commands light
    from billbridge.composition import require_fleet_settings  # noqa: PLC0415

    with friendly_errors():
        overrides = {}
        if forwarded_allow_ips is not None:
            overrides["BILLBRIDGE_FORWARDED_ALLOW_IPS"] = forwarded_allow_ips
        settings = load_settings(**overrides)
        configure_logging(
            log_format="json" if log_json else settings.log_format,
            level=settings.log_level,
            secrets=settings_secrets(settings),
        )
        require_fleet_settings(settings)
        if dev and not settings.webhook_secrets:
            secret = dev_webhook_secret(settings.var_dir)
            typer.echo(
                f"Development webhook secret (from {settings.var_dir / DEV_SECRET_FILE}): "
                f"{secret}\nSign test events with it: billbridge trigger customer.created"
            )
        if dev:
            _print_dev_login(settings, host, port)
        application = create_app(settings, run_worker=not no_worker, dev=dev, freeze_heap=True)
    # uvicorn would believe X-Forwarded-For from 127.0.0.1 (or FORWARDED_ALLOW_IPS) by
    # default; the app does it itself, only for BILLBRIDGE_FORWARDED_ALLOW_IPS.
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
    )


def _print_dev_login(settings: Settings, host: str, port: int) -> None:
    """Under --dev, make sure the dashboard can be opened and say how to log in."""
    from billbridge.accounts import DEV_ADMIN_PASSWORD_FILE, ensure_dev_admin  # noqa: PLC0415

    store = open_store(settings.database_url)
    try:
        store.migrate()
        password = ensure_dev_admin(settings, store)
    finally:
        store.close()
    if password is not None:
        typer.echo(
            f"Dashboard: http://{host}:{port}/  user admin, password {password} "
            f"(from {settings.var_dir / DEV_ADMIN_PASSWORD_FILE})"
        )


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1, help="Deliveries in flight at once (default BILLBRIDGE_WORKER_CONCURRENCY)."
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Serve /healthz, /readyz and /metrics on this port "
            "(default BILLBRIDGE_WORKER_METRICS_PORT; host BILLBRIDGE_WORKER_METRICS_HOST).",
        ),
    ] = None,
) -> None:
    """Run the delivery worker alone.

    Pair it with `serve --no-worker` to scale out; stops on Ctrl-C or SIGTERM.
    """
    from billbridge.composition import (  # noqa: PLC0415 - keeps other commands light
        require_fleet_settings,
        run_worker_process,
    )

    with friendly_errors():
        settings = load_settings()
        configure_logging(
            log_format=settings.log_format,
            level=settings.log_level,
            secrets=settings_secrets(settings),
        )
        require_fleet_settings(settings)
        run_worker_process(settings, concurrency, metrics_port or settings.worker_metrics_port)


@app.command()
def migrate() -> None:
    """Apply database migrations.

    Idempotent; `serve` does it at start too.
    """
    from billbridge.composition import migrate_database  # noqa: PLC0415

    with friendly_errors():
        settings = load_settings()
        migrate_database(settings)
    typer.echo(f"Database migrated: {safe_database_url(settings.database_url)}")


def _signing_secret(settings: Settings) -> str:
    """The first secret `serve` verifies with: STRIPE_WEBHOOK_SECRET, else the dev secret."""
    if settings.webhook_secrets:
        return settings.webhook_secrets[0]
    if (settings.var_dir / DEV_SECRET_FILE).exists():
        return dev_webhook_secret(settings.var_dir)
    echo_error(
        "error: no webhook secret to sign with: set STRIPE_WEBHOOK_SECRET to the secret the "
        f"service uses, or start it with `make run` first (it keeps a development secret in "
        f"{settings.var_dir})"
    )
    raise typer.Exit(EXIT_CONFIGURATION)


@app.command()
def trigger(
    event_type: Annotated[
        str, typer.Argument(help="A Stripe event type, e.g. invoice.paid.", show_default=False)
    ],
    url: Annotated[str, typer.Option(help="The webhook endpoint.")] = DEFAULT_WEBHOOK_URL,
    livemode: Annotated[bool, typer.Option("--livemode", help="Mark it a live event.")] = False,
    customer: Annotated[
        str | None, typer.Option(help="Use this Stripe customer id (cus_...).")
    ] = None,
    email: Annotated[str | None, typer.Option(help="Use this customer email.")] = None,
) -> None:
    """Send a signed sample event to a running Billbridge.

    Like `stripe trigger`: a realistic event of EVENT_TYPE, signed with the first secret
    `serve` uses (STRIPE_WEBHOOK_SECRET, else the development secret in ./var). Prints
    the event id and the HTTP status; exits 1 when it is not accepted.
    """
    with friendly_errors():
        settings = load_settings()
    try:
        event = sample_event(event_type, livemode=livemode, customer_id=customer, email=email)
    except ValueError:
        echo_error(
            f"error: no sample for {event_type!r}; choose one of: " + ", ".join(SAMPLE_EVENT_TYPES)
        )
        raise typer.Exit(EXIT_CONFIGURATION) from None
    body = json.dumps(event).encode("utf-8")
    headers = {
        "Content-Type": "application/json",
        "Stripe-Signature": sign_payload(body, _signing_secret(settings)),
    }
    try:
        with httpx.Client(timeout=TRIGGER_TIMEOUT, trust_env=False) as client:
            response = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        echo_error(
            f"error: could not send {event['id']} to {url} ({type(exc).__name__}): is "
            "Billbridge running (`make run` or `billbridge serve`)? Check --url."
        )
        raise typer.Exit(EXIT_FAILURE) from None
    typer.echo(f"{event['id']} ({event_type}) -> HTTP {response.status_code}")
    if not response.is_success:
        echo_error(f"error: {url} refused the event: {response.text[:500]}")
        raise typer.Exit(EXIT_FAILURE)


app.command("replay")(replay)
app.command("doctor")(doctor)
app.command("reconcile")(reconcile)
app.command("backfill")(backfill)
app.command("setup-webhook")(setup_webhook)
app.command("erase")(erase)
app.command("erasures")(erasures)


def main() -> None:
    """The console script entry point."""
    app()
