"""The login throttle: growing delays per account and per address, never a lock-out, one
state for every process (the database), and X-Forwarded-For believed only from proxies
named in BILLBRIDGE_FORWARDED_ALLOW_IPS."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from billbridge.app import create_app
from billbridge.store.base import Store
from billbridge.store.records_access import ThrottleLimit
from billbridge.store.tables_throttle import login_throttle
from tests.support.auth import API_TOKEN_ENV
from tests.support.dashboard import (
    ADMIN_PASSWORD,
    WEBHOOK_SECRET,
    dashboard_settings,
    login,
    running_dashboard,
)
from tests.support.live_server import ServeProcess, serve_app, wait_until

WRONG = "wrong-password"


def _throttle_rows(database_url: str) -> dict[str, int]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(login_throttle.c.key, login_throttle.c.failures))
            return {str(key): int(failures) for key, failures in rows}
    finally:
        engine.dispose()


def _attempt(url: str, password: str, *, username: str = "admin", **headers: str) -> int:
    with httpx.Client(base_url=url, timeout=20) as client:
        return login(client, username=username, password=password, **headers).status_code


@contextmanager
def _serve(tmp_path: Path, *args: str) -> Iterator[ServeProcess]:
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "BILLBRIDGE_VAR_DIR": str(tmp_path / "var"),
        "BILLBRIDGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "CUSTOMERIO_SITE_ID": "",
        "CUSTOMERIO_TRACK_API_KEY": "",
        "BILLBRIDGE_FORWARDED_ALLOW_IPS": "",
        "FORWARDED_ALLOW_IPS": "*",  # uvicorn's own setting: `serve` must not follow it
        **API_TOKEN_ENV,
    }
    server = ServeProcess(env, cwd=tmp_path, args=("--no-worker", *args))
    try:
        yield server.start()
    finally:
        server.stop()


def test_rotating_x_forwarded_for_does_not_escape_the_throttle(tmp_path: Path) -> None:
    """`billbridge serve` with no trusted proxy: a new X-Forwarded-For on every try from
    127.0.0.1 is ignored, the tries count against 127.0.0.1 and the account, and the
    throttle answers 429 with Retry-After."""
    with _serve(tmp_path) as server:
        statuses = [
            _attempt(server.url, WRONG, **{"X-Forwarded-For": f"203.0.113.{n}"})
            for n in range(1, 8)
        ]
        blocked = httpx.Client(base_url=server.url, timeout=20)
        with blocked:
            answer = login(blocked, **{"X-Forwarded-For": "203.0.113.99"})
    assert statuses[:5] == [401] * 5
    assert 429 in statuses[5:] or answer.status_code == 429
    rows = _throttle_rows(f"sqlite:///{tmp_path / 'serve.db'}")
    assert set(rows) == {"account:admin", "address:127.0.0.1"}
    assert rows["address:127.0.0.1"] == statuses.count(401) + (answer.status_code == 401)


def test_a_named_proxy_is_believed_and_its_clients_are_limited_apart(tmp_path: Path) -> None:
    """With --forwarded-allow-ips 127.0.0.1 the client is the X-Forwarded-For address: a
    burst of failures on many usernames from one client gets 429s, another client behind
    the same proxy is not held back."""
    with _serve(tmp_path, "--forwarded-allow-ips", "127.0.0.1") as server:
        noisy = {"X-Forwarded-For": "203.0.113.5"}
        statuses = [_attempt(server.url, WRONG, username=f"user{n}", **noisy) for n in range(24)]
        other = _attempt(server.url, ADMIN_PASSWORD, **{"X-Forwarded-For": "198.51.100.9"})
    assert statuses[:20] == [401] * 20
    assert 429 in statuses[20:]
    assert other == 303
    rows = _throttle_rows(f"sqlite:///{tmp_path / 'serve.db'}")
    assert rows["address:203.0.113.5"] == statuses.count(401)
    assert "address:127.0.0.1" not in rows


def _wait_out_429(url: str, password: str) -> int:
    """Retry one login until it is not throttled; returns the answer's status."""
    return int(wait_until(lambda: (s := _attempt(url, password)) != 429 and s, timeout=15))


