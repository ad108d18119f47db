"""The workflow model: a trigger (Stripe event types), an optional filter, ordered actions.

    workflow = validate_workflow({
        "id": "payment-failed", "name": "Payment failed",
        "trigger": {"events": ["charge.failed"]},
        "actions": [{"type": "track_event", "name": "payment_failed"}],
    })
    workflow.matches("charge.failed", livemode=True)  # True

`validate_workflow` is the only door in: it turns every problem (pydantic's and template
syntax) into one `WorkflowValidationError` whose `problems` map dotted field paths such as
`actions.1.segment_id` to a message a person can act on. The format is docs/internals.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
)
from pydantic_core import ErrorDetails

from billbridge.errors import WorkflowValidationError
from billbridge.workflows.event_types import is_known_event_type, suggest_event_type
from billbridge.workflows.late_events import DEFAULT_LATE_EVENTS, LateEventsPolicy
from billbridge.workflows.templates import filter_syntax_problem, template_problems

WORKFLOW_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_WORKFLOW_ID = re.compile(WORKFLOW_ID_PATTERN)
# Ids a stored workflow cannot take, and why.
RESERVED_WORKFLOW_IDS = {
    "new": "a dashboard page",  # /workflows/new is the create page
    "billbridge-erasure": "the built-in erasure workflow",  # workflows/builtin.py
}

TriggerMode = Literal["live", "test", "any"]
TemplateMapping = dict[str, JsonValue]


def _known_event_type(name: str) -> str:
    if is_known_event_type(name):
        return name
    hint = suggest_event_type(name)
    if hint is not None:
        raise ValueError(f"unknown Stripe event type {name!r}; did you mean {hint!r}?")
    raise ValueError(f"unknown Stripe event type {name!r} (wildcards are not supported)")


EventType = Annotated[str, AfterValidator(_known_event_type)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Trigger(_Frozen):
    """Which Stripe events start the workflow, and in which mode (live, test or any)."""

    events: list[EventType] = Field(min_length=1)
    mode: TriggerMode = "any"

    @field_validator("events")
    @classmethod
    def _no_duplicates(cls, events: list[str]) -> list[str]:
        seen: set[str] = set()
        for name in events:
            if name in seen:
                raise ValueError(f"{name!r} is listed twice")
            seen.add(name)
        return events


class IdentifyAction(_Frozen):
    """Create or update the person; `attributes` are templates (email and
    stripe_customer_id are always added by the planner)."""

    type: Literal["identify"] = "identify"
    attributes: TemplateMapping = Field(default_factory=dict)
    # Send the customer's current billing profile (SPEC §4), computed when the delivery
    # runs; mapped attributes are applied over it.
    include_profile: bool = False


class TrackEventAction(_Frozen):
    """Send a Customer.io event with a deterministic id; `data` values are templates."""

    type: Literal["track_event"] = "track_event"
    name: str = Field(min_length=1, max_length=100)
    data: TemplateMapping = Field(default_factory=dict)


class DeletePersonAction(_Frozen):
    """Delete the person from Customer.io."""

    type: Literal["delete_person"] = "delete_person"


class SuppressPersonAction(_Frozen):
    """Delete and suppress the person: Customer.io will not re-create them."""

    type: Literal["suppress_person"] = "suppress_person"


class UnsuppressPersonAction(_Frozen):
    """Lift a suppression so the person may be identified again."""

    type: Literal["unsuppress_person"] = "unsuppress_person"


class CustomerDeletedPolicyAction(_Frozen):
    """Apply BILLBRIDGE_CUSTOMER_DELETED_POLICY to the person: `keep` (nothing to do),
    `suppress` or `delete`."""

    type: Literal["customer_deleted_policy"] = "customer_deleted_policy"


class AddToSegmentAction(_Frozen):
    """Add the person to a manual segment (the segment must exist in Customer.io)."""

    type: Literal["add_to_segment"] = "add_to_segment"
    segment_id: int = Field(gt=0)


class RemoveFromSegmentAction(_Frozen):
    """Remove the person from a manual segment."""

    type: Literal["remove_from_segment"] = "remove_from_segment"
    segment_id: int = Field(gt=0)


class SendEmailAction(_Frozen):
    """Send a transactional message (App API). Not deduplicated by Customer.io: a send
    that already succeeded is repeated only by a forced replay."""

    type: Literal["send_email"] = "send_email"
    transactional_message_id: int | str
    to: str = Field(default="{{ person.email }}", min_length=1)
    message_data: TemplateMapping = Field(default_factory=dict)
    subject: str | None = None
    from_: str | None = Field(default=None, alias="from")
    body: str | None = None

    @field_validator("transactional_message_id")
    @classmethod
    def _message_id(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value <= 0:
            raise ValueError("must be a positive message id or a trigger name")
        if isinstance(value, str) and not value.strip():
            raise ValueError("must be a positive message id or a trigger name")
        return value


class TriggerBroadcastAction(_Frozen):
    """Trigger an API-triggered broadcast for this person or for its whole audience."""

    type: Literal["trigger_broadcast"] = "trigger_broadcast"
    broadcast_id: int = Field(gt=0)
    data: TemplateMapping = Field(default_factory=dict)
    recipients: Literal["person", "all"] = "person"


Action = Annotated[
    IdentifyAction
    | TrackEventAction
    | DeletePersonAction
    | SuppressPersonAction
    | UnsuppressPersonAction
    | CustomerDeletedPolicyAction
    | AddToSegmentAction
    | RemoveFromSegmentAction
    | SendEmailAction
    | TriggerBroadcastAction,
    Field(discriminator="type"),
]

ACTION_TYPES: tuple[str, ...] = (
    "identify",
    "track_event",
    "delete_person",
    "suppress_person",
    "unsuppress_person",
    "customer_deleted_policy",
    "add_to_segment",
    "remove_from_segment",
    "send_email",
    "trigger_broadcast",
)

# The template-bearing fields of each action type, checked for syntax at validation.
_TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {
    "identify": ("attributes",),
    "track_event": ("name", "data"),
    "send_email": ("transactional_message_id", "to", "message_data", "subject", "from_", "body"),
    "trigger_broadcast": ("data",),
}


class Workflow(_Frozen):
    """One workflow: when `trigger` (and `filter`) match, run `actions` in order."""

    id: str = Field(pattern=WORKFLOW_ID_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    enabled: bool = True
    description: str = ""
    trigger: Trigger
    filter: str | None = None
    actions: list[Action] = Field(min_length=1, max_length=50)
    # Event calls sent more than 72 h after Stripe created the event (workflows/late_events.py).
    late_events: LateEventsPolicy = DEFAULT_LATE_EVENTS

    @field_validator("id")
    @classmethod
    def _id_not_reserved(cls, workflow_id: str) -> str:
        if workflow_id in RESERVED_WORKFLOW_IDS:
            why = RESERVED_WORKFLOW_IDS[workflow_id]
            raise ValueError(f"{workflow_id!r} is reserved ({why}); choose another id")
        return workflow_id

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("must not be blank")
        return name.strip()

    @field_validator("filter")
    @classmethod
    def _blank_filter_is_none(cls, expr: str | None) -> str | None:
        return expr if expr is not None and expr.strip() else None

    def matches(self, event_type: str, livemode: bool) -> bool:
        """Whether the trigger covers this event (ignores `enabled` and the filter)."""
        if event_type not in self.trigger.events:
            return False
        mode = self.trigger.mode
        return mode == "any" or (mode == "live") == livemode

    def to_data(self) -> dict[str, Any]:
        """JSON-able data in the documented format; `validate_workflow` reads it back."""
        data = self.model_dump(mode="json", by_alias=True)
        if data.get("filter") is None:
            data.pop("filter", None)
        if data.get("late_events") == DEFAULT_LATE_EVENTS:
            data.pop("late_events")  # the default; exports stay as they were
        data["actions"] = [
            {
                key: value
                for key, value in action.items()
                # include_profile: false is the default; leave it out of exports.
                if value is not None and not (key == "include_profile" and value is False)
            }
            for action in data["actions"]
        ]
        return data


# Validation -------------------------------------------------------------------------------

_MESSAGES = {
    "missing": "required",
    "extra_forbidden": "unknown field",
    "string_pattern_mismatch": (
        "must be 1-64 characters: lowercase letters, digits, '-' or '_', starting with a"
        " letter or digit"
    ),
    "too_short": "must not be empty",
    "string_too_short": "must not be empty",
}


def _error_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for index, part in enumerate(loc):
        # A discriminated union puts the tag into the location: actions.1.add_to_segment.x
        if (
            index >= 2
            and loc[index - 2] == "actions"
            and isinstance(loc[index - 1], int)
            and part in ACTION_TYPES
        ):
            continue
        parts.append(str(part))
    return ".".join(parts) or "workflow"


def _error_message(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind == "union_tag_not_found":
        return "missing 'type': one of " + ", ".join(ACTION_TYPES)
    if kind == "union_tag_invalid":
        given = error.get("input", {})
        tag = given.get("type") if isinstance(given, Mapping) else None
        return f"unknown action type {tag!r}: expected one of " + ", ".join(ACTION_TYPES)
    if kind == "value_error":
        ctx = error.get("ctx") or {}
        return str(ctx.get("error", error["msg"]))
    if kind in ("too_short", "string_too_short") and error["loc"][-1:] == ("name",):
        return "must not be empty"
    if kind == "string_pattern_mismatch" and error["loc"] != ("id",):
        return error["msg"]
    return _MESSAGES.get(kind, error["msg"])


def _pydantic_problems(exc: ValidationError) -> dict[str, str]:
    problems: dict[str, str] = {}
    for error in exc.errors(include_url=False):
        path = _error_path(error["loc"])
        if error["type"] in ("union_tag_not_found", "union_tag_invalid"):
            path = f"{path}.type"
        problems.setdefault(path, _error_message(error))
    return problems


def _syntax_problems(workflow: Workflow) -> dict[str, str]:
    problems: dict[str, str] = {}
    if workflow.filter is not None:
        problem = filter_syntax_problem(workflow.filter)
        if problem is not None:
            problems["filter"] = problem
    for index, action in enumerate(workflow.actions):
        for field_name in _TEMPLATE_FIELDS.get(action.type, ()):
            alias = "from" if field_name == "from_" else field_name
            value = getattr(action, field_name)
            problems.update(template_problems(value, f"actions.{index}.{alias}"))
    return problems


def validate_workflow(data: Mapping[str, Any]) -> Workflow:
    """Validate a workflow definition (YAML or JSON data) into a Workflow.

    Raises WorkflowValidationError listing every problem by dotted field path.
    """
    if not isinstance(data, Mapping):
        raise WorkflowValidationError({"workflow": "must be a mapping of fields"})
    try:
        workflow = Workflow.model_validate(dict(data))
    except ValidationError as exc:
        raise WorkflowValidationError(_pydantic_problems(exc)) from None
    problems = _syntax_problems(workflow)
    if problems:
        raise WorkflowValidationError(problems)
    return workflow


def is_valid_workflow_id(workflow_id: str) -> bool:
    """Whether `workflow_id` is a valid slug (for URLs and CLI arguments)."""
    return _WORKFLOW_ID.match(workflow_id) is not None and workflow_id not in RESERVED_WORKFLOW_IDS
