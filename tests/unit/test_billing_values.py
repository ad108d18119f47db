"""MRR normalisation, the plan-choice rule, order keys and semantic changes (pure functions)."""

from __future__ import annotations

from typing import Any

import pytest

from billbridge.billing.ordering import order_key
from billbridge.billing.profile import choose_subscription, profile_from_state
from billbridge.billing.projection import row_for_object, state_of_objects
from billbridge.billing.semantic import derive_changes, payload_only_change_filter
from billbridge.billing.values import item_summaries, mrr_of_items, primary_item


def _item(amount: int | None, interval: str, count: int = 1, quantity: int = 1) -> dict[str, Any]:
    return {
        "unit_amount": amount,
        "interval": interval,
        "interval_count": count,
        "quantity": quantity,
    }


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        (_item(3000, "month"), 3000),
        (_item(12000, "year"), 1000),
        (_item(3000, "month", count=3), 1000),
        (_item(100, "day"), 3042),  # 100 * 365 / 12 = 3041.67
        (_item(700, "week"), 3033),  # 700 * 52 / 12 = 3033.33
        (_item(1000, "week", count=2), 2167),  # 1000 * 52 / 12 / 2 = 2166.67
        (_item(999, "month", quantity=3), 2997),
        (_item(10000, "year", count=2, quantity=2), 833),  # 20000 / 24 = 833.33
    ],
)
def test_mrr_is_normalised_to_a_month(item: dict[str, Any], expected: int) -> None:
    """Day, week, month and year prices with interval_count and quantity become monthly."""
    assert mrr_of_items([item]) == expected


def test_mrr_sums_items_exactly_then_rounds_once() -> None:
    """Several items add up before rounding; items without amount or interval add nothing."""
    items = [_item(100, "day"), _item(100, "day"), _item(None, "month"), _item(500, "one_time")]
    assert mrr_of_items(items) == 6083  # 2 * 3041.67 = 6083.33
    assert mrr_of_items([_item(None, "month")]) is None
    assert mrr_of_items([]) is None


def test_items_are_read_from_prices_and_legacy_plans() -> None:
    """items.data[].price (current) and a top-level plan + quantity (old API) both read."""
    current = {
        "items": {
            "data": [
                {
                    "price": {
                        "id": "price_A",
                        "product": {"id": "prod_A"},
                        "unit_amount": 2900,
                        "recurring": {"interval": "month", "interval_count": 1},
                    },
                    "quantity": 2,
                }
            ]
        }
    }
    assert item_summaries(current) == [
        {
            "price_id": "price_A",
            "product_id": "prod_A",
            "interval": "month",
            "interval_count": 1,
            "unit_amount": 2900,
            "quantity": 2,
        }
    ]
    legacy = {"plan": {"id": "plan_B", "amount": 12000, "interval": "year"}, "quantity": 1}
    assert mrr_of_items(item_summaries(legacy)) == 1000


def test_the_primary_item_is_the_largest_monthly_amount() -> None:
    """The plan attributes describe the item that weighs most per month."""
    small, big = _item(12000, "year"), _item(2900, "month")
    assert primary_item([small, big]) is big
    assert primary_item([]) is None


def _sub(sub_id: str, status: str, created: int) -> dict[str, Any]:
    return {"id": sub_id, "status": status, "created": created}


def test_plan_choice_prefers_status_rank_then_newest() -> None:
    """active beats trialing beats past_due ... beats canceled; then the newest wins."""
    subs = (
        _sub("sub_old_active", "active", 100),
        _sub("sub_new_canceled", "canceled", 300),
        _sub("sub_trial", "trialing", 200),
        _sub("sub_new_active", "active", 150),
    )
    chosen = choose_subscription(subs)
    assert chosen is not None
    assert chosen["id"] == "sub_new_active"
    chosen = choose_subscription((subs[1], subs[2]))
    assert chosen is not None
    assert chosen["id"] == "sub_trial"
    assert choose_subscription(()) is None


def test_a_canceled_subscription_outranks_any_later_active_snapshot() -> None:
    """The order key puts a terminal status before the watermark: it can't be undone."""
    canceled = order_key("subscription", {"status": "canceled"}, 100)
    later_active = order_key("subscription", {"status": "active"}, 200)
    assert canceled > later_active


