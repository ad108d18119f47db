"""Alert URLs against DNS rebinding and port probing: the request connects to the address
that was checked (Host, SNI and certificate for the name), every resolved address is
checked, metadata addresses in every form are refused, and errors never tell whether a
port is open."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from billbridge.alerts.config import AlertConfig, AlertURLError, IPAddress, check_alert_url
from billbridge.alerts.sender import NO_ANSWER, Alert, AlertSender, ChannelResult
from billbridge.config import Settings
from billbridge.customerio.client import CustomerIOClient
from tests.support.live_server import free_port, serve_app, wait_until

PUBLIC = ipaddress.ip_address("198.51.100.7")  # never connected to: see OffsiteRefused
LOOPBACK = ipaddress.ip_address("127.0.0.1")
ALERT = Alert(kind="test", title="Billbridge test alert")


class ChangingResolver:
    """A DNS server whose answer changes: `answers[0]` first, then `answers[1]` forever."""

    def __init__(self, *answers: IPAddress) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.calls.append(host)
        return [self.answers[min(len(self.calls) - 1, len(self.answers) - 1)]]


class OffsiteRefused(httpx.AsyncBaseTransport):
    """The network of this test machine: loopback works; any other address is refused
    before a packet leaves (tests never send traffic off the machine). Names are resolved
    by the real transport, as httpx would without pinning."""

    def __init__(self) -> None:
        self.hosts: list[str] = []
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.hosts.append(host)
        try:
            offsite = not ipaddress.ip_address(host).is_loopback
        except ValueError:
            offsite = False
        if offsite:
            raise httpx.ConnectError("unreachable", request=request)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class Receiver:
    """Records the Host header and body of every POST."""

    def __init__(self) -> None:
        self.hosts: list[str] = []

        async def record(request: Request) -> PlainTextResponse:
            self.hosts.append(request.headers["host"])
            await request.body()
            return PlainTextResponse("ok")

        self.app = Starlette(routes=[Route("/{path:path}", record, methods=["POST"])])


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        DATABASE_URL=f"sqlite:///{tmp_path / 'alerts.db'}",
        BILLBRIDGE_VAR_DIR=str(tmp_path / "var"),
        CUSTOMERIO_SITE_ID="",
        CUSTOMERIO_TRACK_API_KEY="",
        **env,
    )


def _send(settings: Settings, url: str, **sender_options: Any) -> ChannelResult:
    async def go() -> ChannelResult:
        async with CustomerIOClient(settings) as cio:
            sender = AlertSender(settings, cio, **sender_options)
            (result,) = await sender.send(AlertConfig(webhook_url=url), ALERT)
            return result

    return asyncio.run(go())


def test_a_rebinding_name_never_reaches_the_loopback_receiver(tmp_path: Path) -> None:
    """A name answering a public address to the check and 127.0.0.1 afterwards: the send
    goes to the checked address only, the name is resolved once, the receiver hears
    nothing."""
    receiver = Receiver()
    with serve_app(receiver.app) as url:
        port = httpx.URL(url).port
        resolver = ChangingResolver(PUBLIC, LOOPBACK)
        network = OffsiteRefused()
        result = _send(
            _settings(tmp_path),
            f"http://localhost:{port}/hook",  # the system resolver says 127.0.0.1
            resolver=resolver,
            transport=network,
        )
    assert result.ok is False
    assert result.detail == NO_ANSWER
    assert resolver.calls == ["localhost"]
    assert network.hosts == [str(PUBLIC)]
    assert receiver.hosts == []


def test_the_send_connects_to_the_checked_address_with_the_name_as_host(tmp_path: Path) -> None:
    """Checked 127.0.0.1 (loopback allowed for tests), then the name changes its answer:
    the request still reaches 127.0.0.1 and carries the URL's own Host header."""
    receiver = Receiver()
    with serve_app(receiver.app) as url:
        port = httpx.URL(url).port
        resolver = ChangingResolver(LOOPBACK, PUBLIC)
        result = _send(
            _settings(tmp_path, BILLBRIDGE_ALERTS_ALLOW_LOOPBACK="true"),
            f"http://alerts.test:{port}/hook",
            resolver=resolver,
        )
    assert result.ok is True, result.detail
    assert resolver.calls == ["alerts.test"]
    assert receiver.hosts == [f"alerts.test:{port}"]


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@contextmanager
def _https_receiver(app: Any, cert: Path, key: Path) -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app, log_config=None, access_log=False, ssl_certfile=str(cert), ssl_keyfile=str(key)
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def test_https_keeps_sni_and_certificate_checks_for_the_name(tmp_path: Path) -> None:
    """Over https the pinned connection presents the URL's name (SNI) and verifies the
    certificate against it: a certificate for alerts.test is accepted at alerts.test and
    refused at other.test, both pinned to the same address."""
    cert, key = _certificate(tmp_path, "alerts.test")
    trust = ssl.create_default_context(cafile=str(cert))
    receiver = Receiver()
    settings = _settings(tmp_path, BILLBRIDGE_ALERTS_ALLOW_LOOPBACK="true")
    with _https_receiver(receiver.app, cert, key) as port:
        good = _send(
            settings,
            f"https://alerts.test:{port}/hook",
            resolver=ChangingResolver(LOOPBACK),
            verify=trust,
        )
        wrong = _send(
            settings,
            f"https://other.test:{port}/hook",
            resolver=ChangingResolver(LOOPBACK),
            verify=trust,
        )
    assert good.ok is True, good.detail
    assert wrong.ok is False
    assert wrong.detail == NO_ANSWER
    assert receiver.hosts == [f"alerts.test:{port}"]


