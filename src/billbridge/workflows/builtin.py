"""The built-in erasure workflow and its internal event (never stored, never listed).

    erasure_workflow()                    # actions: 0 delete_person, 1 suppress_person
    erasure_identifier(event)             # the identifier a `billbridge.erasure` event names

`billbridge.erasure` (erasure.py) queues one synthetic event of type ERASURE_EVENT_TYPE
per person with one delivery of this workflow; the catalog answers its id, the identity
resolver takes the person from the event itself (no lookup that could read them back).
"""

from __future__ import annotations

from typing import Any

from billbridge.workflows.model import (
    DeletePersonAction,
    SuppressPersonAction,
    Trigger,
    Workflow,
)

ERASURE_WORKFLOW_ID = "billbridge-erasure"
ERASURE_EVENT_TYPE = "billbridge.erasure"
ERASURE_EVENT_PREFIX = "bb_erasure_"
ERASURE_ACTION_INDEX = {"delete": 0, "suppress": 1}


def erasure_workflow() -> Workflow:
    """The workflow erasure deliveries run (disabled: no Stripe event ever triggers it)."""
    # Built unvalidated: the id is reserved for it, and its event type is not a Stripe one.
    return Workflow.model_construct(
        id=ERASURE_WORKFLOW_ID,
        name="Erasure (built in)",
        enabled=False,
        description="Deletes or suppresses an erased person in Customer.io.",
        trigger=Trigger.model_construct(events=[ERASURE_EVENT_TYPE], mode="any"),
        filter=None,
        actions=[DeletePersonAction(), SuppressPersonAction()],
        late_events="record",
    )


def erasure_identifier(event: dict[str, Any]) -> str | None:
    """The Customer.io identifier an erasure event names (`data.object.identifier`)."""
    if event.get("type") != ERASURE_EVENT_TYPE:
        return None
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    identifier = obj.get("identifier") if isinstance(obj, dict) else None
    return identifier if isinstance(identifier, str) and identifier else None
