"""PostgreSQL driver: psycopg 3, group commit, claims with SKIP LOCKED, LISTEN/NOTIFY.

Several processes (web, workers) can share one database. Each process writes through one
group-committing `Writer` (`store/writer.py`): concurrent webhooks share a transaction,
each answered after its commit. Claims lock the rows they take (`FOR UPDATE SKIP LOCKED`)
so two claimers never get the same delivery. Once a transaction that made work due has
committed, a notifier thread sends `NOTIFY billbridge_work` on a connection of its own (a
burst of commits costs one notification, and no writer transaction waits for the
notification queue's lock); a listener thread in each process turns it into an in-process
wake-up.

    store = PostgresStore("postgresql+psycopg://billbridge@db/billbridge")
    store.migrate()
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url

from billbridge.errors import ConfigurationError
from billbridge.store.sql import Insert, SqlStore, run_migrations, unavailable_on_errors
from billbridge.store.statements import load
from billbridge.store.statements.postgres import NOW
from billbridge.store.writer import Writer

CHANNEL = "billbridge_work"
# Serialises concurrent `migrate` calls from several processes (an arbitrary constant).
MIGRATION_LOCK_KEY = 0x62696C6C62726467
CONNECT_TIMEOUT = 5  # seconds: an unreachable database must fail fast (ingest answers 503)
# Writer threads, each committing a batch at a time on its own connection: a commit is a
# round trip to the server (and an fsync there), so several batches are in flight at once.
WRITER_THREADS = 2
LISTEN_POLL = 0.25  # seconds: how often the listener and notifier threads check for close()
# Seconds between two notifications of one process: a burst of committed batches wakes
# the workers once per interval, not once per batch. The first after a quiet spell goes
# at once. (A NOTIFY inside each writer transaction took a cluster-wide lock until its
# commit was flushed, serialising the writers' commits; bench/README.md has the numbers.)
NOTIFY_INTERVAL = 0.05


def normalise_postgres_url(database_url: str) -> sa.URL:
    """`postgres://` and `postgresql://` become `postgresql+psycopg://` (psycopg 3)."""
    try:
        url = make_url(database_url)
    except sa.exc.ArgumentError:
        raise ConfigurationError(
            "DATABASE_URL is not a valid SQLAlchemy URL; "
            "use postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"
        ) from None
    if url.drivername in ("postgres", "postgresql", "postgresql+psycopg"):
        return url.set(drivername="postgresql+psycopg")
    raise ConfigurationError(
        f"DATABASE_URL: the driver {url.drivername!r} is not supported; "
        "use postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"
    )


# Billbridge never waits on anything but the database inside a transaction. A transaction
# left idle is a process cut off from PostgreSQL (or frozen) mid-write: its row locks would
# block the heartbeat that frees its claims, so the fleet could not take them over until
# it came back. PostgreSQL ends such a session after this long (milliseconds).
IDLE_TX_MS = 5_000
# The other side of it: a host whose link to PostgreSQL is cut would otherwise wait on
# its half-open connections for as long as TCP retransmits (minutes). After this long
# without an acknowledgement the connection fails, the operation raises, and the process
# reconnects once the link is back (milliseconds; libpq's tcp_user_timeout).
TCP_USER_TIMEOUT_MS = 10_000
# The same for a process waiting on an answer the server will never send (its side of
# the connection is gone, and the news was lost with the link): libpq's keepalives probe
# after 5 s of silence, every 2 s, and give up after 3 (the system default waits 2 hours).
CLIENT_LINK_CHECKS: dict[str, int] = {
    "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}
# And PostgreSQL's side: a session whose client vanished mid-transaction (a pipelined
# batch is "active" between its statements, so the idle timeout does not apply) holds its
# row locks until the server notices. Keepalives every 2 s after 5 s of silence, dead
# after 3 unanswered (~11 s), and unacknowledged data dropped after 10 s, end it.
SESSION_OPTIONS = " ".join(
    f"-c {name}={value}"
    for name, value in (
        ("idle_in_transaction_session_timeout", IDLE_TX_MS),
        ("tcp_keepalives_idle", 5),
        ("tcp_keepalives_interval", 2),
        ("tcp_keepalives_count", 3),
        ("tcp_user_timeout", TCP_USER_TIMEOUT_MS),
    )
)


class PostgresStore(SqlStore):
    """Store on PostgreSQL; safe to share between processes and hosts."""

    # No overflow connections: SQLAlchemy opens and closes one per use, so under load each
    # webhook past the pool cost a new PostgreSQL backend (fork, authentication): ~70% of a
    # core of PostgreSQL's CPU at ~350 webhooks/s. Waiting for a pooled connection is far
    # cheaper (ingest ~320-360 -> ~380-450 requests/s, PostgreSQL ~40% of a core).
    def __init__(self, database_url: str, *, pool_size: int = 16, max_overflow: int = 0) -> None:
        url = normalise_postgres_url(database_url)
        connect_args: dict[str, Any] = {}
        if "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT
        for name, value in CLIENT_LINK_CHECKS.items():
            if name not in url.query:
                connect_args[name] = value
        if "options" not in url.query:
            connect_args["options"] = SESSION_OPTIONS
        engine = sa.create_engine(
            url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=10,
            pool_pre_ping=True,  # a restarted server must not cost a failed ingest
            hide_parameters=True,  # an error's message never shows the values
            connect_args=connect_args,
        )
        # A savepoint would give the rows a job writes a subtransaction's xmin, which the
        # ingest statements read to tell new events from stored ones: a failed batch is
        # re-run with a transaction per job instead.
        writer = Writer(
            engine, name="billbridge-pg-writer", isolate="transaction", threads=WRITER_THREADS
        )
        super().__init__(engine, writer, load("postgres"), psycopg.Error)
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        # The listener's and notifier's own connections: the same timeouts and link checks
        # (a NOTIFY on a cut link fails within tcp_user_timeout instead of hanging close()).
        self._connect_args = connect_args
        self._listener: threading.Thread | None = None
        self._listener_lock = threading.Lock()
        self._stopping = threading.Event()
        self._notifier = WorkNotifier(self._conninfo, connect_args)

    # Driver hooks -------------------------------------------------------------------------

    def _insert(self, table: sa.Table) -> Insert:
        return postgresql.insert(table)

    @property
    def _now_expr(self) -> sa.ColumnElement[float]:
        return sa.literal_column(NOW, type_=sa.Double())

    def _work_committed(self) -> None:
        # After the commit, and only then: a listener never wakes for a rolled-back write.
        super()._work_committed()
        self._notifier.request()

    # Lifecycle ----------------------------------------------------------------------------

    def migrate(self) -> None:
        with unavailable_on_errors(), self._engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            run_migrations(conn)

    def close(self) -> None:
        self._stopping.set()
        self._writer.close()
        self._notifier.close()
        with self._listener_lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.join()
        self._engine.dispose()

    # Wake-ups -----------------------------------------------------------------------------

    def wait_for_work(self, timeout: float) -> bool:
        self._ensure_listener()
        return self._wake.wait(timeout)

    def _ensure_listener(self) -> None:
        with self._listener_lock:
            if self._listener is not None or self._stopping.is_set():
                return
            self._listener = threading.Thread(
                target=self._listen, name="billbridge-pg-listener", daemon=True
            )
            self._listener.start()

    def _listen(self) -> None:
        """Hold a LISTEN connection; each notification (or reconnect) wakes local waiters."""
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, **self._connect_args) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._wake.notify()  # work may have arrived while we were not listening
                    while not self._stopping.is_set():
                        for _ in conn.notifies(timeout=LISTEN_POLL, stop_after=1):
                            self._wake.notify()
            except psycopg.Error:
                # The database went away: waiters fall back to their timeouts until it is
                # back; try again shortly.
                self._stopping.wait(1.0)


class WorkNotifier:
    """Sends `NOTIFY billbridge_work` for committed work from a thread of its own, on an
    autocommit connection of its own: requests that arrive while one is being sent, or
    within `NOTIFY_INTERVAL` of it, are answered by the next one. Best effort: while the
    database is unreachable nothing is sent, and workers still poll."""

    def __init__(self, conninfo: str, connect_args: dict[str, Any]) -> None:
        self._conninfo = conninfo
        self._connect_args = connect_args
        self._requested = threading.Event()  # a notification is owed
        self._wakeup = threading.Event()  # the thread has something to look at
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        """Ask for a notification (cheap: sets a flag; starts the thread on first use)."""
        self._requested.set()
        self._wakeup.set()
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stopping.is_set():
                    self._thread = threading.Thread(
                        target=self._run, name="billbridge-pg-notifier", daemon=True
                    )
                    self._thread.start()

    def close(self) -> None:
        """Send what is owed, then stop the thread."""
        with self._lock:
            self._stopping.set()
            thread = self._thread
        self._wakeup.set()
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        try:
            while True:
                if not self._requested.is_set():
                    if self._stopping.is_set():
                        return
                    self._wakeup.wait(LISTEN_POLL)
                    self._wakeup.clear()
                    continue
                self._requested.clear()
                conn = self._send(conn)
                self._stopping.wait(NOTIFY_INTERVAL)  # what arrives meanwhile: one more
        finally:
            if conn is not None:
                conn.close()

    def _send(self, conn: psycopg.Connection[Any] | None) -> psycopg.Connection[Any] | None:
        """One NOTIFY; returns the connection to reuse (None after a failure)."""
        try:
            if conn is None:
                conn = psycopg.connect(self._conninfo, autocommit=True, **self._connect_args)
            conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
        except psycopg.Error:
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    conn.close()
            return None
        return conn
