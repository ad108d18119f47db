"""The workers of the fleet seen from outside, over real HTTP: the overview, GET /api/workers
and /metrics list the running `billbridge worker` (host, pid) and `serve`'s own worker; when
the only worker is killed with -9 while deliveries are due, `serve --no-worker` sends one
"no_worker" alert to a local receiver, and one "resolved" once a worker starts again."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from billbridge import __version__
from billbridge.stripe.samples import sample_event
from tests.fakes.customerio import FakeCustomerIO
from tests.integration.test_alerts import Receiver
from tests.support.auth import API_TOKEN_ENV, AUTH
from tests.support.dashboard import ADMIN_PASSWORD, ALERTS_QUIET, logged_in
from tests.support.live_server import (
    BILLBRIDGE,
    ServeProcess,
    post_signed,
    serve_app,
    wait_until,
)

SECRET = "whsec_no_worker_secret"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/workers.db"
    return str(request.getfixturevalue("own_postgres_url"))


@pytest.fixture
def cio() -> Iterator[FakeCustomerIO]:
    with FakeCustomerIO() as fake:
        yield fake


def _env(database_url: str, cio: FakeCustomerIO, tmp_path: Path) -> dict[str, str]:
    return {
        **cio.settings_env(),
        **API_TOKEN_ENV,
        "DATABASE_URL": database_url,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "BILLBRIDGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "BILLBRIDGE_VAR_DIR": str(tmp_path / "var"),
        "BILLBRIDGE_ALERTS_ALLOW_LOOPBACK": "true",
        "BILLBRIDGE_ALERTS_CHECK_INTERVAL": "0.2",
        "BILLBRIDGE_SECRET_KEY": "4TS5yZnfiW8QI7m2ByDzqZVzXav2TmeHtzsaEIbEh1E=",
    }


def _worker(env: dict[str, str], cwd: Path, name: str) -> subprocess.Popen[bytes]:
    log = (cwd / f"{name}.log").open("ab")
    return subprocess.Popen(
        [BILLBRIDGE, "worker"], env={**os.environ, **env}, cwd=cwd, stdout=log, stderr=log
    )


def _workers(url: str) -> dict[str, Any]:
    answer = httpx.get(url + "/api/workers", headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def _gauge(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    (line,) = [x for x in text.splitlines() if x.startswith("billbridge_workers_alive ")]
    return float(line.split()[1])


@pytest.mark.slow
def test_the_only_worker_killed_fires_no_worker_and_a_new_worker_resolves_it(
    tmp_path: Path, database_url: str, cio: FakeCustomerIO
) -> None:
    """The overview, the API and the gauge show the running worker (host, pid, version);
    after its kill -9 a webhook's delivery stays due, the overview shows the worker silent,
    and one "no_worker" alert says to start a worker; a new worker delivers it and one
    "resolved" message follows."""
    receiver = Receiver()
    env = _env(database_url, cio, tmp_path)
    with serve_app(receiver.app) as hook:
        server = ServeProcess(env, cwd=tmp_path, args=("--no-worker",)).start()
        first = _worker(env, tmp_path, "worker-a")
        second: subprocess.Popen[bytes] | None = None
        try:
            saved = httpx.put(
                server.url + "/api/alerts",
                json={
                    "webhook_url": hook + "/alerts",
                    **ALERTS_QUIET,
                    "on_no_worker": True,
                    "no_worker_seconds": 1,
                },
                headers=AUTH,
                timeout=10,
            )
            assert saved.status_code == 200, saved.text
            listed = wait_until(lambda: _workers(server.url)["alive"] == 1 and _workers(server.url))
            (shown,) = listed["workers"]
            assert (shown["host"], shown["pid"]) == (socket.gethostname(), first.pid)
            assert (shown["version"], shown["alive"]) == (__version__, True)
            assert _gauge(server.url) == 1.0
            with logged_in(server.url) as client:
                page = client.get("/").text
            (row,) = page.split('data-testid="worker-row"')[1:]
            assert f">{first.pid}<" in row
            assert socket.gethostname() in row
            assert "no-worker-warning" not in page

            first.kill()
            first.wait(timeout=10)
            charge = sample_event("charge.succeeded", customer_id="cus_Alone", email="a@x.io")
            assert post_signed(server.url, charge, SECRET).status_code == 200

            def sent(state: str) -> list[dict[str, Any]]:
                return [
                    b for b in receiver.bodies if b["kind"] == "no_worker" and b["state"] == state
                ]

            wait_until(lambda: sent("firing"), timeout=30, interval=0.1)
            (firing,) = sent("firing")
            assert firing["title"].startswith("Billbridge: no worker is running")
            assert "billbridge worker" in firing["text"]
            assert "database" in firing["text"]
            assert f"pid {first.pid}" in firing["text"]
            assert _workers(server.url)["alive"] == 0
            assert _gauge(server.url) == 0.0
            with logged_in(server.url) as client:
                page = client.get("/").text
            assert 'data-testid="no-worker-warning"' in page
            assert 'data-testid="silent-worker-row"' in page
            assert cio.events == []

            second = _worker(env, tmp_path, "worker-b")
            wait_until(lambda: sent("resolved"), timeout=30, interval=0.1)
            (resolved,) = sent("resolved")
            assert resolved["title"] == "Resolved: a worker is running again"
            assert f"pid {second.pid}" in resolved["text"]
            wait_until(lambda: cio.events, timeout=30, interval=0.1)
            assert len(sent("firing")) == 1
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=30)
            server.stop()


def test_serve_with_its_worker_counts_as_a_worker(
    tmp_path: Path, database_url: str, cio: FakeCustomerIO
) -> None:
    """`serve` running its in-process worker heartbeats: GET /api/workers lists serve's
    own pid, alive, and its gauge counts it."""
    server = ServeProcess(_env(database_url, cio, tmp_path), cwd=tmp_path).start()
    try:
        assert server.proc is not None
        listed = wait_until(lambda: _workers(server.url)["workers"])
        assert [(w["pid"], w["alive"]) for w in listed] == [(server.proc.pid, True)]
        assert _gauge(server.url) == 1.0
    finally:
        server.stop()
