"""The container image: built from the Containerfile with podman, run against PostgreSQL:
`migrate`, then `serve` as a non-root user, a signed webhook delivered to the fake Customer.io.

The build reuses a base image already on the machine (the official slim Python image, or
the one scripts/build-base-image.sh builds from Debian's packages when no registry is
reachable), so a warm run costs one `podman build`. Without podman the test fails: as root
it installs podman the way `make image` does (apt-get), otherwise it says how.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload
from tests.fakes.customerio import FakeCustomerIO
from tests.support.live_server import REPO, free_port, wait_until

IMAGE = "localhost/billbridge:e2e"
SECRET = "whsec_" + "image_test_" + "0" * 20
CONTAINER_USER_ID = "10001"


def _podman_env() -> dict[str, str]:
    """The environment podman runs with: scripts/containers.conf unless one is given."""
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(REPO / "scripts" / "containers.conf"))
    return env


def _podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args],
        env=_podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args[:2])} exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def _ensure_podman() -> None:
    """podman on PATH, installed with apt-get as root (like `make chromium`), or a failure."""
    if shutil.which("podman"):
        return
    if os.geteuid() != 0:
        pytest.fail(
            "podman is missing: apt-get install -y podman buildah debootstrap runc "
            "(the image test never skips)",
            pytrace=False,
        )
    subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=300)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "podman", "buildah", "debootstrap", "runc"],
        check=True,
        timeout=600,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


@pytest.fixture(scope="module")
def image() -> str:
    """The image built from this checkout by scripts/build-image.sh (what `make image` runs)."""
    _ensure_podman()
    started = time.monotonic()
    result = subprocess.run(
        [str(REPO / "scripts" / "build-image.sh")],
        env={**_podman_env(), "IMAGE": IMAGE},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, f"image build failed:\n{result.stdout}\n{result.stderr}"
    print(f"image build: {time.monotonic() - started:.1f} s; {result.stdout.strip()}")
    return IMAGE


@pytest.fixture
def containers() -> Iterator[list[str]]:
    """Names of containers the test starts; each is removed afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        _podman("rm", "--force", "--time", "2", name, check=False)


def _fernet_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _schema_revisions(url: str) -> list[str]:
    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    return [str(row[0]) for row in rows]


def _run_args(env: dict[str, str]) -> list[str]:
    args = ["--network", "host"]
    for name, value in env.items():
        args += ["--env", f"{name}={value}"]
    return args


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_image_migrates_serves_and_delivers_on_postgresql(
    image: str, own_postgres_url: str, containers: list[str]
) -> None:
    """The image migrates a fresh PostgreSQL database, serves (dashboard included) as a
    non-root user with a working health check, and delivers a signed webhook to Customer.io."""
    inspected = json.loads(_podman("image", "inspect", image).stdout)[0]
    assert inspected["Config"]["User"] == "billbridge"
    assert "/healthz" in " ".join(inspected["Healthcheck"]["Test"])

    port = free_port()
    with FakeCustomerIO() as cio:
        env = {
            **cio.settings_env(),
            "DATABASE_URL": own_postgres_url,
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "BILLBRIDGE_SECRET_KEY": _fernet_key(),
            "BILLBRIDGE_PORT": str(port),
        }
        migrate_name = f"billbridge-e2e-migrate-{secrets.token_hex(4)}"
        containers.append(migrate_name)
        _podman("run", "--name", migrate_name, *_run_args(env), image, "migrate")
        assert _schema_revisions(own_postgres_url), "migrate left the database empty"

        name = f"billbridge-e2e-{secrets.token_hex(4)}"
        containers.append(name)
        _podman("run", "--detach", "--name", name, *_run_args(env), image)
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(base + "/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                state = _podman("inspect", "--format", "{{.State.Status}}", name, check=False)
                if state.stdout.strip() not in ("running", "created", ""):
                    logs = _podman("logs", name, check=False)
                    raise AssertionError(
                        f"the container stopped:\n{logs.stdout}{logs.stderr}"
                    ) from None
                return False

        wait_until(ready, timeout=60, interval=0.2)

        login = httpx.get(base + "/login", timeout=10)  # templates and static files shipped
        assert login.status_code == 200
        assert 'name="csrf_token"' in login.text
        assert httpx.get(base + "/static/app.css", timeout=10).status_code == 200

        uid = _podman("exec", name, "id", "-u").stdout.strip()
        assert uid == CONTAINER_USER_ID
        _podman("healthcheck", "run", name)

        event = sample_event("customer.created", customer_id="cus_Image1", email="image@x.io")
        body = json.dumps(event).encode()
        response = httpx.post(
            base + "/webhooks/stripe",
            content=body,
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": sign_payload(body, SECRET),
            },
            timeout=10,
        )
        assert response.status_code == 200, response.text
        delivered = cio.wait_for(
            lambda: [e for e in cio.events if e.get("name") == "customer_created"],
            timeout=30,
        )
        assert delivered[0]["data"]["stripe_event_id"] == event["id"]
        assert cio.person("cus_Image1") is not None

        unsigned = httpx.post(
            base + "/webhooks/stripe",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert unsigned.status_code == 400