@contextmanager
def _raw_listener(*, close_at_once: bool) -> Iterator[int]:
    """A TCP listener on loopback that either closes each connection at once or holds it
    open without a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            if close_at_once:
                conn.close()
            else:
                held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


def test_refused_closed_and_silent_ports_give_the_same_answer(tmp_path: Path) -> None:
    """A closed port, a connection closed at once and one that never answers (timeout)
    are one message: an alert URL cannot be used to tell which ports are open."""
    settings = _settings(tmp_path, BILLBRIDGE_ALERTS_ALLOW_LOOPBACK="true")
    details = {"refused": _send(settings, f"http://127.0.0.1:{free_port()}/", timeout=0.3)}
    with _raw_listener(close_at_once=True) as port:
        details["closed"] = _send(settings, f"http://127.0.0.1:{port}/", timeout=0.3)
    with _raw_listener(close_at_once=False) as port:
        details["silent"] = _send(settings, f"http://127.0.0.1:{port}/", timeout=0.3)
    assert {name: (r.ok, r.detail) for name, r in details.items()} == dict.fromkeys(
        details, (False, NO_ANSWER)
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://192.0.0.192/opc/v2/instance/",
        "http://100.100.100.200/latest/meta-data/",
        "http://168.63.129.16/machine",
        "http://[fd00:ec2::254]/latest/",
        "http://[fd20:ce::254]/computeMetadata/v1/",
        "http://[::ffff:169.254.169.254]/latest/",
        "http://[::ffff:127.0.0.1]:9/hook",
        "http://[64:ff9b::a9fe:a9fe]/latest/",
        "http://[2002:a9fe:a9fe::1]/latest/",
        "http://[::127.0.0.1]:9/hook",
        "http://0.0.0.0:9/hook",
        "http://0.1.2.3:9/hook",
        "http://224.0.0.1/hook",
        "http://[ff02::1]/hook",
    ],
)
def test_metadata_and_disguised_internal_addresses_are_refused(url: str) -> None:
    """Every cloud metadata address, and loopback or metadata inside IPv6 forms."""
    with pytest.raises(AlertURLError):
        check_alert_url(url, allow_loopback=False)


def test_every_resolved_address_is_checked() -> None:
    """A name answering a public address and 127.0.0.1 together is refused."""

    def both(host: str, port: int) -> list[IPAddress]:
        return [PUBLIC, LOOPBACK]

    check_alert_url("https://hooks.test/x", allow_loopback=False, resolver=ChangingResolver(PUBLIC))
    with pytest.raises(AlertURLError, match=r"127\.0\.0\.1"):
        check_alert_url("https://hooks.test/x", allow_loopback=False, resolver=both)


def test_billbridge_itself_is_refused_by_its_public_address() -> None:
    """BILLBRIDGE_PUBLIC_URL's host resolves to an address; that address and port is
    Billbridge itself, whatever name or literal the alert URL uses."""

    def dns(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address("203.0.113.9")]

    own = [("billbridge.example", 443)]
    for url in ("https://203.0.113.9/webhooks/stripe", "https://alias.example/x"):
        with pytest.raises(AlertURLError, match="Billbridge itself"):
            check_alert_url(url, allow_loopback=False, own=own, resolver=dns)
    check_alert_url("https://203.0.113.9:8443/x", allow_loopback=False, own=own, resolver=dns)
