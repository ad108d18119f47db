"""The package is the product: the built wheel, installed into a fresh virtual environment
outside the checkout, starts `billbridge serve` from another directory with its dashboard,
and delivers a signed event to the fake Customer.io.

Every other test imports Billbridge from the checkout (an editable install), so a file
missing from the wheel's package data is caught only here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload
from tests.fakes.customerio import FakeCustomerIO
from tests.support.dashboard import ADMIN_PASSWORD, login
from tests.support.env import SETTINGS_ENV
from tests.support.live_server import REPO, ServeProcess, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SECRET = "whsec_wheel_test"


def _run(*command: str, cwd: Path) -> str:
    """Run a command outside the checkout; fail with its output when it fails."""
    done = subprocess.run(
        command, cwd=cwd, env=_clean_env(), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _clean_env() -> dict[str, str]:
    """The environment without Billbridge settings and without anything that would let
    Python find the checkout's sources."""
    dropped = {*SETTINGS_ENV, "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
    return {key: value for key, value in os.environ.items() if key not in dropped}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment, outside the checkout, holding only the built wheel and
    its dependencies (pinned by constraints.txt); returns its bin directory."""
    root = tmp_path_factory.mktemp("wheel")
    assert not root.resolve().is_relative_to(REPO), "the venv must live outside the checkout"
    dist = root / "dist"
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "-w",
        str(dist),
        str(REPO),
        cwd=root,
    )
    (wheel,) = dist.glob("billbridge-*.whl")
    venv = root / "venv"
    _run(sys.executable, "-m", "venv", str(venv), cwd=root)
    pip = str(venv / "bin" / "pip")
    _run(pip, "install", "--quiet", "-c", str(REPO / "constraints.txt"), str(wheel), cwd=root)
    return venv / "bin"


def test_installed_package_is_imported_from_the_venv(installed: Path) -> None:
    """The installed interpreter imports Billbridge from its own site-packages, not the
    checkout, and the wheel carries the dashboard, migrations and event-type lists."""
    probe = (
        "import json, billbridge, importlib.resources as r;"
        "root = r.files('billbridge');"
        "print(json.dumps({'file': billbridge.__file__, 'files': ["
        "str(p.relative_to(root)) for p in ["
        "root / 'web/templates/base.html', root / 'web/static/app.css',"
        "root / 'store/migrations/env.py', root / 'store/migrations/script.py.mako',"
        "root / 'workflows/event_types.tsv'] if p.is_file()]}))"
    )
    found = json.loads(_run(str(installed / "python"), "-c", probe, cwd=installed))
    assert Path(found["file"]).is_relative_to(installed.parent)
    assert len(found["files"]) == 5, found


def test_installed_serve_logs_in_and_delivers(installed: Path, tmp_path: Path) -> None:
    """`billbridge serve` from the installed wheel, started in an unrelated directory:
    the login page and static files load, the admin logs in and sees the overview, and a
    signed webhook reaches the fake Customer.io."""
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    with FakeCustomerIO() as cio:
        env = {
            **_clean_env(),
            **cio.settings_env(),
            "DATABASE_URL": f"sqlite:///{workdir / 'billbridge.db'}",
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "BILLBRIDGE_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "BILLBRIDGE_VAR_DIR": str(workdir / "var"),
        }
        server = ServeProcess(env, cwd=workdir, executable=str(installed / "billbridge"))
        server.env = env  # exactly this environment: nothing inherited from the test's
        server.start()
        try:
            with httpx.Client(base_url=server.url, timeout=20) as client:
                assert client.get("/static/app.css").status_code == 200
                assert login(client).status_code == 303
                overview = client.get("/")
                assert overview.status_code == 200
                assert "Overview" in overview.text

            event = sample_event("customer.created", livemode=True)
            body = json.dumps(event).encode()
            answer = httpx.post(
                server.url + "/webhooks/stripe",
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "Stripe-Signature": sign_payload(body, SECRET),
                },
                timeout=20,
            )
            assert answer.status_code == 200, answer.text
            delivered = wait_until(
                lambda: [e for e in cio.events if e.get("name") == "customer_created"],
                timeout=30,
            )
            assert delivered[0]["data"]["stripe_event_id"] == event["id"]
        finally:
            server.stop()
        assert "Traceback" not in server.output(), server.output()
