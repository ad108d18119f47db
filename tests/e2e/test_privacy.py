"""Erasure of one person over real HTTP (API, dashboard button, CLI) with the worker and the
fake Customer.io: their data leaves every table, Customer.io deletes or suppresses them.
Pruned events (retention) render with the reason and refuse replay on every path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from billbridge.cli import app as cli_app
from billbridge.retention import Retention
from billbridge.services import Services
from billbridge.store.records import FINAL_STATUSES
from billbridge.store.schema import metadata
from billbridge.stripe.samples import DEFAULT_NAME, sample_event
from billbridge.stripe.signature import sign_payload
from billbridge.workflows.builtin import ERASURE_EVENT_PREFIX
from tests.fakes.customerio import FakeCustomerIO
from tests.support.auth import AUTH
from tests.support.dashboard import (
    WEBHOOK_SECRET,
    csrf_from,
    dashboard_settings,
    logged_in,
    running_dashboard,
)
from tests.support.env import FLEET_SECRET_KEY, SETTINGS_ENV
from tests.support.live_server import wait_until

ANN = ("cus_AnnErase001", "ann.erasable@example.com", "Ann Erasable")
BOB = ("cus_BobKept0001", "bob.kept@example.com", "Bob Kept")
STORY = ("customer.created", "invoice.paid", "charge.failed", "customer.subscription.created")


@dataclass
class Run:
    url: str
    services: Services
    cio: FakeCustomerIO
    env: dict[str, str]

    def post(self, event: dict[str, Any]) -> None:
        body = json.dumps(event).encode()
        answer = httpx.post(
            self.url + "/webhooks/stripe",
            content=body,
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": sign_payload(body, WEBHOOK_SECRET),
            },
            timeout=10,
        )
        assert answer.status_code == 200, answer.text

    def story(self, person: tuple[str, str, str]) -> list[str]:
        """The person's life in Stripe events, delivered; their event ids."""
        customer_id, email, name = person
        ids = []
        for event_type in STORY:
            event = sample_event(event_type, livemode=True, customer_id=customer_id, email=email)
            self.post(json.loads(json.dumps(event).replace(DEFAULT_NAME, name)))
            ids.append(str(event["id"]))
        for event_id in ids:
            self.settle(event_id)
        return ids

    def settle(self, stripe_event_id: str) -> None:
        def done() -> bool:
            detail = self.services.store.get_event(stripe_event_id)
            return detail is not None and all(d.status in FINAL_STATUSES for d in detail.deliveries)

        wait_until(done)

    def erasure_done(self, event_ids: list[str]) -> None:
        """Wait until each erasure event's action succeeded and its identifier was scrubbed."""

        def done() -> bool:
            for event_id in event_ids:
                detail = self.services.store.get_event(event_id)
                if detail is None or detail.pruned_reason != "erasure":
                    return False
                assert [d.status for d in detail.deliveries] == ["succeeded"]
            return True

        wait_until(done)

    def table_text(self, *names: str) -> str:
        """Every row of every table (or of the tables named), as one text (what a grep of
        the database sees)."""
        engine = sa.create_engine(self.env["DATABASE_URL"])
        try:
            with engine.connect() as conn:
                return "\n".join(
                    repr(tuple(row))
                    for table in metadata.sorted_tables
                    if not names or table.name in names
                    for row in conn.execute(sa.select(table))
                )
        finally:
            engine.dispose()


@contextmanager
def _run(tmp_path: Path, database_url: str | None, **extra: str) -> Iterator[Run]:
    with FakeCustomerIO() as cio:
        env = {
            **cio.settings_env(),
            "BILLBRIDGE_RETRY_SCHEDULE": "0.2",
            "BILLBRIDGE_RETENTION_INTERVAL": "0.2",
            **extra,
        }
        if database_url is not None:
            env |= {"DATABASE_URL": database_url, "BILLBRIDGE_SECRET_KEY": FLEET_SECRET_KEY}
        settings = dashboard_settings(tmp_path, **env)
        with running_dashboard(settings, run_worker=True) as (url, services):
            yield Run(url, services, cio, {"DATABASE_URL": settings.database_url, **env})


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    """The app with its worker on SQLite, Customer.io people by customer id."""
    with _run(tmp_path, None) as started:
        yield started


