"""`billbridge doctor`: check the configuration and every credential, say what to fix.

Each check prints one line, `OK`, `WARN` or `FAIL`, with what to do about it. The command
exits 1 when any check fails. It never prints a secret, only whether one is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import anyio
import typer

from billbridge.cli_common import DEV_SECRET_FILE, EXIT_FAILURE, safe_database_url
from billbridge.composition import require_fleet_settings
from billbridge.config import CioMode, Settings, load_settings
from billbridge.customerio.client import CustomerIOClient
from billbridge.errors import ConfigurationError, DeliveryError, StripeAPIError
from billbridge.secret_box import SecretBox
from billbridge.store import open_store
from billbridge.store.base import Store
from billbridge.stripe.api import StripeAPI
from billbridge.stripe.endpoint_sync import (
    PAGE_TIMEOUT,
    check_endpoint,
    endpoint_url,
    needed_types,
)
from billbridge.stripe.listing import StripeLister
from billbridge.stripe.webhook_setup import SavedWebhookSecrets
from billbridge.workflows.catalog import WorkflowCatalog
from billbridge.workflows.model import Workflow

Status = Literal["OK", "WARN", "FAIL"]
APP_API_ACTIONS = frozenset({"send_email", "trigger_broadcast"})


@dataclass(frozen=True)
class Check:
    status: Status
    name: str
    message: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.name}: {self.message}"


def _schema_check(store: Store, settings: Settings) -> Check:
    """Whether the schema is at the newest migration (without migrating it)."""
    name = "database"
    where = safe_database_url(settings.database_url)
    applied, shipped = store.schema_revisions()
    if not applied:
        return Check("FAIL", name, f"reachable ({where}) but empty: run `billbridge migrate`")
    if applied != shipped:
        return Check(
            "FAIL",
            name,
            f"schema at revision {', '.join(sorted(applied))}, newest is "
            f"{', '.join(sorted(shipped))}: run `billbridge migrate`",
        )
    return Check(
        "OK", name, f"reachable and migrated ({where}, revision {', '.join(sorted(applied))})"
    )


def _secret_key_check(settings: Settings) -> Check | None:
    """On PostgreSQL BILLBRIDGE_SECRET_KEY is required (None: nothing to say)."""
    try:
        require_fleet_settings(settings)
    except ConfigurationError as exc:
        return Check("FAIL", "secret key", str(exc))
    return None


def _saved_secrets(store: Store, settings: Settings) -> int | str:
    """How many secrets `setup-webhook` saved, or why they cannot be read."""
    try:
        saved = SavedWebhookSecrets(store, SecretBox.from_settings(settings), settings.var_dir)
        return saved.count()
    except ConfigurationError as exc:
        return str(exc)


def _secret_check(settings: Settings, saved: int | str) -> Check:
    name = "webhook secret"
    if isinstance(saved, str):
        return Check("FAIL", name, f"the secrets setup-webhook saved are unreadable: {saved}")
    count = len(settings.webhook_secrets)
    if count or saved:
        parts = [f"{count} configured in STRIPE_WEBHOOK_SECRET"] if count else []
        parts += [f"{saved} saved by setup-webhook"] if saved else []
        return Check("OK", name, ", ".join(parts))
    if (settings.var_dir / DEV_SECRET_FILE).exists():
        return Check(
            "WARN",
            name,
            f"STRIPE_WEBHOOK_SECRET is not set; `serve --dev` (make run) uses the development "
            f"secret in {settings.var_dir}; set your endpoint's whsec_ secret for real traffic",
        )
    return Check(
        "FAIL",
        name,
        "STRIPE_WEBHOOK_SECRET is not set: set it to your endpoint's signing secret "
        "(whsec_...), or use `make run` (serve --dev) for a development secret",
    )


async def _region(settings: Settings, mode: CioMode) -> dict[str, Any]:
    async with CustomerIOClient(settings) as client:
        return await client.check_region(mode=mode)


def _region_probe(settings: Settings, mode: CioMode, name: str) -> Check:
    """`GET /api/v1/accounts/region` with the Track credentials of `mode`."""
    prefix = "CUSTOMERIO_" if mode == "live" else "CUSTOMERIO_TEST_"
    try:
        info = anyio.run(_region, settings, mode)
    except DeliveryError as exc:
        if exc.status_code in (401, 403):
            return Check(
                "FAIL",
                name,
                f"credentials rejected (HTTP {exc.status_code}): check {prefix}SITE_ID and "
                f"{prefix}TRACK_API_KEY (Customer.io > Settings > API Credentials)",
            )
        base = settings.track_base_url if mode == "live" else settings.test_track_base_url
        return Check("FAIL", name, f"cannot check the credentials at {base}: {exc}")
    region = info.get("region")
    configured = settings.customerio_region
    if mode == "test":
        configured = settings.customerio_test_region or configured
    if isinstance(region, str) and region and region != configured:
        return Check(
            "WARN",
            name,
            f"credentials accepted, but the account is in region {region!r} and "
            f"{prefix}REGION is {configured!r}: set {prefix}REGION={region}",
        )
    return Check("OK", name, f"credentials accepted (region {region or 'unknown'})")


def _track_check(settings: Settings) -> Check:
    name = "Customer.io Track API"
    if settings.dry_run:
        return Check(
            "WARN",
            name,
            "no credentials: dry-run, requests are recorded and nothing is sent; set "
            "CUSTOMERIO_SITE_ID and CUSTOMERIO_TRACK_API_KEY to deliver",
        )
    return _region_probe(settings, "live", name)


def _test_workspace_check(settings: Settings) -> Check:
    """Where Stripe test-mode events go, and the test workspace's credentials."""
    name = "Customer.io test workspace"
    route = settings.test_mode_route
    if route == "test":
        return _region_probe(settings, "test", name)
    if route == "live":
        return Check(
            "WARN",
            name,
            "none configured and BILLBRIDGE_TEST_MODE_EVENTS=deliver: test-mode events go to "
            "the LIVE workspace; set CUSTOMERIO_TEST_SITE_ID and CUSTOMERIO_TEST_TRACK_API_KEY "
            "to keep them apart",
        )
    if route == "ignore":
        return Check("OK", name, "test-mode events are ignored (BILLBRIDGE_TEST_MODE_EVENTS)")
    if settings.test_mode_events == "dry_run":
        return Check("OK", name, "test-mode events are dry runs (BILLBRIDGE_TEST_MODE_EVENTS)")
    return Check(
        "WARN",
        name,
        "none configured: test-mode events are dry runs (recorded, not sent); set "
        "CUSTOMERIO_TEST_SITE_ID and CUSTOMERIO_TEST_TRACK_API_KEY to deliver them to a "
        "test workspace",
    )


