"""Records of the fleet-shared state crossing the store interface."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RateReservation:
    """The answer to `Store.reserve_rate`.

    `granted`: the calls are reserved; the first may go in `delay` seconds (0 = now) and
    they are all spent by `delay + span`. Not granted: nothing was reserved because the
    first free slot is `delay` seconds away, more than the caller would wait.
    """

    granted: bool
    delay: float
