"""The Stripe webhook endpoint against what the enabled workflows need: compare and sync.
The one comparison behind `doctor`, the dashboard's warning and Sync button, `setup-webhook
--sync`, automatic sync and the `endpoint` alert.

    check = check_endpoint(lister, needed=needed_types(workflows), url=endpoint_url(public))
    check.state          # "in_sync", "out_of_sync", "missing", "ambiguous"
    check.missing        # trigger types of enabled workflows the endpoint does not receive
    check.short_of_needs # the alert's question: does Stripe fail to send a needed type?
    result = sync_endpoint(lister, needed=..., url=...)   # enabled_events := needed

`enabled_events` of `["*"]` covers every type; a disabled endpoint sends nothing. Which
endpoint is Billbridge's: the one whose URL is `url` when it is known (`--url`, or
BILLBRIDGE_PUBLIC_URL + `/webhooks/stripe`; of several at that URL the one that receives
what is needed, if any); else the one `setup-webhook` created (metadata `created_by:
billbridge`); else the one whose URL ends in `/webhooks/stripe`.

Syncing sets `enabled_events` to exactly the needed types and enables a disabled endpoint.
Stripe cannot change an endpoint's `api_version` after creation (the update call has no
such parameter), so a version other than the pinned one is reported with what to do, never
"fixed". `EndpointWatch` keeps the last check for the dashboard and the alerts, and syncs
after workflow changes when BILLBRIDGE_WEBHOOK_AUTO_SYNC is on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

import structlog

from billbridge.config import Settings
from billbridge.errors import ConfigurationError, StripeAPIError
from billbridge.stripe.listing import StripeLister
from billbridge.stripe.webhook_setup import PINNED_API_VERSION
from billbridge.workflows.model import Workflow

log = structlog.get_logger(__name__)

WEBHOOK_PATH = "/webhooks/stripe"
CHECK_TTL = 300.0  # seconds the dashboard reuses a check (each costs a Stripe list call)
ERROR_TTL = 30.0  # seconds a failed check is reused
PAGE_TIMEOUT = 8.0  # seconds per Stripe request while a page waits
WILDCARD = "*"

State = Literal["in_sync", "out_of_sync", "missing", "ambiguous", "unchecked", "error"]


def needed_types(workflows: Iterable[Workflow]) -> list[str]:
    """The event types the enabled workflows trigger on, sorted (what the endpoint needs)."""
    return sorted({t for w in workflows if w.enabled for t in w.trigger.events})


def endpoint_url(public_url: str | None) -> str | None:
    """The webhook URL Stripe should call, from BILLBRIDGE_PUBLIC_URL; None when unset."""
    if not public_url or not public_url.strip():
        return None
    return public_url.strip().rstrip("/") + WEBHOOK_PATH


@dataclass(frozen=True)
class EndpointCheck:
    """The endpoint as Stripe has it, compared with the enabled workflows' trigger types."""

    state: State
    needed: tuple[str, ...]
    endpoint_id: str | None = None
    url: str | None = None
    enabled_events: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()  # needed, not received
    extra: tuple[str, ...] = ()  # received, no enabled workflow uses them
    api_version: str | None = None
    disabled: bool = False
    candidates: tuple[str, ...] = ()  # endpoint ids when several could be ours
    error: str | None = None
    checked_at: float = 0.0  # Unix seconds

    @property
    def version_differs(self) -> bool:
        """The endpoint renders events with another API version than the SDK is pinned to."""
        return self.endpoint_id is not None and self.api_version != PINNED_API_VERSION

    @property
    def short_of_needs(self) -> bool | None:
        """Whether Stripe fails to send Billbridge an event type the enabled workflows need
        (disabled, types missing, or no endpoint at the known URL); extra types and the API
        version do not count. None when it cannot be told: no key, a Stripe error, several
        candidates, or no endpoint and no URL to expect one at."""
        if self.state in ("unchecked", "error", "ambiguous"):
            return None
        if not self.needed:
            return False
        if self.state == "missing":
            return True if self.url else None
        return bool(self.missing) or self.disabled

    @property
    def problem(self) -> bool:
        """Whether the dashboard should warn about it."""
        return self.state in ("out_of_sync", "missing", "ambiguous", "error") or (
            self.state == "in_sync" and self.version_differs
        )

    def summary(self) -> str:
        """One sentence for doctor, the dashboard and the CLI; names no secret."""
        if self.state == "unchecked":
            return self.error or "not checked"
        if self.state == "error":
            return f"cannot read the webhook endpoints: {self.error}"
        if self.state == "missing":
            where = f" for {self.url}" if self.url else ""
            return (
                f"no Stripe webhook endpoint{where}: create it with "
                "`billbridge setup-webhook --url https://YOUR-HOST/webhooks/stripe`"
            )
        if self.state == "ambiguous":
            return (
                f"several endpoints could be Billbridge's ({', '.join(self.candidates)}): "
                "set BILLBRIDGE_PUBLIC_URL (or pass --url) to choose"
            )
        parts: list[str] = []
        if self.disabled:
            parts.append("it is disabled: Stripe sends it nothing")
        if self.missing:
            parts.append(
                f"{len(self.missing)} event type(s) the enabled workflows need are not "
                f"sent to it: {', '.join(self.missing)}"
            )
        if self.extra:
            parts.append(
                f"it receives {len(self.extra)} type(s) no enabled workflow uses: "
                f"{', '.join(self.extra)}"
            )
        if self.version_differs:
            parts.append(
                f"its API version is {self.api_version or 'the account default (not pinned)'}"
                f", not {PINNED_API_VERSION}; Stripe cannot change it: delete the endpoint "
                "in Stripe and run `billbridge setup-webhook --url ...` to re-create it "
                "(it gets a new signing secret)"
            )
        name = f"{self.endpoint_id} ({self.url})"
        if not parts:
            return f"{name} receives exactly the {len(self.needed)} needed event types"
        fix = (
            "; run `billbridge setup-webhook --sync` or use Sync on the overview"
            if self.state == "out_of_sync"
            else ""
        )
        return f"{name}: " + "; ".join(parts) + fix