def _app_check(settings: Settings, workflows: list[Workflow]) -> Check:
    name = "Customer.io App API"
    if settings.customerio_app_api_key is not None:
        return Check("OK", name, "CUSTOMERIO_APP_API_KEY is set (transactional email, broadcasts)")
    needing = sorted(
        workflow.id
        for workflow in workflows
        if workflow.enabled and any(action.type in APP_API_ACTIONS for action in workflow.actions)
    )
    if needing and not settings.dry_run:
        return Check(
            "FAIL",
            name,
            "CUSTOMERIO_APP_API_KEY is not set but these workflows send email or broadcasts: "
            + ", ".join(needing),
        )
    if needing:
        return Check(
            "WARN",
            name,
            "CUSTOMERIO_APP_API_KEY is not set; needed by " + ", ".join(needing),
        )
    return Check(
        "OK", name, "CUSTOMERIO_APP_API_KEY not set (only send_email and broadcasts need it)"
    )


def _test_app_check(settings: Settings, workflows: list[Workflow]) -> Check | None:
    """With a test workspace, the workflows that send email or broadcasts for test-mode
    events need its App API key too; None when there is nothing to say."""
    if settings.test_mode_route != "test" or settings.customerio_test_app_api_key is not None:
        return None
    needing = sorted(
        workflow.id
        for workflow in workflows
        if workflow.enabled
        and workflow.trigger.mode != "live"
        and any(action.type in APP_API_ACTIONS for action in workflow.actions)
    )
    if not needing:
        return None
    return Check(
        "WARN",
        "Customer.io test workspace App API",
        "CUSTOMERIO_TEST_APP_API_KEY is not set; test-mode events of these workflows will "
        "fail to send email or broadcasts: " + ", ".join(needing),
    )


