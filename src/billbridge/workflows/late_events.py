"""Late events: what a Customer.io event call becomes when its Stripe event is over 72 h old.

Customer.io starts campaigns only from events whose `timestamp` lies within the past
72 hours (customerio-api.md §3); an older event still reaches the person's activity.
A delivery sent late (a long retry, a replay, reconcile of an older event) follows its
workflow's `late_events` policy, decided at send time:

    record   send as planned, `timestamp` = Stripe `created`: recorded, starts no campaign
    trigger  `timestamp` = send time, the original under `data.stripe_created`: campaigns
             start; the event `id` is unchanged, so a replay is still deduplicated
    skip     not sent: the delivery is `skipped` with a reason starting "late"

    planned, decision = send_now(request, created=event["created"], now=time.time(),
                                 policy=workflow.late_events)   # a CioRequest, or a LateSkip

Only event calls (`POST .../customers/{id}/events` with a `timestamp`) are affected;
identify, segments, sends and broadcasts carry no event time. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from billbridge.customerio.requests import CioRequest

LATE_AFTER = 72 * 3600  # seconds: Customer.io's campaign-trigger window
LATE_EVENTS_POLICIES: tuple[str, ...] = ("record", "trigger", "skip")
LateEventsPolicy = Literal["record", "trigger", "skip"]
DEFAULT_LATE_EVENTS: LateEventsPolicy = "record"

POLICY_HELP: dict[str, str] = {
    "record": (
        "send it with Stripe's original time: it reaches the person's activity but starts "
        "no campaign"
    ),
    "trigger": (
        "send it with the send time as its timestamp (the original under "
        "data.stripe_created), so campaigns start"
    ),
    "skip": "do not send it (the delivery is skipped with the reason 'late')",
}


@dataclass(frozen=True)
class LateDecision:
    """An event call sent more than 72 h after Stripe created its event, and its policy."""

    policy: LateEventsPolicy
    age_seconds: int  # send time minus Stripe `created`
    now: int  # the send time (Unix seconds)

    def marker(self) -> dict[str, Any]:
        """What the attempt records (shown on the event page and in the API)."""
        return {"policy": self.policy, "age_seconds": self.age_seconds}


@dataclass(frozen=True)
class LateSkip:
    """The `skip` policy: the delivery is not sent."""

    reason: str


def is_event_call(request: CioRequest) -> bool:
    """Whether `request` sends a Customer.io event with a `timestamp` (v1, or its v2 form)."""
    body = request.body
    return (
        request.api == "track"
        and request.method == "POST"
        and request.path.endswith("/events")
        and isinstance(body, dict)
        and isinstance(body.get("timestamp"), int)
        and body.get("type", "event") == "event"
    )


def late_decision(
    request: CioRequest, *, created: int, now: float, policy: LateEventsPolicy
) -> LateDecision | None:
    """The decision for an event call sent at `now` for a Stripe event `created` then;
    None when the call is not an event or is not late."""
    age = int(now) - int(created)
    if age <= LATE_AFTER or not is_event_call(request):
        return None
    return LateDecision(policy=policy, age_seconds=age, now=int(now))


def describe_age(seconds: int) -> str:
    """`3 d 4 h`: an age in days and hours (for reasons and the dashboard)."""
    days, rest = divmod(max(seconds, 0), 86_400)
    hours = rest // 3600
    return f"{days} d {hours} h" if days else f"{hours} h"


def apply_late_policy(request: CioRequest, decision: LateDecision) -> CioRequest | LateSkip:
    """`request` as the policy sends it (unchanged for `record`), or a LateSkip."""
    if decision.policy == "skip":
        return LateSkip(
            f"late: the Stripe event is {describe_age(decision.age_seconds)} old (more than "
            "72 h) and the workflow's late_events policy is skip"
        )
    if decision.policy == "record":
        return request
    body = dict(request.body or {})
    data = dict(body.get("data") or {})
    data["stripe_created"] = body["timestamp"]
    body["data"] = data
    body["timestamp"] = decision.now
    return replace(request, body=body)


def send_now(
    request: CioRequest, *, created: int, now: float, policy: LateEventsPolicy
) -> tuple[CioRequest | LateSkip, LateDecision | None]:
    """What to send at `now` (the executor, and previews, call this): `request` as the
    policy changes it or a LateSkip, and the decision (None when not late)."""
    decision = late_decision(request, created=created, now=now, policy=policy)
    if decision is None:
        return request, None
    return apply_late_policy(request, decision), decision


def summary_with_late(request: CioRequest, late: LateDecision | None) -> dict[str, Any]:
    """`request.summary()` as stored with its attempt (or shown by a preview); a late event
    call also says so under `late` (the policy applied, the event's age)."""
    summary = request.summary()
    if late is not None:
        summary["late"] = late.marker()
    return summary


def recorded_policy(request: Mapping[str, Any] | None) -> str | None:
    """The policy a stored attempt's request was marked late with (`LateDecision.marker`),
    or None when the attempt was not a late event call."""
    late = (request or {}).get("late")
    if isinstance(late, Mapping) and late.get("policy") in LATE_EVENTS_POLICIES:
        return str(late["policy"])
    return None
