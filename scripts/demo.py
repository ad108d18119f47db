"""Run Billbridge with the fake Customer.io and some sample events, for a look or screenshots.

    .venv/bin/python scripts/demo.py            # prints the URL; log in as admin / demo-password
    .venv/bin/python scripts/demo.py --port 8123

Everything stays on 127.0.0.1 and in a temporary directory: the fake Customer.io from
tests/fakes answers the calls; a few signed sample webhooks (one of them failing) fill
the events, the chart and the queue. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for tests.*

from tests.fakes.customerio import FakeCustomerIO
from tests.support.live_server import serve_app, wait_until

from billbridge.app import create_app
from billbridge.config import Settings
from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload

SECRET = "whsec_demo_secret"
USERNAME = "admin"
PASSWORD = "demo-password"
SEED_TYPES = (
    "customer.created",
    "customer.subscription.created",
    "invoice.paid",
    "charge.succeeded",
    "customer.subscription.updated",
    "charge.failed",
    "invoice.payment_failed",
    "checkout.session.completed",
)


@dataclass(frozen=True)
class Demo:
    url: str
    cio: FakeCustomerIO
    username: str = USERNAME
    password: str = PASSWORD


def post_event(url: str, event: dict[str, object]) -> None:
    """Send one signed webhook, as Stripe would."""
    body = json.dumps(event).encode()
    response = httpx.post(
        url + "/webhooks/stripe",
        content=body,
        headers={
            "Content-Type": "application/json",
            "Stripe-Signature": sign_payload(body, SECRET),
        },
        timeout=10,
    )
    response.raise_for_status()


def seed(url: str, cio: FakeCustomerIO) -> None:
    """A few customers' worth of events; the last one fails with a 400 from Customer.io."""
    people = [("cus_DemoAda0001", "ada@example.com"), ("cus_DemoGrace02", "grace@example.com")]
    for customer_id, email in people:
        for event_type in SEED_TYPES:
            post_event(url, sample_event(event_type, customer_id=customer_id, email=email))
    before = len(cio.requests)
    wait_until(lambda: len(cio.requests) >= before, timeout=20)
    cio.fail_next(400, body={"meta": {"error": "invalid attribute: plan_amount"}})
    post_event(
        url, sample_event("charge.refunded", customer_id="cus_DemoLin0003", email="lin@example.com")
    )


@contextmanager
def run_demo(port: int | None = None) -> Iterator[Demo]:
    """Start the fake Customer.io and Billbridge (in this process), seeded with events."""
    with tempfile.TemporaryDirectory(prefix="billbridge-demo-") as tmp, FakeCustomerIO() as cio:
        settings = Settings(
            DATABASE_URL=f"sqlite:///{tmp}/demo.db",
            STRIPE_WEBHOOK_SECRET=SECRET,
            BILLBRIDGE_VAR_DIR=tmp,
            BILLBRIDGE_ADMIN_PASSWORD=PASSWORD,
            BILLBRIDGE_RETRY_SCHEDULE="1",
            **cio.settings_env(),
        )
        app = create_app(settings, run_worker=True)
        with serve_app(app, port=port) as url:
            seed(url, cio)
            yield Demo(url, cio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    args = parser.parse_args()
    with run_demo(args.port) as demo:
        print(f"Billbridge demo at {demo.url}  (log in as {demo.username} / {demo.password})")
        print("Ctrl-C stops it.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
