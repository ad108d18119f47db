"""The workflow editor's form: fields read from the model, form <-> workflow data, edits.

    specs = action_specs()                       # every action type and its fields
    state = EditorState.from_data(workflow.to_data())
    state = EditorState.from_form(form)          # what the browser posted
    state.apply(op)                              # "add_action", "remove_action:1", ...
    data, problems = state.to_data()             # then validate_workflow(data)

Fields come from the pydantic models of `workflows.model`, so a field added there shows
up in the editor: a `dict` field becomes a key/value mapping editor, a `Literal` a
select, a `bool` a checkbox, an `int` a number and anything else a text input.
"""

from __future__ import annotations

import json
import types
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from billbridge.workflows.late_events import (
    DEFAULT_LATE_EVENTS,
    LATE_EVENTS_POLICIES,
    POLICY_HELP,
)
from billbridge.workflows.model import ACTION_TYPES, Action, TriggerMode

FieldKind = Literal["text", "number", "id", "choice", "bool", "mapping"]
TRIGGER_MODES: tuple[str, ...] = get_args(TriggerMode)
# The `late_events` select: (value, explanation), the default first.
LATE_EVENTS_CHOICES: tuple[tuple[str, str], ...] = tuple(
    (policy, POLICY_HELP[policy]) for policy in LATE_EVENTS_POLICIES
)

ACTION_LABELS: dict[str, str] = {
    "identify": "Identify the person (create or update attributes)",
    "track_event": "Track an event",
    "delete_person": "Delete the person",
    "suppress_person": "Delete and suppress the person",
    "unsuppress_person": "Unsuppress the person",
    "add_to_segment": "Add to a manual segment",
    "remove_from_segment": "Remove from a manual segment",
    "send_email": "Send a transactional email",
    "trigger_broadcast": "Trigger an API broadcast",
}

# Labels clearer than the field's name (the workflow itself has a "Name" too).
FIELD_LABELS: dict[str, str] = {"name": "Event name", "to": "To"}

# Help shown under a field when the model gives none (keyed by action field name).
FIELD_HELP: dict[str, str] = {
    "attributes": "Person attributes. email and stripe_customer_id are always sent.",
    "name": "The Customer.io event name, e.g. payment_failed.",
    "data": "Event data. stripe_event_id, stripe_object_id and livemode are always sent.",
    "segment_id": "The id of a manual segment in Customer.io (a number).",
    "transactional_message_id": "The id or trigger name of the transactional message.",
    "to": "Recipient address; a template, by default the person's email.",
    "message_data": "Data for the message's Liquid template.",
    "subject": "Optional: overrides the message's subject.",
    "from": "Optional: overrides the sender.",
    "body": "Optional: overrides the message's body.",
    "broadcast_id": "The id of an API-triggered broadcast in Customer.io.",
    "recipients": "person: only this person; all: the broadcast's whole audience.",
    "include_profile": "Also send the billing profile attributes kept from Stripe.",
}


@dataclass(frozen=True)
class FieldSpec:
    """One editable field of an action type."""

    name: str  # the key in the workflow data (the alias, e.g. "from")
    label: str
    kind: FieldKind
    required: bool
    default: Any
    choices: tuple[str, ...] = ()
    help: str = ""


@dataclass(frozen=True)
class ActionSpec:
    type: str
    label: str
    description: str
    fields: tuple[FieldSpec, ...]


def _label(name: str) -> str:
    words = name.replace("_", " ").strip()
    words = words[:1].upper() + words[1:]
    return words.replace(" id", " ID")


def _kind(annotation: Any) -> tuple[FieldKind, tuple[str, ...]]:
    origin = get_origin(annotation)
    if origin is Literal:
        return "choice", tuple(str(arg) for arg in get_args(annotation))
    if origin in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return _kind(members[0])
        if set(members) == {int, str}:
            return "id", ()
        return "text", ()
    if origin is dict or annotation is dict:
        return "mapping", ()
    if annotation is bool:
        return "bool", ()
    if annotation is int:
        return "number", ()
    return "text", ()


def _field_spec(name: str, info: FieldInfo) -> FieldSpec:
    kind, choices = _kind(info.annotation)
    key = info.alias or name
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    return FieldSpec(
        name=key,
        label=FIELD_LABELS.get(key, _label(key)),
        kind=kind,
        required=info.is_required(),
        default=default,
        choices=choices,
        help=info.description or FIELD_HELP.get(key, ""),
    )


def _action_models() -> list[type[BaseModel]]:
    union = get_args(Action)[0]  # Annotated[Union[...], Field(discriminator=...)]
    return [model for model in get_args(union) if isinstance(model, type)]


