"""`billbridge events list|show` and `billbridge replay`: the event log, read from the store.

The JSON these print (`--json`) is the JSON API's, from the same pydantic models.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from billbridge.cli_common import (
    EXIT_CONFIGURATION,
    EXIT_FAILURE,
    echo_error,
    format_time,
    friendly_errors,
    opened_store,
    plural,
    since_seconds,
    table,
)
from billbridge.config import load_settings
from billbridge.errors import EventPrunedError
from billbridge.store.base import Store
from billbridge.store.records import EventFilter, EventStatus
from billbridge.store.records_ops import HeldBack
from billbridge.web.operations import (
    HOLD_REASONS,
    held_back_counts,
    held_back_notice,
    replay_event_report,
    replay_failed_report,
)
from billbridge.web.schemas import AttemptOut, DeliveryOut, EventOut, EventSummaryOut

events_app = typer.Typer(
    help="Read the event log (what came in, what went out).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False))


@events_app.command("list")
def list_events(
    *,
    event_type: Annotated[
        str | None, typer.Option("--type", help="Only this Stripe event type.")
    ] = None,
    status: Annotated[
        EventStatus | None,
        typer.Option(help="Only events with this status (worst of their deliveries)."),
    ] = None,
    customer: Annotated[
        str | None, typer.Option(help="Only events of this Stripe customer id or email.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many events to show.")] = 50,
    cursor: Annotated[
        str | None, typer.Option(help="Continue after a previous page (its next cursor).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON API's answer.")] = False,
) -> None:
    """List stored events, newest first."""
    with friendly_errors():
        settings = load_settings()
        event_filter = EventFilter(type=event_type, status=status, customer=customer)
        with opened_store(settings) as (store, _):
            try:
                items, next_cursor = store.list_events(event_filter, limit=limit, cursor=cursor)
            except ValueError as exc:
                echo_error(f"error: {exc}")
                raise typer.Exit(EXIT_CONFIGURATION) from None
    summaries = [EventSummaryOut.from_record(item) for item in items]
    if as_json:
        _print_json(
            {
                "items": [summary.model_dump(mode="json") for summary in summaries],
                "next_cursor": next_cursor,
            }
        )
        return
    if not summaries:
        typer.echo("No events.")
        return
    rows = [
        [
            format_time(item.received_at),
            item.stripe_event_id,
            item.type,
            item.status,
            str(item.deliveries),
            item.customer_id or item.email or "-",
            "live" if item.livemode else "test",
        ]
        for item in summaries
    ]
    headers = ["RECEIVED", "EVENT", "TYPE", "STATUS", "DELIVERIES", "CUSTOMER", "MODE"]
    typer.echo(table(headers, rows))
    if next_cursor is not None:
        typer.echo(f"\nMore: billbridge events list --cursor {next_cursor}")


def _attempt_line(attempt: AttemptOut) -> str:
    request = attempt.request or {}
    target = f"{request.get('method', '')} {request.get('path', '')}".strip() or "-"
    status = f"HTTP {attempt.response_status}" if attempt.response_status else "no response"
    return (
        f"      {format_time(attempt.time)}  {attempt.outcome:<15}  {status:<11}  "
        f"{attempt.duration_ms:.0f} ms  {target}"
    )


def _delivery_lines(delivery: DeliveryOut) -> list[str]:
    lines = [
        f"  #{delivery.delivery_id}  {delivery.workflow_id}[{delivery.action_index}] "
        f"{delivery.action}: {delivery.status}, {plural(delivery.attempt_count, 'attempt')}"
    ]
    if delivery.next_attempt_at is not None and delivery.status in ("pending", "retrying"):
        lines.append(f"      next attempt: {format_time(delivery.next_attempt_at)}")
    if delivery.last_error:
        lines.append(f"      last error: {delivery.last_error}")
    for attempt in delivery.attempts:
        lines.append(_attempt_line(attempt))
        if attempt.error:
            lines.append(f"        error: {attempt.error}")
    return lines


@events_app.command("show")
def show_event(
    stripe_event_id: Annotated[str, typer.Argument(help="The Stripe event id (evt_...).")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the JSON API's answer (payload included).")
    ] = False,
) -> None:
    """Show one event, its deliveries and every attempt."""
    with friendly_errors():
        settings = load_settings()
        with opened_store(settings) as (store, _):
            detail = store.get_event(stripe_event_id)
    if detail is None:
        echo_error(f"error: no event {stripe_event_id!r} is stored")
        raise typer.Exit(EXIT_FAILURE)
    event = EventOut.from_detail(detail)
    if as_json:
        _print_json(event.model_dump(mode="json"))
        return
    lines = [
        f"{event.stripe_event_id}  {event.type}  ({'live' if event.livemode else 'test'} mode)",
        f"  status:      {event.status}",
        f"  created:     {format_time(event.created)} (Stripe)",
        f"  received:    {format_time(event.received_at)} via {event.source}",
        f"  customer:    {event.customer_id or '-'}  {event.email or ''}".rstrip(),
        f"  object:      {event.object_id or '-'}",
        f"  api version: {event.api_version or '-'}",
    ]
    if event.account:
        lines.append(f"  account:     {event.account}")
    lines.append(f"Deliveries ({len(event.deliveries)}):")
    if not event.deliveries:
        lines.append("  none (no enabled workflow matched)")
    for delivery in event.deliveries:
        lines.extend(_delivery_lines(delivery))
    lines.append("Payload: billbridge events show --json " + event.stripe_event_id)
    typer.echo("\n".join(lines))


def replay(
    stripe_event_ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="EVENT_ID", help="Stripe event ids (evt_...) to replay."),
    ] = None,
    failed: Annotated[
        bool, typer.Option("--failed", help="Replay every failed delivery instead.")
    ] = False,
    since: Annotated[
        str | None,
        typer.Option(help="With --failed: only events received within, e.g. 30m, 2h, 1d."),
    ] = None,
    event_type: Annotated[
        str | None, typer.Option("--type", help="With --failed: only this event type.")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Also resend transactional emails and broadcasts that were or may have "
            "been sent (succeeded, or timed out after sending).",
        ),
    ] = False,
) -> None:
    """Replay the deliveries of events, or every failed one.

    Gives each a new attempt: of the events named, or every failed delivery (--failed).

    Succeeded deliveries of a named event are replayed too; Customer.io ignores the
    repeated event ids. A transactional email or broadcast that already succeeded, or
    whose send timed out after it went out (outcome unknown), is held back: resent only
    for named events with --force. A running worker picks the deliveries up.
    """
    ids = stripe_event_ids or []
    failed = failed or since is not None or event_type is not None
    if ids and failed:
        echo_error("error: give event ids, or --failed (with --since/--type), not both")
        raise typer.Exit(EXIT_CONFIGURATION)
    if not ids and not failed:
        echo_error("error: give one or more event ids, or --failed; see --help")
        raise typer.Exit(EXIT_CONFIGURATION)
    if failed and force:
        echo_error("error: --force applies to event ids only")
        raise typer.Exit(EXIT_CONFIGURATION)
    since_after = since_seconds(since)
    with friendly_errors():
        settings = load_settings()
        with opened_store(settings) as (store, _):
            if failed:
                report = replay_failed_report(
                    store,
                    since_seconds=since_after,
                    event_type=event_type,
                    retry_window=settings.retry_window,
                )
                count = plural(len(report.replayed), "failed delivery", "failed deliveries")
                typer.echo(f"Replayed {count}.")
                _echo_held_back(report.held_back, bulk=True)
                return
            missing = _replay_events(store, ids, force=force, retry_window=settings.retry_window)
    if missing:
        raise typer.Exit(EXIT_FAILURE)


def _replay_events(store: Store, ids: list[str], *, force: bool, retry_window: float) -> int:
    """Replay each event, print what happened; returns how many could not be (unknown, pruned)."""
    missing = 0
    for stripe_event_id in ids:
        try:
            report = replay_event_report(
                store, stripe_event_id, force=force, retry_window=retry_window
            )
        except KeyError:
            echo_error(f"{stripe_event_id}: no such event is stored")
            missing += 1
            continue
        except EventPrunedError as exc:
            echo_error(f"error: {exc}")
            missing += 1
            continue
        numbers = ", ".join(f"#{delivery_id}" for delivery_id in report.replayed)
        line = (
            f"{stripe_event_id}: replayed {plural(len(report.replayed), 'delivery', 'deliveries')}"
        )
        typer.echo(line + (f" ({numbers})" if numbers else ""))
        _echo_held_back(report.held_back, bulk=False)
    return missing


def _echo_held_back(held_back: list[HeldBack], *, bulk: bool) -> None:
    """One line per held-back email or broadcast (why), then how many and how to force."""
    for held in held_back:
        typer.echo(
            f"{held.stripe_event_id}: held back #{held.delivery_id} ({held.action_type} of "
            f"{held.workflow_id}): {HOLD_REASONS[held.reason]}"
        )
    counts = held_back_counts(held_back)
    notice = held_back_notice(counts["sent"], counts["unknown"], bulk=bulk)
    if notice:
        typer.echo(notice)
