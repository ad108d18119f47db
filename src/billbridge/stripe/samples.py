"""Realistic sample Stripe events for `billbridge trigger`, "Try it" and tests.

    event = sample_event("invoice.paid", customer_id="cus_...", email="jane.doe@example.com")
    body = json.dumps(event).encode()

Objects are modelled on Stripe's own fixtures (API `2026-10-28.endive` shapes) but tell
one coherent story: Jane Doe pays $29.00 a month for the Pro plan with a Visa card. The
email sits only where Stripe puts it (a Subscription or a Dispute carries none).
"""

from __future__ import annotations

import secrets
import string
import time
import uuid
from collections.abc import Callable
from typing import Any

API_VERSION = "2026-10-28.endive"
DEFAULT_EMAIL = "jane.doe@example.com"
DEFAULT_NAME = "Jane Doe"

PRO_PRICE = {"id": "price_1QProMonthly29Usd", "product": "prod_QProPlan01", "amount": 2900}
BASIC_PRICE = {"id": "price_1QBasicMonthly9Usd", "product": "prod_QBasicPlan01", "amount": 900}

_ALPHABET = string.ascii_letters + string.digits
_MONTH = 30 * 24 * 3600  # seconds, close enough for sample periods
_DAY = 24 * 3600


def _rand(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


class _Story:
    """The coherent values one sample shares: ids, email, amounts, times."""

    def __init__(self, *, livemode: bool, created: int, customer_id: str, email: str) -> None:
        self.livemode = livemode
        self.created = created
        self.customer_id = customer_id
        self.email = email
        self.name = DEFAULT_NAME
        self.subscription_id = _rand("sub_")
        self.item_id = _rand("si_", 14)
        self.invoice_id = _rand("in_")
        self.charge_id = _rand("ch_")
        self.payment_intent_id = _rand("pi_")
        self.payment_method_id = _rand("pm_")
        self.refund_id = _rand("re_")
        self.dispute_id = _rand("dp_")
        self.session_id = _rand("cs_test_a1" if not livemode else "cs_live_a1", 56)
        self.period_start = created - 2 * _DAY
        self.period_end = self.period_start + _MONTH
        self.customer_created = created - 90 * _DAY


# Resources ------------------------------------------------------------------------------


def _address() -> dict[str, Any]:
    return {
        "city": "San Francisco",
        "country": "US",
        "line1": "510 Townsend St",
        "line2": None,
        "postal_code": "94103",
        "state": "CA",
    }


def _customer(s: _Story) -> dict[str, Any]:
    return {
        "id": s.customer_id,
        "object": "customer",
        "address": _address(),
        "balance": 0,
        "created": s.customer_created,
        "currency": "usd",
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": s.email,
        "invoice_prefix": "7FE1103",
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": s.payment_method_id,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": s.livemode,
        "metadata": {"account_id": "acct-4821"},
        "name": s.name,
        "next_invoice_sequence": 2,
        "phone": "+14155550123",
        "preferred_locales": ["en"],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
        "customer_account": None,
    }


def _price(s: _Story, price: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": price["id"],
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "created": s.customer_created - 30 * _DAY,
        "currency": "usd",
        "custom_unit_amount": None,
        "livemode": s.livemode,
        "lookup_key": None,
        "metadata": {},
        "nickname": None,
        "product": price["product"],
        "recurring": {
            "interval": "month",
            "interval_count": 1,
            "meter": None,
            "trial_period_days": None,
            "usage_type": "licensed",
        },
        "tax_behavior": "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring",
        "unit_amount": price["amount"],
        "unit_amount_decimal": str(price["amount"]),
    }


def _items(s: _Story, price: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {
                "id": s.item_id,
                "object": "subscription_item",
                "billing_thresholds": None,
                "created": s.period_start,
                "current_period_end": s.period_end,
                "current_period_start": s.period_start,
                "discounts": [],
                "metadata": {},
                "price": _price(s, price),
                "quantity": 1,
                "subscription": s.subscription_id,
                "tax_rates": [],
            }
        ],
        "has_more": False,
        "total_count": 1,
        "url": f"/v1/subscription_items?subscription={s.subscription_id}",
    }


