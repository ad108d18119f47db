"""The shared Jinja2 environment for the server-rendered dashboard pages.

    from billbridge.web.templating import templates
    return templates.TemplateResponse(request, "login.html", {"error": None})

Autoescape is on for every template; `csrf_token()` is a global, so a form writes
`<input type="hidden" name="csrf_token" value="{{ csrf_token(request) }}">`. The filters
(`when`, `ago`, ...) are registered by `web/pages_common.py`.
"""

from __future__ import annotations

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


templates = Jinja2Templates(env=_environment)

__all__ = ["TEMPLATES_DIR", "templates"]
