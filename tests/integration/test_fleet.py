"""Operable as a fleet: shared rates, the secret key on PostgreSQL, webhook secrets in the
database, /readyz against migrations, the worker's health port, concurrent migrations."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from subprocess import Popen

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from billbridge.app import create_app
from billbridge.cli import app as cli_app
from billbridge.composition import webhook_secrets_for
from billbridge.config import Settings
from billbridge.customerio.pacing import Pacer, RateLimit
from billbridge.customerio.requests import CioRequest
from billbridge.errors import RetryableDeliveryError
from billbridge.secret_box import SecretBox
from billbridge.store import open_store
from billbridge.store.base import Store
from billbridge.store.postgres import MIGRATION_LOCK_KEY
from billbridge.store.records_fleet import RateReservation
from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload
from billbridge.stripe.webhook_setup import CREDENTIAL_NAME, SECRET_FILE, SavedWebhookSecrets
from tests.support.env import FLEET_SECRET_KEY, SETTINGS_ENV
from tests.support.live_server import BILLBRIDGE, free_port, serve_app, wait_until

SAVED_SECRET = "whsec_saved_by_setup_webhook"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **values: str) -> None:
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def _set_revision(database_url: str, revision: str) -> None:
    """Pretend the database is at `revision` (what an older version left behind)."""
    store = open_store(database_url)
    try:
        store.set_meta("probe", "1")  # the schema exists
    finally:
        store.close()
    if database_url.startswith("sqlite"):
        import sqlite3  # noqa: PLC0415

        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    else:
        conninfo = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("UPDATE alembic_version SET version_num = %s", (revision,))


# Shared rates -------------------------------------------------------------------------------


# A slot every 2 s, waited for up to 7 s: the fifth take in a row is refused as long as
# the five calls take under a second together (each takes milliseconds).
SPAN, MAX_WAIT = 2.0, 7.0


def _take(store: Store) -> tuple[RateReservation, float, float]:
    """`reserve_rate("test.rate", 1, SPAN, MAX_WAIT)`, and when the slot it names lies on
    this host's clock: between (before the call + delay) and (after the call + delay). The
    database reads the same clock (127.0.0.1), so however long a call takes, its slot is
    inside."""
    before = time.time()
    reservation = store.reserve_rate("test.rate", 1, SPAN, MAX_WAIT)
    after = time.time()
    return reservation, before + reservation.delay, after + reservation.delay


def _at(window: tuple[float, float], expected: tuple[float, float]) -> bool:
    """Whether two time windows overlap (10 ms for the clocks' rounding)."""
    return window[0] <= expected[1] + 0.01 and expected[0] <= window[1] + 0.01


def test_a_rate_is_shared_by_two_stores_on_one_database(store_url: str) -> None:
    """Two processes' stores take slots of one rate in turn on the database clock; a take
    whose slot is beyond the wait bound is refused, reserves nothing, and says how long."""
    first, second = open_store(store_url), open_store(store_url)
    try:
        takes = [_take(first if n % 2 == 0 else second) for n in range(4)]
        assert all(reservation.granted for reservation, _, _ in takes)
        (start, earliest, latest) = takes[0]
        assert start.delay == pytest.approx(0.0, abs=0.05)
        for n, (_, low, high) in enumerate(takes):  # one slot every SPAN from the first
            assert _at((low, high), (earliest + SPAN * n, latest + SPAN * n)), n
        refused, low, high = _take(second)
        assert not refused.granted
        next_free = (earliest + 4 * SPAN, latest + 4 * SPAN)
        assert _at((low, high), next_free)
        again, low, high = _take(first)  # the refusal took nothing
        assert not again.granted
        assert _at((low, high), next_free)
        other = first.reserve_rate("other.rate", 5, 0.2, 0.0)  # rates are independent
        assert other.granted
        assert other.delay == 0.0
    finally:
        first.close()
        second.close()


def test_pacer_spaces_app_calls_and_reschedules_beyond_the_wait_bound(sqlite_url: str) -> None:
    """App API calls wait for their slots; a broadcast trigger takes a broadcast slot too;
    a call whose slot is too far off is not sent: RetryableDeliveryError with retry_after."""
    store = open_store(sqlite_url)
    store.migrate()
    app = RateLimit(name="t.app", setting="BILLBRIDGE_CIO_APP_RPS", interval=0.1)
    broadcast = RateLimit(name="t.broadcast", setting="X", interval=30.0)
    pacer = Pacer(store, app=app, broadcast=broadcast, track=None, max_wait=1.0)
    mail = CioRequest(api="app", method="POST", path="/v1/send/email", body={})
    trigger = CioRequest(api="app", method="POST", path="/v1/campaigns/7/triggers", body={})
    track = CioRequest(api="track", method="PUT", path="/api/v1/customers/c", body={})
    assert pacer.limits_for(trigger) == [broadcast, app]
    assert pacer.limits_for(mail) == [app]
    assert pacer.limits_for(track) == []

    async def scenario() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(pacer.wait(mail) for _ in range(5)))
        five = loop.time() - started
        await pacer.wait(trigger)
        with pytest.raises(RetryableDeliveryError) as refused:
            await pacer.wait(trigger)
        assert "nothing was sent" in str(refused.value)
        assert refused.value.retry_after == pytest.approx(30.0, abs=1.0)
        return five, loop.time() - started

    try:
        five, total = asyncio.run(scenario())
    finally:
        store.close()
    assert 0.35 <= five < 1.0  # slots at 0, 0.1, ... 0.4 s
    assert total < 2.0


