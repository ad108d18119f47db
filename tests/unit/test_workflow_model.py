"""Workflow definitions: validation names the field, data and YAML round-trip exactly."""

from __future__ import annotations

import copy
import datetime
import time
from typing import Any

import pytest

from billbridge.errors import WorkflowValidationError
from billbridge.workflows.defaults import default_workflows
from billbridge.workflows.event_types import (
    event_type_catalog,
    is_known_event_type,
    known_event_types,
)
from billbridge.workflows.model import (
    AddToSegmentAction,
    SendEmailAction,
    TriggerBroadcastAction,
    Workflow,
    validate_workflow,
)
from billbridge.workflows.yaml_io import dump_workflows_yaml, load_workflows_yaml

VALID: dict[str, Any] = {
    "id": "vip-payments",
    "name": "VIP payments",
    "trigger": {"events": ["charge.succeeded"], "mode": "live"},
    "filter": "object.amount >= 100000",
    "actions": [
        {"type": "identify", "attributes": {"vip": True}},
        {"type": "add_to_segment", "segment_id": 42},
        {"type": "track_event", "name": "vip_payment", "data": {"amount": "{{ object.amount }}"}},
    ],
}


def _problems(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(WorkflowValidationError) as caught:
        validate_workflow(data)
    return caught.value.problems


def _with(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    data.update(changes)
    return data


def test_a_valid_workflow_gets_its_defaults() -> None:
    """Omitted fields take their documented defaults."""
    workflow = validate_workflow(VALID)
    assert workflow.enabled is True
    assert workflow.description == ""
    assert isinstance(workflow.actions[1], AddToSegmentAction)
    assert workflow.actions[1].segment_id == 42


def test_unknown_event_type_names_the_list_item() -> None:
    """A misspelt event type is reported at trigger.events.N with a suggestion."""
    problems = _problems(
        _with(trigger={"events": ["charge.succeeded", "customer.subscription.cancelled"]})
    )
    assert list(problems) == ["trigger.events.1"]
    assert "customer.subscription.deleted" in problems["trigger.events.1"]


def test_wildcards_are_not_event_types() -> None:
    """Only exact Stripe event types are accepted as triggers."""
    assert "trigger.events.0" in _problems(_with(trigger={"events": ["charge.*"]}))
    assert "trigger.events.0" in _problems(_with(trigger={"events": ["*"]}))


def test_missing_segment_id_names_the_action_field() -> None:
    """A missing required action field is reported as actions.N.field."""
    data = _with()
    del data["actions"][1]["segment_id"]
    assert _problems(data) == {"actions.1.segment_id": "required"}


@pytest.mark.parametrize(
    ("action", "path"),
    [
        ({"type": "add_to_segment", "segment_id": "abc"}, "actions.0.segment_id"),
        ({"type": "add_to_segment", "segment_id": 0}, "actions.0.segment_id"),
        ({"type": "track_event"}, "actions.0.name"),
        ({"type": "track_event", "name": ""}, "actions.0.name"),
        ({"type": "send_email"}, "actions.0.transactional_message_id"),
        (
            {"type": "trigger_broadcast", "broadcast_id": 1, "recipients": "x"},
            "actions.0.recipients",
        ),
        ({"type": "identify", "atributes": {}}, "actions.0.atributes"),
        ({"type": "explode"}, "actions.0.type"),
        ({"name": "no type"}, "actions.0.type"),
    ],
)
def test_action_errors_name_the_field(action: dict[str, Any], path: str) -> None:
    """Every action problem (bad value, unknown field, unknown type) names its path."""
    assert path in _problems(_with(actions=[action]))


@pytest.mark.parametrize(
    ("workflow_id", "valid"),
    [
        ("payment-failed", True),
        ("a", True),
        ("0_x-y", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("Payment", False),
        ("-leading", False),
        ("has space", False),
        ("", False),
    ],
)
def test_workflow_id_is_a_slug(workflow_id: str, valid: bool) -> None:
    """Ids are 1-64 of [a-z0-9_-], starting with a letter or digit."""
    if valid:
        assert validate_workflow(_with(id=workflow_id)).id == workflow_id
    else:
        assert "id" in _problems(_with(id=workflow_id))


def test_bad_template_syntax_names_its_path() -> None:
    """A template or filter that does not compile is refused at validation, by path."""
    data = _with(filter="object.amount >")
    data["actions"][2]["data"] = {"amount": "{{ object.amount", "ok": "{{ object.id }}"}
    data["actions"][0]["attributes"] = {"tags": ["fine", "{% for %}"]}
    problems = _problems(data)
    assert set(problems) == {"filter", "actions.2.data.amount", "actions.0.attributes.tags.1"}


def test_send_email_from_override_uses_the_documented_name() -> None:
    """The `from` override is read and written as `from`; its template is checked too."""
    action = {"type": "send_email", "transactional_message_id": "welcome", "from": "{{ x"}
    assert "actions.0.from" in _problems(_with(actions=[action]))
    action["from"] = "Billing <billing@example.com>"
    workflow = validate_workflow(_with(actions=[action]))
    send = workflow.actions[0]
    assert isinstance(send, SendEmailAction)
    assert send.from_ == "Billing <billing@example.com>"
    assert send.to == "{{ person.email }}"
    assert workflow.to_data()["actions"][0] == {
        "type": "send_email",
        "transactional_message_id": "welcome",
        "to": "{{ person.email }}",
        "message_data": {},
        "from": "Billing <billing@example.com>",
    }


def test_empty_lists_and_blank_names_are_refused() -> None:
    """A workflow needs a name, at least one trigger event and at least one action."""
    problems = _problems(_with(name="  ", trigger={"events": []}, actions=[]))
    assert set(problems) == {"name", "trigger.events", "actions"}


def test_mapping_values_must_be_json_data() -> None:
    """A value that is not JSON data (e.g. a YAML date) is refused at its path."""
    data = _with()
    data["actions"][0]["attributes"] = {"since": datetime.date(2024, 1, 1)}
    assert "actions.0.attributes.since" in _problems(data)


@pytest.mark.parametrize(
    ("mode", "livemode", "expected"),
    [
        ("any", True, True),
        ("any", False, True),
        ("live", True, True),
        ("live", False, False),
        ("test", False, True),
        ("test", True, False),
    ],
)
def test_matches_by_event_type_and_mode(mode: str, livemode: bool, expected: bool) -> None:
    """A workflow matches its trigger events in its mode; other event types never match."""
    workflow = validate_workflow(_with(trigger={"events": ["charge.succeeded"], "mode": mode}))
    assert workflow.matches("charge.succeeded", livemode) is expected
    assert workflow.matches("charge.failed", livemode) is False


def test_to_data_round_trips() -> None:
    """to_data() gives JSON data in the documented shape that validates to an equal workflow."""
    workflow = validate_workflow(
        _with(actions=[*VALID["actions"], {"type": "trigger_broadcast", "broadcast_id": 9}])
    )
    data = workflow.to_data()
    assert list(data) == ["id", "name", "enabled", "description", "trigger", "filter", "actions"]
    assert data["actions"][3] == {
        "type": "trigger_broadcast",
        "broadcast_id": 9,
        "data": {},
        "recipients": "person",
    }
    assert validate_workflow(data) == workflow
    assert isinstance(validate_workflow(data).actions[3], TriggerBroadcastAction)


def test_every_default_workflow_validates_and_round_trips() -> None:
    """The default workflows pass validation (templates included) through data and YAML."""
    defaults = default_workflows()
    for workflow in defaults:
        assert validate_workflow(workflow.to_data()) == workflow
    assert load_workflows_yaml(dump_workflows_yaml(defaults)) == defaults


def test_yaml_dump_is_stable_and_readable() -> None:
    """Dumping twice gives the same text; templates stay on one line; comments lead."""
    text = dump_workflows_yaml(default_workflows())
    assert text == dump_workflows_yaml(default_workflows())
    assert text.startswith("# Billbridge workflows.")
    assert "\n\n- id: customer-updated\n" in text
    assert "current_period_end: '{{ object.items.data[0].current_period_end or" in text


def test_yaml_accepts_a_single_workflow_mapping() -> None:
    """A file may hold one workflow without the `workflows:` list."""
    text = """
id: refunds
name: Refunds
trigger: {events: [charge.refunded]}
actions:
  - type: track_event
    name: refund
    data: {amount: "{{ object.amount_refunded }}"}
"""
    [workflow] = load_workflows_yaml(text)
    assert workflow.id == "refunds"
    assert workflow.trigger.mode == "any"


def test_yaml_problems_are_prefixed_with_the_list_position() -> None:
    """Problems in the Nth workflow of a list are reported as workflows.N.<path>."""
    text = """
workflows:
  - id: ok
    name: OK
    trigger: {events: [invoice.paid]}
    actions: [{type: delete_person}]
  - id: broken
    name: Broken
    trigger: {events: [invoice.payed]}
    actions:
      - {type: identify}
      - {type: add_to_segment}
  - id: ok
    name: Duplicate
    trigger: {events: [invoice.paid]}
    actions: [{type: suppress_person}]
"""
    with pytest.raises(WorkflowValidationError) as caught:
        load_workflows_yaml(text)
    assert set(caught.value.problems) == {
        "workflows.1.trigger.events.0",
        "workflows.1.actions.1.segment_id",
        "workflows.2.id",
    }


def test_yaml_syntax_error_has_line_and_column() -> None:
    """Broken YAML is one problem under `yaml`, with the line and column."""
    with pytest.raises(WorkflowValidationError) as caught:
        load_workflows_yaml("workflows:\n  - id: x\n    name: [unclosed\n")
    assert list(caught.value.problems) == ["yaml"]
    assert caught.value.problems["yaml"].startswith("line ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", []), ("workflows:\n", []), ("workflows: []\n", [])],
)
def test_yaml_without_workflows_is_empty(text: str, expected: list[Workflow]) -> None:
    """An empty file or an empty list loads as no workflows."""
    assert load_workflows_yaml(text) == expected


@pytest.mark.parametrize("text", ["- just\n- a list\n", "42\n", "workflows: {id: x}\n"])
def test_yaml_of_the_wrong_shape_is_refused(text: str) -> None:
    """A document that is neither `workflows:` nor a workflow mapping is refused."""
    with pytest.raises(WorkflowValidationError):
        load_workflows_yaml(text)


def test_event_type_list_ships_with_the_package() -> None:
    """The packaged list knows the types the defaults use and describes them."""
    assert len(known_event_types()) > 200
    assert is_known_event_type("invoice.payment_failed")
    assert not is_known_event_type("invoice.*")
    described = {info.name: info for info in event_type_catalog()}
    assert described["charge.failed"].object_type == "Charge"
    for workflow in default_workflows():
        assert all(is_known_event_type(name) for name in workflow.trigger.events)


def test_the_id_new_is_reserved_for_the_dashboards_create_page() -> None:
    """`new` cannot be a workflow id: /workflows/new is the create page."""
    data = {
        "id": "new",
        "name": "New",
        "trigger": {"events": ["charge.failed"]},
        "actions": [{"type": "track_event", "name": "x"}],
    }
    with pytest.raises(WorkflowValidationError) as caught:
        validate_workflow(data)
    assert "reserved" in caught.value.problems["id"]


BILLION_LAUGHS = "workflows:\n" + "".join(
    f"  - &{name} [{', '.join([ref] * 9)}]\n"
    for name, ref in zip("abcdefghi", ['"lol"', *("*" + n for n in "abcdefgh")], strict=True)
)


def test_yaml_aliases_are_refused_quickly_with_a_clear_error() -> None:
    """A few hundred bytes of nested aliases (9**9 nodes once expanded) is refused at the
    first alias, in milliseconds, naming the line; a plain anchor alone is harmless."""
    assert len(BILLION_LAUGHS) < 500
    started = time.perf_counter()
    with pytest.raises(WorkflowValidationError) as caught:
        load_workflows_yaml(BILLION_LAUGHS)
    assert time.perf_counter() - started < 0.5
    assert caught.value.problems == {
        "yaml": "line 3, column 9: YAML aliases (*name) are not allowed in workflow files:"
        " write the value out"
    }
