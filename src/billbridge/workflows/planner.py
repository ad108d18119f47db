"""The planner: (workflow, action, Stripe event, person) -> the exact Customer.io call, or Skip.

    context = build_context(event, person)
    planned = plan_action(workflow, 1, event, person)
    if isinstance(planned, Skip): ...      # recorded as `skipped` with planned.reason
    else: await client.send(planned)       # a CioRequest

Pure and deterministic: the same inputs always give the same request (the Customer.io
event id is derived from the Stripe event id, the workflow id and the action index), so
a retry or a replay sends byte-for-byte what the first attempt sent. Rendering errors
raise `TemplateError`; the executor marks the delivery failed with its message.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from billbridge.customerio.requests import ATTRIBUTE_REMOVAL, CioRequest, path_identifier
from billbridge.ids import deterministic_ulid
from billbridge.workflows.limits import render_budget
from billbridge.workflows.model import (
    AddToSegmentAction,
    CustomerDeletedPolicyAction,
    DeletePersonAction,
    IdentifyAction,
    RemoveFromSegmentAction,
    SendEmailAction,
    SuppressPersonAction,
    TrackEventAction,
    TriggerBroadcastAction,
    UnsuppressPersonAction,
    Workflow,
)
from billbridge.workflows.templates import (
    MISSING,
    TemplateError,
    evaluate_filter,
    render_mapping,
    render_value,
)

EMAIL_IDENTIFIER_MODE = "email"


class PersonLike(Protocol):
    """What the planner needs of a resolved person (`billbridge.identity.Person`)."""

    @property
    def identifier(self) -> str: ...

    @property
    def email(self) -> str | None: ...

    @property
    def customer_id(self) -> str | None: ...

    @property
    def customer(self) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True)
class Skip:
    """The action has nothing to do for this event; `reason` is shown with the delivery."""

    reason: str


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def build_context(
    event: Mapping[str, Any],
    person: PersonLike,
    *,
    profile: Mapping[str, Any] | None = None,
    changes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The template context: `event`, `object`, `previous`, `customer`, `person`, and the
    billing `profile` (current attributes) and `changes` (semantic events) when given."""
    data = _mapping(event.get("data"))
    return {
        "profile": _mapping(profile),
        "changes": _mapping(changes),
        "event": dict(event),
        "object": _mapping(data.get("object")),
        "previous": _mapping(data.get("previous_attributes")),
        "customer": _mapping(person.customer),
        "person": {
            "identifier": person.identifier,
            "email": person.email,
            "customer_id": person.customer_id,
        },
    }


def _event_id(event: Mapping[str, Any]) -> str:
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise ValueError("a Stripe event needs a string `id` to plan Customer.io calls")
    return event_id


def _event_created(event: Mapping[str, Any]) -> int:
    created = event.get("created")
    if isinstance(created, bool) or not isinstance(created, int):
        # ValueError (a malformed event), which the preview endpoint reports per action.
        raise ValueError(  # noqa: TRY004
            "a Stripe event needs an integer `created` to plan Customer.io calls"
        )
    return created


def _customer_path(identifier: str, suffix: str = "") -> str:
    return f"/api/v1/customers/{path_identifier(identifier)}{suffix}"