@cache
def action_specs() -> dict[str, ActionSpec]:
    """Every action type the core supports, in ACTION_TYPES order, with its fields."""
    specs: dict[str, ActionSpec] = {}
    for model in _action_models():
        action_type = str(model.model_fields["type"].default)
        fields = tuple(
            _field_spec(name, info) for name, info in model.model_fields.items() if name != "type"
        )
        doc = " ".join((model.__doc__ or "").split())
        specs[action_type] = ActionSpec(
            action_type, ACTION_LABELS.get(action_type, _label(action_type)), doc, fields
        )
    order = {name: index for index, name in enumerate(ACTION_TYPES)}
    return dict(sorted(specs.items(), key=lambda item: order.get(item[0], len(order))))


# Values ---------------------------------------------------------------------------------


def value_text(value: Any) -> str:
    """A mapping value as the editor shows it: strings as they are, other data as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def parse_value(text: str) -> Any:
    """A mapping value from the editor: JSON numbers, true/false/null, lists and objects
    are kept as data; anything else is a string (usually a template)."""
    stripped = text.strip()
    if stripped and (stripped[0] in "[{-" or stripped[0].isdigit() or stripped in _LITERALS):
        try:
            parsed = json.loads(stripped)
        except ValueError:
            return text
        if not isinstance(parsed, str):
            return parsed
    return text


_LITERALS = ("true", "false", "null")


@dataclass
class MappingRow:
    key: str = ""
    value: str = ""


@dataclass
class ActionState:
    """One action as the form holds it: scalar fields as text, mappings as rows."""

    type: str
    values: dict[str, str] = field(default_factory=dict)
    flags: dict[str, bool] = field(default_factory=dict)
    mappings: dict[str, list[MappingRow]] = field(default_factory=dict)

    @property
    def spec(self) -> ActionSpec | None:
        return action_specs().get(self.type)

    @classmethod
    def blank(cls, action_type: str) -> ActionState:
        return cls.from_data({"type": action_type})

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> ActionState:
        action_type = str(data.get("type", ""))
        state = cls(action_type)
        spec = action_specs().get(action_type)
        for field_spec in spec.fields if spec else ():
            given = data.get(field_spec.name, field_spec.default)
            if field_spec.kind == "mapping":
                rows = given if isinstance(given, dict) else {}
                state.mappings[field_spec.name] = [
                    MappingRow(str(key), value_text(value)) for key, value in rows.items()
                ]
            elif field_spec.kind == "bool":
                state.flags[field_spec.name] = bool(given)
            else:
                state.values[field_spec.name] = "" if given is None else str(given)
        return state

    def to_data(self, index: int, problems: dict[str, str]) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type}
        spec = self.spec
        for field_spec in spec.fields if spec else ():
            name = field_spec.name
            if field_spec.kind == "mapping":
                mapping: dict[str, Any] = {}
                for row in self.mappings.get(name, []):
                    key = row.key.strip()
                    if not key and not row.value.strip():
                        continue
                    path = f"actions.{index}.{name}.{key}"
                    if not key:
                        problems[f"actions.{index}.{name}"] = "every value needs a name"
                    elif key in mapping:
                        problems[path] = f"{key!r} is listed twice"
                    elif not row.value.strip():
                        problems[path] = "give a value, or remove the row"
                    else:
                        mapping[key] = parse_value(row.value)
                data[name] = mapping
            elif field_spec.kind == "bool":
                data[name] = self.flags.get(name, False)
            else:
                text = self.values.get(name, "").strip()
                if not text:
                    continue  # absent: the model's default applies, or "required"
                if field_spec.kind == "id" and text.isdigit():
                    data[name] = int(text)
                else:
                    data[name] = text
        return data


@dataclass
class EditorState:
    """The whole workflow form."""

    id: str = ""
    name: str = ""
    description: str = ""
    enabled: bool = True
    events: list[str] = field(default_factory=lambda: [""])
    mode: str = "any"
    filter: str = ""
    late_events: str = DEFAULT_LATE_EVENTS
    actions: list[ActionState] = field(default_factory=list)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> EditorState:
        trigger = data.get("trigger") or {}
        return cls(
            id=str(data.get("id", "")),
            name=str(data.get("name", "")),
            description=str(data.get("description", "")),
            enabled=bool(data.get("enabled", True)),
            events=[str(event) for event in trigger.get("events", [])] or [""],
            mode=str(trigger.get("mode", "any")),
            filter=str(data.get("filter") or ""),
            late_events=str(data.get("late_events") or DEFAULT_LATE_EVENTS),
            actions=[ActionState.from_data(action) for action in data.get("actions", [])],
        )

    @classmethod
    def from_form(cls, form: dict[str, str]) -> EditorState:
        """Read the posted form (field names as written by workflow_edit.html)."""
        events = [form[key] for key in _indexed(form, "trigger.events.")]
        state = cls(
            id=form.get("id", "").strip(),
            name=form.get("name", ""),
            description=form.get("description", ""),
            enabled=form.get("enabled") == "on",
            events=[event.strip() for event in events] or [""],
            mode=form.get("trigger.mode", "any"),
            filter=form.get("filter", ""),
            late_events=form.get("late_events", DEFAULT_LATE_EVENTS),
        )
        count = int(form.get("action_count", "0") or 0)
        for index in range(min(count, 50)):
            prefix = f"actions.{index}."
            action = ActionState(form.get(prefix + "type", ""))
            spec = action.spec
            for field_spec in spec.fields if spec else ():
                name = prefix + field_spec.name
                if field_spec.kind == "mapping":
                    keys = _indexed(form, name + ".key.")
                    action.mappings[field_spec.name] = [
                        MappingRow(form[key], form.get(key.replace(".key.", ".value.", 1), ""))
                        for key in keys
                    ]
                elif field_spec.kind == "bool":
                    action.flags[field_spec.name] = form.get(name) == "on"
                else:
                    action.values[field_spec.name] = form.get(name, "")
            state.actions.append(action)
        return state

    def to_data(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The workflow data for `validate_workflow`, and problems the form itself found."""
        problems: dict[str, str] = {}
        data: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "enabled": self.enabled,
            "trigger": {
                "events": [event for event in self.events if event],
                "mode": self.mode,
            },
            "actions": [action.to_data(i, problems) for i, action in enumerate(self.actions)],
        }
        if self.description.strip():
            data["description"] = self.description.strip()
        if self.filter.strip():
            data["filter"] = self.filter.strip()
        if self.late_events != DEFAULT_LATE_EVENTS:
            data["late_events"] = self.late_events
        return data, problems

    def apply(self, op: str, new_action_type: str = "") -> None:
        """An editing step (a button other than Save): add or remove rows and actions."""
        name, _, argument = op.partition(":")
        parts = argument.split(":") if argument else []
        if name == "add_event":
            self.events.append("")
        elif name == "remove_event" and parts and parts[0].isdigit():
            index = int(parts[0])
            if 0 <= index < len(self.events):
                del self.events[index]
            self.events = self.events or [""]
        elif name == "add_action" and new_action_type in action_specs():
            self.actions.append(ActionState.blank(new_action_type))
        elif name in ("remove_action", "move_up", "move_down", "retype") and parts:
            self._action_op(name, int(parts[0]) if parts[0].isdigit() else -1)
        elif name in ("add_row", "remove_row") and len(parts) >= 2 and parts[0].isdigit():
            self._row_op(name, int(parts[0]), parts[1], parts[2] if len(parts) > 2 else "")

    def _action_op(self, name: str, index: int) -> None:
        if not 0 <= index < len(self.actions):
            return
        if name == "remove_action":
            del self.actions[index]
        elif name == "move_up" and index > 0:
            self.actions[index - 1], self.actions[index] = (
                self.actions[index],
                self.actions[index - 1],
            )
        elif name == "move_down" and index + 1 < len(self.actions):
            self.actions[index + 1], self.actions[index] = (
                self.actions[index],
                self.actions[index + 1],
            )
        elif name == "retype":
            # Keep what the new type shares with the old one (e.g. `data`).
            old = self.actions[index]
            fresh = ActionState.blank(old.type)
            for key in fresh.values:
                fresh.values[key] = old.values.get(key, fresh.values[key])
            for key in fresh.mappings:
                fresh.mappings[key] = old.mappings.get(key, fresh.mappings[key])
            for key in fresh.flags:
                fresh.flags[key] = old.flags.get(key, fresh.flags[key])
            self.actions[index] = fresh

    def _row_op(self, name: str, index: int, field_name: str, row: str) -> None:
        if not 0 <= index < len(self.actions):
            return
        rows = self.actions[index].mappings.setdefault(field_name, [])
        if name == "add_row":
            rows.append(MappingRow())
        elif row.isdigit() and int(row) < len(rows):
            del rows[int(row)]


def _indexed(form: dict[str, str], prefix: str) -> list[str]:
    """The form keys `prefix0`, `prefix1`, ... present, in numeric order."""
    keys = [key for key in form if key.startswith(prefix) and key[len(prefix) :].isdigit()]
    return sorted(keys, key=lambda key: int(key[len(prefix) :]))
