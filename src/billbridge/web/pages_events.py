"""The Events pages: search with filters and cursor pages, one event's timeline, replays.

    GET  /events                      search: type, status, customer id, email, time
    GET  /events/{id}                 payload, deliveries, each attempt on a timeline
    POST /events/{id}/replay          replay one event (force=1: send emails again)
    POST /events/replay-failed        replay the failed deliveries matching a search

Reads and replays use the same store calls and operations as the JSON API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, cast, get_args
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from billbridge.errors import EventPrunedError
from billbridge.store.records import (
    AttemptView,
    DeliveryView,
    EventDetail,
    EventFilter,
    EventStatus,
)
from billbridge.web.operations import (
    held_back_counts,
    held_back_notice,
    replay_event_report,
    replay_failed_report,
)
from billbridge.web.pages_common import (
    CSRF,
    CurrentUser,
    parse_datetime,
    read_form,
    render,
    run_store,
    services_of,
)
from billbridge.workflows.event_types import event_type_catalog
from billbridge.workflows.late_events import POLICY_HELP, describe_age, recorded_policy

PAGE_SIZE = 50
EVENT_STATUSES: tuple[str, ...] = get_args(EventStatus)
FILTER_FIELDS = ("type", "status", "customer", "email", "since", "until")
NON_IDEMPOTENT = frozenset({"send_email", "trigger_broadcast"})


@dataclass(frozen=True)
class Search:
    """The search form as given (`values`), its problems by field, and the store filter."""

    values: dict[str, str]
    errors: dict[str, str]
    event_filter: EventFilter

    def query(self, **extra: str) -> str:
        """The query string of this search (plus `extra`), without empty fields."""
        given = {key: value for key, value in self.values.items() if value}
        return urlencode({**given, **extra})


def parse_search(values: dict[str, str]) -> Search:
    """Read the search fields; a bad field is reported and left out of the filter."""
    clean = {name: values.get(name, "").strip() for name in FILTER_FIELDS}
    errors: dict[str, str] = {}
    status = clean["status"] or None
    if status is not None and status not in EVENT_STATUSES:
        errors["status"] = "choose one of the listed statuses"
        status = None
    times: dict[str, float | None] = {}
    for name in ("since", "until"):
        try:
            times[name] = parse_datetime(clean[name])
        except ValueError as exc:
            errors[name] = str(exc)
            times[name] = None
    event_filter = EventFilter(
        type=clean["type"] or None,
        status=cast(EventStatus | None, status),
        customer=clean["customer"] or None,
        email=clean["email"] or None,
        since=times["since"],
        until=times["until"],
    )
    return Search(clean, errors, event_filter)


@dataclass(frozen=True)
class TimelineEntry:
    """One attempt of a delivery, prepared for the timeline."""

    attempt: AttemptView
    tone: str  # ok, error, warn (a CSS modifier)
    request_line: str
    request_body: str | None
    late: str | None = None  # the late_events policy applied, explained


def _tone(outcome: str) -> str:
    if outcome in ("succeeded", "dry_run"):
        return "ok"
    if outcome in ("terminal_error", "unknown"):
        return "error"
    return "warn"


def timeline(delivery: DeliveryView) -> list[TimelineEntry]:
    """The attempts of a delivery, oldest first, with their request written out."""
    entries: list[TimelineEntry] = []
    for attempt in delivery.attempts:
        request = attempt.request or {}
        line = " ".join(str(request[key]) for key in ("method", "path") if request.get(key))
        if request.get("api"):
            line = f"{line}  ({request['api']} API)"
        if request.get("query"):
            line += "?" + urlencode(request["query"])
        body = request.get("body")
        if "operation" in request:
            # Sent inside a Track v2 batch: show this delivery's own operation.
            line += f"  (1 of {request.get('batch_size', '?')} operations in the batch)"
            body = request["operation"]
        entries.append(
            TimelineEntry(
                attempt=attempt,
                tone=_tone(attempt.outcome),
                request_line=line or "no request was made",
                request_body=None if body is None else json.dumps(body, indent=2),
                late=late_note(request),
            )
        )
    return entries


def late_note(request: dict[str, Any]) -> str | None:
    """How a late event call was handled (the attempt's `late` marker), or None."""
    policy = recorded_policy(request)
    if policy is None:
        return None
    age = describe_age(int(request["late"].get("age_seconds") or 0))
    return (
        f"Late: {age} after Stripe created the event (more than 72 h). The workflow's "
        f"late_events policy is {policy}: {POLICY_HELP[policy]}."
    )


def _pretty_response(body: str | None) -> str | None:
    """A JSON response body indented; anything else as it came."""
    if not body:
        return body
    try:
        return json.dumps(json.loads(body), indent=2)
    except ValueError:
        return body


def build_events_router() -> APIRouter:
    """The `/events` pages."""
    router = APIRouter(include_in_schema=False)

    @router.get("/events", response_class=HTMLResponse)
    async def events_page(request: Request, user: CurrentUser) -> HTMLResponse:
        search = parse_search(dict(request.query_params))
        cursor = request.query_params.get("cursor") or None
        store = services_of(request).store
        error = None
        try:
            items, next_cursor = await run_store(
                lambda: store.list_events(search.event_filter, limit=PAGE_SIZE, cursor=cursor)
            )
        except ValueError as exc:
            items, next_cursor, error = [], None, str(exc)
        return render(
            request,
            "events.html",
            user,
            active="events",
            search=search,
            errors=search.errors,
            items=items,
            next_url=None if next_cursor is None else "/events?" + search.query(cursor=next_cursor),
            first_url=None if cursor is None else "/events?" + search.query(),
            statuses=EVENT_STATUSES,
            event_types=event_type_catalog(),
            flash=error or _replay_notice(request),
            flash_kind="error" if error else "ok",
            status_code=400 if error else 200,
        )

    @router.post("/events/replay-failed", dependencies=CSRF)
    async def replay_failed(request: Request, user: CurrentUser) -> Response:
        search = parse_search(await read_form(request))
        if search.errors:
            return RedirectResponse("/events?" + search.query(), status_code=303)
        services = services_of(request)
        window = services.settings.retry_window
        report = await run_store(
            lambda: replay_failed_report(
                services.store,
                since_seconds=None,
                event_type=None,
                retry_window=window,
                event_filter=replace(search.event_filter, status=None),
            )
        )
        held = held_back_counts(report.held_back)
        counts = {
            "replayed_failed": str(len(report.replayed)),
            "held_sent": str(held["sent"]),
            "held_unknown": str(held["unknown"]),
        }
        return RedirectResponse("/events?" + search.query(**counts), status_code=303)

    @router.get("/events/{stripe_event_id}", response_class=HTMLResponse)
    async def event_page(request: Request, stripe_event_id: str, user: CurrentUser) -> Response:
        store = services_of(request).store
        detail = await run_store(lambda: store.get_event(stripe_event_id))
        if detail is None:
            raise HTTPException(404, f"no event {stripe_event_id!r} is stored")
        try:
            payload: Any = json.loads(detail.payload)
        except ValueError:
            payload = detail.payload
        catalog = services_of(request).catalog
        notice = pruned_notice(detail, services_of(request).settings.retention_days)
        refused = None
        if notice and request.query_params.get("refused") == "pruned":
            refused = f"Not replayed: {notice}."
        return render(
            request,
            "event.html",
            user,
            active="events",
            event=detail.summary,
            detail=detail,
            payload=payload,
            deliveries=[
                {
                    "delivery": delivery,
                    "timeline": timeline(delivery),
                    "late": delivery.attempts and recorded_policy(delivery.attempts[-1].request),
                    "workflow": catalog.get(delivery.workflow_id),
                    "non_idempotent": delivery.action_type in NON_IDEMPOTENT,
                }
                for delivery in detail.deliveries
            ],
            any_sent=any(delivery.sent_ok for delivery in detail.deliveries),
            any_unknown=any(_unknown_send(delivery) for delivery in detail.deliveries),
            pretty_response=_pretty_response,
            pruned_notice=notice,
            flash=refused or _replay_notice(request),
            flash_kind="error" if refused else "ok",
        )

    @router.post("/events/{stripe_event_id}/replay", dependencies=CSRF)
    async def replay_event(request: Request, stripe_event_id: str, user: CurrentUser) -> Response:
        form = await read_form(request)
        force = form.get("force") == "1"
        services = services_of(request)
        window = services.settings.retry_window
        try:
            report = await run_store(
                lambda: replay_event_report(
                    services.store, stripe_event_id, force=force, retry_window=window
                )
            )
        except KeyError:
            raise HTTPException(404, f"no event {stripe_event_id!r} is stored") from None
        except EventPrunedError:
            return RedirectResponse(f"/events/{stripe_event_id}?refused=pruned", status_code=303)
        held = held_back_counts(report.held_back)
        query = urlencode(
            {
                "replayed": len(report.replayed),
                "held_sent": held["sent"],
                "held_unknown": held["unknown"],
            }
        )
        return RedirectResponse(f"/events/{stripe_event_id}?{query}", status_code=303)

    return router


def pruned_notice(detail: EventDetail, retention_days: int) -> str | None:
    """Why the event's payload is a stub (None when it is whole): retention or erasure."""
    if detail.pruned_at is None:
        return None
    if detail.pruned_reason == "erasure":
        return "payload removed: the person's personal data was erased"
    days = f"{retention_days} days" if retention_days else "the retention period"
    return f"payload removed after {days} (retention)"


def _unknown_send(delivery: DeliveryView) -> bool:
    """An email or broadcast whose send ended with an unknown outcome (timed out after it
    went out): a replay holds it back like a sent one."""
    return delivery.action_type in NON_IDEMPOTENT and any(
        attempt.outcome == "unknown" for attempt in delivery.attempts
    )


def _count(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None or not (value.isascii() and value.isdigit() and len(value) <= 9):
        return None  # not a count we wrote (`²` is a digit to `isdigit`, not to `int`)
    return int(value)


def _replay_notice(request: Request) -> str | None:
    """The message after a replay redirect (counts come in the query string)."""
    held = held_back_notice(
        _count(request, "held_sent") or 0,
        _count(request, "held_unknown") or 0,
        bulk=_count(request, "replayed_failed") is not None,
    )
    failed = _count(request, "replayed_failed")
    if failed is not None:
        if failed == 0:
            message = (
                "Nothing replayed." if held else "No failed delivery matched: nothing to replay."
            )
        else:
            message = f"Replaying {failed} failed deliver{'y' if failed == 1 else 'ies'} now."
        return message + (f" {held}" if held else "")
    replayed = _count(request, "replayed")
    if replayed is None:
        return None
    message = f"Replaying {replayed} deliver{'y' if replayed == 1 else 'ies'} now."
    return message + (f" {held}" if held else "")


__all__ = ["Search", "build_events_router", "parse_search", "timeline"]