def _assert_erased(run: Run, person: tuple[str, str, str], kept: tuple[str, str, str]) -> None:
    text = run.table_text()
    for value in person:
        assert value not in text, f"{value!r} is still stored"
    assert kept[1] in text
    assert kept[2] in text


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_api_erase_by_customer_removes_every_trace_and_deletes_the_person(
    tmp_path: Path, database: str, request: pytest.FixtureRequest
) -> None:
    """POST /api/customers/{id}/erase: no table holds the email, name or customer id any
    more (PostgreSQL and SQLite), Bob's data is untouched, the fake Customer.io no longer
    has Ann, the erasure is recorded without the data, and a re-sent old event is a duplicate."""
    url = None if database == "sqlite" else str(request.getfixturevalue("own_postgres_url"))
    with _run(tmp_path, url) as run:
        ann_events = run.story(ANN)
        run.story(BOB)
        assert run.cio.person(ANN[0]) is not None

        answer = httpx.post(run.url + f"/api/customers/{ANN[0]}/erase", headers=AUTH, timeout=20)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["events"] == len(STORY)
        assert body["customers"] == 1
        assert body["cio_action"] == "delete"
        assert len(body["cio_event_ids"]) == 1
        assert body["cio_event_ids"][0].startswith(ERASURE_EVENT_PREFIX)

        wait_until(lambda: run.cio.person(ANN[0]) is None)
        run.erasure_done(body["cio_event_ids"])
        assert run.cio.person(BOB[0]) is not None
        _assert_erased(run, ANN, BOB)

        listed = httpx.get(run.url + "/api/erasures", headers=AUTH, timeout=10).json()
        assert [(e["customers"], e["events"], e["cio_statuses"]) for e in listed] == [
            (1, len(STORY), ["succeeded"])
        ]
        assert listed[0]["requested_by"] == "token:BILLBRIDGE_API_TOKEN"

        # The event rows stay for de-duplication: Stripe re-sending one changes nothing.
        stub = run.services.store.get_event(ann_events[0])
        assert stub is not None
        assert json.loads(stub.payload)["id"] == ann_events[0]
        replay = httpx.post(run.url + f"/api/events/{ann_events[0]}/replay", headers=AUTH)
        assert replay.status_code == 409
        assert replay.json()["reason"] == "erasure"


def test_page_button_erases_by_email_after_a_confirmation(run: Run) -> None:
    """The customer's events page links to a confirmation page that shows what is held;
    its form (CSRF) erases the person, and the fake Customer.io no longer has them."""
    run.story(ANN)
    run.story(BOB)
    with logged_in(run.url) as client:
        events_page = client.get("/events", params={"email": ANN[1]})
        assert 'data-testid="erase-link"' in events_page.text
        confirm = client.get("/customers/ann.erasable%40example.com/erase")
        assert confirm.status_code == 200
        assert f"{len(STORY)} events" in confirm.text
        assert run.services.store.list_erasures() == []  # asking erased nothing

        refused = client.post("/customers/ann.erasable%40example.com/erase", data={})
        assert refused.status_code == 403

        done = client.post(
            "/customers/ann.erasable%40example.com/erase",
            data={"csrf_token": csrf_from(confirm.text)},
        )
        assert done.status_code == 200, done.text
        assert 'data-testid="erase-done"' in done.text
    [record] = run.services.store.list_erasures()
    assert record.requested_by == "admin"
    assert record.matched_by == "email"
    wait_until(lambda: run.cio.person(ANN[0]) is None)
    run.erasure_done(list(record.cio_event_ids))
    _assert_erased(run, ANN, BOB)


@pytest.fixture
def email_run(tmp_path: Path) -> Iterator[Run]:
    """People by email in Customer.io; erasure suppresses them."""
    with _run(
        tmp_path, None, BILLBRIDGE_IDENTIFIER="email", BILLBRIDGE_ERASURE_CIO_ACTION="suppress"
    ) as started:
        yield started


