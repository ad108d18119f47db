"""SQL for what a fleet of processes shares: the Customer.io rate limits (a `SqlStore` mixin).

Both drivers: it uses the `SqlStore` hooks (`_write`, `_insert`, `_now_expr`), so on SQLite
the take is a job of the writer thread like every other write.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billbridge.store.records_fleet import RateReservation
from billbridge.store.sql_hooks import SqlHooks
from billbridge.store.tables_fleet import rate_limits

# One statement per take, on one reading of the database clock (the CTE: PostgreSQL's
# clock_timestamp() would change between references). The slot is max(next_at, now); it
# is granted when it is at most :max_wait away, and then next_at moves :span past it.
_SLOT = "(CASE WHEN rate_limits.next_at > clock.now THEN rate_limits.next_at ELSE clock.now END)"
_TAKE_SQL = f"""
WITH clock AS (SELECT {{now}} AS now)
UPDATE rate_limits SET
    next_at = CASE WHEN {_SLOT} - clock.now <= :max_wait
                   THEN {_SLOT} + :span ELSE rate_limits.next_at END,
    granted = ({_SLOT} - clock.now <= :max_wait),
    taken_at = clock.now
FROM clock
WHERE rate_limits.name = :name
RETURNING rate_limits.next_at, rate_limits.taken_at, rate_limits.granted
"""  # noqa: S608 - built from constants only; every value is a bound parameter


class SqlFleetMixin(SqlHooks):
    """The rate-limit part of the SQL store."""

    def reserve_rate(
        self, name: str, count: int, interval: float, max_wait: float
    ) -> RateReservation:
        if count < 1 or interval < 0 or max_wait < 0:
            raise ValueError("reserve_rate needs count >= 1, interval >= 0 and max_wait >= 0")
        span = count * interval
        take = sa.text(_TAKE_SQL.format(now=self._now_expr.compile()))
        create = (
            self._insert(rate_limits)
            .values(name=name, next_at=0.0, taken_at=0.0, granted=True)
            .on_conflict_do_nothing(index_elements=[rate_limits.c.name])
        )

        def tx(conn: Connection) -> tuple[float, float, bool]:
            row = conn.execute(take, {"name": name, "span": span, "max_wait": max_wait}).first()
            if row is None:  # the first take of this limit in this database
                conn.execute(create)
                row = conn.execute(take, {"name": name, "span": span, "max_wait": max_wait}).one()
            return float(row[0]), float(row[1]), bool(row[2])

        next_at, now, granted = self._write(tx)
        if granted:
            return RateReservation(granted=True, delay=max(0.0, next_at - span - now))
        return RateReservation(granted=False, delay=max(0.0, next_at - now))
