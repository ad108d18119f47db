"""Dry runs of a workflow: the exact Customer.io requests it would make for an event.

    steps = await preview_workflow(services, workflow, event)
    [step.summary() for step in steps]   # {"action_index", "action", "status", "request", "reason"}

Nothing is sent and nothing is stored (the identity resolver may cache a customer it
read from Stripe, as it does for a real delivery). Used by `POST /api/workflows/{id}/test`,
and meant for the CLI and the dashboard's "Try it".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import anyio

from billbridge.customerio.requests import CioRequest
from billbridge.errors import StripeAPIError
from billbridge.identity import IdentityResolver, Person, Unresolved
from billbridge.services import Services
from billbridge.workflows.model import Workflow
from billbridge.workflows.planner import Skip, plan_action
from billbridge.workflows.templates import TemplateError

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
    workflow: Workflow, event: dict[str, Any], person: Person, *, identifier_mode: str
) -> list[PreviewStep]:
    """Plan every action of `workflow` for `event` and `person` (pure, no I/O)."""
    steps: list[PreviewStep] = []
    for index, action in enumerate(workflow.actions):
        try:
            planned = plan_action(workflow, index, event, person, identifier_mode=identifier_mode)
        except (TemplateError, ValueError) as exc:
            steps.append(PreviewStep(index, action.type, "error", reason=str(exc)))
            continue
        if isinstance(planned, Skip):
            steps.append(PreviewStep(index, action.type, "skipped", reason=planned.reason))
        else:
            steps.append(
                PreviewStep(
                    index, action.type, "planned", request=planned.summary(), planned=planned
                )
            )
    return steps


def preview_sync(
    resolver: IdentityResolver, identifier_mode: str, workflow: Workflow, event: dict[str, Any]
) -> Preview:
    """Resolve the person (may read the store and the Stripe API), then plan each action."""
    try:
        person = resolver.resolve(event)
    except StripeAPIError as exc:
        return Preview(None, _all(workflow, "error", f"could not resolve the person: {exc}"))
    if isinstance(person, Unresolved):
        return Preview(None, _all(workflow, "skipped", person.reason))
    return Preview(person, plan_steps(workflow, event, person, identifier_mode=identifier_mode))


async def preview_workflow(
    services: Services, workflow: Workflow, event: dict[str, Any]
) -> Preview:
    """Dry-run `workflow` on `event` in a worker thread (resolution may block on I/O)."""
    identifier_mode = services.settings.identifier
    return await anyio.to_thread.run_sync(
        lambda: preview_sync(services.resolver, identifier_mode, workflow, event)
    )
