"""What the dashboard's page modules share: rendering, store calls, form reading, filters.

    return render(request, "events.html", user, active="events", items=items)

Template filters registered here (on the shared environment of `templating.py`):
`when` (Unix seconds -> "2025-01-31 14:05:09 UTC"), `ago` ("3 min ago"), `pretty_json`,
`duration` (seconds -> "2 h 5 min"), `ms` (milliseconds -> "12 ms").
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse

from billbridge.errors import StoreUnavailableError
from billbridge.services import Services
from billbridge.web.auth import User, require_user, verify_csrf
from billbridge.web.templating import templates

T = TypeVar("T")

CurrentUser = Annotated[User, Depends(require_user)]
CSRF = [Depends(verify_csrf)]


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def run_store(fn: Callable[[], T]) -> T:
    """Run a blocking store call in a thread; an unreachable database answers 503."""
    try:
        return await anyio.to_thread.run_sync(fn)
    except StoreUnavailableError as exc:
        raise HTTPException(503, str(exc)) from None


def render(
    request: Request,
    template: str,
    user: User,
    *,
    active: str,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A dashboard page: the template with the user (for the nav) and `active` nav item."""
    return templates.TemplateResponse(
        request,
        template,
        {"user": user, "active": active, **context},
        status_code=status_code,
    )


async def read_form(request: Request) -> dict[str, str]:
    """The submitted form's text fields (a repeated name keeps its last value)."""
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


# Formatting -----------------------------------------------------------------------------


def format_when(value: float | None) -> str:
    if value is None:
        return "—"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_duration(seconds: float | None) -> str:
    """A short human duration: 45 s, 12 min, 3 h 5 min, 2 d 4 h."""
    if seconds is None:
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def format_ago(value: float | None, now: float | None = None) -> str:
    if value is None:
        return "never"
    delta = (time.time() if now is None else now) - value
    if delta < 5:
        return "just now"
    return f"{format_duration(delta)} ago"


def format_ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False, default=str)


def parse_datetime(text: str) -> float | None:
    """A `datetime-local` value (read as UTC) or ISO 8601 -> Unix seconds; '' -> None.

    Raises ValueError with a message for the field.
    """
    text = text.strip()
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("use the form YYYY-MM-DDTHH:MM (UTC)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def datetime_input(value: float | None) -> str:
    """Unix seconds as a `datetime-local` input value in UTC."""
    if value is None:
        return ""
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M")


_env = templates.env
_env.filters["when"] = format_when
_env.filters["ago"] = format_ago
_env.filters["duration"] = format_duration
_env.filters["ms"] = format_ms
_env.filters["pretty_json"] = pretty_json
