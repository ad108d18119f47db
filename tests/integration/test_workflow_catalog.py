"""WorkflowCatalog on a real store: seeding once, deliveries per action, the cache's limits."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from billbridge.errors import WorkflowValidationError
from billbridge.store.base import Store
from billbridge.store.records import NewDelivery
from billbridge.workflows.catalog import DEFAULTS_SEEDED_KEY, WorkflowCatalog
from billbridge.workflows.defaults import default_workflows

DEFAULT_IDS = [workflow.id for workflow in default_workflows()]


class FakeClock:
    """A monotonic clock the test moves by hand (no sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _definition(workflow_id: str = "vip", **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": workflow_id,
        "name": f"Workflow {workflow_id}",
        "trigger": {"events": ["charge.succeeded"]},
        "actions": [
            {"type": "identify", "attributes": {"vip": True}},
            {"type": "add_to_segment", "segment_id": 4},
        ],
    }
    data.update(changes)
    return data


def test_defaults_are_seeded_once(store: Store) -> None:
    """The first start stores every default workflow; later starts change nothing."""
    catalog = WorkflowCatalog(store)
    assert catalog.ensure_defaults() == DEFAULT_IDS
    assert sorted(w.id for w in catalog.all()) == sorted(DEFAULT_IDS)
    versions = {record.workflow_id: record.version for record in store.list_workflows()}
    assert WorkflowCatalog(store).ensure_defaults() == []
    assert {r.workflow_id: r.version for r in store.list_workflows()} == versions
    assert json.loads(store.get_meta(DEFAULTS_SEEDED_KEY) or "[]") == sorted(DEFAULT_IDS)


def test_a_deleted_default_is_not_recreated(store: Store) -> None:
    """A default the user deleted stays deleted across restarts."""
    WorkflowCatalog(store).ensure_defaults()
    assert WorkflowCatalog(store).delete("payment-failed") is True
    assert WorkflowCatalog(store).ensure_defaults() == []
    assert store.get_workflow("payment-failed") is None


def test_an_edited_default_is_kept(store: Store) -> None:
    """A default the user edited is never overwritten by a later start."""
    catalog = WorkflowCatalog(store)
    catalog.ensure_defaults()
    data = catalog.get("payment-failed")
    assert data is not None
    catalog.save({**data.to_data(), "enabled": False, "filter": "object.amount > 500"})
    WorkflowCatalog(store).ensure_defaults()
    edited = WorkflowCatalog(store).get("payment-failed")
    assert edited is not None
    assert edited.enabled is False
    assert edited.filter == "object.amount > 500"


def test_a_default_added_by_an_upgrade_is_seeded_once(store: Store) -> None:
    """Only defaults never seeded before are created on an upgrade."""
    WorkflowCatalog(store).ensure_defaults()
    store.delete_workflow("invoice-paid")
    store.delete_workflow("dispute-created")
    seeded_before = [i for i in DEFAULT_IDS if i != "invoice-paid"]  # as an older version left it
    store.set_meta(DEFAULTS_SEEDED_KEY, json.dumps(seeded_before))
    assert WorkflowCatalog(store).ensure_defaults() == ["invoice-paid"]
    assert store.get_workflow("dispute-created") is None


BILLING_ROUND_DEFAULTS = [
    "payment-intent-failed",
    "subscription-interval-changed",
    "subscription-paused",
    "subscription-resumed",
    "trial-converted",
]


def test_an_installation_from_before_the_billing_round_gains_its_five_defaults(
    store: Store,
) -> None:
    """Upgrading from the defaults seeded before issue 13 creates exactly the new payment
    and semantic workflows, once."""
    older = [i for i in DEFAULT_IDS if i not in BILLING_ROUND_DEFAULTS]
    catalog = WorkflowCatalog(store)
    catalog.ensure_defaults()
    for workflow_id in BILLING_ROUND_DEFAULTS:
        store.delete_workflow(workflow_id)
    store.set_meta(DEFAULTS_SEEDED_KEY, json.dumps(older))
    assert sorted(WorkflowCatalog(store).ensure_defaults()) == BILLING_ROUND_DEFAULTS
    assert WorkflowCatalog(store).ensure_defaults() == []


def test_deliveries_for_one_per_action_of_each_matching_workflow(store: Store) -> None:
    """Each enabled workflow triggered by the event contributes one delivery per action."""
    catalog = WorkflowCatalog(store)
    catalog.ensure_defaults()
    assert catalog.deliveries_for("charge.failed", livemode=True) == [
        NewDelivery(workflow_id="payment-failed", action_index=0, action_type="track_event"),
        NewDelivery(workflow_id="payment-failed", action_index=1, action_type="identify"),
    ]
    assert catalog.deliveries_for("customer.created", livemode=False) == [
        NewDelivery(workflow_id="customer-created", action_index=0, action_type="identify"),
        NewDelivery(workflow_id="customer-created", action_index=1, action_type="track_event"),
    ]
    assert catalog.deliveries_for("charge.succeeded", livemode=False) == [
        NewDelivery(workflow_id="payment-succeeded", action_index=0, action_type="track_event"),
        NewDelivery(workflow_id="payment-succeeded", action_index=1, action_type="identify"),
    ]
    assert catalog.deliveries_for("account.updated", livemode=True) == []


def test_disabled_and_other_mode_workflows_get_no_deliveries(store: Store) -> None:
    """A disabled workflow, or one for live events only, adds nothing to a test event."""
    catalog = WorkflowCatalog(store)
    catalog.save(_definition("live-only", trigger={"events": ["refund.created"], "mode": "live"}))
    catalog.save(_definition("off", enabled=False, trigger={"events": ["refund.created"]}))
    assert catalog.deliveries_for("refund.created", livemode=False) == []
    assert [d.workflow_id for d in catalog.deliveries_for("refund.created", livemode=True)] == [
        "live-only",
        "live-only",
    ]
    off = catalog.get("off")
    assert off is not None
    assert off.enabled is False


def test_the_cache_is_refreshed_after_ttl_or_invalidate(store: Store) -> None:
    """A change made by another process shows after ttl seconds, or at once on invalidate()."""
    clock = FakeClock()
    catalog = WorkflowCatalog(store, ttl=1.0, clock=clock)
    other_process = WorkflowCatalog(store)
    assert catalog.deliveries_for("charge.succeeded", livemode=True) == []
    other_process.save(_definition())
    clock.now += 0.5
    assert catalog.deliveries_for("charge.succeeded", livemode=True) == []
    clock.now += 0.6
    assert len(catalog.deliveries_for("charge.succeeded", livemode=True)) == 2

    other_process.delete("vip")
    assert len(catalog.deliveries_for("charge.succeeded", livemode=True)) == 2
    catalog.invalidate()
    assert catalog.deliveries_for("charge.succeeded", livemode=True) == []


def test_own_writes_are_visible_at_once(store: Store) -> None:
    """save() and delete() through the catalog invalidate its cache."""
    clock = FakeClock()
    catalog = WorkflowCatalog(store, ttl=3600.0, clock=clock)
    assert catalog.all() == []
    saved = catalog.save(_definition())
    assert catalog.get("vip") == saved
    catalog.save(_definition(actions=[{"type": "delete_person"}]))
    assert catalog.deliveries_for("charge.succeeded", livemode=True) == [
        NewDelivery(workflow_id="vip", action_index=0, action_type="delete_person")
    ]
    assert catalog.delete("vip") is True
    assert catalog.get("vip") is None
    assert catalog.delete("vip") is False


def test_an_edit_by_another_process_replaces_the_cached_workflow(store: Store) -> None:
    """After ttl the edited definition is used, not the one parsed before."""
    clock = FakeClock()
    catalog = WorkflowCatalog(store, ttl=1.0, clock=clock)
    catalog.save(_definition())
    WorkflowCatalog(store).save(_definition(actions=[{"type": "suppress_person"}]))
    clock.now += 2
    workflow = catalog.get("vip")
    assert workflow is not None
    assert [action.type for action in workflow.actions] == ["suppress_person"]


def test_invalid_definitions_are_refused_and_stored_ones_ignored(store: Store) -> None:
    """save() validates first; a stored definition that no longer validates is left out."""
    catalog = WorkflowCatalog(store)
    with pytest.raises(WorkflowValidationError) as caught:
        catalog.save(_definition(trigger={"events": ["charge.nope"]}))
    assert "trigger.events.0" in caught.value.problems
    assert store.get_workflow("vip") is None

    store.save_workflow("broken", "Broken", True, {"id": "broken", "actions": []})
    catalog.save(_definition())
    assert [workflow.id for workflow in catalog.all()] == ["vip"]
    assert catalog.get("broken") is None


def test_the_enabled_column_wins_over_the_definition(store: Store) -> None:
    """A workflow disabled in the store's column is treated as disabled."""
    catalog = WorkflowCatalog(store)
    workflow = catalog.save(_definition())
    store.save_workflow(workflow.id, workflow.name, False, workflow.to_data())
    catalog.invalidate()
    assert catalog.deliveries_for("charge.succeeded", livemode=True) == []
    found = catalog.get("vip")
    assert found is not None
    assert found.enabled is False


def test_concurrent_readers_see_whole_snapshots(store: Store) -> None:
    """Threads reading while another saves and invalidates never see a half-built catalog."""
    catalog = WorkflowCatalog(store, ttl=0.0)
    catalog.save(_definition())
    valid_results = {
        (("vip", 0, "identify"), ("vip", 1, "add_to_segment")),
        (("vip", 0, "delete_person"),),
    }
    errors: list[BaseException] = []
    seen: set[tuple[tuple[str, int, str], ...]] = set()
    start = threading.Barrier(5)

    def read() -> None:
        try:
            start.wait()
            for _ in range(100):
                deliveries = catalog.deliveries_for("charge.succeeded", livemode=True)
                seen.add(tuple((d.workflow_id, d.action_index, d.action_type) for d in deliveries))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    def write() -> None:
        start.wait()
        for index in range(20):
            actions = [{"type": "delete_person"}] if index % 2 == 0 else _definition()["actions"]
            catalog.save(_definition(actions=actions))

    threads = [threading.Thread(target=read) for _ in range(4)] + [threading.Thread(target=write)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert seen
    assert seen <= valid_results