def _subscription(s: _Story, *, status: str = "active") -> dict[str, Any]:
    return {
        "id": s.subscription_id,
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": s.period_start,
        "billing_cycle_anchor_config": None,
        "billing_mode": {"type": "flexible", "flexible": {"proration_discounts": "included"}},
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically",
        "created": s.period_start,
        "currency": "usd",
        "customer": s.customer_id,
        "customer_account": None,
        "days_until_due": None,
        "default_payment_method": s.payment_method_id,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "ended_at": None,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": _items(s, PRO_PRICE),
        "latest_invoice": s.invoice_id,
        "livemode": s.livemode,
        "metadata": {},
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "schedule": None,
        "start_date": s.period_start,
        "status": status,
        "test_clock": None,
        "transfer_data": None,
        "trial_end": None,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": None,
    }


def _invoice(s: _Story, *, paid: bool) -> dict[str, Any]:
    amount = PRO_PRICE["amount"]
    return {
        "id": s.invoice_id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "Acme Cloud, Inc.",
        "amount_due": amount,
        "amount_overpaid": 0,
        "amount_paid": amount if paid else 0,
        "amount_remaining": 0 if paid else amount,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": 1,
        "attempted": True,
        "auto_advance": not paid,
        "automatic_tax": {
            "disabled_reason": None,
            "enabled": False,
            "liability": None,
            "provider": None,
            "status": None,
        },
        "billing_reason": "subscription_cycle",
        "collection_method": "charge_automatically",
        "created": s.period_start,
        "currency": "usd",
        "customer": s.customer_id,
        "customer_account": None,
        "customer_address": _address(),
        "customer_email": s.email,
        "customer_name": s.name,
        "customer_phone": None,
        "customer_shipping": None,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "due_date": None,
        "effective_at": s.period_start + 3600,
        "ending_balance": 0,
        "footer": None,
        "hosted_invoice_url": f"https://invoice.stripe.com/i/acct_1Acme/test_{s.invoice_id}",
        "invoice_pdf": f"https://pay.stripe.com/invoice/acct_1Acme/test_{s.invoice_id}/pdf",
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": {
            "object": "list",
            "data": [
                {
                    "id": _rand("il_"),
                    "object": "line_item",
                    "amount": amount,
                    "currency": "usd",
                    "description": "1 x Pro (at $29.00 / month)",
                    "discount_amounts": [],
                    "discountable": True,
                    "discounts": [],
                    "invoice": s.invoice_id,
                    "livemode": s.livemode,
                    "metadata": {},
                    "parent": {
                        "invoice_item_details": None,
                        "subscription_item_details": {
                            "invoice_item": None,
                            "proration": False,
                            "proration_details": {"credited_items": None},
                            "subscription": s.subscription_id,
                            "subscription_item": s.item_id,
                        },
                        "type": "subscription_item_details",
                    },
                    "period": {"end": s.period_end, "start": s.period_start},
                    "pretax_credit_amounts": [],
                    "pricing": {
                        "price_details": {
                            "price": PRO_PRICE["id"],
                            "product": PRO_PRICE["product"],
                        },
                        "type": "price_details",
                        "unit_amount_decimal": str(amount),
                    },
                    "quantity": 1,
                    "subtotal": amount,
                    "taxes": [],
                }
            ],
            "has_more": False,
            "total_count": 1,
            "url": f"/v1/invoices/{s.invoice_id}/lines",
        },
        "livemode": s.livemode,
        "metadata": {},
        "next_payment_attempt": None if paid else s.created + 3 * _DAY,
        "number": "7FE1103-0001",
        "on_behalf_of": None,
        "parent": {
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": s.subscription_id},
            "type": "subscription_details",
        },
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "period_end": s.period_start,
        "period_start": s.period_start - _MONTH,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": "paid" if paid else "open",
        "status_transitions": {
            "finalized_at": s.period_start + 3600,
            "marked_uncollectible_at": None,
            "paid_at": s.created if paid else None,
            "voided_at": None,
        },
        "subtotal": amount,
        "subtotal_excluding_tax": amount,
        "test_clock": None,
        "total": amount,
        "total_discount_amounts": [],
        "total_excluding_tax": amount,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": s.period_start + 3600,
    }


def _billing_details(s: _Story, *, with_email: bool = True) -> dict[str, Any]:
    return {
        "address": _address(),
        "email": s.email if with_email else None,
        "name": s.name,
        "phone": None,
        "tax_id": None,
    }


def _card_details(*, last4: str = "4242") -> dict[str, Any]:
    return {
        "amount_authorized": None,
        "brand": "visa",
        "checks": {
            "address_line1_check": "pass",
            "address_postal_code_check": "pass",
            "cvc_check": "pass",
        },
        "country": "US",
        "exp_month": 8,
        "exp_year": 2030,
        "fingerprint": "Xt5EWLLDS7FJjR1c",
        "funding": "credit",
        "last4": last4,
        "network": "visa",
        "three_d_secure": None,
        "wallet": None,
    }


