"""The default workflows of SPEC §4: one per row of its table, seeded on first start.

Identify actions map only billing-profile attribute names; event data uses Stripe's own
field names, amounts stay in minor units next to `currency`, and a value Stripe did not
send is left out (never invented). The planner adds `email` and `stripe_customer_id` to
every identify, and `stripe_event_id`, `stripe_object_id` and `livemode` to every event.
"""

from __future__ import annotations

from typing import Any

from billbridge.workflows.model import (
    Action,
    CustomerDeletedPolicyAction,
    IdentifyAction,
    TrackEventAction,
    Trigger,
    Workflow,
)

# Subscription fields. Since API 2025-03-31.basil the billing period lives on the items;
# older payloads have it on the subscription itself: read the item first, then fall back.
_PRICE = "object.items.data[0].price"
_PERIOD_END = "{{ object.items.data[0].current_period_end or object.current_period_end }}"

_SUBSCRIPTION_DATA: dict[str, Any] = {
    "status": "{{ object.status }}",
    "price_id": f"{{{{ {_PRICE}.id }}}}",
    "product_id": f"{{{{ {_PRICE}.product }}}}",
    "interval": f"{{{{ {_PRICE}.recurring.interval }}}}",
    "unit_amount": f"{{{{ {_PRICE}.unit_amount }}}}",
    "quantity": "{{ object.items.data[0].quantity }}",
    "currency": "{{ object.currency }}",
    "current_period_end": _PERIOD_END,
    "trial_end": "{{ object.trial_end }}",
    "cancel_at_period_end": "{{ object.cancel_at_period_end }}",
    "cancel_at": "{{ object.cancel_at }}",
}

_CARD = "object.payment_method_details.card"
_CHARGE_DATA: dict[str, Any] = {
    "amount": "{{ object.amount }}",
    "currency": "{{ object.currency }}",
    "status": "{{ object.status }}",
    "description": "{{ object.description }}",
    "payment_intent": "{{ object.payment_intent }}",
    "receipt_url": "{{ object.receipt_url }}",
    "card_brand": f"{{{{ {_CARD}.brand }}}}",
    "card_last4": f"{{{{ {_CARD}.last4 }}}}",
}

# Before basil an invoice named its subscription at the top level; now under `parent`.
_INVOICE_DATA: dict[str, Any] = {
    "number": "{{ object.number }}",
    "status": "{{ object.status }}",
    "amount_due": "{{ object.amount_due }}",
    "amount_paid": "{{ object.amount_paid }}",
    "amount_remaining": "{{ object.amount_remaining }}",
    "currency": "{{ object.currency }}",
    "billing_reason": "{{ object.billing_reason }}",
    "attempt_count": "{{ object.attempt_count }}",
    "hosted_invoice_url": "{{ object.hosted_invoice_url }}",
    "invoice_pdf": "{{ object.invoice_pdf }}",
    "period_start": "{{ object.period_start }}",
    "period_end": "{{ object.period_end }}",
    "subscription": (
        "{{ object.parent.subscription_details.subscription or object.subscription }}"
    ),
}


# A failed attempt that created a charge has `last_payment_error.charge` (Stripe then also
# sends charge.failed for it, which Payment failed turns into payment_failed): only the
# attempts without a charge are left to payment_intent.payment_failed. Decided from each
# payload alone, so arrival order does not matter.
PAYMENT_INTENT_FAILED_FILTER = "not object.last_payment_error.charge"
_PAYMENT_ERROR = "object.last_payment_error"
_PAYMENT_INTENT_FAILED_DATA: dict[str, Any] = {
    "amount": "{{ object.amount }}",
    "currency": "{{ object.currency }}",
    "status": "{{ object.status }}",
    "description": "{{ object.description }}",
    "payment_intent": "{{ object.id }}",
    "failure_code": f"{{{{ {_PAYMENT_ERROR}.code }}}}",
    "decline_code": f"{{{{ {_PAYMENT_ERROR}.decline_code }}}}",
    "failure_message": f"{{{{ {_PAYMENT_ERROR}.message }}}}",
    "payment_method_type": f"{{{{ {_PAYMENT_ERROR}.payment_method.type }}}}",
}


