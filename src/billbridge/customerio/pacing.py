"""Pacing of Customer.io calls before they go out, one rate per limit shared by the fleet.

    pacer = Pacer.from_settings(settings, store)
    await pacer.wait(request)     # returns when the call may go; raises when too far off

Customer.io limits the App API (10 requests/s), API-triggered broadcasts (1 per 10 s) and,
softly, Track. Every process of a Billbridge (serve, workers, on every host) takes its
calls' slots from the same rows of the database (`Store.reserve_rate`: one statement on the
database clock), so together they stay under each limit; a 429 is only the last resort.
Slots are spaced at `PACING_SHARE` of the configured rate, so that the network's jitter
between our clock and Customer.io's cannot put one call too many into a second.

A call waits for its slot asleep (the event loop keeps running) for at most
`MAX_WAIT` seconds; a call whose slot is further off is not sent and raises
`RetryableDeliveryError` with `retry_after`, so the delivery is rescheduled (nothing was
sent). Track takes its slots in blocks (`BLOCK_SECONDS` of the rate per statement) that
expire with the time they cover; the App API and broadcasts take one slot per call.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from billbridge.config import Settings
from billbridge.customerio.requests import CioRequest
from billbridge.errors import RetryableDeliveryError, StoreUnavailableError
from billbridge.store.base import Store

PACING_SHARE = 0.8  # slots are spaced at 80% of the configured rate
MAX_WAIT = 20.0  # seconds a call may wait for its slot (well inside the 60 s lease)
BLOCK_SECONDS = 0.05  # Track reserves this much of its rate per statement


@dataclass(frozen=True)
class RateLimit:
    """One shared rate: `interval` seconds between calls, `block` calls per reservation."""

    name: str
    setting: str  # the environment variable, for messages
    interval: float
    block: int = 1

    @classmethod
    def per_second(cls, name: str, setting: str, rps: float, *, blocks: bool) -> RateLimit:
        interval = 1.0 / (rps * PACING_SHARE)
        block = max(1, math.floor(BLOCK_SECONDS / interval)) if blocks else 1
        return cls(name=name, setting=setting, interval=interval, block=block)


@dataclass
class _Block:
    """Slots reserved in one statement: usable from `start` until `expires` (monotonic)."""

    remaining: int
    start: float
    expires: float


class Pacer:
    """Waits for each call's slots in the shared rates; safe for many concurrent calls."""

    def __init__(
        self,
        store: Store,
        *,
        app: RateLimit | None,
        broadcast: RateLimit | None,
        track: RateLimit | None,
        max_wait: float = MAX_WAIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._app = app
        self._broadcast = broadcast
        self._track = track
        self._max_wait = max_wait
        self._clock = clock
        self._blocks: dict[str, _Block] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_settings(cls, settings: Settings, store: Store) -> Pacer:
        """The three limits of SPEC §2 (BILLBRIDGE_CIO_*); a limit set to 0 is off."""
        app = track = broadcast = None
        if settings.cio_app_rps > 0:
            app = RateLimit.per_second(
                "customerio.app", "BILLBRIDGE_CIO_APP_RPS", settings.cio_app_rps, blocks=False
            )
        if settings.cio_track_rps > 0:
            track = RateLimit.per_second(
                "customerio.track", "BILLBRIDGE_CIO_TRACK_RPS", settings.cio_track_rps, blocks=True
            )
        if settings.cio_broadcast_interval > 0:
            broadcast = RateLimit(
                name="customerio.broadcast",
                setting="BILLBRIDGE_CIO_BROADCAST_INTERVAL",
                interval=settings.cio_broadcast_interval / PACING_SHARE,
            )
        return cls(store, app=app, broadcast=broadcast, track=track)

    def limits_for(self, request: CioRequest) -> list[RateLimit]:
        """The rates a call counts against: Track, or the App API (and a broadcast trigger
        also the broadcast rate, taken first: it is the scarcer one)."""
        if request.api == "track":
            return [self._track] if self._track else []
        limits = [self._app] if self._app else []
        if self._broadcast and _is_broadcast_trigger(request):
            limits.insert(0, self._broadcast)
        return limits

    async def wait(self, request: CioRequest) -> None:
        """Return when `request` may be sent; RetryableDeliveryError when its slot is more
        than the bounded wait away or the database cannot be asked."""
        for limit in self.limits_for(request):
            if limit.block > 1:
                await self._take_from_block(limit)
            else:
                await self._take_one(limit)

    async def _take_one(self, limit: RateLimit) -> None:
        delay = await self._reserve(limit, 1)
        if delay > 0:
            await asyncio.sleep(delay)

    async def _take_from_block(self, limit: RateLimit) -> None:
        async with self._lock(limit.name):
            block = self._blocks.get(limit.name)
            if block is None or block.remaining < 1 or self._clock() >= block.expires:
                asked = self._clock()
                delay = await self._reserve(limit, limit.block)
                # Conservative on both ends: the slots start no earlier than `delay` after
                # the answer came, and end no later than the span after the question left.
                block = _Block(
                    remaining=limit.block,
                    start=self._clock() + delay,
                    expires=asked + delay + limit.block * limit.interval,
                )
                self._blocks[limit.name] = block
            block.remaining -= 1
            start = block.start
        wait = start - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _reserve(self, limit: RateLimit, count: int) -> float:
        try:
            reservation = await anyio.to_thread.run_sync(
                self._store.reserve_rate, limit.name, count, limit.interval, self._max_wait
            )
        except StoreUnavailableError as exc:
            raise RetryableDeliveryError(
                f"could not take a slot of the Customer.io rate {limit.name} ({exc}); "
                "nothing was sent, it will be retried"
            ) from None
        if not reservation.granted:
            raise RetryableDeliveryError(
                f"the Customer.io rate {limit.name} ({limit.setting}) has no free slot for "
                f"{reservation.delay:.0f} s; nothing was sent, it will be retried then",
                retry_after=reservation.delay,
            )
        return reservation.delay

    def _lock(self, name: str) -> asyncio.Lock:
        # asyncio locks belong to one event loop; a client used from a new loop (one CLI
        # command after another) gets new ones.
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._locks, self._loop = {}, loop
        return self._locks.setdefault(name, asyncio.Lock())


def _is_broadcast_trigger(request: CioRequest) -> bool:
    parts = request.path.strip("/").split("/")
    return (
        request.method == "POST"
        and len(parts) == 4
        and parts[:2] == ["v1", "campaigns"]
        and parts[3] == "triggers"
    )
