"""The shared Jinja2 environment for the server-rendered dashboard pages.

    from billbridge.web.templating import templates
    return templates.TemplateResponse(request, "login.html", {"error": None})

Autoescape is on for every template; `csrf_token()` is a global, so a form writes
`<input type="hidden" name="csrf_token" value="{{ csrf_token(request) }}">`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape

from billbridge.web.auth import csrf_token

TEMPLATES_DIR = Path(__file__).parent / "templates"

_environment = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_environment.globals["csrf_token"] = csrf_token


def format_when(seconds: float | None) -> str:
    """Unix seconds as `2026-01-31 12:00Z` (UTC); an em dash when unknown."""
    if seconds is None:
        return "—"
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%d %H:%MZ")


_environment.filters["when"] = format_when

templates = Jinja2Templates(env=_environment)

__all__ = ["TEMPLATES_DIR", "templates"]
