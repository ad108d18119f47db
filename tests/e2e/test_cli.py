"""The `billbridge` command (SPEC §1), in-process with CliRunner on a real SQLite file."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from billbridge.app import create_app
from billbridge.cli import app
from billbridge.config import Settings
from billbridge.store import open_store
from billbridge.store.records import AttemptRecord
from billbridge.stripe.events import new_event_from
from billbridge.stripe.samples import sample_event
from billbridge.workflows.catalog import WorkflowCatalog
from tests.fakes.customerio import FakeCustomerIO
from tests.support.env import SETTINGS_ENV
from tests.support.live_server import free_port, serve_app

SECRET = "whsec_cli_test_secret"
CLEARED = SETTINGS_ENV


@dataclass
class Cli:
    database_url: str
    tmp: Path
    runner: CliRunner

    def __call__(self, *args: str) -> Result:
        return self.runner.invoke(app, list(args))

    def store_event(self, event_type: str, **fields: Any) -> str:
        """Store a sample event with the deliveries the catalog gives it (as ingest does)."""
        event = sample_event(event_type, **fields)
        store = open_store(self.database_url)
        try:
            store.migrate()
            catalog = WorkflowCatalog(store)
            catalog.ensure_defaults()
            deliveries = catalog.deliveries_for(event_type, livemode=False)
            store.ingest(new_event_from(event, json.dumps(event)), deliveries)
        finally:
            store.close()
        return str(event["id"])

    def fail_all(self) -> list[int]:
        """Complete every due delivery as failed; returns their ids."""
        store = open_store(self.database_url)
        try:
            ids = []
            for claim in store.claim_due("cli-test", 500, 60):
                attempt = AttemptRecord(
                    outcome="terminal_error",
                    started_at=1_700_000_000.0,
                    duration_ms=8.0,
                    request={"api": "track", "method": "POST", "path": "/api/v1/customers/x"},
                    response_status=400,
                    error="Customer.io answered 400",
                )
                store.complete(
                    claim.delivery_id, claim.claim_id, "failed", attempt, error="answered 400"
                )
                ids.append(claim.delivery_id)
            return sorted(ids)
        finally:
            store.close()


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """A clean environment (no stray credentials, no .env) pointing at a fresh SQLite file."""
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    database_url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("BILLBRIDGE_VAR_DIR", str(tmp_path / "var"))
    return Cli(database_url, tmp_path, CliRunner())


def test_console_script_help_lists_every_command() -> None:
    """The installed `billbridge --help` names each command of SPEC §1."""
    script = Path(sys.executable).with_name("billbridge")
    done = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    for command in ("serve", "worker", "migrate", "trigger", "events", "replay", "workflows"):
        assert command in done.stdout
    assert "doctor" in done.stdout


def test_every_command_has_help(cli: Cli) -> None:
    """`--help` works for each command and sub-command."""
    for args in (
        ["serve"],
        ["worker"],
        ["migrate"],
        ["trigger"],
        ["replay"],
        ["doctor"],
        ["events", "list"],
        ["events", "show"],
        ["workflows", "list"],
        ["workflows", "apply"],
        ["workflows", "export"],
    ):
        result = cli(*args, "--help")
        assert result.exit_code == 0, (args, result.output)
        assert "Usage:" in result.output


def test_migrate_creates_the_schema(cli: Cli) -> None:
    """`migrate` creates the tables and says so; running it again changes nothing."""
    result = cli("migrate")
    assert result.exit_code == 0, result.output
    assert "Database migrated" in result.output
    with sqlite3.connect(cli.tmp / "cli.db") as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"events", "deliveries", "attempts", "workflows"} <= tables
    assert cli("migrate").exit_code == 0


def test_workflows_export_apply_round_trip(cli: Cli) -> None:
    """Export the defaults, change one and add one, apply: created/updated are reported and
    a second export shows the changes; applying again changes nothing."""
    exported = cli("workflows", "export", "--output", "flows.yaml")
    assert exported.exit_code == 0, exported.output
    data = yaml.safe_load((cli.tmp / "flows.yaml").read_text())
    ids = [workflow["id"] for workflow in data["workflows"]]
    assert "payment-failed" in ids
    changed = next(w for w in data["workflows"] if w["id"] == "payment-failed")
    changed["enabled"] = False
    new = {
        "id": "vip-segment",
        "name": "VIP segment",
        "trigger": {"events": ["invoice.paid"]},
        "actions": [{"type": "add_to_segment", "segment_id": 42}],
    }
    (cli.tmp / "mine.yaml").write_text(yaml.safe_dump({"workflows": [changed, new]}))

    dry = cli("workflows", "apply", "mine.yaml", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would create  vip-segment" in dry.output
    assert "vip-segment" not in cli("workflows", "list").output

    applied = cli("workflows", "apply", "mine.yaml")
    assert applied.exit_code == 0, applied.output
    assert "created       vip-segment" in applied.output
    assert "updated       payment-failed" in applied.output
    assert "1 created, 1 updated, 0 unchanged" in applied.output

    again = yaml.safe_load(cli("workflows", "export").stdout)
    by_id = {workflow["id"]: workflow for workflow in again["workflows"]}
    assert by_id["payment-failed"]["enabled"] is False
    assert by_id["vip-segment"]["actions"] == [{"type": "add_to_segment", "segment_id": 42}]
    assert "0 created, 0 updated, 2 unchanged" in cli("workflows", "apply", "mine.yaml").output


def test_workflows_apply_invalid_file_writes_nothing(cli: Cli) -> None:
    """One invalid workflow: exit 1, the bad field is named, and the valid one is not written."""
    good = {
        "id": "good-one",
        "name": "Good",
        "trigger": {"events": ["invoice.paid"]},
        "actions": [{"type": "track_event", "name": "paid"}],
    }
    bad = {
        "id": "bad-one",
        "name": "Bad",
        "trigger": {"events": ["invoice.paid"]},
        "actions": [{"type": "add_to_segment"}],
    }
    (cli.tmp / "bad.yaml").write_text(yaml.safe_dump({"workflows": [good, bad]}))
    result = cli("workflows", "apply", "bad.yaml")
    assert result.exit_code == 1
    assert "workflows.1.actions.0.segment_id: required" in result.stderr
    assert "nothing was applied" in result.stderr
    listed = cli("workflows", "list")
    assert listed.exit_code == 0
    assert "good-one" not in listed.output
    assert "payment-failed" in listed.output


def test_events_list_and_show(cli: Cli) -> None:
    """Stored events appear newest first in the table and as JSON; `show` prints the
    deliveries and their attempts."""
    first = cli.store_event("invoice.paid", customer_id="cus_cli_a")
    second = cli.store_event("charge.failed", customer_id="cus_cli_b")
    cli.fail_all()

    table = cli("events", "list")
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].split()[:4] == ["RECEIVED", "EVENT", "TYPE", "STATUS"]
    assert second in lines[1]
    assert "failed" in lines[1]
    assert "cus_cli_b" in lines[1]
    assert first in lines[2]

    as_json = json.loads(cli("events", "list", "--json", "--type", "invoice.paid").stdout)
    assert [item["stripe_event_id"] for item in as_json["items"]] == [first]
    assert as_json["next_cursor"] is None

    shown = cli("events", "show", second)
    assert shown.exit_code == 0, shown.output
    assert "charge.failed" in shown.output
    assert "payment-failed[0] track_event: failed, 1 attempt" in shown.output
    assert "HTTP 400" in shown.output
    assert "POST /api/v1/customers/x" in shown.output

    detail = json.loads(cli("events", "show", second, "--json").stdout)
    assert detail["payload"]["id"] == second
    assert detail["deliveries"][0]["attempts"][0]["response_status"] == 400

    missing = cli("events", "show", "evt_nope")
    assert missing.exit_code == 1
    assert "evt_nope" in missing.stderr


def test_replay_by_id_and_failed(cli: Cli) -> None:
    """`replay ID` resets that event's deliveries; `replay --failed` resets failed ones; an
    unknown id exits 1."""
    event_id = cli.store_event("charge.failed")
    failed = cli.fail_all()
    assert failed

    by_failed = cli("replay", "--failed", "--since", "1h")
    assert by_failed.exit_code == 0, by_failed.output
    assert f"Replayed {len(failed)} failed deliver" in by_failed.output

    by_id = cli("replay", event_id)
    assert by_id.exit_code == 0, by_id.output
    assert f"{event_id}: replayed {len(failed)} deliver" in by_id.output

    unknown = cli("replay", "evt_unknown")
    assert unknown.exit_code == 1
    assert "evt_unknown" in unknown.stderr
    assert cli("replay").exit_code == 2
    assert cli("replay", event_id, "--failed").exit_code == 2
    assert cli("replay", "--failed", "--since", "soon").exit_code == 2


def test_doctor_without_credentials_warns_about_dry_run(cli: Cli) -> None:
    """Without Customer.io or Stripe credentials doctor warns (dry-run), fails nothing, and
    never prints the webhook secret."""
    assert cli("migrate").exit_code == 0
    result = cli("doctor")
    assert result.exit_code == 0, result.output
    assert "OK    configuration" in result.output
    assert "OK    database: reachable and migrated" in result.output
    assert "OK    webhook secret: 1 configured" in result.output
    assert "WARN  Customer.io Track API: no credentials: dry-run" in result.output
    assert "WARN  Stripe API: STRIPE_API_KEY is not set" in result.output
    assert "FAIL" not in result.output
    assert SECRET not in result.output


def test_doctor_fails_on_missing_schema_and_secret(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unmigrated database and no webhook secret are failures with what to run: exit 1."""
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET")
    result = cli("doctor")
    assert result.exit_code == 1
    assert "FAIL  database:" in result.output
    assert "billbridge migrate" in result.output
    assert "FAIL  webhook secret: STRIPE_WEBHOOK_SECRET is not set" in result.output


