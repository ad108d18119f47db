"""Health of a process: `/healthz`, `/readyz` (database reachable, migrations not behind)
and `/metrics`, for `serve` (its own routes) and `billbridge worker --metrics-port`.

    ok, body = readiness(store)      # blocking: call it in a thread
    app = health_app(store, metrics) # the worker's tiny ASGI app
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import anyio
from alembic.config import Config
from alembic.script import ScriptDirectory
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import billbridge.store
from billbridge.errors import StoreUnavailableError
from billbridge.observability import Metrics
from billbridge.store.base import Store

MIGRATIONS_DIR = Path(billbridge.store.__file__).parent / "migrations"


@functools.cache
def known_revisions() -> frozenset[str]:
    """Every revision this version ships (read once: the files do not change)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    script = ScriptDirectory.from_config(config)
    return frozenset(revision.revision for revision in script.walk_revisions())


def migrations_behind(applied: frozenset[str], shipped: frozenset[str]) -> bool:
    """True when the database lacks migrations this code needs: it is empty, or at
    revisions this code knows that are not its newest. A database at a revision this code
    does not know was migrated by a newer version (a rolling upgrade): not behind."""
    if applied == shipped:
        return False
    return not applied or applied <= known_revisions()


def readiness(store: Store) -> tuple[bool, dict[str, Any]]:
    """(ready, the JSON body of /readyz): the database answers and its schema is not
    behind this code's migrations (run `billbridge migrate`)."""
    try:
        applied, shipped = store.schema_revisions()
    except StoreUnavailableError:
        return False, {"status": "unavailable", "database": False, "reason": "database down"}
    except Exception:  # e.g. a database that is not Billbridge's
        return False, {"status": "unavailable", "database": False, "reason": "database error"}
    if migrations_behind(applied, shipped):
        return False, {
            "status": "unavailable",
            "database": True,
            "reason": (
                f"database schema at {', '.join(sorted(applied)) or 'nothing'}, this version "
                f"needs {', '.join(sorted(shipped))}: run `billbridge migrate`"
            ),
        }
    return True, {"status": "ok", "database": True}


async def readyz_response(store: Store) -> JSONResponse:
    """/readyz: 200 when ready, else 503 with the reason."""
    ok, body = await anyio.to_thread.run_sync(readiness, store)
    return JSONResponse(body, status_code=200 if ok else 503)


async def metrics_response(metrics: Metrics) -> PlainTextResponse:
    """/metrics in the Prometheus text format."""
    body = await anyio.to_thread.run_sync(metrics.render)
    return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)


def health_app(store: Store, metrics: Metrics) -> Starlette:
    """/healthz, /readyz and /metrics of a process without the HTTP service (the worker)."""

    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> JSONResponse:
        return await readyz_response(store)

    async def prometheus(_request: Request) -> PlainTextResponse:
        return await metrics_response(metrics)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
        ]
    )
