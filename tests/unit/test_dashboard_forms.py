"""The dashboard's pure parts: the workflow form, the sample fields and the chart."""

from __future__ import annotations

import pytest

from billbridge.errors import WorkflowValidationError
from billbridge.store.records import HourlyVolume
from billbridge.web.chart import volume_chart
from billbridge.web.pages_events import parse_search
from billbridge.web.sample_fields import fields_for
from billbridge.web.workflow_form import EditorState, action_specs, parse_value
from billbridge.workflows.defaults import default_workflows
from billbridge.workflows.model import ACTION_TYPES, validate_workflow


def test_every_action_type_of_the_model_has_an_editor() -> None:
    """The editor offers every action type the core supports, with the model's fields."""
    specs = action_specs()
    assert set(ACTION_TYPES) <= set(specs)
    kinds = {f.name: f.kind for f in specs["send_email"].fields}
    assert kinds["message_data"] == "mapping"
    assert kinds["transactional_message_id"] == "id"
    assert kinds["from"] == "text"
    assert {f.name: f.kind for f in specs["trigger_broadcast"].fields}["recipients"] == "choice"


@pytest.mark.parametrize("workflow", default_workflows(), ids=lambda w: w.id)
def test_default_workflows_round_trip_through_the_form(workflow: object) -> None:
    """A workflow shown in the editor and posted back unchanged is the same workflow."""
    data = workflow.to_data()  # type: ignore[attr-defined]
    state = EditorState.from_data(data)
    form: dict[str, str] = {
        "id": state.id,
        "name": state.name,
        "description": state.description,
        "trigger.mode": state.mode,
        "filter": state.filter,
        "action_count": str(len(state.actions)),
        **({"enabled": "on"} if state.enabled else {}),
    }
    for k, event in enumerate(state.events):
        form[f"trigger.events.{k}"] = event
    for i, action in enumerate(state.actions):
        form[f"actions.{i}.type"] = action.type
        for name, value in action.values.items():
            form[f"actions.{i}.{name}"] = value
        for name, flag in action.flags.items():
            if flag:
                form[f"actions.{i}.{name}"] = "on"
        for name, rows in action.mappings.items():
            for r, row in enumerate(rows):
                form[f"actions.{i}.{name}.key.{r}"] = row.key
                form[f"actions.{i}.{name}.value.{r}"] = row.value
    posted, problems = EditorState.from_form(form).to_data()
    assert problems == {}
    assert validate_workflow(posted).to_data() == data


def test_form_problems_and_validation_paths_point_at_fields() -> None:
    """A missing segment id and a row without a value are reported by dotted path."""
    state = EditorState(id="wf", name="WF", events=["charge.failed"])
    state.apply("add_action", "track_event")
    state.apply("add_action", "add_to_segment")
    state.actions[0].values["name"] = "paid"
    state.apply("add_row:0:data")
    state.actions[0].mappings["data"][0].key = "amount"
    data, problems = state.to_data()
    assert problems == {"actions.0.data.amount": "give a value, or remove the row"}
    with pytest.raises(WorkflowValidationError) as caught:
        validate_workflow(data)
    assert "actions.1.segment_id" in caught.value.problems
    state.apply("remove_action:1")
    state.apply("remove_row:0:data:0")
    data, problems = state.to_data()
    assert problems == {}
    assert validate_workflow(data).actions[0].type == "track_event"


def test_mapping_values_keep_json_data_and_strings() -> None:
    """Numbers, booleans and JSON objects stay data; templates and words stay strings."""
    assert parse_value("42") == 42
    assert parse_value("true") is True
    assert parse_value('{"a": 1}') == {"a": 1}
    assert parse_value("{{ object.amount }}") == "{{ object.amount }}"
    assert parse_value("gold") == "gold"


def test_sample_fields_come_from_a_real_sample_or_a_generic_list() -> None:
    """A trigger with a sample offers its paths with examples; others get generic fields."""
    charge = fields_for(["charge.failed"])
    assert charge.event_type == "charge.failed"
    by_path = {f.path: f for f in charge.fields}
    assert by_path["object.amount"].template == "{{ object.amount }}"
    assert by_path["object.amount"].example.isdigit()
    assert "object.payment_method_details.card.last4" in by_path
    generic = fields_for(["balance.available"])
    assert generic.event_type is None
    assert "object.id" in {f.path for f in generic.fields}


def test_chart_draws_bars_rate_line_and_gaps() -> None:
    """Bars scale to the busiest hour; the rate line breaks where nothing finished."""
    volume = [
        HourlyVolume(0.0, 10, 9, 1, 0),
        HourlyVolume(3600.0, 0, 0, 0, 0),
        HourlyVolume(7200.0, 5, 5, 0, 0),
    ]
    chart = volume_chart(volume)
    assert len(chart.bars) == 3
    assert chart.bars[0].height > chart.bars[2].height > chart.bars[1].height == 0
    assert len(chart.rate_lines) == 2  # a gap at the empty hour
    assert [p.failed for p in chart.rate_points] == [True, False]
    assert "15 events" in chart.summary
    assert "93.3%" in chart.summary


def test_event_search_reports_bad_fields() -> None:
    """A bad status or time is reported at its field and left out of the filter."""
    search = parse_search({"status": "nope", "since": "yesterday", "email": " a@b.io "})
    assert set(search.errors) == {"status", "since"}
    assert search.event_filter.status is None
    assert search.event_filter.email == "a@b.io"
    assert "email=a%40b.io" in search.query()
