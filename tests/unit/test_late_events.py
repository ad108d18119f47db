"""The late_events decision (pure) and the workflow field in the model, YAML and editor."""

from __future__ import annotations

import pytest

from billbridge.customerio.requests import CioRequest
from billbridge.customerio.v2 import to_batch_operation
from billbridge.errors import WorkflowValidationError
from billbridge.web.workflow_form import EditorState
from billbridge.workflows.late_events import (
    LATE_AFTER,
    LateSkip,
    apply_late_policy,
    late_decision,
    recorded_policy,
)
from billbridge.workflows.model import validate_workflow
from billbridge.workflows.yaml_io import dump_workflows_yaml, load_workflows_yaml

CREATED = 1_700_000_000
EVENT = CioRequest(
    api="track",
    method="POST",
    path="/api/v1/customers/cus_1/events",
    body={"name": "paid", "id": "01ABC", "timestamp": CREATED, "data": {"amount": 5}},
)
IDENTIFY = CioRequest(api="track", method="PUT", path="/api/v1/customers/cus_1", body={"a": 1})
WORKFLOW = {
    "id": "w",
    "name": "W",
    "trigger": {"events": ["invoice.paid"]},
    "actions": [{"type": "track_event", "name": "paid"}],
}


def test_within_72_hours_is_not_late() -> None:
    """Exactly 72 h after `created` is still on time; one second later is late."""
    assert late_decision(EVENT, created=CREATED, now=CREATED + LATE_AFTER, policy="skip") is None
    decision = late_decision(EVENT, created=CREATED, now=CREATED + LATE_AFTER + 1, policy="skip")
    assert decision is not None
    assert decision.age_seconds == LATE_AFTER + 1


def test_identify_and_app_calls_are_never_late() -> None:
    """Only event calls carry an event time: identify and sends are unaffected."""
    send = CioRequest(api="app", method="POST", path="/v1/send/email", body={"timestamp": 1})
    for request in (IDENTIFY, send):
        assert (
            late_decision(request, created=CREATED, now=CREATED + 9 * 86_400, policy="skip") is None
        )


def test_record_sends_the_request_unchanged() -> None:
    """`record` keeps Stripe's timestamp (no campaign starts, the activity is recorded)."""
    decision = late_decision(EVENT, created=CREATED, now=CREATED + 5 * 86_400, policy="record")
    assert decision is not None
    assert apply_late_policy(EVENT, decision) == EVENT


def test_trigger_moves_the_timestamp_and_keeps_the_id() -> None:
    """`trigger`: timestamp = send time, original under data.stripe_created, same id; the v2
    batch operation carries the same values."""
    now = CREATED + 5 * 86_400
    decision = late_decision(EVENT, created=CREATED, now=now + 0.7, policy="trigger")
    assert decision is not None
    applied = apply_late_policy(EVENT, decision)
    assert isinstance(applied, CioRequest)
    assert applied.body == {
        "name": "paid",
        "id": "01ABC",
        "timestamp": now,
        "data": {"amount": 5, "stripe_created": CREATED},
    }
    assert EVENT.body is not None
    assert EVENT.body["timestamp"] == CREATED  # not mutated
    operation = to_batch_operation(applied)
    assert operation is not None
    assert (operation["timestamp"], operation["attributes"]["stripe_created"]) == (now, CREATED)
    assert operation["id"] == "01ABC"


def test_skip_gives_a_reason_starting_late() -> None:
    """`skip`: nothing is sent; the reason says how old the event was."""
    decision = late_decision(EVENT, created=CREATED, now=CREATED + 4 * 86_400 + 7200, policy="skip")
    assert decision is not None
    skipped = apply_late_policy(EVENT, decision)
    assert isinstance(skipped, LateSkip)
    assert skipped.reason.startswith("late: the Stripe event is 4 d 2 h old")


def test_the_marker_reads_back_from_a_stored_request() -> None:
    """The attempt's `late` marker names the policy; other requests have none."""
    decision = late_decision(EVENT, created=CREATED, now=CREATED + 4 * 86_400, policy="trigger")
    assert decision is not None
    assert recorded_policy({**EVENT.summary(), "late": decision.marker()}) == "trigger"
    assert recorded_policy(EVENT.summary()) is None
    assert recorded_policy(None) is None


def test_workflow_field_defaults_validates_and_round_trips() -> None:
    """`late_events` defaults to record, refuses other words, and survives YAML export
    (the default is left out of exports)."""
    assert validate_workflow(WORKFLOW).late_events == "record"
    with pytest.raises(WorkflowValidationError) as caught:
        validate_workflow({**WORKFLOW, "late_events": "later"})
    assert list(caught.value.problems) == ["late_events"]
    trigger = validate_workflow({**WORKFLOW, "id": "t", "late_events": "trigger"})
    text = dump_workflows_yaml([trigger, validate_workflow(WORKFLOW)])
    assert text.count("late_events: trigger") == 1
    assert "late_events: record" not in text
    assert [w.late_events for w in load_workflows_yaml(text)] == ["trigger", "record"]


def test_editor_form_reads_and_writes_the_policy() -> None:
    """The editor's select posts `late_events`; its data validates into the workflow."""
    state = EditorState.from_data({**WORKFLOW, "late_events": "skip"})
    assert state.late_events == "skip"
    form = {
        "id": "w",
        "name": "W",
        "trigger.events.0": "invoice.paid",
        "trigger.mode": "any",
        "late_events": "trigger",
        "action_count": "1",
        "actions.0.type": "track_event",
        "actions.0.name": "paid",
    }
    data, problems = EditorState.from_form(form).to_data()
    assert problems == {}
    assert validate_workflow(data).late_events == "trigger"