def _workflow(
    workflow_id: str,
    name: str,
    event_type: str,
    description: str,
    *,
    identify: dict[str, Any] | None = None,
    event_name: str | None = None,
    data: dict[str, Any] | None = None,
    profile_after: bool = False,
    extra: list[Action] | None = None,
    filter_: str | None = None,
) -> Workflow:
    """`identify` (mapped attributes over the current billing profile) comes first;
    `profile_after` appends a profile-only identify after the event instead, so that the
    event keeps action index 0 (and its Customer.io event id) from earlier versions."""
    actions: list[Action] = []
    if identify is not None:
        actions.append(IdentifyAction(attributes=identify, include_profile=True))
    if event_name is not None:
        actions.append(TrackEventAction(name=event_name, data=data or {}))
    if profile_after:
        actions.append(IdentifyAction(include_profile=True))
    actions.extend(extra or [])
    return Workflow(
        id=workflow_id,
        name=name,
        description=description,
        trigger=Trigger(events=[event_type]),
        filter=filter_,
        actions=actions,
    )


def _semantic(
    name: str,
    event_type: str,
    description: str,
    data: dict[str, Any] | None = None,
    *,
    profile_after: bool = False,
) -> Workflow:
    """A semantic event (billbridge.billing.semantic): sent only when the change happened,
    with its before and after values."""
    return _workflow(
        name.replace("_", "-"),
        name.replace("_", " ").capitalize(),
        event_type,
        description,
        event_name=name,
        data={
            "before": f"{{{{ changes.{name}.before }}}}",
            "after": f"{{{{ changes.{name}.after }}}}",
            **(data or {}),
        },
        filter_=f"changes.{name}",
        profile_after=profile_after,
    )


