"""POST /webhooks/stripe over real HTTP: every answer of SPEC §3, and nothing stored on refusal."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from billbridge.app import create_app
from billbridge.config import Settings
from billbridge.store.base import Store
from billbridge.store.records import EventFilter
from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload
from tests.support.env import FLEET_SECRET_KEY
from tests.support.live_server import serve_app

SECRET = "whsec_ingest_test_secret"
ROTATED = "whsec_ingest_test_rotated"


@dataclass
class Server:
    url: str
    store: Store

    def post(
        self,
        body: bytes,
        *,
        secret: str | None = SECRET,
        headers: dict[str, str] | None = None,
        timestamp: int | None = None,
    ) -> httpx.Response:
        sent = {"Content-Type": "application/json"}
        if secret is not None:
            sent["Stripe-Signature"] = sign_payload(body, secret, timestamp)
        sent.update(headers or {})
        return httpx.post(self.url + "/webhooks/stripe", content=body, headers=sent, timeout=10)

    def stored_ids(self) -> list[str]:
        items, _ = self.store.list_events(EventFilter(), limit=200)
        return [item.stripe_event_id for item in items]


def _settings(database_url: str) -> Settings:
    return Settings(
        DATABASE_URL=database_url,
        STRIPE_WEBHOOK_SECRET=f"{SECRET},{ROTATED}",
        BILLBRIDGE_SECRET_KEY=FLEET_SECRET_KEY,
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    app = create_app(_settings(f"sqlite:///{tmp_path}/ingest.db"), run_worker=False)
    with serve_app(app) as url:
        yield Server(url, app.state.services.store)


def _body(event_type: str = "customer.created", **fields: object) -> bytes:
    return json.dumps(sample_event(event_type, **fields)).encode()  # type: ignore[arg-type]


def test_signed_event_is_stored_with_its_deliveries(server: Server) -> None:
    """A correctly signed event answers 200 and is stored with one delivery per action."""
    body = _body("customer.subscription.deleted")
    response = server.post(body)
    assert response.status_code == 200, response.text
    assert response.json()["duplicate"] is False
    event_id = json.loads(body)["id"]
    detail = server.store.get_event(event_id)
    assert detail is not None
    assert detail.summary.type == "customer.subscription.deleted"
    assert len(detail.deliveries) == response.json()["deliveries"] >= 2


def test_rotated_secret_is_accepted(server: Server) -> None:
    """Any configured secret verifies (rotation, test and live)."""
    assert server.post(_body(), secret=ROTATED).status_code == 200


def test_sequential_duplicate_changes_nothing(server: Server) -> None:
    """The same event id twice: 200 both times, the second marked duplicate, one row."""
    body = _body()
    first = server.post(body)
    second = server.post(body)
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json() == {"received": True, "duplicate": True, "deliveries": 0}
    assert server.stored_ids().count(json.loads(body)["id"]) == 1


def test_concurrent_duplicates_store_one_event(server: Server) -> None:
    """Twenty simultaneous copies of one event: all 200, exactly one stored."""
    body = _body("charge.succeeded")
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda _: server.post(body), range(20)))
    assert all(r.status_code == 200 for r in responses)
    assert sum(1 for r in responses if not r.json()["duplicate"]) == 1
    detail = server.store.get_event(json.loads(body)["id"])
    assert detail is not None
    assert len(detail.deliveries) == next(
        r.json()["deliveries"] for r in responses if not r.json()["duplicate"]
    )


@pytest.mark.parametrize(
    ("case", "status", "reason_part"),
    [
        ("missing signature", 400, "Stripe-Signature"),
        ("wrong secret", 400, "signature"),
        ("stale timestamp", 400, "tolerance"),
        ("bad json", 400, "JSON"),
        ("NaN is not JSON", 400, "JSON"),
        ("not an event", 400, "event"),
        ("thin event", 400, "thin"),
        ("text/plain", 415, "application/json"),
        ("no content type", 415, "application/json"),
        ("too large", 413, "larger"),
    ],
)
def test_every_rejection_is_a_4xx_with_a_reason_and_stores_nothing(
    server: Server, case: str, status: int, reason_part: str
) -> None:
    """Each refusal of SPEC §3 answers its status with a readable reason; nothing is stored."""
    body = _body()
    kwargs: dict[str, object] = {}
    if case == "missing signature":
        kwargs["secret"] = None
    elif case == "wrong secret":
        kwargs["secret"] = "whsec_somebody_else"
    elif case == "stale timestamp":
        kwargs["timestamp"] = int(time.time()) - 301
    elif case == "bad json":
        body = b'{"id": "evt_1", "object": "event",'
    elif case == "NaN is not JSON":
        event = sample_event("customer.created")
        body = (
            json.dumps(event).encode().replace(b'"object": "event"', b'"object": "event", "x": NaN')
        )
        assert b"NaN" in body
    elif case == "not an event":
        body = json.dumps({"id": "cus_1", "object": "customer"}).encode()
    elif case == "thin event":
        body = json.dumps({"id": "evt_1", "object": "v2.core.event", "type": "x"}).encode()
    elif case == "text/plain":
        kwargs["headers"] = {"Content-Type": "text/plain"}
    elif case == "no content type":
        kwargs["headers"] = {"Content-Type": ""}
    elif case == "too large":
        event = sample_event("customer.created")
        event["data"]["object"]["metadata"] = {"padding": "x" * (1024 * 1024)}
        body = json.dumps(event).encode()
    response = server.post(body, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert reason_part.lower() in response.json()["error"].lower()
    assert server.stored_ids() == []


def test_content_type_parameters_are_allowed(server: Server) -> None:
    """`application/json; charset=utf-8` is JSON."""
    response = server.post(_body(), headers={"Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 200


def test_rejection_never_echoes_the_signature_or_secret(server: Server) -> None:
    """A refused request's answer contains neither the header it sent nor any secret."""
    body = _body()
    header = sign_payload(body, "whsec_wrong_one")
    response = server.post(body, secret=None, headers={"Stripe-Signature": header})
    assert response.status_code == 400
    assert header not in response.text
    assert "whsec_" not in response.text