@dataclass(frozen=True)
class SyncResult:
    """What `sync_endpoint` changed: the check before and after (equal when nothing was)."""

    before: EndpointCheck
    after: EndpointCheck
    changed: bool

    @property
    def added(self) -> tuple[str, ...]:
        return self.before.missing

    @property
    def removed(self) -> tuple[str, ...]:
        return self.before.extra


def _candidates(endpoints: list[dict[str, Any]], url: str | None) -> list[dict[str, Any]]:
    """The endpoints that may be Billbridge's (see the module docstring)."""
    if url is not None:
        wanted = url.rstrip("/")
        return [e for e in endpoints if str(e.get("url") or "").rstrip("/") == wanted]
    ours = [e for e in endpoints if (e.get("metadata") or {}).get("created_by") == "billbridge"]
    if ours:
        return ours
    return [e for e in endpoints if str(e.get("url") or "").rstrip("/").endswith(WEBHOOK_PATH)]


def compare(endpoint: dict[str, Any], needed: list[str]) -> EndpointCheck:
    """One endpoint (as Stripe returns it) against the needed event types."""
    wanted = tuple(sorted(set(needed)))
    enabled = tuple(sorted({str(t) for t in endpoint.get("enabled_events") or ()}))
    if WILDCARD in enabled:
        missing: tuple[str, ...] = ()
        extra = tuple(t for t in enabled if t not in wanted)
    else:
        missing = tuple(t for t in wanted if t not in enabled)
        extra = tuple(t for t in enabled if t not in wanted)
    disabled = endpoint.get("status") == "disabled"
    version = endpoint.get("api_version")
    return EndpointCheck(
        state="out_of_sync" if (missing or extra or disabled) else "in_sync",
        needed=wanted,
        endpoint_id=str(endpoint["id"]),
        url=str(endpoint.get("url") or ""),
        enabled_events=enabled,
        missing=missing,
        extra=extra,
        api_version=str(version) if version else None,
        disabled=disabled,
        checked_at=time.time(),
    )


def check_listed(
    endpoints: list[dict[str, Any]], *, needed: list[str], url: str | None
) -> EndpointCheck:
    """Find Billbridge's endpoint among `endpoints` (as Stripe lists them) and compare it."""
    found = _candidates(endpoints, url)
    wanted = tuple(sorted(set(needed)))
    if not found:
        return EndpointCheck(state="missing", needed=wanted, url=url, checked_at=time.time())
    if len(found) > 1 and url is None:
        return EndpointCheck(
            state="ambiguous",
            needed=wanted,
            candidates=tuple(str(e["id"]) for e in found),
            checked_at=time.time(),
        )
    # Several at the one URL: Stripe calls it from each, so the best of them counts (the one
    # in sync, else one that sends everything needed, else the first: what sync updates).
    checks = [compare(endpoint, needed) for endpoint in found]
    return min(checks, key=lambda c: (c.state != "in_sync", c.short_of_needs is not False))


def check_endpoint(lister: StripeLister, *, needed: list[str], url: str | None) -> EndpointCheck:
    """Find Billbridge's endpoint and compare it. Raises StripeAPIError."""
    return check_listed(list(lister.iterate("webhook_endpoints")), needed=needed, url=url)


