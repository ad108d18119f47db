"""SQL for the login throttle: failed attempts per key, counted and checked in one transaction.

A mixin of `SqlStore` (both drivers; reached through `SqlAccessMixin`), on the same hooks
(`_write`, `_insert`, `_now_expr`), so SQLite writes go through the writer thread. On
PostgreSQL the rows are locked (`FOR UPDATE`, keys in sorted order: no deadlock) for the
decision, so concurrent logins in any process are counted one after the other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billbridge.store.records_access import ThrottleLimit
from billbridge.store.sql_hooks import SqlHooks
from billbridge.store.tables_throttle import login_throttle

KEY_LENGTH = 255  # the column's size; longer keys are cut (a username is user input)
PRUNE_AFTER = 86_400.0  # seconds without a failure before any key's state is deleted


class SqlThrottleMixin(SqlHooks):
    """The login throttle part of the SQL store."""

    def begin_login_attempt(self, limits: Mapping[str, ThrottleLimit]) -> float:
        keys = sorted({key[:KEY_LENGTH] for key in limits})
        cut = {key[:KEY_LENGTH]: limit for key, limit in limits.items()}
        horizon = max([PRUNE_AFTER, *(limit.reset_after for limit in limits.values())])

        def tx(conn: Connection) -> float:
            # Forget long-quiet state (bounds the table under a spray of usernames).
            conn.execute(
                sa.delete(login_throttle).where(
                    login_throttle.c.last_failure_at < self._now_expr - horizon
                )
            )
            # Rows first (failures 0), so that FOR UPDATE has something to lock even on a
            # key's first attempt; concurrent inserts of one key wait for each other.
            conn.execute(
                self._insert(login_throttle)
                .values(
                    [{"key": key, "failures": 0, "last_failure_at": self._now_expr} for key in keys]
                )
                .on_conflict_do_nothing(index_elements=[login_throttle.c.key])
            )
            rows = {
                row.key: row
                for row in conn.execute(
                    sa.select(login_throttle)
                    .where(login_throttle.c.key.in_(keys))
                    .order_by(login_throttle.c.key)
                    .with_for_update()
                )
            }
            now = float(conn.execute(sa.select(self._now_expr)).scalar_one())  # once locked
            wait = max(
                cut[key].wait(int(rows[key].failures), rows[key].last_failure_at, now)
                for key in keys
            )
            if wait > 0:
                return wait
            for key in keys:
                row = rows[key]
                fresh = now - row.last_failure_at > cut[key].reset_after
                conn.execute(
                    sa.update(login_throttle)
                    .where(login_throttle.c.key == key)
                    .values(failures=1 if fresh else row.failures + 1, last_failure_at=now)
                )
            return 0.0

        return self._write(tx)

    def end_login_attempt(self, *, clear: Sequence[str], forgive: Sequence[str]) -> None:
        def tx(conn: Connection) -> None:
            if clear:
                conn.execute(
                    sa.delete(login_throttle).where(
                        login_throttle.c.key.in_([key[:KEY_LENGTH] for key in clear])
                    )
                )
            if forgive:
                conn.execute(
                    sa.update(login_throttle)
                    .where(
                        login_throttle.c.key.in_([key[:KEY_LENGTH] for key in forgive]),
                        login_throttle.c.failures > 0,
                    )
                    .values(failures=login_throttle.c.failures - 1)
                )

        self._write(tx)