def _raw_request(server: Server, head: str, parts: list[bytes]) -> bytes:
    """Send one HTTP/1.1 request as `head` then `parts` (each its own write) on a raw
    socket; the answer read until the server closes or the whole answer is in."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode("latin-1"))
        for part in parts:
            sock.sendall(part)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def test_a_body_sent_in_chunks_is_read_whole(server: Server) -> None:
    """A chunked body arrives as several ASGI messages: all of them make the event."""
    body = _body()
    half = len(body) // 2
    chunks = [
        b"%x\r\n%s\r\n" % (len(body[:half]), body[:half]),
        b"%x\r\n%s\r\n" % (len(body[half:]), body[half:]),
        b"0\r\n\r\n",
    ]
    head = (
        "POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Stripe-Signature: {sign_payload(body, SECRET)}\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n"
    )
    answer = _raw_request(server, head, chunks)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert json.loads(body)["id"] in server.stored_ids()


def test_a_sender_that_hangs_up_mid_body_gets_nothing_stored(server: Server) -> None:
    """The connection closes before the declared body is complete: no answer, nothing
    stored, and the server goes on answering others."""
    body = _body()
    head = (
        "POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Stripe-Signature: {sign_payload(body, SECRET)}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode("latin-1") + body[:100])
    assert server.post(_body()).status_code == 200
    assert json.loads(body)["id"] not in server.stored_ids()
    assert len(server.stored_ids()) == 1


ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.mark.postgres
def test_store_outage_answers_503_and_stores_nothing(own_postgres_url: str) -> None:
    """While PostgreSQL refuses connections the webhook answers 503; afterwards 200."""
    dbname = own_postgres_url.rsplit("/", 1)[1]
    app = create_app(_settings(own_postgres_url), run_worker=False)
    admin = ADMIN_URL
    with serve_app(app) as url:
        server = Server(url, app.state.services.store)
        body = _body()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (dbname,),
            )
        try:
            response = server.post(body)
            assert response.status_code == 503
            assert "unavailable" in response.json()["error"]
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
        retried = server.post(body)
        assert retried.status_code == 200
        assert retried.json()["duplicate"] is False