def test_doctor_checks_customerio_credentials_and_region(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With credentials, doctor asks Customer.io for the account region and warns when
    CUSTOMERIO_REGION disagrees; rejected credentials are a failure."""
    assert cli("migrate").exit_code == 0
    with FakeCustomerIO(region="eu") as fake:
        for name, value in fake.settings_env().items():
            monkeypatch.setenv(name, value)
        mismatch = cli("doctor")
        assert "WARN  Customer.io Track API: credentials accepted" in mismatch.output
        assert "CUSTOMERIO_REGION=eu" in mismatch.output
        assert fake.config.track_api_key not in mismatch.output

        monkeypatch.setenv("CUSTOMERIO_REGION", "eu")
        assert "OK    Customer.io Track API: credentials accepted" in cli("doctor").output

        monkeypatch.setenv("CUSTOMERIO_TRACK_API_KEY", "wrong-key")
        rejected = cli("doctor")
        assert rejected.exit_code == 1
        assert "FAIL  Customer.io Track API: credentials rejected" in rejected.output


def test_trigger_to_a_closed_port_is_a_clear_error(cli: Cli) -> None:
    """Nothing listening: exit 1 with a message saying what to start, and no traceback."""
    url = f"http://127.0.0.1:{free_port()}/webhooks/stripe"
    result = cli("trigger", "invoice.paid", "--url", url)
    assert result.exit_code == 1
    assert "could not send" in result.stderr
    assert "billbridge serve" in result.stderr
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_trigger_sends_a_signed_event_that_is_stored(cli: Cli) -> None:
    """`trigger` signs with the first configured secret; the running app stores the event."""
    settings = Settings(DATABASE_URL=cli.database_url, STRIPE_WEBHOOK_SECRET=SECRET)
    server_app = create_app(settings, run_worker=False)
    with serve_app(server_app) as base:
        result = cli(
            "trigger",
            "customer.created",
            "--url",
            f"{base}/webhooks/stripe",
            "--customer",
            "cus_trigger",
            "--email",
            "t@example.com",
        )
        assert result.exit_code == 0, result.output
        line = next(line for line in result.stdout.splitlines() if "(customer.created)" in line)
        assert line.endswith("-> HTTP 200")
        event_id = line.split()[0]
        detail = server_app.state.services.store.get_event(event_id)
    assert detail is not None
    assert detail.summary.customer_id == "cus_trigger"


def test_trigger_unknown_type_and_missing_secret(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """An event type without a sample, or no secret at all, exits 2 with what to do."""
    unknown = cli("trigger", "charge.nonsense")
    assert unknown.exit_code == 2
    assert "no sample for 'charge.nonsense'" in unknown.stderr
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET")
    no_secret = cli("trigger", "invoice.paid")
    assert no_secret.exit_code == 2
    assert "STRIPE_WEBHOOK_SECRET" in no_secret.stderr


def test_configuration_error_exits_2_without_traceback(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad setting prints one line naming it on stderr and exits 2."""
    monkeypatch.setenv("BILLBRIDGE_IDENTIFIER", "phone_number")
    result = cli("events", "list")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "BILLBRIDGE_IDENTIFIER" in result.stderr
    assert "Traceback" not in result.output

    monkeypatch.delenv("BILLBRIDGE_IDENTIFIER")
    monkeypatch.setenv("DATABASE_URL", "mysql://db.example/billbridge")
    unsupported = cli("migrate")
    assert unsupported.exit_code == 2
    assert "DATABASE_URL" in unsupported.stderr
