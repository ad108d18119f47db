"""The dashboard: every server-rendered page router, and the static files at /static.

    install_dashboard(app)      # in create_app: the pages plus /static
    build_dashboard_router()    # just the page routes

Pages need a browser session (`require_user` of `web.auth`); forms carry the CSRF token.
Login, logout and the settings pages live in `pages_access.py`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from billbridge.web.pages_endpoint import build_endpoint_router
from billbridge.web.pages_events import build_events_router
from billbridge.web.pages_overview import build_overview_router
from billbridge.web.pages_privacy import build_privacy_router
from billbridge.web.pages_tryit import build_tryit_router
from billbridge.web.pages_workflows import build_workflows_router

STATIC_DIR = Path(__file__).parent / "static"


def build_dashboard_router() -> APIRouter:
    """Overview (`/`), events (`/events...`), workflows and "Try it" (`/workflows...`)."""
    router = APIRouter(include_in_schema=False)
    router.include_router(build_overview_router())
    router.include_router(build_endpoint_router())
    router.include_router(build_events_router())
    router.include_router(build_privacy_router())
    router.include_router(build_workflows_router())
    router.include_router(build_tryit_router())
    return router


def install_dashboard(app: FastAPI) -> None:
    """Add the dashboard's pages and serve its CSS and JavaScript at /static."""
    app.include_router(build_dashboard_router())
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