def test_the_right_password_is_accepted_once_the_delay_passes(tmp_path: Path) -> None:
    """Six wrong passwords: the next try within 2 s is refused (429, Retry-After), then the
    right password logs in as soon as the delay has passed: a delay, never a lock-out."""
    with running_dashboard(dashboard_settings(tmp_path)) as (url, services):
        assert [_attempt(url, WRONG) for _ in range(5)] == [401] * 5
        assert _wait_out_429(url, WRONG) == 401  # the 6th waits 1 s
        with httpx.Client(base_url=url, timeout=20) as client:
            refused = login(client)
        assert refused.status_code == 429
        assert "Try again in" in refused.text
        assert 1 <= int(refused.headers["retry-after"]) <= 2
        assert _wait_out_429(url, ADMIN_PASSWORD) == 303
        assert _throttle_rows(services.settings.database_url).get("account:admin") is None


def test_two_app_instances_on_one_database_share_the_throttle(tmp_path: Path) -> None:
    """Failures alternate between two instances (three each, under the five free ones of
    either alone); the sixth puts both under the delay, and a success on one clears it."""
    settings = dashboard_settings(tmp_path)
    with ExitStack() as stack:
        first = stack.enter_context(serve_app(create_app(settings, run_worker=False)))
        second = stack.enter_context(serve_app(create_app(settings, run_worker=False)))
        for url in (first, second, first, second, first):
            assert _attempt(url, WRONG) == 401
        assert _wait_out_429(second, WRONG) == 401
        assert _attempt(first, ADMIN_PASSWORD) == 429
        assert _wait_out_429(first, ADMIN_PASSWORD) == 303
        assert _attempt(second, WRONG) == 401  # the success on `first` reset the account


def test_concurrent_attempts_are_counted_one_by_one(store: Store) -> None:
    """Twelve attempts at once on one account: exactly the five free ones go ahead (both
    drivers: the decision and the count are one transaction)."""
    limit = ThrottleLimit(free=5, base=60.0, cap=60.0)
    with ThreadPoolExecutor(max_workers=12) as pool:
        waits = list(pool.map(lambda _: store.begin_login_attempt({"account:x": limit}), range(12)))
    assert sorted(w == 0.0 for w in waits).count(True) == 5
    assert all(55.0 < w <= 60.0 for w in waits if w > 0)


def test_success_clears_the_account_and_forgives_the_address(store: Store) -> None:
    """end_login_attempt deletes the account's state and takes one attempt back from the
    address; an expired state starts counting again from one."""
    account, address = ThrottleLimit(free=2), ThrottleLimit(free=2, reset_after=0.2)
    for _ in range(2):
        assert store.begin_login_attempt({"account:a": account, "address:x": address}) == 0.0
    assert store.begin_login_attempt({"account:a": account, "address:x": address}) > 0
    store.end_login_attempt(clear=["account:a"], forgive=["address:x"])
    assert store.begin_login_attempt({"account:a": account}) == 0.0
    assert store.begin_login_attempt({"address:x": address}) == 0.0  # 1 taken back: 2 now
    assert store.begin_login_attempt({"address:x": address}) > 0
    assert wait_until(lambda: store.begin_login_attempt({"address:x": address}) == 0.0)


@pytest.mark.parametrize(
    ("failures", "since", "wait"),
    [(4, 0.0, 0.0), (5, 0.0, 1.0), (6, 0.5, 1.5), (9, 0.0, 16.0), (40, 0.0, 60.0), (99, 901, 0)],
)
def test_delays_double_up_to_the_cap(failures: int, since: float, wait: float) -> None:
    """5 free failures, then 1, 2, 4, ... s up to 60 s; nothing after 15 quiet minutes."""
    assert ThrottleLimit().wait(failures, 1000.0, 1000.0 + since) == wait
