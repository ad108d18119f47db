"""HTTP/1.1 load generator: pre-built requests over keep-alive connections, one JSON result.

    python bench/loadgen.py --port 8000 --concurrency 64 --requests-file reqs.bin \\
        [--warmup 500] [--timeout 120] [--acked-out acked.txt] [--sum-field deliveries]

The requests file holds complete HTTP/1.1 request bytes (see `write_requests`), each sent
exactly once. `--concurrency` connections are opened up front; each sends its next request
as soon as the previous answer is read (a closed loop, like Stripe's webhook senders), and
the per-request latency is the time from the write to the last byte of the answer.

The first `--warmup` requests are sent and checked but left out of the statistics. The
result, printed as one JSON line on stdout:

    {"concurrency", "requests", "elapsed_s", "rps", "latency_ms": {"p50", "p90", "p99",
     "max", "mean"}, "status_counts", "errors", "started_at", "finished_at", "field_sum"}

`--acked-out FILE` writes the index of every request answered 200 (warm-up included), one
per line. `--timeline-out FILE` writes, per measured request, when it was sent (ms after the
measured part began) and its latency (ms): to see whether the slow ones come together.
`--sum-field NAME` adds up that integer field of the JSON answers of 200s.
The whole run, warm-up included, is bounded by `--timeout` seconds.

Raw asyncio streams (uvloop when installed), no HTTP library: the generator costs a few
microseconds per request so that it is never what limits the measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_LEN = struct.Struct(">I")


def write_requests(path: Path, requests: Sequence[bytes]) -> None:
    """Store requests for `--requests-file`: each as a 4-byte big-endian length + bytes."""
    with path.open("wb") as out:
        for request in requests:
            out.write(_LEN.pack(len(request)))
            out.write(request)


def read_requests(path: Path) -> list[bytes]:
    data = path.read_bytes()
    requests = []
    offset = 0
    while offset < len(data):
        (size,) = _LEN.unpack_from(data, offset)
        offset += _LEN.size
        requests.append(data[offset : offset + size])
        offset += size
    return requests


def build_post(host: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A keep-alive HTTP/1.1 POST with a Content-Length body."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Run:
    """Shared state of one load run: the next request to send and what came back."""

    def __init__(self, host: str, port: int, requests: list[bytes], sum_field: str | None) -> None:
        self.host = host
        self.port = port
        self.requests = requests
        self.next = 0
        self.status = [0] * len(requests)  # 0 = not answered
        self.latency = [0.0] * len(requests)
        self.sent = [0.0] * len(requests)  # perf_counter at the write
        self.errors: list[str] = []
        self.sum_field = sum_field
        self.field_sum = 0
        self.started_at = 0.0  # Unix seconds at the first write
        self.t0 = 0.0  # perf_counter at the start of the measured part
        self.t1 = 0.0  # perf_counter at its end
        self.timed_out = False


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_end = head.index(b"\r\n")
    status = int(head[9:12])  # "HTTP/1.1 200 OK"
    length = -1
    close = False
    for line in head[status_end + 2 : -4].split(b"\r\n"):
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value)
        elif lname == b"connection" and value.strip().lower() == b"close":
            close = True
        elif lname == b"transfer-encoding":
            raise RuntimeError("chunked answers are not supported by the load generator")
    if length < 0:
        raise RuntimeError("answer without Content-Length")
    body = await reader.readexactly(length) if length else b""
    return status, body, close


async def _connection(run: Run, stop_at: int, conn: list[Any], open_lock: asyncio.Lock) -> None:
    host, port = run.host, run.port
    requests = run.requests
    perf = time.perf_counter
    while True:
        index = run.next
        if index >= stop_at:
            return
        run.next = index + 1
        try:
            if not conn:
                async with open_lock:
                    reader, writer = await asyncio.open_connection(host, port)
                conn[:] = [reader, writer]
            reader, writer = conn
            started = run.sent[index] = perf()
            writer.write(requests[index])
            status, body, close = await _read_response(reader)
        except (OSError, asyncio.IncompleteReadError, RuntimeError, ValueError) as exc:
            run.errors.append(f"request {index}: {type(exc).__name__}: {exc}")
            if conn:
                conn[1].close()
                conn.clear()
            continue
        run.latency[index] = perf() - started
        run.status[index] = status
        if status == 200 and run.sum_field is not None:
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                run.field_sum += int(json.loads(body).get(run.sum_field, 0))
        if close:
            writer.close()
            conn.clear()


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


async def load(run: Run, concurrency: int, warmup: int) -> None:
    conns: list[list[Any]] = [[] for _ in range(concurrency)]
    lock = asyncio.Lock()
    try:
        for conn in conns:  # open every connection before the clock starts
            reader, writer = await asyncio.open_connection(run.host, run.port)
            conn[:] = [reader, writer]
        run.started_at = time.time()
        if warmup:
            await asyncio.gather(*(_connection(run, warmup, c, lock) for c in conns))
        run.t0 = time.perf_counter()
        total = len(run.requests)
        await asyncio.gather(*(_connection(run, total, c, lock) for c in conns))
        run.t1 = time.perf_counter()
    finally:
        for conn in conns:
            if conn:
                conn[1].close()


async def bounded_load(run: Run, concurrency: int, warmup: int, limit: float) -> None:
    try:
        async with asyncio.timeout(limit):
            await load(run, concurrency, warmup)
    except TimeoutError:
        run.timed_out = True
        run.t1 = time.perf_counter()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="keep-alive HTTP/1.1 load generator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--requests-file", type=Path, required=True)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--acked-out", type=Path)
    parser.add_argument("--sum-field")
    parser.add_argument("--timeline-out", type=Path)
    args = parser.parse_args(argv)

    requests = read_requests(args.requests_file)
    warmup = min(args.warmup, len(requests))
    run = Run(args.host, args.port, requests, args.sum_field)
    work = bounded_load(run, args.concurrency, warmup, args.timeout)
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up
    except ImportError:
        asyncio.run(work)
    else:
        uvloop.run(work)
    finished_at = time.time()
    elapsed = run.t1 - run.t0 if run.t0 else 0.0

    measured = [run.latency[i] * 1000 for i in range(warmup, len(requests)) if run.status[i] != 0]
    measured.sort()
    counts: dict[str, int] = {}
    for status in run.status:
        key = str(status) if status else "no_answer"
        counts[key] = counts.get(key, 0) + 1
    if args.timeline_out is not None:
        args.timeline_out.write_text(
            "".join(
                f"{(run.sent[i] - run.t0) * 1000:.3f} {run.latency[i] * 1000:.3f}\n"
                for i in range(warmup, len(requests))
                if run.status[i] != 0
            )
        )
    if args.acked_out is not None:
        args.acked_out.write_text(
            "".join(f"{i}\n" for i, status in enumerate(run.status) if status == 200)
        )
    n = len(requests) - warmup
    result = {
        "concurrency": args.concurrency,
        "requests": n,
        "warmup": warmup,
        "elapsed_s": round(elapsed, 4),
        "rps": round(n / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_ms": {
            "p50": round(_percentile(measured, 0.50), 3),
            "p90": round(_percentile(measured, 0.90), 3),
            "p99": round(_percentile(measured, 0.99), 3),
            "max": round(measured[-1], 3) if measured else 0.0,
            "mean": round(sum(measured) / len(measured), 3) if measured else 0.0,
        },
        "status_counts": counts,
        "errors": len(run.errors),
        "first_errors": run.errors[:5],
        "timed_out": run.timed_out,
        "started_at": run.started_at,
        "finished_at": finished_at,
        "field_sum": run.field_sum,
    }
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