def default_workflows() -> list[Workflow]:
    """The workflows a fresh installation starts with (SPEC §4), in table order."""
    return [
        _workflow(
            "customer-created",
            "Customer created",
            "customer.created",
            "Create the person with email, name, created_at and the billing profile; send"
            " customer_created.",
            identify={},
            event_name="customer_created",
            data={
                "email": "{{ object.email }}",
                "name": "{{ object.name }}",
                "created": "{{ object.created }}",
                "currency": "{{ object.currency }}",
            },
        ),
        _workflow(
            "customer-updated",
            "Customer updated",
            "customer.updated",
            "Keep the person's billing profile (email, name, delinquent, ...) current; an"
            " email change updates the same person.",
            identify={},
        ),
        _workflow(
            "customer-deleted",
            "Customer deleted",
            "customer.deleted",
            "Send customer_deleted, then apply BILLBRIDGE_CUSTOMER_DELETED_POLICY: keep the"
            " person (default), or suppress or delete them (then no call re-creates them).",
            event_name="customer_deleted",
            data={"email": "{{ object.email }}", "name": "{{ object.name }}"},
            extra=[CustomerDeletedPolicyAction()],
        ),
        _workflow(
            "subscription-created",
            "Subscription created",
            "customer.subscription.created",
            "Set the billing profile; send subscription_created.",
            identify={},
            event_name="subscription_created",
            data=_SUBSCRIPTION_DATA,
        ),
        _workflow(
            "subscription-updated",
            "Subscription updated",
            "customer.subscription.updated",
            "Keep the billing profile current; send subscription_updated with the"
            " previous status, price and cancel_at_period_end.",
            identify={},
            event_name="subscription_updated",
            data={
                **_SUBSCRIPTION_DATA,
                "cancellation_reason": "{{ object.cancellation_details.reason }}",
                "previous_status": "{{ previous.status }}",
                "previous_price_id": "{{ previous.items.data[0].price.id }}",
                "previous_cancel_at_period_end": "{{ previous.cancel_at_period_end }}",
            },
        ),
        _workflow(
            "subscription-canceled",
            "Subscription canceled",
            "customer.subscription.deleted",
            "Set the billing profile (status canceled); send subscription_canceled.",
            identify={},
            event_name="subscription_canceled",
            data={
                **_SUBSCRIPTION_DATA,
                "canceled_at": "{{ object.canceled_at }}",
                "ended_at": "{{ object.ended_at }}",
                "cancellation_reason": "{{ object.cancellation_details.reason }}",
                "cancellation_feedback": "{{ object.cancellation_details.feedback }}",
                "cancellation_comment": "{{ object.cancellation_details.comment }}",
            },
        ),
        _workflow(
            "payment-succeeded",
            "Payment succeeded",
            "charge.succeeded",
            "Send payment_succeeded with the amount, currency and card"
            "; then keep the billing profile current.",
            profile_after=True,
            event_name="payment_succeeded",
            data=_CHARGE_DATA,
        ),
        _workflow(
            "payment-failed",
            "Payment failed",
            "charge.failed",
            "Send payment_failed with Stripe's failure code and message"
            "; then keep the billing profile current.",
            profile_after=True,
            event_name="payment_failed",
            data={
                **_CHARGE_DATA,
                "failure_code": "{{ object.failure_code }}",
                "failure_message": "{{ object.failure_message }}",
                # The issuer's decline code (e.g. insufficient_funds); Radar blocks have none.
                "decline_code": (
                    "{{ object.outcome.reason if object.outcome.type == 'issuer_declined' }}"
                ),
            },
        ),
        _workflow(
            "payment-intent-failed",
            "Payment intent failed",
            "payment_intent.payment_failed",
            "Send payment_failed for a failed attempt that created no charge (e.g. a failed"
            " 3-D Secure authentication); an attempt with a charge is sent by Payment failed"
            " (charge.failed), so each attempt gives one payment_failed.",
            profile_after=True,
            event_name="payment_failed",
            data=_PAYMENT_INTENT_FAILED_DATA,
            filter_=PAYMENT_INTENT_FAILED_FILTER,
        ),
        _workflow(
            "charge-refunded",
            "Charge refunded",
            "charge.refunded",
            "Send charge_refunded with the cumulative amount_refunded"
            "; then keep the billing profile current.",
            profile_after=True,
            event_name="charge_refunded",
            data={
                **_CHARGE_DATA,
                "amount_refunded": "{{ object.amount_refunded }}",
                "refunded": "{{ object.refunded }}",
                "previous_amount_refunded": "{{ previous.amount_refunded }}",
            },
        ),
        _workflow(
            "payment-intent-canceled",
            "Payment intent canceled",
            "payment_intent.canceled",
            "Send payment_intent_canceled with Stripe's cancellation_reason"
            "; then keep the billing profile current.",
            profile_after=True,
            event_name="payment_intent_canceled",
            data={
                "amount": "{{ object.amount }}",
                "currency": "{{ object.currency }}",
                "status": "{{ object.status }}",
                "cancellation_reason": "{{ object.cancellation_reason }}",
                "canceled_at": "{{ object.canceled_at }}",
                "description": "{{ object.description }}",
                "failure_code": "{{ object.last_payment_error.code }}",
                "failure_message": "{{ object.last_payment_error.message }}",
            },
        ),
        _workflow(
            "dispute-created",
            "Dispute created",
            "charge.dispute.created",
            "Send dispute_created with the amount, reason and evidence deadline"
            "; then keep the billing profile current.",
            profile_after=True,
            event_name="dispute_created",
            data={
                "amount": "{{ object.amount }}",
                "currency": "{{ object.currency }}",
                "reason": "{{ object.reason }}",
                "status": "{{ object.status }}",
                "charge": "{{ object.charge }}",
                "payment_intent": "{{ object.payment_intent }}",
                "evidence_due_by": "{{ object.evidence_details.due_by }}",
            },
        ),
        _workflow(
            "checkout-completed",
            "Checkout completed",
            "checkout.session.completed",
            "Identify the buyer from the checkout's customer details; send checkout_completed.",
            identify={
                "email": "{{ object.customer_details.email }}",
                "name": "{{ object.customer_details.name }}",
            },
            event_name="checkout_completed",
            data={
                "mode": "{{ object.mode }}",
                "status": "{{ object.status }}",
                "payment_status": "{{ object.payment_status }}",
                "amount_subtotal": "{{ object.amount_subtotal }}",
                "amount_total": "{{ object.amount_total }}",
                "currency": "{{ object.currency }}",
                "client_reference_id": "{{ object.client_reference_id }}",
                "subscription": "{{ object.subscription }}",
                "invoice": "{{ object.invoice }}",
                "payment_intent": "{{ object.payment_intent }}",
            },
        ),
        _workflow(
            "invoice-paid",
            "Invoice paid",
            "invoice.paid",
            "Send invoice_paid with the number, amounts and hosted invoice URL"
            "; then keep the billing profile current.",
            profile_after=True,
            event_name="invoice_paid",
            data=_INVOICE_DATA,
        ),
        _workflow(
            "invoice-payment-failed",
            "Invoice payment failed",
            "invoice.payment_failed",
            "Send invoice_payment_failed with the amount due, attempt count and next attempt"
            "; then keep the billing profile current.",
            profile_after=True,
            event_name="invoice_payment_failed",
            data={**_INVOICE_DATA, "next_payment_attempt": "{{ object.next_payment_attempt }}"},
        ),
        *semantic_workflows(),
    ]


