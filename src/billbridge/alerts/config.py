"""Alert settings (stored encrypted) and the check that keeps alert URLs off internal targets.

    config = AlertConfig(slack_url="https://hooks.slack.com/services/...", group_minutes=10)
    target = resolve_alert_url(config.slack_url, allow_loopback=False, own=[("bb.example", 443)])
    target.addresses        # every address the host resolved to, each one checked

A URL must be http(s); every address its host resolves to must be neither loopback nor
unspecified (unless BILLBRIDGE_ALERTS_ALLOW_LOOPBACK=true, meant for tests), nor
link-local (169.254.0.0/16, fe80::/10: cloud metadata lives there), nor multicast or
reserved, nor a known metadata address (IPv4 inside IPv6 forms included); and it must
not be Billbridge itself. Private networks are allowed (a self-hosted chat server is a
fair target). The host is resolved once per send and the request goes to the addresses
that were checked (`alerts/sender.py`), so a DNS answer that changes between the check
and the connection (DNS rebinding) reaches nothing new.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from billbridge.errors import BillbridgeError

ALERT_CONFIG_KEY = "config"
METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
# Instance metadata, credentials and platform services of the clouds Billbridge runs on.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle, ... (IMDS)
        "169.254.169.253",  # AWS DNS resolver
        "169.254.169.123",  # AWS time sync
        "169.254.170.2",  # AWS ECS task credentials
        "169.254.170.23",  # AWS EKS pod identity
        "169.254.0.23",  # Tencent Cloud
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS EKS pod identity over IPv6
        "fd00:ec2::253",  # AWS DNS over IPv6
        "fd20:ce::254",  # GCP metadata over IPv6
        "192.0.0.192",  # Oracle Cloud
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer
    )
)
THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # Linux connects 0.0.0.0 to this machine
NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[IPAddress]]


class AlertURLError(BillbridgeError):
    """An alert URL was refused; says why, without echoing secrets in the URL's path."""


class AlertEmail(BaseModel):
    """An email through a Customer.io transactional message (the App API key is needed)."""

    model_config = ConfigDict(extra="forbid")

    transactional_message_id: str = Field(min_length=1, max_length=64)
    to: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")