def test_charge_refunds_only_grow() -> None:
    """A snapshot with more refunded wins over a later one with less (same status)."""
    refunded = order_key("charge", {"status": "succeeded", "amount_refunded": 500}, 100)
    stale = order_key("charge", {"status": "succeeded", "amount_refunded": 0}, 200)
    assert refunded > stale


def test_profile_is_absent_when_unknown() -> None:
    """A customer with nothing projected gets only the id: no invented zeros."""
    assert profile_from_state("cus_1", state_of_objects([])) == {"stripe_customer_id": "cus_1"}


def test_mrr_counts_only_active_and_past_due_subscriptions() -> None:
    """A trial or a canceled subscription pays nothing now; an active one does."""
    month = {"interval": "month", "interval_count": 1}
    objects = [
        {
            "object": "subscription",
            "id": f"sub_{status}",
            "customer": "cus_1",
            "status": status,
            "created": 1,
            "items": {"data": [{"price": {"id": "p", "unit_amount": 1000, "recurring": month}}]},
        }
        for status in ("active", "trialing", "canceled", "past_due")
    ]
    profile = profile_from_state("cus_1", state_of_objects(objects))
    assert profile["mrr"] == 2000
    assert profile["subscription_id"] == "sub_active"


def test_an_unprojected_kind_has_no_row() -> None:
    """Objects the profile does not need (payment intents, sessions) are not projected."""
    assert row_for_object({"object": "payment_intent", "id": "pi_1"}, watermark=1) is None


def _updated(previous: dict[str, Any], **fields: Any) -> dict[str, Any]:
    month = {"interval": "month", "interval_count": 1}
    obj = {
        "object": "subscription",
        "id": "sub_1",
        "status": "active",
        "cancel_at_period_end": False,
        "cancel_at": None,
        "items": {
            "data": [{"price": {"id": "price_pro", "unit_amount": 2900, "recurring": month}}]
        },
        **fields,
    }
    return {
        "id": "evt_1",
        "type": "customer.subscription.updated",
        "created": 1,
        "data": {"object": obj, "previous_attributes": previous},
    }


def test_semantic_changes_from_previous_attributes() -> None:
    """Upgrade, downgrade, cancel scheduled and reactivated come with before/after values."""
    month = {"interval": "month", "interval_count": 1}
    basic = {"data": [{"price": {"id": "price_basic", "unit_amount": 900, "recurring": month}}]}
    premium = {
        "data": [{"price": {"id": "price_premium", "unit_amount": 9900, "recurring": month}}]
    }
    up = derive_changes(_updated({"items": basic}))
    assert up["subscription_upgraded"]["before"]["mrr"] == 900
    assert up["subscription_upgraded"]["after"]["mrr"] == 2900
    assert up["subscription_upgraded"]["after"]["price_id"] == "price_pro"
    down = derive_changes(_updated({"items": premium}))
    assert set(down) == {"subscription_downgraded"}
    scheduled = derive_changes(_updated({"cancel_at_period_end": False}, cancel_at_period_end=True))
    assert scheduled["subscription_cancel_scheduled"]["before"]["cancel_at_period_end"] is False
    assert scheduled["subscription_cancel_scheduled"]["after"]["cancel_at_period_end"] is True
    undone = derive_changes(_updated({"cancel_at_period_end": True}))
    assert set(undone) == {"subscription_reactivated"}
    restarted = derive_changes(_updated({"status": "canceled"}))
    assert restarted["subscription_reactivated"]["before"]["status"] == "canceled"
    resumed = derive_changes(_updated({"status": "paused"}))
    assert set(resumed) == {"subscription_resumed"}
    assert resumed["subscription_resumed"]["before"]["status"] == "paused"
    assert derive_changes(_updated({"metadata": {}})) == {}


def _items(price_id: str, amount: int, interval: str = "month", product: str = "prod_a") -> Any:
    recurring = {"interval": interval, "interval_count": 1}
    price = {"id": price_id, "product": product, "unit_amount": amount, "recurring": recurring}
    return {"data": [{"price": price, "quantity": 1}]}