def semantic_workflows() -> list[Workflow]:
    """The semantic events of SPEC §4, one workflow each (billbridge.billing.semantic)."""
    subscription = {"subscription": "{{ object.id }}", "status": "{{ object.status }}"}
    return [
        _semantic(
            "subscription_upgraded",
            "customer.subscription.updated",
            "Send subscription_upgraded when a change raises the MRR, or swaps the plan at"
            " the same interval and MRR (before/after).",
            subscription,
        ),
        _semantic(
            "subscription_downgraded",
            "customer.subscription.updated",
            "Send subscription_downgraded when a change lowers the MRR (before/after).",
            subscription,
        ),
        _semantic(
            "subscription_interval_changed",
            "customer.subscription.updated",
            "Send subscription_interval_changed when the billing interval changes (e.g."
            " monthly to yearly), whatever the MRR (before/after).",
            subscription,
        ),
        _semantic(
            "subscription_cancel_scheduled",
            "customer.subscription.updated",
            "Send subscription_cancel_scheduled when a cancellation is scheduled.",
            {**subscription, "current_period_end": _PERIOD_END},
        ),
        _semantic(
            "subscription_reactivated",
            "customer.subscription.updated",
            "Send subscription_reactivated when a scheduled cancellation is undone or a"
            " canceled subscription is active again.",
            subscription,
        ),
        _semantic(
            "subscription_paused",
            "customer.subscription.updated",
            "Send subscription_paused when payment collection is paused or the"
            " subscription's status becomes paused.",
            subscription,
        ),
        _semantic(
            "subscription_resumed",
            "customer.subscription.updated",
            "Send subscription_resumed when paused collection or a paused subscription resumes.",
            subscription,
        ),
        _semantic(
            "trial_will_end",
            "customer.subscription.trial_will_end",
            "Send trial_will_end three days before a trial ends (Stripe's notice); then"
            " keep the billing profile current (no other default listens to this event).",
            {**subscription, "trial_end": "{{ object.trial_end }}"},
            profile_after=True,
        ),
        _semantic(
            "payment_recovered",
            "invoice.paid",
            "Send payment_recovered when an invoice is paid after a failed attempt.",
            {
                "invoice": "{{ object.id }}",
                "amount_paid": "{{ object.amount_paid }}",
                "currency": "{{ object.currency }}",
                "subscription": _INVOICE_DATA["subscription"],
            },
        ),
        _semantic(
            "trial_converted",
            "invoice.paid",
            "Send trial_converted when the first invoice after a trial is paid.",
            {
                "invoice": "{{ object.id }}",
                "amount_paid": "{{ object.amount_paid }}",
                "currency": "{{ object.currency }}",
                "subscription": _INVOICE_DATA["subscription"],
            },
        ),
    ]
