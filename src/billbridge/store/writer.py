"""The group-commit writer both drivers write through: one thread per store, many writes
per transaction, and on SQLite a cross-process file lock around each batch.

Every write becomes a job on a queue. The writer thread takes whatever jobs are waiting,
runs them in one transaction, commits once and only then resolves each caller's future:
a caller returns when its write is durable. Consecutive jobs of one `Gathered` class (the
webhook ingests) run together, in a few multi-row statements. A job that fails gets its
own exception while the rest of the batch commits: the batch is rolled back and run again
job by job (each in a SAVEPOINT on SQLite, in a transaction of its own on PostgreSQL).

    writer = Writer(engine, name="billbridge-sqlite-writer", lock=open_write_lock(path))
    result = writer.write(lambda conn: ...)      # or: await writer.write_async(fn)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from sqlalchemy.engine import Connection, Engine

try:
    import fcntl
except ImportError:  # not a POSIX system: SQLite's own busy wait alone
    fcntl = None  # type: ignore[assignment]

from billbridge.errors import StoreUnavailableError
from billbridge.store.outbox import UNAVAILABLE_ERRORS, unavailable_error

T = TypeVar("T")
MAX_BATCH = 512  # jobs per commit; bounds how long one batch holds the write lock
Outcome = tuple["Job", Any, BaseException | None]


class Gathered(ABC):
    """A job the writer runs together with the consecutive jobs of its class."""

    @classmethod
    @abstractmethod
    def run_together(cls, conn: Connection, jobs: Sequence[Self]) -> list[Any]:
        """Run `jobs` in the caller's transaction; one result per job, in order."""

    def __call__(self, conn: Connection) -> Any:
        return self.run_together(conn, [self])[0]


class _JobFailed(Exception):
    """A job of an optimistic batch raised: the batch is rolled back and run again."""


@dataclass(frozen=True)
class Job:
    """A write for the writer thread, and who waits for its result: a thread (`future`)
    or a coroutine on an event loop (`waiter`, set from that loop)."""

    fn: Callable[[Connection], Any]
    future: Future[Any] | None = None
    waiter: asyncio.Future[Any] | None = None
    loop: asyncio.AbstractEventLoop | None = None