def test_plan_and_interval_changes_are_named_even_at_equal_mrr() -> None:
    """A monthly-to-yearly switch at equal MRR is subscription_interval_changed alone; a
    plan swap at the same price is an upgrade (MRR unchanged); an interval switch that
    changes MRR is both."""
    yearly = _items("price_y", 34_800, "year")  # 2900 a month
    swap = derive_changes(_updated({"items": _items("price_m", 2900)}, items=yearly))
    assert set(swap) == {"subscription_interval_changed"}
    assert swap["subscription_interval_changed"]["before"]["interval"] == "month"
    assert swap["subscription_interval_changed"]["after"]["interval"] == "year"
    other = _items("price_b", 2900, product="prod_b")
    same_price = derive_changes(_updated({"items": _items("price_a", 2900)}, items=other))
    assert set(same_price) == {"subscription_upgraded"}
    change = same_price["subscription_upgraded"]
    assert (change["before"]["product_id"], change["after"]["product_id"]) == ("prod_a", "prod_b")
    assert change["before"]["mrr"] == change["after"]["mrr"] == 2900
    cheaper_yearly = _items("price_y", 24_000, "year")  # 2000 a month
    both = derive_changes(_updated({"items": _items("price_m", 2900)}, items=cheaper_yearly))
    assert set(both) == {"subscription_interval_changed", "subscription_downgraded"}
    same = _items("price_pro", 2900)
    assert derive_changes(_updated({"items": same}, items=same)) == {}


def test_a_coupon_applied_is_a_downgrade_with_the_discounted_mrr() -> None:
    """A discount added (`discounts` in previous_attributes) lowers the MRR: downgraded."""
    coupon = {"id": "co", "percent_off": 50, "duration": "forever"}
    discount = {"id": "di_1", "source": {"coupon": coupon}, "start": 0, "end": None}
    changes = derive_changes(_updated({"discounts": []}, discounts=[discount]))
    assert changes["subscription_downgraded"]["after"]["mrr"] == 1450


def test_pauses_and_resumptions_from_collection_or_status() -> None:
    """pause_collection set / cleared and status paused give one event per change."""
    pause = {"behavior": "void", "resumes_at": 5_000}
    paused = derive_changes(_updated({"pause_collection": None}, pause_collection=pause))
    assert set(paused) == {"subscription_paused"}
    assert paused["subscription_paused"]["after"] == {
        "status": "active",
        "pause_behavior": "void",
        "resumes_at": 5_000,
    }
    resumed = derive_changes(_updated({"pause_collection": pause}, pause_collection=None))
    assert set(resumed) == {"subscription_resumed"}
    status_paused = derive_changes(_updated({"status": "active"}, status="paused"))
    assert set(status_paused) == {"subscription_paused"}
    both = derive_changes(
        _updated(
            {"status": "active", "pause_collection": None}, status="paused", pause_collection=pause
        )
    )
    assert set(both) == {"subscription_paused"}


@pytest.mark.parametrize(
    ("workflow_filter", "name"),
    [
        ("changes.subscription_upgraded", "subscription_upgraded"),
        ("{{ changes.trial_will_end }}", "trial_will_end"),
        ("  changes.subscription_reactivated ", "subscription_reactivated"),
        ("changes.payment_recovered", None),  # needs the projection: decided at delivery
        ("changes.trial_converted", None),  # needs the projection too
        ("changes.subscription_upgraded and object.livemode", None),
        ("object.amount > 100", None),
        (None, None),
    ],
)
def test_only_whole_payload_change_filters_are_decided_at_ingest(
    workflow_filter: str | None, name: str | None
) -> None:
    """Ingest decides a filter only when it is exactly one payload-only semantic change."""
    assert payload_only_change_filter(workflow_filter) == name


def test_a_seat_change_on_a_tiered_price_without_tiers_goes_by_the_quantity() -> None:
    """Webhooks carry tiered prices without tiers: more seats is an upgrade, fewer a
    downgrade, with licensed_quantity instead of an unknown mrr."""
    month = {"interval": "month", "interval_count": 1}
    price = {
        "id": "price_seats",
        "billing_scheme": "tiered",
        "tiers_mode": "volume",
        "unit_amount": None,
        "recurring": month,
    }

    def items(quantity: int) -> dict[str, Any]:
        return {"data": [{"price": price, "quantity": quantity}]}

    more = derive_changes(_updated({"items": items(5)}, items=items(12)))
    assert set(more) == {"subscription_upgraded"}
    assert more["subscription_upgraded"]["before"]["licensed_quantity"] == 5
    assert "mrr" not in more["subscription_upgraded"]["after"]
    fewer = derive_changes(_updated({"items": items(12)}, items=items(5)))
    assert set(fewer) == {"subscription_downgraded"}
