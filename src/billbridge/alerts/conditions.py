"""The conditions alerts watch. Each one fires once when it starts and sends "resolved"
when it clears: a stalled queue, deliveries retrying too long or too many, webhooks
refused for their signature, Stripe silent, the Stripe endpoint missing event types, and
no worker alive while deliveries are due.

    facts = Facts(now=..., stats=store.stats(), retrying=store.retrying_summary(), ...)
    for check in evaluate(config, facts, retry_window=settings.retry_window):
        check.name, check.firing, check.alert(dashboard_url)

Pure functions over facts the monitor reads: what a message says lives here, when and
how often it is sent lives in `monitor.py`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from billbridge.alerts.config import AlertConfig
from billbridge.alerts.sender import Alert
from billbridge.delivery.worker import SILENT_AFTER
from billbridge.store.records import StoreStats, WorkerRecord
from billbridge.store.records_ops import RecentAttempt, RetryingSummary
from billbridge.stripe.endpoint_sync import EndpointCheck

ConditionName = Literal["stall", "retrying", "signatures", "stripe_silent", "endpoint", "no_worker"]
CONDITIONS: tuple[ConditionName, ...] = (
    "stall",
    "retrying",
    "signatures",
    "stripe_silent",
    "endpoint",
    "no_worker",
)
RECENT_SECONDS = 3600.0  # attempts older than this do not count for a diagnosis
REPLAY_STEP = (
    "Then replay what failed: Events → “Replay all failed” or `billbridge replay --failed` "
    "(emails and broadcasts that may have gone out are held back)."
)


@dataclass(frozen=True)
class Facts:
    """What the monitor read for one check."""

    now: float
    stats: StoreStats
    retrying: RetryingSummary
    recent_failures: Sequence[RecentAttempt]
    signature_refusals: int  # within the configured window
    last_webhook_at: float | None
    endpoint: EndpointCheck | None  # None: not watched
    live_workers: Sequence[WorkerRecord] = ()  # beat within SILENT_AFTER seconds
    silent_workers: Sequence[WorkerRecord] = ()  # stopped beating; their claims not yet freed


@dataclass(frozen=True)
class Check:
    """One condition's state now, and the words for both of its messages."""

    name: ConditionName
    firing: bool
    title: str
    lines: tuple[str, ...]
    actions: tuple[str, ...]
    resolved_title: str
    resolved_lines: tuple[str, ...] = ()
    queue_depth: int = 0
    oldest_pending_age: float = 0.0

    def alert(self, dashboard_url: str | None) -> Alert:
        """The firing message while it fires, the resolved one once it cleared."""
        return Alert(
            kind=self.name,
            title=f"Billbridge: {self.title}"
            if self.firing
            else f"Resolved: {self.resolved_title}",
            lines=self.lines if self.firing else self.resolved_lines,
            actions=self.actions if self.firing else (),
            state="firing" if self.firing else "resolved",
            oldest_pending_age=self.oldest_pending_age,
            queue_depth=self.queue_depth,
            dashboard_url=dashboard_url,
        )


