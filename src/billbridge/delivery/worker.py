"""Worker: claims due deliveries in batches under a lease; at most `concurrency` in flight.

    worker = Worker(store, executor, concurrency=512, lease_seconds=60)
    await worker.run(stop_event)      # returns after stop_event is set and work drained

While it runs it heartbeats into the database every `beat_interval` seconds (with its
deliveries in flight); each beat also frees at once the claims of any worker silent for
`silent_after` seconds, so a killed process's deliveries are taken over within
`silent_after + beat_interval` seconds, not at the end of their lease.

It sleeps on the store's wake-up (`wait_for_work`: an in-process signal on SQLite,
LISTEN/NOTIFY on PostgreSQL) and polls every `poll_interval` seconds as a fallback, so
retries that become due and work written by other processes are picked up too.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid

import anyio
import structlog

from billbridge import __version__
from billbridge.delivery.executor import DeliveryExecutor
from billbridge.store.base import Store
from billbridge.store.records import ClaimedDelivery, WorkerInfo, WorkerRecord

log = structlog.get_logger("billbridge.worker")

BEAT_INTERVAL = 3.0  # seconds between heartbeats
SILENT_AFTER = 9.0  # seconds without a heartbeat after which a worker's claims are freed
KNOWN_WITHIN = 86_400.0  # seconds: a silent worker's row older than this is not shown


def live_workers(store: Store) -> list[WorkerRecord]:
    """The workers alive now (beat within SILENT_AFTER seconds), by host and pid."""
    return store.list_workers(SILENT_AFTER)


def split_workers(workers: list[WorkerRecord]) -> tuple[list[WorkerRecord], list[WorkerRecord]]:
    """(alive, silent): silent ones stopped beating (killed, or cut from the database) and
    still hold the claims they had until another worker's beat frees them."""
    alive = [w for w in workers if w.silent_for <= SILENT_AFTER]
    return alive, [w for w in workers if w.silent_for > SILENT_AFTER]


class Worker:
    """The claim loop of one process.

    Claims come in batches: when at least a quarter of the `concurrency` slots are free
    (or nothing runs), the worker claims up to the free count at once and hands the batch
    to `DeliveryExecutor.run_many`, which decides, sends and records it as a group.
    """

    def __init__(
        self,
        store: Store,
        executor: DeliveryExecutor,
        *,
        concurrency: int = 512,
        lease_seconds: float = 60.0,
        poll_interval: float = 0.5,  # seconds between polls when nothing wakes us
        drain_timeout: float = 10.0,  # seconds to let running deliveries finish on stop
        beat_interval: float = BEAT_INTERVAL,
        silent_after: float = SILENT_AFTER,
    ) -> None:
        self._store = store
        self._executor = executor
        self._concurrency = concurrency
        self._refill_at = max(1, concurrency // 4)
        self._lease_seconds = lease_seconds
        self._poll_interval = poll_interval
        self._drain_timeout = drain_timeout
        host, pid = socket.gethostname(), os.getpid()
        self.worker_id = f"{host}:{pid}:{uuid.uuid4().hex[:8]}"
        self._info = WorkerInfo(self.worker_id, host[:255], pid, __version__)
        self._beat_interval = beat_interval
        self._silent_after = silent_after
        self._running: set[asyncio.Task[object]] = set()
        self._in_flight = 0  # deliveries claimed and not yet recorded

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run deliveries until `stop` is set; then let running ones finish."""
        log.info("worker started", worker_id=self.worker_id, concurrency=self._concurrency)
        await self._beat()  # registered before its first claim
        heartbeat = asyncio.create_task(self._heartbeat(stop))
        try:
            while not stop.is_set():
                free = self._concurrency - self._in_flight
                if free < self._refill_at and self._running:
                    await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    claims = await anyio.to_thread.run_sync(
                        self._store.claim_due, self.worker_id, free, self._lease_seconds
                    )
                except Exception as exc:  # the database may be down for a while
                    log.warning("could not claim deliveries", error_type=type(exc).__name__)
                    await self._pause(stop, self._poll_interval * 4)
                    continue
                if claims:
                    self._start(claims)
                    continue
                await self._wait_for_work(stop)
        finally:
            await self._drain()
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            await self._retire()
            log.info("worker stopped", worker_id=self.worker_id)

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._pause(stop, self._beat_interval)
            await self._beat()

    async def _beat(self) -> None:
        """Beat once; free the claims of silent workers (logged when there were some)."""
        try:
            freed = await anyio.to_thread.run_sync(
                self._store.beat, self._info, self._in_flight, self._silent_after
            )
        except Exception as exc:  # the database may be down for a while: beat again later
            log.warning("could not record a heartbeat", error_type=type(exc).__name__)
            return
        if freed:
            log.warning("took over the claims of a silent worker", deliveries=freed)

    async def _retire(self) -> None:
        """Stopping cleanly: free what this worker still holds and drop its row."""
        try:
            await anyio.to_thread.run_sync(self._store.retire_worker, self.worker_id)
        except Exception as exc:
            log.warning("could not retire the worker", error_type=type(exc).__name__)

    def _start(self, claims: list[ClaimedDelivery]) -> None:
        count = len(claims)
        self._in_flight += count
        task: asyncio.Task[object] = asyncio.create_task(self._executor.run_many(claims))

        def finished(done: asyncio.Task[object]) -> None:
            self._in_flight -= count
            self._running.discard(done)

        self._running.add(task)
        task.add_done_callback(finished)

    async def _wait_for_work(self, stop: asyncio.Event) -> None:
        """Sleep until the store signals new work, a running delivery ends, or the poll
        interval passes."""
        waiter = asyncio.create_task(
            anyio.to_thread.run_sync(self._store.wait_for_work, self._poll_interval)
        )
        stopper = asyncio.create_task(stop.wait())
        pending = {waiter, stopper, *self._running}
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        # The thread wait ends by itself within the poll interval; don't leave it orphaned.
        if not waiter.done() and stop.is_set():
            self._store.notify_work()
        await asyncio.gather(waiter, return_exceptions=True)

    @staticmethod
    async def _pause(stop: asyncio.Event, seconds: float) -> None:
        try:
            await asyncio.wait_for(stop.wait(), timeout=seconds)
        except TimeoutError:
            return

    async def _drain(self) -> None:
        if not self._running:
            return
        log.info("waiting for running deliveries", count=len(self._running))
        _done, still_running = await asyncio.wait(self._running, timeout=self._drain_timeout)
        for task in still_running:
            # Their leases expire and another worker (or the next start) takes them over.
            task.cancel()
        await asyncio.gather(*still_running, return_exceptions=True)
