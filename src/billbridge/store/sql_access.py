"""SQL for users, sessions, API tokens, encrypted credentials and alert state.

A mixin of `SqlStore` (both drivers): it uses the same hooks (`_read`, `_write`,
`_insert`, `_now_expr`), so SQLite writes go through the writer thread like any other.
It brings the login throttle's SQL along (`SqlThrottleMixin`).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billbridge.store.records_access import (
    AlertStateRecord,
    ApiTokenRecord,
    FailedDeliveries,
    SessionRecord,
    UserRecord,
)
from billbridge.store.sql_throttle import SqlThrottleMixin
from billbridge.store.tables import deliveries
from billbridge.store.tables_access import (
    alert_settings,
    alert_state,
    api_tokens,
    credentials,
    sessions,
    users,
)

TOKEN_USE_RESOLUTION = 60.0  # seconds: last_used_at is refreshed at most this often


def _token_record(row: Any) -> ApiTokenRecord:
    return ApiTokenRecord(
        token_id=int(row.id),
        name=row.name,
        prefix=row.prefix,
        created_at=float(row.created_at),
        revoked_at=None if row.revoked_at is None else float(row.revoked_at),
        last_used_at=None if row.last_used_at is None else float(row.last_used_at),
    )


class SqlAccessMixin(SqlThrottleMixin):
    """The access, credentials and alert-state part of the SQL store."""

    # Users --------------------------------------------------------------------------------

    def save_user(self, username: str, password_hash: str) -> UserRecord:
        stmt = self._insert(users).values(
            username=username,
            password_hash=password_hash,
            created_at=self._now_expr,
            updated_at=self._now_expr,
        )
        upsert = stmt.on_conflict_do_update(
            index_elements=[users.c.username],
            set_={
                "password_hash": stmt.excluded.password_hash,
                "updated_at": stmt.excluded.updated_at,
            },
        ).returning(*users.c)
        row = self._write(lambda conn: conn.execute(upsert).one())
        return UserRecord(int(row.id), row.username, row.password_hash, float(row.created_at))

    def get_user(self, username: str) -> UserRecord | None:
        stmt = sa.select(users).where(users.c.username == username)
        row = self._read(lambda conn: conn.execute(stmt).first())
        if row is None:
            return None
        return UserRecord(int(row.id), row.username, row.password_hash, float(row.created_at))

    def count_users(self) -> int:
        stmt = sa.select(sa.func.count()).select_from(users)
        return int(self._read(lambda conn: conn.execute(stmt).scalar_one()))

    # Sessions -----------------------------------------------------------------------------

    def create_session(
        self, token_hash: str, user_id: int, csrf_token: str, lifetime: float
    ) -> None:
        def tx(conn: Connection) -> None:
            conn.execute(sa.delete(sessions).where(sessions.c.expires_at <= self._now_expr))
            conn.execute(
                sa.insert(sessions).values(
                    token_hash=token_hash,
                    user_id=user_id,
                    csrf_token=csrf_token,
                    created_at=self._now_expr,
                    expires_at=self._now_expr + lifetime,
                )
            )

        self._write(tx)

    def get_session(self, token_hash: str) -> SessionRecord | None:
        stmt = (
            sa.select(sessions, users.c.username)
            .join(users, users.c.id == sessions.c.user_id)
            .where(sessions.c.token_hash == token_hash, sessions.c.expires_at > self._now_expr)
        )
        row = self._read(lambda conn: conn.execute(stmt).first())
        if row is None:
            return None
        return SessionRecord(
            user_id=int(row.user_id),
            username=row.username,
            csrf_token=row.csrf_token,
            created_at=float(row.created_at),
            expires_at=float(row.expires_at),
        )

    def delete_session(self, token_hash: str) -> None:
        stmt = sa.delete(sessions).where(sessions.c.token_hash == token_hash)
        self._write(lambda conn: conn.execute(stmt))

    def delete_user_sessions(self, user_id: int) -> int:
        stmt = sa.delete(sessions).where(sessions.c.user_id == user_id)
        return int(self._write(lambda conn: conn.execute(stmt).rowcount))

    # API tokens ---------------------------------------------------------------------------

    def create_api_token(self, name: str, token_hash: str, prefix: str) -> ApiTokenRecord:
        stmt = (
            sa.insert(api_tokens)
            .values(name=name, token_hash=token_hash, prefix=prefix, created_at=self._now_expr)
            .returning(*api_tokens.c)
        )
        return _token_record(self._write(lambda conn: conn.execute(stmt).one()))

    def list_api_tokens(self) -> list[ApiTokenRecord]:
        stmt = sa.select(api_tokens).order_by(api_tokens.c.id)
        return [_token_record(row) for row in self._read(lambda conn: conn.execute(stmt).all())]

    def find_api_token(self, token_hash: str) -> ApiTokenRecord | None:
        stmt = sa.select(api_tokens, self._now_expr.label("now")).where(
            api_tokens.c.token_hash == token_hash, api_tokens.c.revoked_at.is_(None)
        )
        row = self._read(lambda conn: conn.execute(stmt).first())
        if row is None:
            return None
        if row.last_used_at is None or row.now - row.last_used_at > TOKEN_USE_RESOLUTION:
            touch = (
                sa.update(api_tokens)
                .where(api_tokens.c.id == row.id)
                .values(last_used_at=self._now_expr)
            )
            self._write(lambda conn: conn.execute(touch))
        return _token_record(row)

    def revoke_api_token(self, token_id: int) -> bool:
        stmt = (
            sa.update(api_tokens)
            .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=self._now_expr)
        )
        return bool(self._write(lambda conn: conn.execute(stmt).rowcount == 1))

    # Credentials and alert settings -------------------------------------------------------

    def get_credentials(self) -> dict[str, str]:
        stmt = sa.select(credentials.c.name, credentials.c.ciphertext)
        rows = self._read(lambda conn: conn.execute(stmt).all())
        return {str(name): str(ciphertext) for name, ciphertext in rows}

    def save_credential(self, name: str, ciphertext: str | None) -> None:
        if ciphertext is None:
            delete = sa.delete(credentials).where(credentials.c.name == name)
            self._write(lambda conn: conn.execute(delete))
            return
        self._upsert_blob(credentials, "name", name, ciphertext)

    def get_alert_settings(self, key: str) -> str | None:
        stmt = sa.select(alert_settings.c.ciphertext).where(alert_settings.c.key == key)
        value = self._read(lambda conn: conn.execute(stmt).scalar_one_or_none())
        return None if value is None else str(value)

    def save_alert_settings(self, key: str, ciphertext: str) -> None:
        self._upsert_blob(alert_settings, "key", key, ciphertext)

    def _upsert_blob(self, table: sa.Table, key_column: str, key: str, ciphertext: str) -> None:
        stmt = self._insert(table).values(
            {key_column: key, "ciphertext": ciphertext, "updated_at": self._now_expr}
        )
        upsert = stmt.on_conflict_do_update(
            index_elements=[table.c[key_column]],
            set_={"ciphertext": stmt.excluded.ciphertext, "updated_at": stmt.excluded.updated_at},
        )
        self._write(lambda conn: conn.execute(upsert))

    # Alert state --------------------------------------------------------------------------

    def get_alert_state(self, name: str) -> AlertStateRecord | None:
        stmt = sa.select(alert_state).where(alert_state.c.name == name)
        row = self._read(lambda conn: conn.execute(stmt).first())
        if row is None:
            return None
        last = None if row.last_sent_at is None else float(row.last_sent_at)
        return AlertStateRecord(row.name, last, float(row.watermark))

    def claim_alert(
        self, name: str, expected_last_sent: float | None, watermark: float, sent_at: float
    ) -> bool:
        def tx(conn: Connection) -> bool:
            if expected_last_sent is None:
                insert = (
                    self._insert(alert_state)
                    .values(name=name, last_sent_at=sent_at, watermark=watermark)
                    .on_conflict_do_update(
                        index_elements=[alert_state.c.name],
                        set_={"last_sent_at": sent_at, "watermark": watermark},
                        where=alert_state.c.last_sent_at.is_(None),
                    )
                    .returning(alert_state.c.name)
                )
                return conn.execute(insert).first() is not None
            update = (
                sa.update(alert_state)
                .where(alert_state.c.name == name, alert_state.c.last_sent_at == expected_last_sent)
                .values(last_sent_at=sent_at, watermark=watermark)
            )
            return bool(conn.execute(update).rowcount == 1)

        return self._write(tx)

    def failed_since(self, watermark: float) -> FailedDeliveries:
        def read(conn: Connection) -> FailedDeliveries:
            recent = sa.and_(deliveries.c.status == "failed", deliveries.c.updated_at > watermark)
            by_workflow = {
                str(workflow_id): int(count)
                for workflow_id, count in conn.execute(
                    sa.select(deliveries.c.workflow_id, sa.func.count())
                    .where(recent)
                    .group_by(deliveries.c.workflow_id)
                )
            }
            newest = conn.execute(
                sa.select(deliveries.c.updated_at, deliveries.c.last_error)
                .where(recent)
                .order_by(deliveries.c.updated_at.desc(), deliveries.c.id.desc())
                .limit(1)
            ).first()
            return FailedDeliveries(
                count=sum(by_workflow.values()),
                by_workflow=by_workflow,
                newest_at=None if newest is None else float(newest.updated_at),
                last_error=None if newest is None else newest.last_error,
            )

        return self._read(read)
