"""Dry runs of a workflow: the exact Customer.io requests it would make for an event.

    steps = await preview_workflow(services, workflow, event)
    [step.summary() for step in steps]   # {"action_index", "action", "status", "request", "reason"}

The steps are the delivery's own decision chain (`billbridge.delivery.decision`), so the
preview shows what a delivery would send now. Nothing is sent and nothing is stored: what
the chain learns from Stripe (a customer, an object completed for the profile) is
dropped (the Stripe client may cache a read, as it does for a real delivery). Used by
`POST /api/workflows/{id}/test` and the dashboard's "Try it".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import anyio

from billbridge.customerio.requests import CioRequest
from billbridge.delivery.decision import DecisionBatch, DecisionChain, Failed, Skipped
from billbridge.errors import StripeAPIError
from billbridge.identity import Person, Unresolved
from billbridge.services import Services
from billbridge.workflows.model import Workflow

StepStatus = Literal["planned", "skipped", "error"]


@dataclass(frozen=True)
class PreviewStep:
    """What one action would do: a request (`planned`), or why not (`skipped`, `error`)."""

    action_index: int
    action: str
    status: StepStatus
    request: dict[str, Any] | None = None  # CioRequest.summary(): never credentials
    reason: str | None = None
    planned: CioRequest | None = None  # the call itself, for "Try it"'s "send for real"

    def summary(self) -> dict[str, Any]:
        return {
            "action_index": self.action_index,
            "action": self.action,
            "status": self.status,
            "request": self.request,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Preview:
    """The person the event resolved to (None when unresolved) and each action's step."""

    person: Person | None
    steps: list[PreviewStep]


def _all(workflow: Workflow, status: StepStatus, reason: str) -> list[PreviewStep]:
    return [
        PreviewStep(index, action.type, status, reason=reason)
        for index, action in enumerate(workflow.actions)
    ]


def plan_steps(
    workflow: Workflow, event: dict[str, Any], person: Person, batch: DecisionBatch
) -> list[PreviewStep]:
    """Plan every action of `workflow` for `event` and `person` through the delivery's own
    decision chain: the billing profile and semantic changes as a delivery would send
    them now (what the chain learns from Stripe stays in `batch`, never written)."""
    steps: list[PreviewStep] = []
    created = event.get("created")
    for index, action in enumerate(workflow.actions):
        try:
            decided = batch.action(
                workflow,
                index,
                event,
                person,
                created=created if isinstance(created, int) else int(time.time()),
                now=time.time(),
            )
        except ValueError as exc:
            steps.append(PreviewStep(index, action.type, "error", reason=str(exc)))
            continue
        if isinstance(decided, Failed):
            steps.append(PreviewStep(index, action.type, "error", reason=decided.reason))
        elif isinstance(decided, Skipped):
            steps.append(PreviewStep(index, action.type, "skipped", reason=decided.reason))
        else:
            request = decided.request
            steps.append(
                PreviewStep(
                    index, action.type, "planned", request=request.summary(), planned=request
                )
            )
    return steps


def preview_sync(services: Services, workflow: Workflow, event: dict[str, Any]) -> Preview:
    """Resolve the person (may read the store and the Stripe API), then plan each action.
    Writes nothing: the facts the decisions learnt are dropped."""
    batch = DecisionChain(services.settings, services.store, services.resolver).batch()
    try:
        person = batch.person(event)
    except StripeAPIError as exc:
        return Preview(None, _all(workflow, "error", f"could not resolve the person: {exc}"))
    if isinstance(person, Unresolved):
        return Preview(None, _all(workflow, "skipped", person.reason))
    return Preview(person, plan_steps(workflow, event, person, batch))


async def preview_workflow(
    services: Services, workflow: Workflow, event: dict[str, Any]
) -> Preview:
    """Dry-run `workflow` on `event` in a worker thread (resolution may block on I/O)."""
    return await anyio.to_thread.run_sync(lambda: preview_sync(services, workflow, event))