def _cli_env(run: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    for name, value in {**run.env, "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("BILLBRIDGE_VAR_DIR", str(tmp_path / "var"))


def test_cli_erase_by_email_suppresses_the_person_identified_by_email(
    email_run: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Under BILLBRIDGE_IDENTIFIER=email, `erase --email` asks first (no: nothing erased),
    then with --yes erases; the running worker suppresses the person by their email."""
    run = email_run
    run.story(ANN)
    run.story(BOB)
    assert run.cio.person(ANN[1]) is not None
    _cli_env(run, monkeypatch, tmp_path)
    runner = CliRunner()

    declined = runner.invoke(cli_app, ["erase", "--email", ANN[1]], input="n\n")
    assert declined.exit_code == 1, declined.output
    assert f"Found {len(STORY)} events and 1 customer" in declined.output
    assert "Nothing erased." in declined.output
    assert run.services.store.list_erasures() == []

    erased = runner.invoke(cli_app, ["erase", "--email", ANN[1].upper(), "--yes"])
    assert erased.exit_code == 0, erased.output
    assert f"Erased: {len(STORY)} events stubbed, 1 customer deleted" in erased.output
    assert "Customer.io suppress: queued as 1 delivery" in erased.output
    wait_until(lambda: run.cio.is_suppressed(ANN[1]))
    [record] = run.services.store.list_erasures()
    run.erasure_done(list(record.cio_event_ids))
    _assert_erased(run, ANN, BOB)
    assert not run.cio.is_suppressed(BOB[1])


def test_cli_erase_by_customer_and_refusals(
    run: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`erase --customer` erases by id; naming nobody, or both, is a clear usage error."""
    run.story(ANN)
    _cli_env(run, monkeypatch, tmp_path)
    runner = CliRunner()
    nobody = runner.invoke(cli_app, ["erase", "--yes"])
    assert nobody.exit_code == 2
    assert "either a customer id or an email" in nobody.output
    both = runner.invoke(cli_app, ["erase", "--customer", ANN[0], "--email", ANN[1], "--yes"])
    assert both.exit_code == 2
    erased = runner.invoke(cli_app, ["erase", "--customer", ANN[0], "--yes"])
    assert erased.exit_code == 0, erased.output
    wait_until(lambda: run.cio.person(ANN[0]) is None)
    listed = runner.invoke(cli_app, ["erasures"])
    assert listed.exit_code == 0
    assert "customer sha256:" in listed.output


def test_pruned_event_renders_and_refuses_replay_everywhere(
    run: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An event pruned by retention: its page says "payload removed after 90 days
    (retention)" and offers no replay; the API answers 409 with the reason, the page's
    form comes back with a message, the CLI exits 1 saying why."""
    [event_id, *_] = run.story(ANN)
    engine = sa.create_engine(run.env["DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE events SET received_at = received_at - 91 * 86400"))
    engine.dispose()
    services = run.services
    report = Retention(services.store, services.settings, services.metrics).run_once(force=True)
    assert report.pruned == len(STORY)
    # Gone from events and attempts; the customer and billing rows stay (profiles need them).
    assert ANN[1] not in run.table_text("events", "deliveries", "attempts")
    assert ANN[1] in run.table_text("customers")
    metrics = httpx.get(run.url + "/metrics").text
    assert f"billbridge_retention_pruned_events_total {float(len(STORY))}" in metrics

    shown = httpx.get(run.url + f"/api/events/{event_id}", headers=AUTH, timeout=10).json()
    assert shown["pruned_reason"] == "retention"
    assert set(shown["payload"]) == {"id", "object", "type", "created", "livemode"}
    tried = httpx.post(
        run.url + "/api/workflows/customer-created/test",
        json={"stripe_event_id": event_id},
        headers=AUTH,
        timeout=10,
    )
    assert tried.status_code == 409
    assert "retention" in tried.json()["detail"]
    api = httpx.post(run.url + f"/api/events/{event_id}/replay", headers=AUTH, timeout=10)
    assert api.status_code == 409
    assert api.json()["reason"] == "retention"
    assert "cannot be replayed" in api.json()["detail"]
    with logged_in(run.url) as client:
        page = client.get(f"/events/{event_id}")
        assert "Payload removed after 90 days (retention)" in page.text
        assert f'action="/events/{event_id}/replay"' not in page.text
        posted = client.post(
            f"/events/{event_id}/replay",
            data={"csrf_token": csrf_from(page.text)},
            follow_redirects=True,
        )
        assert posted.status_code == 200
        assert posted.url.params["refused"] == "pruned"
        assert "Not replayed: payload removed after 90 days (retention)." in posted.text
    _cli_env(run, monkeypatch, tmp_path)
    cli = CliRunner().invoke(cli_app, ["replay", event_id])
    assert cli.exit_code == 1
    assert "cannot be replayed: its payload was removed" in cli.output
