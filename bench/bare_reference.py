"""The reference the ingest numbers are compared with: the least a durable webhook can do.

    STRIPE_WEBHOOK_SECRET=whsec_... python bench/bare_reference.py --port 8100 --db /tmp/ref.db
    STRIPE_WEBHOOK_SECRET=whsec_... python bench/bare_reference.py --port 8100 \
        --database-url postgresql://postgres@127.0.0.1:5432/ref

A bare Starlette endpoint, `POST /webhooks/stripe`, that does only what no real receiver
can skip: verify `Stripe-Signature` (HMAC-SHA256 over `t.body`, stdlib `hmac`, 300 s
tolerance, like Stripe's scheme) and insert the event with ONE SQLite statement into its
own table (WAL, `synchronous=FULL`, a UNIQUE event id so a duplicate changes nothing),
then answer 200. The insert runs inline on the event loop over one connection: no thread
hop, no ORM, no workflow lookup, no logging. Served by uvicorn with the same options as
`billbridge serve` (see `uvicorn_options`), and `GET /readyz` for start-up polling.

With `--database-url` the insert goes to PostgreSQL instead: ONE autocommit INSERT per
request (a transaction each, `ON CONFLICT DO NOTHING`) on one of a pool of 16 psycopg
async connections, awaited on the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

TOLERANCE = 300
SCHEMA = """
CREATE TABLE IF NOT EXISTS ref_events (
    id INTEGER PRIMARY KEY,
    stripe_event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    received_at REAL NOT NULL,
    payload TEXT NOT NULL
)
"""
PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS ref_events (
    id BIGSERIAL PRIMARY KEY,
    stripe_event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    payload TEXT NOT NULL
)
"""
PG_POOL = 16
OK = b'{"received":true}'
Insert = Callable[[str, str, str], Awaitable[None]]


def _verified(body: bytes, header: str | None, secret: bytes) -> bool:
    if not header:
        return False
    timestamp = None
    signatures = []
    for item in header.split(","):
        key, _, value = item.partition("=")
        if key == "t" and value.isdigit():
            timestamp = value
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or abs(time.time() - int(timestamp)) > TOLERANCE:
        return False
    expected = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, signature) for signature in signatures)


def open_db(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(SCHEMA)
    return conn


def sqlite_insert(db_path: str) -> Insert:
    conn = open_db(db_path)

    async def insert(event_id: str, event_type: str, payload: str) -> None:
        conn.execute(  # autocommit: one transaction, one WAL fsync
            "INSERT OR IGNORE INTO ref_events (stripe_event_id, type, received_at, payload) "
            "VALUES (?, ?, ?, ?)",
            (event_id, event_type, time.time(), payload),
        )

    return insert


class PostgresPool:
    """16 autocommit psycopg async connections, handed out one request at a time."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.idle: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()

    async def open(self) -> None:
        for _ in range(PG_POOL):
            conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
            await conn.execute(PG_SCHEMA)
            self.idle.put_nowait(conn)

    async def close(self) -> None:
        while not self.idle.empty():
            await self.idle.get_nowait().close()

    async def insert(self, event_id: str, event_type: str, payload: str) -> None:
        conn = await self.idle.get()
        try:
            await conn.execute(
                "INSERT INTO ref_events (stripe_event_id, type, received_at, payload)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (stripe_event_id) DO NOTHING",
                (event_id, event_type, time.time(), payload),
            )
        finally:
            self.idle.put_nowait(conn)


def create_app(
    secret: str, *, db_path: str | None = None, database_url: str | None = None
) -> Starlette:
    key = secret.encode()
    pool = PostgresPool(database_url) if database_url else None
    insert = pool.insert if pool else sqlite_insert(db_path or "reference.db")

    async def webhook(request: Request) -> Response:
        body = await request.body()
        if not _verified(body, request.headers.get("stripe-signature"), key):
            return Response(b'{"error":"bad signature"}', 400, media_type="application/json")
        try:
            event: dict[str, Any] = json.loads(body)
            event_id, event_type = event["id"], event["type"]
        except (ValueError, KeyError, TypeError):
            return Response(b'{"error":"not a Stripe event"}', 400, media_type="application/json")
        await insert(event_id, event_type, body.decode())
        return Response(OK, 200, media_type="application/json")

    async def readyz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', 200, media_type="application/json")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if pool is not None:
            await pool.open()
        try:
            yield
        finally:
            if pool is not None:
                await pool.close()

    return Starlette(
        routes=[
            Route("/webhooks/stripe", webhook, methods=["POST"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def uvicorn_options() -> dict[str, Any]:
    """What `billbridge serve` passes to uvicorn (src/billbridge/cli.py): defaults otherwise,
    so loop="auto" (uvloop) and http="auto" (httptools) with uvicorn[standard]."""
    return {"log_config": None, "access_log": False}


def main() -> None:
    parser = argparse.ArgumentParser(description="bare Starlette + HMAC + one INSERT")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", help="a SQLite file")
    where.add_argument("--database-url", help="postgresql://... (a pool of 16 connections)")
    args = parser.parse_args()
    secret = os.environ.get("STRIPE_WEBHOOK_SECRET", "").split(",")[0].strip()
    if not secret:
        parser.error("set STRIPE_WEBHOOK_SECRET")
    app = create_app(secret, db_path=args.db, database_url=args.database_url)
    uvicorn.run(app, host=args.host, port=args.port, **uvicorn_options())


if __name__ == "__main__":
    main()