def duration(seconds: float) -> str:
    """`45 s`, `12 min`, `3.5 h`."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class Diagnosis:
    """Which of the usual Customer.io troubles the latest failed calls point to."""

    cause: Literal["auth", "rate_limit", "down", "refused"]
    short: str  # for a title
    line: str
    actions: tuple[str, ...]


def diagnose(attempts: Sequence[RecentAttempt], now: float) -> Diagnosis | None:
    """From the latest failed calls' statuses: a revoked key (401/403), a 429 storm, or
    Customer.io down or unreachable (5xx, 408, timeouts, connection errors)."""
    recent = [
        a
        for a in attempts
        if now - a.started_at <= RECENT_SECONDS
        # a terminal error without an answer never reached Customer.io (a template error)
        and not (a.response_status is None and a.outcome == "terminal_error")
    ]
    if not recent:
        return None
    causes: Counter[str] = Counter()
    for attempt in recent:
        status = attempt.response_status
        if status in (401, 403):
            causes["auth"] += 1
        elif status == 429:
            causes["rate_limit"] += 1
        elif status is None or status >= 500 or status == 408:
            causes["down"] += 1
        else:
            causes["refused"] += 1
    cause, count = causes.most_common(1)[0]
    of = f"{count} of the last {len(recent)} failed calls"
    if cause == "auth":
        return Diagnosis(
            "auth",
            "a revoked or changed API key",
            f"Customer.io answered 401/403 to {of}: the API key was revoked or changed.",
            (
                "Enter the current Track API key (and App API key) on Settings → Connections, "
                "or in CUSTOMERIO_TRACK_API_KEY / CUSTOMERIO_APP_API_KEY, and press Test.",
                REPLAY_STEP,
            ),
        )
    if cause == "rate_limit":
        return Diagnosis(
            "rate_limit",
            "a 429 rate-limit storm",
            f"Customer.io answered 429 Too Many Requests to {of}: a rate-limit storm.",
            (
                "Nothing is lost: deliveries retry after Customer.io's Retry-After.",
                "If it lasts, send less at once: fewer workers or a lower "
                "BILLBRIDGE_WORKER_CONCURRENCY, and no large backfill or bulk replay now.",
            ),
        )
    if cause == "down":
        return Diagnosis(
            "down",
            "Customer.io down or unreachable",
            f"Customer.io answered 5xx or did not answer (timeouts, connection errors) to "
            f"{of}: Customer.io is down or unreachable from here.",
            (
                "Check status.customer.io, then this host's DNS, proxy and outbound network.",
                "Deliveries retry on their own until BILLBRIDGE_RETRY_WINDOW ends; after that "
                "they fail and need a replay.",
            ),
        )
    latest = next((a.error for a in recent if a.error), None)
    line = f"Customer.io refused {of} with a 4xx answer."
    if latest:
        line += f" Latest: {latest[:200]}"
    return Diagnosis(
        "refused",
        "Customer.io refuses the calls",
        line,
        ("Open the failed deliveries (Events, status failed) and fix the workflow or data.",),
    )


def evaluate(config: AlertConfig, facts: Facts, *, retry_window: float) -> list[Check]:
    """Every enabled condition's check (an unknown one, like an unchecked endpoint, is left
    out so its state does not change)."""
    checks: list[Check] = []
    if config.on_stall:
        checks.append(_stall(config, facts))
    if config.on_retrying:
        checks.append(_retrying(config, facts, retry_window))
    if config.on_signatures:
        checks.append(_signatures(config, facts))
    if config.on_stripe_silence and facts.last_webhook_at is not None:
        checks.append(_silence(config, facts))
    if config.on_endpoint and facts.endpoint is not None:
        short = facts.endpoint.short_of_needs
        if short is not None:  # None: not known (no Stripe key, an error, ambiguous)
            checks.append(_endpoint(facts.endpoint, firing=short))
    if config.on_no_worker:
        checks.append(_no_worker(config, facts))
    return checks


def _stall(config: AlertConfig, facts: Facts) -> Check:
    age = facts.stats.oldest_pending_age
    return Check(
        name="stall",
        firing=age >= config.stall_minutes * 60,
        title=f"the queue is stalled (oldest due delivery waiting {duration(age)})",
        lines=(f"{facts.stats.queue_depth} deliveries pending, {facts.stats.due_now} due now",),
        actions=(
            "Check that a worker runs (`billbridge serve` or `billbridge worker`) and read "
            "its log; /readyz tells whether it reaches the database.",
            "If workers run, they are too few or too slow for the load: add workers.",
        ),
        resolved_title="the queue is moving again",
        resolved_lines=(f"{facts.stats.queue_depth} deliveries pending",),
        queue_depth=facts.stats.queue_depth,
        oldest_pending_age=age,
    )


def _retrying(config: AlertConfig, facts: Facts, retry_window: float) -> Check:
    retrying = facts.retrying
    oldest = 0.0
    if retrying.count and retrying.oldest_deadline_at is not None:
        oldest = max(0.0, facts.now - (retrying.oldest_deadline_at - retry_window))
    too_long = retrying.count > 0 and oldest >= config.retrying_minutes * 60
    too_many = retrying.count >= config.retrying_count
    lines = [f"{retrying.count} deliveries are retrying; the oldest for {duration(oldest)}"]
    actions: tuple[str, ...] = ("Open Events with status “retrying” to see Customer.io's answers.",)
    found = diagnose(facts.recent_failures, facts.now)
    if found is not None:
        lines.append(found.line)
        actions = found.actions
    return Check(
        name="retrying",
        firing=too_long or too_many,
        title=(
            f"{retrying.count} deliveries are retrying"
            + (f", the oldest for {duration(oldest)}" if too_long else "")
            + (f": {found.short}" if found else "")
        ),
        lines=tuple(lines),
        actions=actions,
        resolved_title="deliveries are going through again",
        resolved_lines=(f"{retrying.count} deliveries are retrying now",),
    )


def _signatures(config: AlertConfig, facts: Facts) -> Check:
    count = facts.signature_refusals
    window = duration(config.signature_window_minutes * 60)
    return Check(
        name="signatures",
        firing=count >= config.signature_failures,
        title=f"{count} webhooks refused for their signature in the last {window}",
        lines=(
            "POST /webhooks/stripe answered 400 because the Stripe-Signature did not match "
            "any configured secret (or was missing or too old); nothing of them was stored.",
        ),
        actions=(
            "If the endpoint's signing secret was rolled or the endpoint re-created in Stripe, "
            "put the new whsec_… in STRIPE_WEBHOOK_SECRET (old and new comma-separated while "
            "Stripe rolls it) and restart.",
            "Check the server clock: a signature older than 5 minutes is refused.",
            "Stripe retries refused events for 3 days; `billbridge reconcile` fetches any "
            "that were missed.",
        ),
        resolved_title="webhooks pass the signature check again",
        resolved_lines=(f"{count} refused in the last {window}",),
    )


def _silence(config: AlertConfig, facts: Facts) -> Check:
    assert facts.last_webhook_at is not None  # noqa: S101 - checked by evaluate()
    quiet = max(0.0, facts.now - facts.last_webhook_at)
    return Check(
        name="stripe_silent",
        firing=quiet >= config.stripe_silence_hours * 3600,
        title=f"no webhook from Stripe for {duration(quiet)}",
        lines=("The last event that arrived through POST /webhooks/stripe is that old.",),
        actions=(
            "In the Stripe Dashboard (Developers → Webhooks) check that the endpoint is "
            "enabled and look at its failed deliveries.",
            "Check that the webhook URL is reachable from the internet (DNS, TLS, proxy, "
            "firewall).",
            "`billbridge reconcile` fetches the events Stripe could not deliver.",
        ),
        resolved_title="webhooks from Stripe arrive again",
    )


def _endpoint(check: EndpointCheck, *, firing: bool) -> Check:
    name = f"the endpoint {check.endpoint_id} ({check.url})"
    problems: list[str] = []
    actions: tuple[str, ...]
    if check.state == "missing":
        problems.append(f"no Stripe webhook endpoint points at {check.url}")
        actions = (
            f"Run `billbridge setup-webhook --url {check.url}`: it creates the endpoint with "
            "exactly the event types the enabled workflows use and saves its signing secret.",
            "Then `billbridge reconcile` fetches the events that were not sent.",
        )
    else:
        if check.disabled:
            problems.append(f"{name} is disabled in Stripe: it sends nothing")
        if check.missing:
            problems.append(
                f"{name} does not send {len(check.missing)} event types enabled workflows "
                "need: " + ", ".join(check.missing)
            )
        actions = (
            "Run `billbridge setup-webhook --sync`, or press “Sync the Stripe endpoint” on "
            "the dashboard's overview: it sets the endpoint's event types to exactly what "
            "the enabled workflows use, and enables it.",
            "Then `billbridge reconcile` fetches the events that were not sent.",
        )
    return Check(
        name="endpoint",
        firing=firing,
        title="the Stripe webhook endpoint does not send what the workflows need",
        lines=tuple(problems),
        actions=actions,
        resolved_title="the Stripe webhook endpoint sends every event type the workflows need",
    )


def _no_worker(config: AlertConfig, facts: Facts) -> Check:
    """No live worker while deliveries are due (or held by a worker that stopped beating),
    the oldest waiting at least `no_worker_seconds`."""
    stats = facts.stats
    held = sum(w.in_flight for w in facts.silent_workers)
    waited = stats.oldest_pending_age if stats.due_now else 0.0
    if held:
        waited = max(waited, min(w.silent_for for w in facts.silent_workers if w.in_flight))
    stuck = stats.due_now + held
    lines = [
        "No `billbridge worker` and no `billbridge serve` with its worker has sent a heartbeat "
        f"in the last {SILENT_AFTER:.0f} s, so nothing is delivered.",
        f"{stats.due_now} deliveries are due now"
        + (f", {held} more are held by workers that stopped beating" if held else "")
        + ".",
    ]
    lines.extend(
        f"Last seen: {w.host} pid {w.pid} (version {w.version}), silent for "
        f"{duration(w.silent_for)}, {w.in_flight} deliveries in flight."
        for w in facts.silent_workers
    )
    alive = ", ".join(f"{w.host} pid {w.pid}" for w in facts.live_workers)
    return Check(
        name="no_worker",
        firing=not facts.live_workers and stuck > 0 and waited >= config.no_worker_seconds,
        title=f"no worker is running ({stuck} deliveries waiting, for {duration(waited)})",
        lines=tuple(lines),
        actions=(
            "Start a worker: `billbridge worker` (or `billbridge serve` without --no-worker) "
            "with the same DATABASE_URL and BILLBRIDGE_SECRET_KEY as the other processes.",
            "If workers run, read their log: “could not record a heartbeat” or “could not "
            "claim deliveries” means they cannot reach the database; check the database "
            "link (/readyz of `serve`, or of `billbridge worker --metrics-port`).",
            "Deliveries a dead worker held are taken over at the next heartbeat of any "
            "worker; nothing is lost.",
        ),
        resolved_title="a worker is running again",
        resolved_lines=(f"alive: {alive}",) if alive else (),
        queue_depth=stats.queue_depth,
        oldest_pending_age=waited,
    )
