"""Statements and transactions per 1,000 webhooks through the store alone, on either database.

    .venv/bin/python bench/store_statements.py --database postgres --threads 64
    .venv/bin/python bench/store_statements.py --database sqlite --threads 16

`--threads` callers each ingest webhook-like events (the `run_all.py` ingest mix, with their
deliveries and billing rows, as `IngestService` builds them) as fast as they can, then one
worker-sized claim and finish of everything; every named statement the store runs is
counted (`outbox.Db`), and every writer transaction.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from billbridge.billing.projection import rows_for_event
from billbridge.store import open_store, outbox
from billbridge.store.records import AttemptRecord, Completion, NewDelivery
from billbridge.store.writer import Writer
from billbridge.stripe.events import new_event_from
from billbridge.stripe.samples import sample_event

TYPES = ("charge.succeeded", "customer.subscription.updated", "invoice.paid", "customer.created")
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--events", type=int, default=4000)
    args = parser.parse_args()
    statements: Counter[str] = Counter()
    transactions = Counter[str]()
    execute, run_jobs = outbox.Db._execute, Writer.run_jobs

    def counted_execute(db: outbox.Db, name: str, parameters: Any, rows: int = 1) -> Any:
        statements[name] += 1
        return execute(db, name, parameters, rows)

    def counted_jobs(writer: Writer, conn: Any, jobs: Any, *, isolated: bool) -> Any:
        transactions["isolated" if isolated else "batch"] += 1
        return run_jobs(writer, conn, jobs, isolated=isolated)

    outbox.Db._execute = counted_execute  # type: ignore[method-assign]
    Writer.run_jobs = counted_jobs  # type: ignore[method-assign]
    database = f"billbridge_statements_{threading.get_native_id()}"
    if args.database == "postgres":
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
    else:
        url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'statements.db'}"
    store = open_store(url)
    try:
        store.migrate()
        statements.clear()
        transactions.clear()
        per_thread = args.events // args.threads

        def ingest(thread: int) -> None:
            for n in range(per_thread):
                body = sample_event(
                    TYPES[n % 4], customer_id=f"cus_{thread}_{n}", email=f"{thread}.{n}@x.io"
                )
                event = new_event_from(body, json.dumps(body, indent=2))
                deliveries = [NewDelivery("wf", i, "track_event") for i in range(2)]
                store.ingest(event, deliveries, billing=rows_for_event(body))

        threads = [threading.Thread(target=ingest, args=(t,)) for t in range(args.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        webhooks = per_thread * args.threads
        ingest_statements = sum(statements.values())
        print(
            f"{args.database}, {args.threads} callers, {webhooks} webhooks: "
            f"{transactions['batch'] / webhooks * 1000:.0f} transactions and "
            f"{ingest_statements / webhooks * 1000:.0f} statements per 1,000 webhooks "
            f"({transactions['isolated']} batches re-run job by job)"
        )
        for size in (1, 512):
            statements.clear()
            claims = store.claim_due("bench", size, 60.0)
            attempt = AttemptRecord("succeeded", 0.0, 1.0, None, 200)
            store.finish_many(
                [Completion(c.delivery_id, c.claim_id, "succeeded", attempt) for c in claims]
            )
            print(
                f"  claim + finish of {len(claims)} deliveries: "
                f"{sum(statements.values())} statements ({dict(statements)})"
            )
    finally:
        store.close()
        if args.database == "postgres":
            with psycopg.connect(ADMIN, autocommit=True) as admin:
                drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                admin.execute(drop.format(sql.Identifier(database)))


if __name__ == "__main__":
    main()
