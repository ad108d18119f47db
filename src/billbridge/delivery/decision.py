"""The delivery decision: one chain that only reads, for the executor, "Try it" and backfill.

    batch = DecisionChain(settings, store, resolver).batch()
    person = batch.person(event)           # Person | Unresolved (reads the store, Stripe)
    decided = batch.action(workflow, index, event, person, created=event["created"])
    # Planned(request, late) | Skipped(reason) | Failed(reason)
    store.finish_many(completions, batch.facts())   # the executor; a preview drops them

The steps, in order, for one action: the person (payload, customers table, Stripe API),
the customer-deleted policy, the billing context (profile, semantic changes; an object
completed from the Stripe API when the profile needs it), the plan (filter, templates)
and the late-events policy. Nothing here writes: what a decision learns from Stripe (a
customer, projection rows, a dispute's customer) is kept in the batch's `PendingReads`,
seen by every later decision of the batch, and handed back by `facts()`. The executor
writes those facts in the transaction that records the batch's outcome; a preview
drops them; backfill writes its facts with its own pages before deciding.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from billbridge.billing.context import billing_context, deleted_policy_skip
from billbridge.billing.profile import compute_profile
from billbridge.config import Settings
from billbridge.customerio.requests import CioRequest
from billbridge.identity import IdentityResolver, Person, Unresolved
from billbridge.store.base import Store
from billbridge.store.pending import PendingReads
from billbridge.store.records_billing import DiscoveredFacts
from billbridge.stripe.events import customer_id_of
from billbridge.workflows.late_events import LateDecision, LateSkip, send_now
from billbridge.workflows.model import Workflow
from billbridge.workflows.planner import Skip, plan_action
from billbridge.workflows.templates import TemplateError

log = structlog.get_logger("billbridge.delivery")


@dataclass(frozen=True)
class Planned:
    """Send this request (under the late-events decision `late`, if any)."""

    request: CioRequest
    late: LateDecision | None = None


@dataclass(frozen=True)
class Skipped:
    """Nothing to send, and why; `request` is what the late-events policy held back."""

    reason: str
    request: CioRequest | None = None
    late: LateDecision | None = None


@dataclass(frozen=True)
class Failed:
    """The workflow cannot produce a request (a template error): fix it, then replay."""

    reason: str


Decided = Planned | Skipped | Failed


class DecisionChain:
    """The long-lived part: settings, the store (read), the identity resolver."""

    def __init__(self, settings: Settings, store: Store, resolver: IdentityResolver) -> None:
        self._settings = settings
        self._store = store
        self._resolver = resolver

    def batch(self) -> DecisionBatch:
        """Decisions made together: an event's person and a customer's profile are worked
        out once, and what one decision learns is seen by the next."""
        return DecisionBatch(self._settings, self._store, self._resolver)


class DecisionBatch:
    """One batch of decisions and the facts they learnt (see the module docstring)."""

    def __init__(self, settings: Settings, store: Store, resolver: IdentityResolver) -> None:
        self._settings = settings
        self._store = store
        self._resolver = resolver
        self.reads = PendingReads(store)
        self.memo: dict[Any, Any] = {"customers": {}}

    def prefetch(self, events: Iterable[dict[str, Any]]) -> None:
        """Read the customers of these events (records and billing state) with a few
        queries for all of them instead of several per decision."""
        customer_ids = {cid for cid in map(customer_id_of, events) if cid is not None}
        if not customer_ids:
            return
        try:
            snapshots = self._store.customer_snapshots(customer_ids)
        except Exception as exc:  # each decision then reads (or fails) on its own
            log.warning("could not read the batch's customers", error_type=type(exc).__name__)
            return
        for customer_id, snapshot in snapshots.items():
            self.memo["customers"][customer_id] = snapshot.record
            self.memo[("snapshot", customer_id)] = snapshot

    def person(self, event: dict[str, Any], key: object = None) -> Person | Unresolved:
        """The event's person, resolved once per `key` (default: the event id). Raises a
        retryable `StripeAPIError` when Stripe could not be asked (decide again later)."""
        person_key = ("person", event.get("id") if key is None else key)
        if person_key not in self.memo:
            self.memo[person_key] = self._resolver.resolve(
                event, known=self.memo["customers"], found=self.reads
            )
        person: Person | Unresolved = self.memo[person_key]
        return person

    def action(
        self,
        workflow: Workflow,
        index: int,
        event: dict[str, Any],
        person: Person,
        *,
        created: int,
        now: float,
    ) -> Decided:
        """What action `index` of `workflow` does for `event` and its `person`, sent at
        `now` (`created`: Stripe's time of the event, for the late-events policy)."""
        policy = self._settings.customer_deleted_policy
        deleted_reason = deleted_policy_skip(workflow, index, event, person, policy)
        if deleted_reason is not None:
            return Skipped(deleted_reason)
        extra = billing_context(
            self.reads,
            workflow,
            index,
            event,
            person,
            memo=self.memo,
            stripe_api=self._resolver.stripe_api,
        )
        try:
            planned = plan_action(
                workflow,
                index,
                event,
                person,
                identifier_mode=self._settings.identifier,
                profile=extra.profile,
                profile_removals=extra.profile_removals,
                changes=extra.changes,
                deleted_policy=policy,
            )
        except TemplateError as exc:
            return Failed(str(exc))
        if isinstance(planned, Skip):
            return Skipped(planned.reason)
        sending, late = send_now(planned, created=created, now=now, policy=workflow.late_events)
        if isinstance(sending, LateSkip):
            return Skipped(sending.reason, planned, late)
        return Planned(sending, late)

    def profile(self, customer_id: str) -> dict[str, Any]:
        """A customer's billing profile as the store will hold it with this batch's facts."""
        return compute_profile(self.reads, customer_id)

    def facts(self) -> DiscoveredFacts:
        """What the batch learnt, to be written with its outcome."""
        return self.reads.facts()