def _stripe_check(settings: Settings) -> Check:
    name = "Stripe API"
    if settings.stripe_api_key is None:
        return Check(
            "WARN",
            name,
            "STRIPE_API_KEY is not set: no customer lookups, reconcile or backfill; "
            "set a restricted key (rk_...) with read access to enable them",
        )
    api = StripeAPI(settings, max_network_retries=0)
    try:
        return Check("OK", name, api.check())
    except StripeAPIError as exc:
        return Check("FAIL", name, f"{exc}: check STRIPE_API_KEY (and STRIPE_API_BASE)")
    finally:
        api.close()


def _endpoint_check(settings: Settings, workflows: list[Workflow]) -> Check:
    """The Stripe webhook endpoint's events and API version against the workflows."""
    name = "Stripe webhook endpoint"
    lister = StripeLister.from_settings(settings, timeout=PAGE_TIMEOUT, network_retries=0)
    try:
        check = check_endpoint(
            lister, needed=needed_types(workflows), url=endpoint_url(settings.public_url)
        )
    except StripeAPIError as exc:
        return Check("WARN", name, f"cannot list the webhook endpoints: {exc}")
    finally:
        lister.close()
    if check.state == "out_of_sync" and (check.missing or check.disabled):
        return Check("FAIL", name, check.summary())
    if check.state != "in_sync" or check.version_differs:
        return Check("WARN", name, check.summary())
    return Check("OK", name, check.summary())


def _workflows_check(store: Store, workflows: list[Workflow]) -> Check:
    name = "workflows"
    stored = store.list_workflows()
    enabled = sum(1 for workflow in workflows if workflow.enabled)
    if not stored:
        return Check("WARN", name, "none stored yet: the defaults are created by the first serve")
    invalid = sorted({record.workflow_id for record in stored} - {w.id for w in workflows})
    if invalid:
        return Check(
            "WARN",
            name,
            f"{enabled} enabled; invalid and ignored: {', '.join(invalid)} "
            "(fix them with `billbridge workflows apply`)",
        )
    if enabled == 0:
        return Check("WARN", name, "none enabled: no event will be delivered")
    return Check("OK", name, f"{enabled} enabled of {len(workflows)}")


def run_checks() -> list[Check]:
    """Every check, in order; stops early when nothing further can be checked."""
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        return [Check("FAIL", "configuration", str(exc))]
    checks = [
        Check(
            "OK",
            "configuration",
            f"loaded (identifier {settings.identifier}, test-mode events "
            f"{settings.test_mode_route})",
        )
    ]
    key_check = _secret_key_check(settings)
    if key_check is not None:
        checks.append(key_check)
    workflows: list[Workflow] = []
    saved: int | str = 0
    try:
        store = open_store(settings.database_url)
    except ConfigurationError as exc:
        checks.append(Check("FAIL", "database", str(exc)))
        store = None
    if store is not None:
        try:
            if not store.ping():
                where = safe_database_url(settings.database_url)
                checks.append(
                    Check("FAIL", "database", f"cannot reach {where}: check DATABASE_URL")
                )
            else:
                schema = _schema_check(store, settings)
                checks.append(schema)
                if schema.status == "OK":
                    workflows = WorkflowCatalog(store).all()
                    checks.append(_workflows_check(store, workflows))
                    if key_check is None:
                        saved = _saved_secrets(store, settings)
        finally:
            store.close()
    checks.append(_secret_check(settings, saved))
    checks.append(_track_check(settings))
    checks.append(_test_workspace_check(settings))
    checks.append(_app_check(settings, workflows))
    test_app = _test_app_check(settings, workflows)
    if test_app is not None:
        checks.append(test_app)
    stripe = _stripe_check(settings)
    checks.append(stripe)
    if stripe.status == "OK" and workflows:
        checks.append(_endpoint_check(settings, workflows))
    return checks


def doctor() -> None:
    """Check configuration and credentials, and say what to fix.

    Checks the configuration, the database, the webhook secret, Customer.io and Stripe
    credentials, and the workflows. Exits 1 when any check fails.
    """
    checks = run_checks()
    for check in checks:
        typer.echo(check.line())
    failures = sum(1 for check in checks if check.status == "FAIL")
    warnings = sum(1 for check in checks if check.status == "WARN")
    typer.echo(f"\n{failures} failed, {warnings} warnings, {len(checks)} checks.")
    if failures:
        raise typer.Exit(EXIT_FAILURE)
