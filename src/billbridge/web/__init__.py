"""The HTTP surface besides the webhook: the JSON API under `/api/` (and later the dashboard)."""

from __future__ import annotations

from billbridge.web.api import build_api_router

__all__ = ["build_api_router"]