def sync_endpoint(lister: StripeLister, *, needed: list[str], url: str | None) -> SyncResult:
    """Set the endpoint's `enabled_events` to `needed` (and enable it). Raises
    ConfigurationError when there is no single endpoint or nothing is needed,
    StripeAPIError when Stripe refuses."""
    if not needed:
        raise ConfigurationError(
            "no enabled workflow triggers on any event: enable one before syncing the endpoint"
        )
    before = check_endpoint(lister, needed=needed, url=url)
    if before.state in ("missing", "ambiguous"):
        raise ConfigurationError(before.summary())
    if before.state == "in_sync":
        return SyncResult(before=before, after=before, changed=False)
    params: dict[str, Any] = {"enabled_events": list(before.needed)}
    if before.disabled:
        params["disabled"] = False
    endpoint_id = str(before.endpoint_id)
    service = lister.client.v1.webhook_endpoints
    updated = lister.call("update a webhook endpoint", lambda: service.update(endpoint_id, params))
    return SyncResult(before=before, after=compare(updated, needed), changed=True)


class EndpointWatch:
    """The last check of the endpoint (reused for `ttl` seconds) and syncs for the dashboard.

    `settings` gives the effective settings (a Stripe key saved on the Connections page
    counts); `needed` the enabled workflows' trigger types. Thread-safe; Stripe errors
    become a check with state "error", never an exception.
    """

    def __init__(
        self,
        settings: Callable[[], Settings],
        needed: Callable[[], list[str]],
        *,
        ttl: float = CHECK_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._needed = needed
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._last: tuple[float, str, EndpointCheck] | None = None

    def _lister(self, settings: Settings) -> StripeLister:
        return StripeLister.from_settings(settings, timeout=PAGE_TIMEOUT, network_retries=0)

    def _key(self, settings: Settings) -> str | None:
        return settings.stripe_api_key.get_secret_value() if settings.stripe_api_key else None

    def invalidate(self) -> None:
        with self._lock:
            self._last = None

    def status(self) -> EndpointCheck:
        """The endpoint's state, from the cache when it is fresh (same key, under `ttl` s)."""
        settings = self._settings()
        needed = self._needed()
        key = self._key(settings)
        if key is None:
            return EndpointCheck(
                state="unchecked",
                needed=tuple(sorted(set(needed))),
                error="STRIPE_API_KEY is not set: the webhook endpoint cannot be checked",
            )
        with self._lock:
            last = self._last
        now = self._clock()
        # A failed check is tried again sooner: Stripe may be back in a moment.
        ttl = self._ttl if last is None or last[2].state != "error" else min(self._ttl, ERROR_TTL)
        fresh = last is not None and last[1] == key and now - last[0] < ttl
        if last is not None and fresh and last[2].needed == tuple(sorted(set(needed))):
            return last[2]
        url = endpoint_url(settings.public_url)
        check = self._run(settings, lambda lister: check_endpoint(lister, needed=needed, url=url))
        with self._lock:
            self._last = (now, key, check)
        return check

    def sync(self) -> SyncResult:
        """Sync now. Raises ConfigurationError or StripeAPIError (the message says why); a
        Stripe failure stays on the cached check as `error` for the page to show."""
        settings = self._settings()
        key = self._key(settings)
        if key is None:
            raise ConfigurationError("STRIPE_API_KEY is not set: the endpoint cannot be synced")
        lister = self._lister(settings)
        try:
            result = sync_endpoint(
                lister, needed=self._needed(), url=endpoint_url(settings.public_url)
            )
        except ConfigurationError:
            self.invalidate()  # missing or ambiguous: the next check says so
            raise
        except StripeAPIError as exc:
            self.invalidate()
            failed = replace(self.status(), error=str(exc))
            with self._lock:
                self._last = (self._clock(), key, failed)
            raise
        finally:
            lister.close()
        with self._lock:
            self._last = (self._clock(), key, result.after)
        return result

    def workflows_changed_quietly(self) -> bool:
        """After a change made through the API or the CLI: forget the cached check and, with
        BILLBRIDGE_WEBHOOK_AUTO_SYNC, sync (no Stripe call when it is off). True if synced."""
        self.invalidate()
        if not self._settings().webhook_auto_sync:
            return False
        return self.after_workflows_changed()[1]

    def after_workflows_changed(self) -> tuple[EndpointCheck, bool]:
        """The fresh check after a workflow was saved, toggled or deleted, and whether the
        endpoint was synced (BILLBRIDGE_WEBHOOK_AUTO_SYNC and a difference to fix)."""
        self.invalidate()
        check = self.status()
        if check.state != "out_of_sync" or not self._settings().webhook_auto_sync:
            return check, False
        try:
            result = self.sync()
        except (ConfigurationError, StripeAPIError) as exc:
            log.warning("automatic webhook endpoint sync failed", error=str(exc))
            return self.status(), False
        return result.after, result.changed

    def _run(
        self, settings: Settings, action: Callable[[StripeLister], EndpointCheck]
    ) -> EndpointCheck:
        lister = self._lister(settings)
        try:
            return action(lister)
        except StripeAPIError as exc:
            return EndpointCheck(
                state="error", needed=tuple(sorted(set(self._needed()))), error=str(exc)
            )
        finally:
            lister.close()
