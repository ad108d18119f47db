"""Ingest throughput on SQLite with N concurrent callers: shows group commit at work.

    .venv/bin/python bench/store_ingest.py --threads 1 16 64 --events 4000

Each caller thread ingests distinct events (2 deliveries each) as fast as it can; every
ingest() returns only once its batch is durable (WAL, synchronous=FULL). With one caller
every event pays a whole fsync; with many, one fsync is shared by a batch.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

from billbridge.store import open_store
from billbridge.store.records import NewDelivery, NewEvent

PAYLOAD = json.dumps({"object": "event", "data": {"object": {"id": "cus_x", "email": "a@b.c"}}})
DELIVERIES = [
    NewDelivery("customer-created", 0, "identify"),
    NewDelivery("customer-created", 1, "track_event"),
]


def run(threads: int, events: int, directory: Path) -> tuple[float, float]:
    """Ingest `events` events from `threads` threads; returns (inserts/s, p99 latency ms)."""
    store = open_store(f"sqlite:///{directory / f'bench-{threads}.db'}")
    store.migrate()
    per_thread = events // threads
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads + 1)

    def caller(index: int) -> None:
        mine: list[float] = []
        barrier.wait()
        for n in range(per_thread):
            event = NewEvent(
                stripe_event_id=f"evt_{index}_{n}",
                type="customer.created",
                livemode=False,
                created=1_700_000_000,
                api_version=None,
                account=None,
                object_id="cus_x",
                customer_id="cus_x",
                email="a@b.c",
                payload=PAYLOAD,
            )
            start = time.perf_counter()
            store.ingest(event, DELIVERIES)
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=caller, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    stored = store.stats().events_total
    store.close()
    assert stored == per_thread * threads, (stored, per_thread * threads)
    latencies.sort()
    return stored / elapsed, latencies[int(len(latencies) * 0.99) - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--dir", type=Path, default=None, help="where the database files go")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        print(f"{'threads':>8} {'inserts/s':>10} {'p99 ms':>8}")
        for threads in args.threads:
            rate, p99 = run(threads, args.events, Path(directory))
            print(f"{threads:>8} {rate:>10.0f} {p99:>8.1f}")


if __name__ == "__main__":
    main()
