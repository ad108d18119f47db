"""What the delivery executor adds for billing: the profile, semantic changes, deletions.

    extra = billing_context(reads, workflow, action_index, event, person)  # reads only
    plan_action(..., profile=extra.profile, profile_removals=extra.profile_removals,
                changes=extra.changes, deleted_policy=...)

Runs in the worker thread just before planning, so an identify sends the profile as it is
when the call is made: whichever order deliveries run in, the last call carries the
newest state of every event stored before it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from billbridge.billing.completion import complete_from_api
from billbridge.billing.profile import (
    absent_attributes,
    compute_profile,
    known_from_record,
    profile_from_state,
)
from billbridge.billing.projection import link_rows
from billbridge.billing.semantic import derive_changes
from billbridge.identity import Person
from billbridge.store.pending import BillingReads, PendingReads
from billbridge.store.records import CustomerRecord
from billbridge.store.records_billing import CustomerSnapshot
from billbridge.stripe.api import StripeAPI
from billbridge.stripe.events import customer_id_of, object_of
from billbridge.workflows.model import CustomerDeletedPolicyAction, IdentifyAction, Workflow


@dataclass(frozen=True)
class BillingContext:
    profile: dict[str, Any] | None
    changes: dict[str, Any] | None
    # The profile attributes Billbridge set that are now unknown (an identify carrying the
    # profile removes them); empty without a profile.
    profile_removals: tuple[str, ...] = ()


def _mentions(workflow: Workflow, name: str, memo: dict[Any, Any]) -> bool:
    """Whether the workflow's templates (or filter) may read `name` from the context."""
    key = ("mentions", id(workflow), name)  # the workflow object outlives the memo
    if key not in memo:
        text = (workflow.filter or "") + json.dumps([a.model_dump() for a in workflow.actions])
        memo[key] = re.search(rf"\b{name}\b", text) is not None
    return bool(memo[key])


def billing_context(
    reads: BillingReads,
    workflow: Workflow,
    action_index: int,
    event: dict[str, Any],
    person: Person,
    *,
    memo: dict[Any, Any] | None = None,
    stripe_api: StripeAPI | None = None,
) -> BillingContext:
    """The profile and changes the action needs (None when it needs neither). Reads only.

    `memo` may be shared by the deliveries decided together: a customer's profile and an
    event's changes are then computed once for all of them. With `stripe_api`, an event's
    subscription or customer that lacks what MRR reads is completed from the API first
    (`billbridge.billing.completion`). What is learnt (those rows, a dispute's customer
    found through its charge) counts in the profile and is kept in `reads` when it is a
    `PendingReads` (written with the batch's outcome, or dropped by a preview); over a
    plain store it is used for this context only.
    """
    memo = {} if memo is None else memo
    pending = reads if isinstance(reads, PendingReads) else PendingReads(reads)
    action = workflow.actions[action_index]
    customer_id = person.customer_id
    # A dispute (or refund) whose customer was found through its charge: link it, so
    # that disputes_count counts it.
    link_key = ("linked", event.get("id"), customer_id)
    if customer_id is not None and customer_id_of(event) is None and link_key not in memo:
        memo[link_key] = True
        if pending.add_rows(link_rows(event, customer_id)):
            memo.pop(("profile", customer_id), None)
    wants_profile = (isinstance(action, IdentifyAction) and action.include_profile) or _mentions(
        workflow, "profile", memo
    )
    if (
        wants_profile
        and stripe_api is not None
        and customer_id is not None
        and pending.add_rows(complete_from_api(stripe_api, event, memo))
    ):
        memo.pop(("profile", customer_id), None)
    profile = None
    if wants_profile and customer_id is not None:
        profile_key = ("profile", customer_id)
        if profile_key not in memo:
            memo[profile_key] = _profile(pending, customer_id, memo)
        profile = memo[profile_key]
    changes = None
    if _mentions(workflow, "changes", memo):
        changes_key = ("changes", event.get("id"))
        if changes_key not in memo:
            memo[changes_key] = derive_changes(event, pending)
        changes = memo[changes_key]
    removals = absent_attributes(profile) if profile is not None else ()
    return BillingContext(profile=profile, changes=changes, profile_removals=removals)


def _profile(pending: PendingReads, customer_id: str, memo: dict[Any, Any]) -> dict[str, Any]:
    """The customer's profile from what the memo already holds (`("snapshot", id)`: the
    billing state read for a batch; `"customers"`: customers-table records), else read;
    with what the batch learnt applied."""
    snapshot: CustomerSnapshot | None = memo.get(("snapshot", customer_id))
    if snapshot is None:
        return compute_profile(pending, customer_id)
    records: dict[str, CustomerRecord | None] = memo.setdefault("customers", {})
    if customer_id not in records:
        records[customer_id] = pending.get_customer(customer_id)
    record = pending.customer_with_pending(customer_id, records[customer_id])
    state = pending.state_with_pending(customer_id, snapshot.state)
    return profile_from_state(customer_id, state, known_from_record(record))


def is_deleted_person(event: dict[str, Any], person: Person) -> bool:
    """Whether the person's Stripe customer is deleted (this event, or the customers table)."""
    if event.get("type") == "customer.deleted":
        return True
    obj = object_of(event)
    if obj.get("object") == "customer" and obj.get("deleted") is True:
        return True
    return bool(person.customer.get("deleted"))


def deleted_policy_skip(
    workflow: Workflow, action_index: int, event: dict[str, Any], person: Person, policy: str
) -> str | None:
    """Why to skip this action because the customer is deleted and the policy removes the
    person (`suppress`, `delete`): any call but the policy's own would re-create them in
    Customer.io. None when the action should run."""
    if policy == "keep" or isinstance(workflow.actions[action_index], CustomerDeletedPolicyAction):
        return None
    if not is_deleted_person(event, person):
        return None
    return (
        f"the Stripe customer is deleted and BILLBRIDGE_CUSTOMER_DELETED_POLICY={policy}:"
        " the person is not re-created in Customer.io"
    )