def _charge(s: _Story, *, status: str = "succeeded") -> dict[str, Any]:
    amount = PRO_PRICE["amount"]
    failed = status == "failed"
    return {
        "id": s.charge_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": 0 if failed else amount,
        "amount_refunded": 0,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": None if failed else _rand("txn_"),
        "billing_details": _billing_details(s),
        "calculated_statement_descriptor": "ACME CLOUD",
        "captured": not failed,
        "created": s.created,
        "currency": "usd",
        "customer": s.customer_id,
        "description": "Subscription update",
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": "card_declined" if failed else None,
        "failure_message": "Your card was declined." if failed else None,
        "fraud_details": {},
        "livemode": s.livemode,
        "metadata": {},
        "on_behalf_of": None,
        "outcome": {
            "advice_code": "try_again_later" if failed else None,
            "network_advice_code": None,
            "network_decline_code": "05" if failed else None,
            "network_status": "declined_by_network" if failed else "approved_by_network",
            "reason": "generic_decline" if failed else None,
            "risk_level": "normal",
            "seller_message": (
                "The bank did not return any further details with this decline."
                if failed
                else "Payment complete."
            ),
            "type": "issuer_declined" if failed else "authorized",
        },
        "paid": not failed,
        "payment_intent": s.payment_intent_id,
        "payment_method": s.payment_method_id,
        "payment_method_details": {
            "card": _card_details(last4="0341" if failed else "4242"),
            "type": "card",
        },
        "receipt_email": s.email,
        "receipt_number": None,
        "receipt_url": f"https://pay.stripe.com/receipts/payment/{s.charge_id}",
        "refunded": False,
        "review": None,
        "shipping": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": status,
        "transfer_data": None,
        "transfer_group": None,
    }


def _payment_method(s: _Story) -> dict[str, Any]:
    return {
        "id": s.payment_method_id,
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": _billing_details(s),
        "card": _card_details(last4="0341"),
        "created": s.created - 60,
        "customer": s.customer_id,
        "livemode": s.livemode,
        "metadata": {},
        "type": "card",
    }


def _payment_intent(s: _Story, *, status: str) -> dict[str, Any]:
    amount = PRO_PRICE["amount"]
    return {
        "id": s.payment_intent_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": amount if status == "succeeded" else 0,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": {"allow_redirects": "always", "enabled": True},
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic_async",
        "client_secret": None,  # Stripe omits it from webhooks sent with a secret key
        "confirmation_method": "automatic",
        "created": s.created - 30,
        "currency": "usd",
        "customer": s.customer_id,
        "customer_account": None,
        "description": "Pro plan, one month",
        "excluded_payment_method_types": None,
        "last_payment_error": None,
        "latest_charge": s.charge_id,
        "livemode": s.livemode,
        "metadata": {},
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": s.payment_method_id,
        "payment_method_configuration_details": None,
        "payment_method_options": {
            "card": {"installments": None, "network": None, "request_three_d_secure": "automatic"}
        },
        "payment_method_types": ["card"],
        "processing": None,
        "receipt_email": None,
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "source": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": status,
        "transfer_data": None,
        "transfer_group": None,
    }


def _refund(s: _Story) -> dict[str, Any]:
    return {
        "id": s.refund_id,
        "object": "refund",
        "amount": PRO_PRICE["amount"],
        "balance_transaction": _rand("txn_"),
        "charge": s.charge_id,
        "created": s.created,
        "currency": "usd",
        "customer": s.customer_id,  # API 2026-07-29.dahlia and later
        "customer_account": None,
        "destination_details": {"card": {"reference_status": "pending", "type": "refund"}},
        "metadata": {},
        "payment_intent": s.payment_intent_id,
        "payment_method": s.payment_method_id,
        "reason": "requested_by_customer",
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": "succeeded",
        "transfer_reversal": None,
    }


