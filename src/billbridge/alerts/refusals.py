"""Webhooks refused for their signature, counted in the database so that the alert sees
the refusals of every process that serves `/webhooks/stripe`.

    counter = RefusalCounter(store)
    counter.note()      # in the event loop, per refused request: no I/O on that path

Refusals add up in memory and are written at most once per `FLUSH_DELAY` (one upsert into
`alert_counts`), so a flood of forged requests costs one write a second, not one each. A
process that stops may lose its last second of counts.
"""

from __future__ import annotations

import asyncio

import anyio
import structlog

from billbridge.errors import BillbridgeError
from billbridge.store.base import Store

log = structlog.get_logger("billbridge.alerts")

SIGNATURE_COUNT = "signature_refusals"  # its name in `alert_counts`
FLUSH_DELAY = 1.0  # seconds between a first refusal and the write that records it


class RefusalCounter:
    """Counts refusals of one process and adds them to the shared count in the store."""

    def __init__(self, store: Store, *, name: str = SIGNATURE_COUNT) -> None:
        self._store = store
        self._name = name
        self._pending = 0
        self._flush: asyncio.Task[None] | None = None

    def note(self) -> None:
        """One more refusal; schedules the write unless one is already scheduled."""
        self._pending += 1
        if self._flush is None or self._flush.done():
            self._flush = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(FLUSH_DELAY)
        count, self._pending = self._pending, 0
        try:
            await anyio.to_thread.run_sync(lambda: self._store.add_alert_count(self._name, count))
        except BillbridgeError as exc:
            log.warning("could not record refused webhooks", count=count, error=str(exc))
