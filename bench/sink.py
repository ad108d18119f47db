"""A minimal, fast stand-in for Customer.io for the end-to-end benchmark.

    python bench/sink.py --port 9001

Answers `200 {}` to every request under `/api/v1/`, `/api/v2/` and `/v1/` (keep-alive
HTTP/1.1, raw asyncio streams, uvloop when installed) and counts them. It does no
validation: it exists so that the receiving side is never what limits the measurement.

Inspection (not counted):

    GET  /_sink/stats   {"requests", "operations", "by_kind", "duplicate_event_ids",
                         "first_at", "last_at", ...}  (times are Unix seconds)
    POST /_sink/reset   zero every counter

`operations` counts one per v1 call and one per operation inside a `/api/v2/batch` body, so
it matches the number of deliveries whichever API the client uses. `duplicate_event_ids`
counts track events whose `id` was already seen (a doubled send).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from typing import Any

OK_PREFIXES = ("/api/v1/", "/api/v2/", "/v1/")
MAX_BODY = 8 * 1024 * 1024


class Counters:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.operations = 0
        self.by_kind: dict[str, int] = {}
        self.event_ids: set[str] = set()
        self.duplicate_event_ids = 0
        self.not_found = 0
        self.first_at: float | None = None
        self.last_at: float | None = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "operations": self.operations,
            "by_kind": dict(self.by_kind),
            "distinct_event_ids": len(self.event_ids),
            "duplicate_event_ids": self.duplicate_event_ids,
            "not_found": self.not_found,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "now": time.time(),
        }

    def _event_id(self, value: Any) -> None:
        if isinstance(value, str):
            if value in self.event_ids:
                self.duplicate_event_ids += 1
            else:
                self.event_ids.add(value)

    def record(self, method: str, path: str, body: bytes) -> None:
        now = time.time()
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        self.requests += 1
        plain = path.split("?", 1)[0]
        if plain.startswith("/api/v2/batch"):
            kind = "batch"
            try:
                batch = json.loads(body).get("batch", [])
            except (ValueError, AttributeError):
                batch = []
            self.operations += len(batch)
            for operation in batch:
                if isinstance(operation, dict) and operation.get("action") == "event":
                    self._event_id(operation.get("id"))
        else:
            self.operations += 1
            if plain.endswith("/events") and method == "POST":
                kind = "track_event"
                with contextlib.suppress(ValueError, AttributeError):
                    self._event_id(json.loads(body).get("id"))
            elif plain.startswith("/api/v1/customers/") and method == "PUT":
                kind = "identify"
            else:
                kind = f"{method} {plain.split('/', 3)[1] if plain.count('/') > 1 else plain}"
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1


def _response(status: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


OK = _response("200 OK", b"{}")
NOT_FOUND = _response("404 Not Found", b'{"meta":{"error":"not found"}}')
BAD = _response("400 Bad Request", b"{}")


async def _handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counters: Counters
) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            try:
                method, target, _version = lines[0].split(" ", 2)
            except ValueError:
                writer.write(BAD)
                return
            length = 0
            chunked = False
            close = False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                lname = name.strip().lower()
                if lname == "content-length":
                    length = int(value.strip())
                elif lname == "transfer-encoding" and "chunked" in value.lower():
                    chunked = True
                elif lname == "connection" and value.strip().lower() == "close":
                    close = True
            if chunked:
                parts = []
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        await reader.readuntil(b"\r\n")
                        break
                    parts.append(await reader.readexactly(size))
                    await reader.readexactly(2)
                body = b"".join(parts)
            elif length > MAX_BODY:
                writer.write(BAD)
                return
            else:
                body = await reader.readexactly(length) if length else b""

            if target.startswith("/_sink/"):
                if target.startswith("/_sink/reset"):
                    counters.reset()
                payload = json.dumps(counters.snapshot()).encode()
                writer.write(_response("200 OK", payload))
            elif target.startswith(OK_PREFIXES):
                counters.record(method, target, body)
                writer.write(OK)
            else:
                counters.not_found += 1
                writer.write(NOT_FOUND)
            if close:
                await writer.drain()
                return
            if writer.transport.get_write_buffer_size() > 65536:
                await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def serve(host: str, port: int) -> None:
    counters = Counters()
    server = await asyncio.start_server(
        lambda r, w: _handle(r, w, counters), host, port, backlog=1024
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"sink listening on http://{host}:{port}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