def _dispute(s: _Story) -> dict[str, Any]:
    return {
        "id": s.dispute_id,
        "object": "dispute",
        "amount": PRO_PRICE["amount"],
        "balance_transactions": [],
        "charge": s.charge_id,
        "created": s.created,
        "currency": "usd",
        "enhanced_eligibility_types": [],
        "evidence": {
            "access_activity_log": None,
            "billing_address": None,
            "cancellation_policy": None,
            "cancellation_policy_disclosure": None,
            "cancellation_rebuttal": None,
            "customer_communication": None,
            "customer_email_address": None,
            "customer_name": None,
            "customer_purchase_ip": None,
            "customer_signature": None,
            "product_description": None,
            "receipt": None,
            "refund_policy": None,
            "service_date": None,
            "uncategorized_text": None,
        },
        "evidence_details": {
            "due_by": s.created + 7 * _DAY,
            "enhanced_eligibility": {},
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": s.livemode,
        "metadata": {},
        "payment_intent": s.payment_intent_id,
        "payment_method_details": {
            "card": {"brand": "visa", "case_type": "chargeback", "network_reason_code": "10.4"},
            "type": "card",
        },
        "reason": "fraudulent",
        "status": "needs_response",
    }


def _checkout_session(s: _Story) -> dict[str, Any]:
    amount = PRO_PRICE["amount"]
    return {
        "id": s.session_id,
        "object": "checkout.session",
        "adaptive_pricing": {"enabled": False},
        "after_expiration": None,
        "allow_promotion_codes": None,
        "amount_subtotal": amount,
        "amount_total": amount,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": None,
        "cancel_url": "https://acme.example.com/pricing",
        "client_reference_id": "acct-4821",
        "client_secret": None,
        "consent": None,
        "consent_collection": None,
        "created": s.created - 120,
        "currency": "usd",
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": s.customer_id,
        "customer_account": None,
        "customer_creation": "always",
        "customer_details": {
            "address": _address(),
            "business_name": None,
            "email": s.email,
            "individual_name": None,
            "name": s.name,
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        },
        "customer_email": None,
        "discounts": [],
        "expires_at": s.created - 120 + _DAY,
        "invoice": s.invoice_id,
        "invoice_creation": None,
        "livemode": s.livemode,
        "locale": None,
        "metadata": {},
        "mode": "subscription",
        "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": "always",
        "payment_method_configuration_details": None,
        "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"],
        "payment_status": "paid",
        "phone_number_collection": {"enabled": False},
        "recovered_from": None,
        "saved_payment_method_options": {
            "allow_redisplay_filters": ["always"],
            "payment_method_remove": "disabled",
            "payment_method_save": None,
        },
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": "complete",
        "submit_type": None,
        "subscription": s.subscription_id,
        "success_url": "https://acme.example.com/welcome?session_id={CHECKOUT_SESSION_ID}",
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted",
        "url": None,
    }


# Event types ----------------------------------------------------------------------------

# Each builder returns (data.object, data.previous_attributes or None).
_Built = tuple[dict[str, Any], dict[str, Any] | None]


def _customer_created(s: _Story) -> _Built:
    customer = _customer(s)
    customer["created"] = s.created
    return customer, None


def _customer_updated(s: _Story) -> _Built:
    return _customer(s), {"email": "jane@oldmail.example.com"}


def _customer_deleted(s: _Story) -> _Built:
    customer = _customer(s)
    customer["deleted"] = True
    return customer, None


def _subscription_created(s: _Story) -> _Built:
    subscription = _subscription(s, status="active")
    subscription["created"] = subscription["start_date"] = s.created
    return subscription, None


def _subscription_updated(s: _Story) -> _Built:
    # A plan change: Basic -> Pro. Stripe sends the whole old items list.
    return _subscription(s), {"items": _items(s, BASIC_PRICE)}


def _subscription_deleted(s: _Story) -> _Built:
    subscription = _subscription(s, status="canceled")
    subscription.update(
        canceled_at=s.created,
        ended_at=s.created,
        cancellation_details={
            "comment": "Switching to an in-house tool.",
            "feedback": "switched_service",
            "reason": "cancellation_requested",
        },
    )
    return subscription, None


def _trial_will_end(s: _Story) -> _Built:
    subscription = _subscription(s, status="trialing")
    subscription.update(
        trial_start=s.created - 11 * _DAY,
        trial_end=s.created + 3 * _DAY,
        latest_invoice=None,
    )
    return subscription, None


def _invoice_paid(s: _Story) -> _Built:
    return _invoice(s, paid=True), None


def _invoice_payment_failed(s: _Story) -> _Built:
    return _invoice(s, paid=False), None


def _charge_succeeded(s: _Story) -> _Built:
    return _charge(s), None


def _charge_failed(s: _Story) -> _Built:
    return _charge(s, status="failed"), None