class AlertConfig(BaseModel):
    """Where alerts go, what triggers them (thresholds), and how they are grouped. All
    channels are optional; older saved settings get the defaults of newer fields."""

    model_config = ConfigDict(extra="forbid")

    slack_url: str | None = Field(default=None, description="A Slack-compatible incoming webhook")
    webhook_url: str | None = Field(default=None, description="Receives a JSON POST")
    email: AlertEmail | None = None
    on_failures: bool = Field(default=True, description="Alert on permanently failed deliveries")
    on_stall: bool = Field(default=True, description="Alert when the queue stalls")
    stall_minutes: float = Field(default=15.0, gt=0, le=10_080)
    on_retrying: bool = Field(
        default=True, description="Alert when deliveries retry too long or too many at once"
    )
    retrying_minutes: float = Field(
        default=60.0, gt=0, le=10_080, description="...when one has been retrying this long"
    )
    retrying_count: int = Field(
        default=100, ge=1, le=10_000_000, description="...or when this many are retrying"
    )
    on_signatures: bool = Field(
        default=True, description="Alert when webhooks are refused for their signature"
    )
    signature_failures: int = Field(
        default=10, ge=1, le=1_000_000, description="...this many refusals..."
    )
    signature_window_minutes: float = Field(
        default=15.0, ge=1, le=1_440, description="...within this many minutes"
    )
    on_stripe_silence: bool = Field(
        default=True, description="Alert when no webhook has come from Stripe for a while"
    )
    stripe_silence_hours: float = Field(default=24.0, gt=0, le=720)
    on_endpoint: bool = Field(
        default=True,
        description="Alert when the Stripe endpoint lacks event types the enabled workflows "
        "need (checked through the Stripe API when a key is set)",
    )
    on_no_worker: bool = Field(
        default=True, description="Alert when no worker is alive while deliveries are due"
    )
    no_worker_seconds: float = Field(
        default=60.0,
        ge=0,
        le=86_400,
        description="...once the oldest of them has waited this many seconds",
    )
    group_minutes: float = Field(default=10.0, ge=0, le=1_440)

    @field_validator("slack_url", "webhook_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @property
    def has_channels(self) -> bool:
        return bool(self.slack_url or self.webhook_url or self.email)

    def urls(self) -> dict[str, str]:
        found = {"slack_url": self.slack_url, "webhook_url": self.webhook_url}
        return {name: url for name, url in found.items() if url}


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The host's addresses from the system resolver (getaddrinfo), each once, in order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    found: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


def _addresses(host: str, port: int, resolver: Resolver) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    found = resolver(host, port)
    if not found:
        raise AlertURLError(f"the host {host!r} does not resolve")
    return found


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, compatible, NAT64, 6to4): each is
    checked too, since a network may route them to the IPv4 target."""
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    packed = address.packed
    if packed[:12] == bytes(12) and int(address) > 1:  # ::a.b.c.d (deprecated compatible)
        found.append(ipaddress.IPv4Address(packed[12:]))
    if address in NAT64:
        found.append(ipaddress.IPv4Address(packed[12:]))
    return found


def _refusal(address: IPAddress, *, allow_loopback: bool) -> str | None:
    if isinstance(address, ipaddress.IPv6Address):
        for inner in _embedded_ipv4(address):
            problem = _refusal(inner, allow_loopback=allow_loopback)
            if problem:
                return problem
    if address in METADATA_ADDRESSES:
        return "is a cloud metadata address"
    if address.is_link_local:
        return "is link-local (169.254.0.0/16 or fe80::/10)"
    this_network = isinstance(address, ipaddress.IPv4Address) and address in THIS_NETWORK
    if (address.is_loopback or address.is_unspecified or this_network) and not allow_loopback:
        return "is this machine (loopback)"
    if address.is_multicast or address.is_reserved:
        return "is not a unicast address"
    return None


@dataclass(frozen=True)
class AlertTarget:
    """A checked alert URL: where to connect (`addresses`, all checked) and what to ask for."""

    url: str
    scheme: str
    host: str  # lower case, without a trailing dot
    port: int
    addresses: tuple[IPAddress, ...]


def resolve_alert_url(
    url: str,
    *,
    allow_loopback: bool,
    own: Iterable[tuple[str, int]] = (),
    resolver: Resolver = system_resolver,
) -> AlertTarget:
    """Resolve `url`'s host once and check every address (see the module docstring);
    raise AlertURLError with the reason, or return the checked target.

    `own` lists Billbridge's own (host, port) pairs: the same host and port, the addresses
    those hosts resolve to on those ports, and (with loopback allowed) a loopback address
    on one of their ports are refused as Billbridge itself.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise AlertURLError("not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise AlertURLError("only http:// and https:// URLs are allowed")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise AlertURLError("the URL has no host")
    port = port or (443 if parts.scheme == "https" else 80)
    own_pairs = {(h.rstrip(".").lower(), p) for h, p in own}
    if (host, port) in own_pairs:
        raise AlertURLError("the URL points at Billbridge itself")
    if host in METADATA_HOSTS:
        raise AlertURLError(f"{host} is a cloud metadata host")
    addresses = _addresses(host, port, resolver)
    own_ports = {p for _, p in own_pairs}
    for address in addresses:
        problem = _refusal(address, allow_loopback=allow_loopback)
        if problem:
            raise AlertURLError(f"{host} resolves to {address}, which {problem}")
        if (address.is_loopback or address.is_unspecified) and port in own_ports:
            raise AlertURLError("the URL points at Billbridge itself")
    if own_pairs and _own_addresses(own_pairs, resolver) & {(a, port) for a in addresses}:
        raise AlertURLError("the URL points at Billbridge itself")
    return AlertTarget(url, parts.scheme, host, port, tuple(addresses))


def _own_addresses(
    own_pairs: set[tuple[str, int]], resolver: Resolver
) -> set[tuple[IPAddress, int]]:
    found: set[tuple[IPAddress, int]] = set()
    for host, port in own_pairs:
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            addresses = resolver(host, port)
        found.update((address, port) for address in addresses)
    return found


def check_alert_url(
    url: str,
    *,
    allow_loopback: bool,
    own: Iterable[tuple[str, int]] = (),
    resolver: Resolver = system_resolver,
) -> None:
    """Raise AlertURLError unless `url` is a fit alert target (`resolve_alert_url`)."""
    resolve_alert_url(url, allow_loopback=allow_loopback, own=own, resolver=resolver)


def own_endpoints(public_url: str | None, extra: Iterable[str] = ()) -> list[tuple[str, int]]:
    """(host, port) pairs Billbridge answers on, from BILLBRIDGE_PUBLIC_URL and base URLs."""
    found: list[tuple[str, int]] = []
    for url in (public_url, *extra):
        if not url:
            continue
        parts = urlsplit(url)
        if parts.hostname:
            found.append((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)))
    return found