def _settle(outcomes: Sequence[Outcome]) -> None:
    """Hand each job its result. Coroutine waiters of one loop are settled together by ONE
    callback on that loop: a webhook's answer costs no extra wake-up of its own."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for job, value, error in outcomes:
        if job.future is not None:
            if error is None:
                job.future.set_result(value)
            else:
                job.future.set_exception(error)
        elif job.loop is not None:
            by_loop.setdefault(job.loop, []).append((job, value, error))
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_waiters, items)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            continue


def _settle_waiters(items: Sequence[Outcome]) -> None:
    for job, value, error in items:
        waiter = job.waiter
        if waiter is None or waiter.done():  # the caller was cancelled
            continue
        if error is None:
            waiter.set_result(value)
        else:
            waiter.set_exception(error)


def open_write_lock(database: Path) -> int | None:
    """The lock file every billbridge process writing `database` takes around each batch
    (`<database>.writelock`), or None where there is no flock or it cannot be created.

    Two processes writing one SQLite file (`serve --no-worker` and `worker`, or a CLI
    command beside `serve`) would otherwise meet at SQLite's write lock, whose busy handler
    sleeps 1, 2, 5, 10 ... 100 ms between tries: hundreds of ms of tail latency. A
    blocking flock hands over the moment the other process commits.
    """
    if fcntl is None:
        return None
    try:
        return os.open(f"{database}.writelock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return None  # e.g. a read-only directory: SQLite's busy wait still serialises


@contextlib.contextmanager
def _holding(lock: int | None) -> Iterator[None]:
    """Hold the cross-process write lock (a blocking flock; the GIL is free meanwhile)."""
    if lock is None or fcntl is None:
        yield
        return
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)


class Writer:
    """One writer thread over `engine`, committing whatever jobs wait as one transaction.

    `isolate` says how a failed batch is re-run job by job: "savepoint" (one transaction,
    one commit) or "transaction" (a transaction per job, where a savepoint would hide what
    the job wrote from `xmin`, as on PostgreSQL). `lock` is a file descriptor flocked
    around each batch (SQLite), or None. `threads` writers take batches from the one
    queue (PostgreSQL: while one batch waits for its commit, the next is being written;
    SQLite has one writer).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        name: str,
        isolate: Literal["savepoint", "transaction"] = "savepoint",
        lock: int | None = None,
        threads: int = 1,
    ) -> None:
        self._engine = engine
        self._isolate = isolate
        self._lock = lock
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._submit_lock = threading.Lock()
        self._closed = False
        self._running = threads  # writer threads not yet stopped (the last fails leftovers)
        self._broken = 0  # batches that failed on a broken connection, any thread
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{n}", daemon=True)
            for n in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def write(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` in a write transaction; returns once that transaction committed."""
        future: Future[T] = Future()
        self.submit(Job(fn, future=future))
        return future.result()

    async def write_async(self, fn: Callable[[Connection], T]) -> T:
        """`write` awaited from the event loop itself: no worker thread per call."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()
        self.submit(Job(fn, waiter=waiter, loop=loop))
        return await waiter

    def submit(self, job: Job) -> None:
        with self._submit_lock:
            if self._closed:
                raise StoreUnavailableError("the store is closed")
            self._jobs.put(job)

    def queued(self) -> int:
        """Jobs waiting for the writer (for tests)."""
        return self._jobs.qsize()

    def close(self) -> None:
        """Run every job already queued, then stop the thread."""
        with self._submit_lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._jobs.put(None)  # after every job already queued: one per thread
        for thread in self._threads:
            thread.join()
        if self._lock is not None:
            os.close(self._lock)

    # The thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        conn: Connection | None = None
        generation = self._broken  # the writers' failures this thread's connection has seen
        stopping = False
        try:
            while not stopping:
                first = self._jobs.get()
                if first is None:
                    break
                batch = [first]
                while len(batch) < MAX_BATCH:
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stopping = True
                        break
                    batch.append(job)
                if conn is not None and generation != self._broken:
                    # Another writer thread's connection broke (a restart, an outage):
                    # this one most likely did too; reconnect rather than fail a batch.
                    with contextlib.suppress(Exception):
                        conn.invalidate()
                        conn.close()
                    conn = None
                generation = self._broken
                conn = self._commit_batch(conn, batch)
                if conn is None:
                    with self._submit_lock:
                        self._broken += 1
                        generation = self._broken
        finally:
            if conn is not None:
                conn.close()
            with self._submit_lock:
                self._running -= 1
                last = self._running == 0
            if last:
                self._fail_leftovers()

    def _commit_batch(self, conn: Connection | None, batch: list[Job]) -> Connection | None:
        """Run `batch` in one transaction; returns the connection to reuse (None if broken).

        Optimistic first: the jobs run one after the other with no savepoint. If one
        raises, the whole transaction is rolled back and the batch runs again job by job,
        so only the failing job is undone.
        """
        live = [
            job for job in batch if job.future is None or job.future.set_running_or_notify_cancel()
        ]
        try:
            if conn is None:
                conn = self._engine.connect()
            with _holding(self._lock):
                try:
                    outcomes = self.run_jobs(conn, live, isolated=False)
                except _JobFailed:
                    outcomes = self.run_jobs(conn, live, isolated=True)
        except Exception as exc:
            # Nothing of this batch is durable: every caller hears so.
            failure = unavailable_error(exc)
            _settle([(job, None, failure) for job in live])
            if conn is not None:
                with contextlib.suppress(Exception):  # already reporting the real failure
                    conn.invalidate()
                    conn.close()
            return None
        _settle(outcomes)
        return conn

    def run_jobs(self, conn: Connection, jobs: list[Job], *, isolated: bool) -> list[Outcome]:
        """Run `jobs` and commit. Not `isolated`: in one transaction, consecutive `Gathered`
        jobs together, and the first failure raises `_JobFailed` (nothing is kept).
        `isolated`: job by job; a failing job is rolled back alone and gets its exception."""
        outcomes: list[Outcome] = []
        if not isolated:
            with conn.begin():
                try:
                    self._run_optimistic(conn, jobs, outcomes)
                except Exception as exc:
                    raise _JobFailed from exc
            return outcomes
        if self._isolate == "transaction":
            for job in jobs:
                try:
                    with conn.begin():
                        value = job.fn(conn)
                except Exception as exc:
                    outcomes.append((job, None, self._job_error(exc)))
                else:
                    outcomes.append((job, value, None))
            return outcomes
        with conn.begin():
            # Straight on the DB-API connection: SQLAlchemy's begin_nested() costs more
            # than the ingest it wraps.
            driver = conn.connection.driver_connection
            assert driver is not None  # noqa: S101 - a live connection
            for job in jobs:
                driver.execute("SAVEPOINT job")
                try:
                    value = job.fn(conn)
                except Exception as exc:
                    driver.execute("ROLLBACK TO job")
                    driver.execute("RELEASE job")
                    outcomes.append((job, None, self._job_error(exc)))
                else:
                    driver.execute("RELEASE job")
                    outcomes.append((job, value, None))
        return outcomes

    @staticmethod
    def _job_error(exc: Exception) -> BaseException:
        return unavailable_error(exc) if isinstance(exc, UNAVAILABLE_ERRORS) else exc

    @staticmethod
    def _run_optimistic(conn: Connection, jobs: list[Job], outcomes: list[Outcome]) -> None:
        """Run `jobs` in order, each run of consecutive jobs of one `Gathered` class
        together."""
        start = 0
        while start < len(jobs):
            fn = jobs[start].fn
            if not isinstance(fn, Gathered):
                outcomes.append((jobs[start], fn(conn), None))
                start += 1
                continue
            end = start
            while end < len(jobs) and type(jobs[end].fn) is type(fn):
                end += 1
            run = jobs[start:end]
            results = type(fn).run_together(conn, [job.fn for job in run])  # type: ignore[misc]
            outcomes.extend((job, result, None) for job, result in zip(run, results, strict=True))
            start = end

    def _fail_leftovers(self) -> None:
        with self._submit_lock:
            self._closed = True
        leftovers: list[Outcome] = []
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None and (
                job.future is None or job.future.set_running_or_notify_cancel()
            ):
                leftovers.append((job, None, StoreUnavailableError("the store is closed")))
        _settle(leftovers)