def _charge_refunded(s: _Story) -> _Built:
    charge = _charge(s)
    charge.update(amount_refunded=charge["amount"], refunded=True, created=s.created - _DAY)
    return charge, {"amount_refunded": 0, "refunded": False}


def _pi_succeeded(s: _Story) -> _Built:
    return _payment_intent(s, status="succeeded"), None


def _pi_payment_failed(s: _Story) -> _Built:
    """A failed 3-D Secure authentication: the attempt created no charge (so no
    charge.failed), which is what the payment-intent-failed default sends."""
    intent = _payment_intent(s, status="requires_payment_method")
    intent["last_payment_error"] = {
        "code": "payment_intent_authentication_failure",
        "doc_url": "https://docs.stripe.com/error-codes/payment-intent-authentication-failure",
        "message": (
            "The provided PaymentMethod has failed authentication. You can provide"
            " payment_method_data or a new PaymentMethod to attempt to fulfill this"
            " PaymentIntent again."
        ),
        "payment_method": _payment_method(s),
        "type": "invalid_request_error",
    }
    intent["latest_charge"] = None
    intent["payment_method"] = None
    return intent, None


def _pi_canceled(s: _Story) -> _Built:
    intent = _payment_intent(s, status="canceled")
    intent.update(
        canceled_at=s.created,
        cancellation_reason="abandoned",
        latest_charge=None,
        payment_method=None,
    )
    return intent, None


def _dispute_created(s: _Story) -> _Built:
    return _dispute(s), None


def _checkout_completed(s: _Story) -> _Built:
    return _checkout_session(s), None


def _refund_created(s: _Story) -> _Built:
    return _refund(s), None


_BUILDERS: dict[str, Callable[[_Story], _Built]] = {
    "customer.created": _customer_created,
    "customer.updated": _customer_updated,
    "customer.deleted": _customer_deleted,
    "customer.subscription.created": _subscription_created,
    "customer.subscription.updated": _subscription_updated,
    "customer.subscription.deleted": _subscription_deleted,
    "customer.subscription.trial_will_end": _trial_will_end,
    "charge.succeeded": _charge_succeeded,
    "charge.failed": _charge_failed,
    "charge.refunded": _charge_refunded,
    "charge.dispute.created": _dispute_created,
    "payment_intent.succeeded": _pi_succeeded,
    "payment_intent.payment_failed": _pi_payment_failed,
    "payment_intent.canceled": _pi_canceled,
    "checkout.session.completed": _checkout_completed,
    "invoice.paid": _invoice_paid,
    "invoice.payment_succeeded": _invoice_paid,
    "invoice.payment_failed": _invoice_payment_failed,
    "refund.created": _refund_created,
}

_AUTOMATIC = frozenset(
    {
        "invoice.paid",
        "invoice.payment_succeeded",
        "invoice.payment_failed",
        "customer.subscription.trial_will_end",
        "charge.dispute.created",
    }
)

SAMPLE_EVENT_TYPES: tuple[str, ...] = tuple(sorted(_BUILDERS))


def sample_event(
    event_type: str,
    *,
    livemode: bool = False,
    event_id: str | None = None,
    created: int | None = None,
    customer_id: str | None = None,
    email: str | None = None,
) -> dict[str, Any]:
    """A realistic Stripe snapshot event of `event_type` (a fresh dict each call).

    Ids are random unless given; `created` defaults to now. Raises ValueError for a
    type without a sample, listing the supported ones.
    """
    builder = _BUILDERS.get(event_type)
    if builder is None:
        raise ValueError(
            f"no sample for event type {event_type!r}; supported: " + ", ".join(SAMPLE_EVENT_TYPES)
        )
    now = int(time.time()) if created is None else created
    story = _Story(
        livemode=livemode,
        created=now,
        customer_id=customer_id or _rand("cus_", 14),
        email=email or DEFAULT_EMAIL,
    )
    obj, previous = builder(story)
    data: dict[str, Any] = {"object": obj}
    if previous is not None:
        data["previous_attributes"] = previous
    return {
        "id": event_id or _rand("evt_"),
        "object": "event",
        "api_version": API_VERSION,
        "created": now,
        "data": data,
        "livemode": livemode,
        "pending_webhooks": 1,
        # Renewals happen automatically (no API request); the rest follow a request.
        "request": {"id": None, "idempotency_key": None}
        if event_type in _AUTOMATIC
        else {"id": _rand("req_", 14), "idempotency_key": str(uuid.uuid4())},
        "type": event_type,
    }