def _stripe_fields(event: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {"stripe_event_id": _event_id(event)}
    object_id = context["object"].get("id")
    if object_id is not None:
        fields["stripe_object_id"] = object_id
    fields["livemode"] = bool(event.get("livemode", False))
    return fields


def _plan_identify(
    action: IdentifyAction,
    path: str,
    context: Mapping[str, Any],
    person: PersonLike,
    profile_removals: Collection[str],
) -> CioRequest:
    body: dict[str, Any] = {}
    if person.email:
        body["email"] = person.email
    if person.customer_id:
        body["stripe_customer_id"] = person.customer_id
    if action.include_profile:
        # Profile attributes that stopped being true are removed, not left stale.
        body.update(
            (name, ATTRIBUTE_REMOVAL) for name in profile_removals if name not in context["profile"]
        )
        # The current profile beats the payload: a stale event must not send old values.
        body.update(context["profile"])
    body.update(render_mapping(action.attributes, context, path=f"{path}.attributes"))
    # An email change under BILLBRIDGE_IDENTIFIER=email: address the person by the old
    # email so that Customer.io updates them (the body carries the new one).
    identifier = getattr(person, "previous_identifier", None) or person.identifier
    return CioRequest(api="track", method="PUT", path=_customer_path(identifier), body=body)


def _plan_deleted_policy(person: PersonLike, policy: str) -> CioRequest | Skip:
    if policy == "delete":
        return CioRequest(api="track", method="DELETE", path=_customer_path(person.identifier))
    if policy == "suppress":
        return CioRequest(
            api="track", method="POST", path=_customer_path(person.identifier, "/suppress")
        )
    return Skip("BILLBRIDGE_CUSTOMER_DELETED_POLICY is keep: the person and attributes stay")


def _plan_track_event(
    workflow: Workflow,
    action_index: int,
    action: TrackEventAction,
    *,
    event: Mapping[str, Any],
    context: Mapping[str, Any],
    person: PersonLike,
) -> CioRequest:
    path = f"actions.{action_index}"
    name = render_value(action.name, context, path=f"{path}.name")
    if name is MISSING or not str(name).strip():
        raise TemplateError(f"{path}.name", "the event name renders to nothing")
    data = render_mapping(action.data, context, path=f"{path}.data")
    data.update(_stripe_fields(event, context))  # guaranteed fields win over mapped ones
    created = _event_created(event)
    body = {
        "name": str(name).strip(),
        "id": deterministic_ulid(_event_id(event), workflow.id, action_index, created=created),
        "timestamp": created,
        "data": data,
    }
    return CioRequest(
        api="track",
        method="POST",
        path=_customer_path(person.identifier, "/events"),
        body=body,
    )


def _plan_segment(
    action: AddToSegmentAction | RemoveFromSegmentAction, person: PersonLike, identifier_mode: str
) -> CioRequest:
    verb = "add_customers" if isinstance(action, AddToSegmentAction) else "remove_customers"
    id_type = "email" if identifier_mode == EMAIL_IDENTIFIER_MODE else "id"
    return CioRequest(
        api="track",
        method="POST",
        path=f"/api/v1/segments/{action.segment_id}/{verb}",
        body={"ids": [person.identifier]},
        query={"id_type": id_type},
    )


def _plan_send_email(
    action: SendEmailAction,
    path: str,
    *,
    event: Mapping[str, Any],
    context: Mapping[str, Any],
    person: PersonLike,
    identifier_mode: str,
) -> CioRequest | Skip:
    to = render_value(action.to, context, path=f"{path}.to")
    if to is MISSING or not str(to).strip():
        return Skip("no email address to send to")
    message_id = render_value(
        action.transactional_message_id, context, path=f"{path}.transactional_message_id"
    )
    if message_id is MISSING or message_id == "":
        raise TemplateError(f"{path}.transactional_message_id", "renders to nothing")
    identifier_key = "email" if identifier_mode == EMAIL_IDENTIFIER_MODE else "id"
    message_data = render_mapping(action.message_data, context, path=f"{path}.message_data")
    message_data["stripe_event_id"] = _event_id(event)
    body: dict[str, Any] = {
        "transactional_message_id": message_id,
        "to": str(to).strip(),
        "identifiers": {identifier_key: person.identifier},
        "message_data": message_data,
    }
    for key, template in (
        ("subject", action.subject),
        ("from", action.from_),
        ("body", action.body),
    ):
        if template is not None:
            value = render_value(template, context, path=f"{path}.{key}")
            if value is not MISSING:
                body[key] = str(value)
    return CioRequest(api="app", method="POST", path="/v1/send/email", body=body, idempotent=False)


def _plan_broadcast(
    action: TriggerBroadcastAction,
    path: str,
    *,
    event: Mapping[str, Any],
    context: Mapping[str, Any],
    person: PersonLike,
    identifier_mode: str,
) -> CioRequest:
    data = render_mapping(action.data, context, path=f"{path}.data")
    data["stripe_event_id"] = _event_id(event)
    body: dict[str, Any] = {"data": data}
    if action.recipients == "person":
        key = "emails" if identifier_mode == EMAIL_IDENTIFIER_MODE else "ids"
        body[key] = [person.identifier]
    return CioRequest(
        api="app",
        method="POST",
        path=f"/v1/campaigns/{action.broadcast_id}/triggers",
        body=body,
        idempotent=False,
    )


def plan_action(
    workflow: Workflow,
    action_index: int,
    event: Mapping[str, Any],
    person: PersonLike,
    *,
    identifier_mode: str = "stripe_customer_id",
    profile: Mapping[str, Any] | None = None,
    profile_removals: Collection[str] = (),
    changes: Mapping[str, Any] | None = None,
    deleted_policy: str = "keep",
) -> CioRequest | Skip:
    """Plan the Customer.io call for one action of `workflow` on a Stripe event.

    `identifier_mode` is `BILLBRIDGE_IDENTIFIER` (`stripe_customer_id`, `email` or
    `metadata:KEY`); it picks `id` or `email` where Customer.io asks which one the
    identifier is. Returns Skip when the filter does not match, the action no longer
    exists, or a send has no address. Raises TemplateError when a template fails.
    `profile` and `changes` (billing profile, semantic events) join the template context;
    `profile_removals` names the profile attributes an identify with `include_profile`
    removes (sends as `ATTRIBUTE_REMOVAL`): those Billbridge set that are now unknown
    (`billbridge.billing.profile.absent_attributes`). Mapped attributes still win.
    `deleted_policy` is BILLBRIDGE_CUSTOMER_DELETED_POLICY.
    """
    if not 0 <= action_index < len(workflow.actions):
        return Skip(f"workflow {workflow.id!r} has no action {action_index} any more")
    context = build_context(event, person, profile=profile, changes=changes)
    with render_budget():  # one budget (time, loops, output) for the filter and every value
        if workflow.filter is not None and not evaluate_filter(workflow.filter, context):
            return Skip(f"filter did not match: {workflow.filter}")
        return _plan_body(
            workflow,
            action_index,
            event=event,
            context=context,
            person=person,
            identifier_mode=identifier_mode,
            deleted_policy=deleted_policy,
            profile_removals=profile_removals,
        )


def _plan_body(
    workflow: Workflow,
    action_index: int,
    *,
    event: Mapping[str, Any],
    context: Mapping[str, Any],
    person: PersonLike,
    identifier_mode: str,
    deleted_policy: str,
    profile_removals: Collection[str],
) -> CioRequest | Skip:
    action = workflow.actions[action_index]
    path = f"actions.{action_index}"
    if isinstance(action, IdentifyAction):
        return _plan_identify(action, path, context, person, profile_removals)
    if isinstance(action, TrackEventAction):
        return _plan_track_event(
            workflow, action_index, action, event=event, context=context, person=person
        )
    if isinstance(action, CustomerDeletedPolicyAction):
        return _plan_deleted_policy(person, deleted_policy)
    if isinstance(action, DeletePersonAction):
        return CioRequest(api="track", method="DELETE", path=_customer_path(person.identifier))
    if isinstance(action, SuppressPersonAction):
        return CioRequest(
            api="track", method="POST", path=_customer_path(person.identifier, "/suppress")
        )
    if isinstance(action, UnsuppressPersonAction):
        return CioRequest(
            api="track", method="POST", path=_customer_path(person.identifier, "/unsuppress")
        )
    if isinstance(action, AddToSegmentAction | RemoveFromSegmentAction):
        return _plan_segment(action, person, identifier_mode)
    if isinstance(action, SendEmailAction):
        return _plan_send_email(
            action,
            path,
            event=event,
            context=context,
            person=person,
            identifier_mode=identifier_mode,
        )
    return _plan_broadcast(
        action, path, event=event, context=context, person=person, identifier_mode=identifier_mode
    )