# The secret key and the saved webhook secret ---------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("command", ["serve", "worker", "migrate"])
def test_postgres_without_secret_key_is_refused_at_start(
    command: str, tmp_path: Path, own_postgres_url: str
) -> None:
    """serve, worker and migrate on PostgreSQL without BILLBRIDGE_SECRET_KEY exit 2 with
    one line naming it; nothing is generated in the var dir."""
    env = {
        **{k: v for k, v in os.environ.items() if k not in SETTINGS_ENV},
        "DATABASE_URL": own_postgres_url,
        "STRIPE_WEBHOOK_SECRET": "whsec_x",
        "BILLBRIDGE_VAR_DIR": str(tmp_path / "var"),
    }
    done = subprocess.run(
        [BILLBRIDGE, command],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: BILLBRIDGE_SECRET_KEY is not set")
    assert done.stderr.count("\n") == 1
    assert not (tmp_path / "var" / "secret-key").exists()


def test_sqlite_keeps_the_generated_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite no key is required: the secret box generates `<var dir>/secret-key`."""
    database_url = f"sqlite:///{tmp_path / 'one.db'}"
    _clean_env(monkeypatch, tmp_path, DATABASE_URL=database_url)
    assert CliRunner().invoke(cli_app, ["migrate"]).exit_code == 0
    settings = Settings(DATABASE_URL=database_url, BILLBRIDGE_VAR_DIR=str(tmp_path / "var"))
    store = open_store(database_url)
    try:
        saved = SavedWebhookSecrets(store, SecretBox.from_settings(settings), settings.var_dir)
        saved.save(SAVED_SECRET)
        assert saved.read() == (SAVED_SECRET,)
    finally:
        store.close()
    assert (tmp_path / "var" / "secret-key").exists()


@pytest.mark.postgres
def test_a_secret_saved_on_one_host_verifies_webhooks_on_another(
    tmp_path: Path, own_postgres_url: str
) -> None:
    """`setup-webhook`'s secret, saved encrypted in the database from host A, is read by a
    `serve` on host B (its own var dir, no STRIPE_WEBHOOK_SECRET): B accepts webhooks
    signed with it."""
    host_a = Settings(
        DATABASE_URL=own_postgres_url,
        BILLBRIDGE_SECRET_KEY=FLEET_SECRET_KEY,
        BILLBRIDGE_VAR_DIR=str(tmp_path / "a"),
    )
    store = open_store(own_postgres_url)
    try:
        store.migrate()
        saved = SavedWebhookSecrets(store, SecretBox.from_settings(host_a), host_a.var_dir)
        saved.save(SAVED_SECRET)
        assert SAVED_SECRET not in store.get_credentials()[CREDENTIAL_NAME]
    finally:
        store.close()
    host_b = host_a.model_copy(update={"var_dir": tmp_path / "b"})
    application = create_app(host_b, run_worker=False)
    event = sample_event("customer.created")
    body = json.dumps(event).encode()
    with serve_app(application) as url:
        signed = httpx.post(
            url + "/webhooks/stripe",
            content=body,
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": sign_payload(body, SAVED_SECRET),
            },
        )
        forged = httpx.post(
            url + "/webhooks/stripe",
            content=body,
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": sign_payload(body, "whsec_someone_else"),
            },
        )
    assert signed.status_code == 200, signed.text
    assert forged.status_code == 400
    assert not (tmp_path / "b" / SECRET_FILE).exists()


def test_a_secret_file_of_an_older_version_moves_into_the_database(tmp_path: Path) -> None:
    """A `<var dir>/stripe-webhook-secret` written by an older `setup-webhook` still
    verifies webhooks, and is stored in the database (behind the newer saved secret)."""
    var_dir = tmp_path / "var"
    var_dir.mkdir()
    (var_dir / SECRET_FILE).write_text("whsec_from_the_old_file\n")
    settings = Settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'up.db'}", BILLBRIDGE_VAR_DIR=str(var_dir)
    )
    store = open_store(settings.database_url)
    try:
        store.migrate()
        box = SecretBox.from_settings(settings)
        SavedWebhookSecrets(store, box, var_dir).save(SAVED_SECRET)
        assert webhook_secrets_for(settings, store, dev=False) == (
            SAVED_SECRET,
            "whsec_from_the_old_file",
        )
        (var_dir / SECRET_FILE).unlink()
        stored = box.decrypt_json(store.get_credentials()[CREDENTIAL_NAME])
        assert stored == {"secrets": [SAVED_SECRET, "whsec_from_the_old_file"]}
    finally:
        store.close()


def test_doctor_counts_the_saved_webhook_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without STRIPE_WEBHOOK_SECRET, `doctor` counts the secret setup-webhook saved in the
    database instead of failing the webhook secret check."""
    database_url = f"sqlite:///{tmp_path / 'doctor.db'}"
    _clean_env(
        monkeypatch, tmp_path, DATABASE_URL=database_url, BILLBRIDGE_VAR_DIR=str(tmp_path / "v")
    )
    before = CliRunner().invoke(cli_app, ["doctor"])
    assert "FAIL  webhook secret: STRIPE_WEBHOOK_SECRET is not set" in before.output
    settings = Settings(DATABASE_URL=database_url, BILLBRIDGE_VAR_DIR=str(tmp_path / "v"))
    store = open_store(database_url)
    try:
        store.migrate()
        box = SecretBox.from_settings(settings)
        SavedWebhookSecrets(store, box, settings.var_dir).save(SAVED_SECRET)
    finally:
        store.close()
    after = CliRunner().invoke(cli_app, ["doctor"])
    assert "OK    webhook secret: 1 saved by setup-webhook" in after.output
    assert SAVED_SECRET not in after.output


# /readyz and the worker's health port ----------------------------------------------------------


def test_serve_readyz_fails_while_migrations_are_behind(tmp_path: Path) -> None:
    """/readyz answers 503 naming `billbridge migrate` while the database is at an older
    revision than the code's, and 200 once migrated (or migrated by a newer version)."""
    database_url = f"sqlite:///{tmp_path / 'ready.db'}"
    settings = Settings(DATABASE_URL=database_url, STRIPE_WEBHOOK_SECRET="whsec_ready")
    application = create_app(settings, run_worker=False)
    with serve_app(application) as url:
        assert httpx.get(url + "/readyz").status_code == 200
        store: Store = application.state.services.store
        (head,) = store.schema_revisions()[1]
        _set_revision(database_url, "0004_merge")
        behind = httpx.get(url + "/readyz")
        assert behind.status_code == 503
        assert "billbridge migrate" in behind.json()["reason"]
        _set_revision(database_url, head)  # as `billbridge migrate` would leave it
        assert httpx.get(url + "/readyz").status_code == 200
        _set_revision(database_url, "9999_from_a_newer_version")  # a rolling upgrade
        assert httpx.get(url + "/readyz").status_code == 200


def test_worker_serves_health_readiness_and_metrics(tmp_path: Path) -> None:
    """`billbridge worker --metrics-port` answers /healthz, /readyz (503 while migrations
    are behind) and /metrics in the Prometheus text format; it stops on SIGTERM."""
    database_url = f"sqlite:///{tmp_path / 'worker.db'}"
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in SETTINGS_ENV},
        "DATABASE_URL": database_url,
        "BILLBRIDGE_VAR_DIR": str(tmp_path / "var"),
        "BILLBRIDGE_WORKER_METRICS_PORT": str(port),
    }
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [BILLBRIDGE, "worker"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"

    def status(path: str) -> int:
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()
        try:
            return httpx.get(base + path, timeout=2).status_code
        except httpx.HTTPError:
            return 0

    try:
        wait_until(lambda: status("/readyz") == 200, timeout=30, interval=0.1)
        assert httpx.get(base + "/healthz").json() == {"status": "ok"}
        metrics = httpx.get(base + "/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "billbridge_queue_depth" in metrics.text
        _set_revision(database_url, "0004_merge")
        behind = httpx.get(base + "/readyz")
        assert behind.status_code == 503
        assert "0004_merge" in behind.json()["reason"]
    finally:
        worker.terminate()
        assert worker.wait(timeout=30) == 0


def test_worker_metrics_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    """A metrics port another process holds stops `billbridge worker` at start: exit 2 and
    one line naming the port."""
    env = {
        **{k: v for k, v in os.environ.items() if k not in SETTINGS_ENV},
        "DATABASE_URL": f"sqlite:///{tmp_path / 'busy.db'}",
        "BILLBRIDGE_VAR_DIR": str(tmp_path / "var"),
    }
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [BILLBRIDGE, "worker", "--metrics-port", str(port)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


# Several hosts migrating at once ---------------------------------------------------------------


def _start_migrations(database_url: str, tmp_path: Path, processes: int) -> list[Popen[bytes]]:
    env = {
        **{k: v for k, v in os.environ.items() if k not in SETTINGS_ENV},
        "DATABASE_URL": database_url,
        "BILLBRIDGE_SECRET_KEY": FLEET_SECRET_KEY,
        "BILLBRIDGE_VAR_DIR": str(tmp_path / "var"),
    }
    return [
        subprocess.Popen(
            [BILLBRIDGE, "migrate"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"migrate{n}.log").open("wb"),
        )
        for n in range(processes)
    ]


@pytest.mark.postgres
def test_processes_migrating_one_fresh_postgres_database_at_once_all_succeed(
    tmp_path: Path, own_postgres_url: str
) -> None:
    """Six `billbridge migrate` on one empty PostgreSQL database, all held at the start of
    the migration together and then let go at once, all exit 0; the schema is applied
    once (one version row, at the code's head)."""
    conninfo = own_postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo, autocommit=True) as gate:
        gate.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        running = _start_migrations(own_postgres_url, tmp_path, 6)

        def waiting() -> int:
            row = gate.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchone()
            return int(row[0]) if row else 0

        try:
            wait_until(lambda: waiting() == 6, timeout=60, interval=0.1)
        finally:
            gate.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
        codes = [process.wait(timeout=120) for process in running]
        versions = gate.execute("SELECT count(*) FROM alembic_version").fetchone()
    logs = [(tmp_path / f"migrate{n}.log").read_text() for n in range(6)]
    assert codes == [0] * 6, logs
    assert versions == (1,)
    store = open_store(own_postgres_url)
    try:
        applied, shipped = store.schema_revisions()
    finally:
        store.close()
    assert applied == shipped


def test_processes_migrating_one_fresh_sqlite_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Four `billbridge migrate` started together on one new SQLite file all exit 0 and
    leave it at the code's head."""
    database_url = f"sqlite:///{tmp_path / 'fresh.db'}"
    codes = [process.wait(timeout=120) for process in _start_migrations(database_url, tmp_path, 4)]
    assert codes == [0] * 4, [(tmp_path / f"migrate{n}.log").read_text() for n in range(4)]
    store = open_store(database_url)
    try:
        applied, shipped = store.schema_revisions()
    finally:
        store.close()
    assert applied == shipped
