"""Send one alert to every configured channel: Slack-compatible, generic JSON, email.

    results = await AlertSender(settings, cio).send(config, alert)
    [r.ok for r in results]

Each URL is resolved and checked again right before the send, and the request connects
to an address that was checked (the URL's host stays in the Host header, TLS SNI and
certificate verification), so DNS rebinding cannot steer it elsewhere. Redirects are not
followed (they could lead past the check), no environment proxy is used (it would
resolve the name again), a connection that fails, times out or closes gets one message
(an alert URL must not probe ports), and results never echo the URL: webhook URLs are
secrets.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import httpx
import structlog

from billbridge import __version__
from billbridge.alerts.config import (
    AlertConfig,
    AlertTarget,
    AlertURLError,
    IPAddress,
    Resolver,
    own_endpoints,
    resolve_alert_url,
    system_resolver,
)
from billbridge.config import Settings
from billbridge.customerio.client import CustomerIOClient
from billbridge.customerio.requests import CioRequest
from billbridge.errors import DeliveryError

log = structlog.get_logger("billbridge.alerts")

SEND_TIMEOUT = 10.0  # seconds per channel
NO_ANSWER = "no answer from the receiver (connection refused, timed out or closed)"
Channel = Literal["slack", "webhook", "email"]


AlertKind = Literal[
    "failures", "stall", "retrying", "signatures", "stripe_silent", "endpoint", "no_worker", "test"
]


@dataclass(frozen=True)
class Alert:
    """One message: failures since the last one, or a condition that started ("firing")
    or cleared ("resolved"), with what to do about it."""

    kind: AlertKind
    title: str
    lines: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()  # what to do, one step a line
    state: Literal["firing", "resolved"] | None = None  # None: not a condition
    failed: int = 0
    failed_by_workflow: dict[str, int] = field(default_factory=dict)
    oldest_pending_age: float = 0.0  # seconds
    queue_depth: int = 0
    dashboard_url: str | None = None

    def _bullets(self) -> str:
        text = "\n".join(f"• {line}" for line in self.lines)
        if self.actions:
            steps = "\n".join(f"• {step}" for step in self.actions)
            text = f"{text}\nWhat to do:\n{steps}".strip()
        return text

    def text(self) -> str:
        link = f"\n{self.dashboard_url}" if self.dashboard_url else ""
        return f"{self.title}\n{self._bullets()}{link}".strip()

    def slack_payload(self) -> dict[str, Any]:
        """Slack's incoming-webhook shape: `text` (the fallback) plus section blocks."""
        bullets = self._bullets()
        return {
            "text": self.text(),
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": f"*{self.title}*"}},
                *(
                    [{"type": "section", "text": {"type": "mrkdwn", "text": bullets}}]
                    if bullets
                    else []
                ),
            ],
        }

    def json_payload(self) -> dict[str, Any]:
        return {
            "source": "billbridge",
            "kind": self.kind,
            "state": self.state,
            "title": self.title,
            "text": self.text(),
            "lines": list(self.lines),
            "actions": list(self.actions),
            "failed": self.failed,
            "failed_by_workflow": self.failed_by_workflow,
            "oldest_pending_age_seconds": round(self.oldest_pending_age, 1),
            "queue_depth": self.queue_depth,
            "dashboard_url": self.dashboard_url,
        }


@dataclass(frozen=True)
class ChannelResult:
    channel: Channel
    ok: bool
    detail: str


class AlertSender:
    """Delivers alerts; the Customer.io client is the running service's (same credentials)."""

    def __init__(
        self,
        settings: Settings,
        cio: CustomerIOClient,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver = system_resolver,
        timeout: float = SEND_TIMEOUT,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._settings = settings
        self._cio = cio
        self._transport = transport
        self._resolver = resolver
        self._timeout = timeout
        self._verify = verify

    async def send(self, config: AlertConfig, alert: Alert) -> list[ChannelResult]:
        results: list[ChannelResult] = []
        if config.slack_url:
            results.append(await self._post("slack", config.slack_url, alert.slack_payload()))
        if config.webhook_url:
            results.append(await self._post("webhook", config.webhook_url, alert.json_payload()))
        if config.email is not None:
            results.append(await self._email(config, alert))
        for result in results:
            if not result.ok:
                log.warning("alert not delivered", channel=result.channel, detail=result.detail)
        return results

    async def _post(self, channel: Channel, url: str, payload: dict[str, Any]) -> ChannelResult:
        try:
            target = await anyio.to_thread.run_sync(
                lambda: resolve_alert_url(
                    url,
                    allow_loopback=self._settings.alerts_allow_loopback,
                    own=own_endpoints(self._settings.public_url),
                    resolver=self._resolver,
                )
            )
        except AlertURLError as exc:
            return ChannelResult(channel, False, f"refused: {exc}")
        try:
            response = await self._post_pinned(target, payload)
        except httpx.HTTPError:
            return ChannelResult(channel, False, NO_ANSWER)
        if response.is_success:
            return ChannelResult(channel, True, f"delivered ({response.status_code})")
        return ChannelResult(channel, False, f"the receiver answered {response.status_code}")

    async def _post_pinned(self, target: AlertTarget, payload: dict[str, Any]) -> httpx.Response:
        """POST to each checked address in turn until one accepts the connection."""
        async with httpx.AsyncClient(
            transport=self._transport,
            timeout=self._timeout,
            follow_redirects=False,
            trust_env=False,
            verify=self._verify,
            headers={"User-Agent": f"billbridge/{__version__}"},
        ) as client:
            last: httpx.HTTPError | None = None
            for address in target.addresses:
                pinned = pinned_url(target, address)
                try:
                    return await client.post(
                        pinned,
                        json=payload,
                        headers={"Host": httpx.URL(target.url).netloc.decode("ascii")},
                        extensions={"sni_hostname": target.host},
                    )
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    last = exc  # nothing was sent to this address: try the next one
            assert last is not None  # noqa: S101 - a target has at least one address
            raise last

    async def _email(self, config: AlertConfig, alert: Alert) -> ChannelResult:
        assert config.email is not None  # noqa: S101 - checked by the caller
        request = CioRequest(
            api="app",
            method="POST",
            path="/v1/send/email",
            body={
                "transactional_message_id": config.email.transactional_message_id,
                "to": config.email.to,
                "identifiers": {"email": config.email.to},
                # The message's template reads {{trigger.title}}, {{trigger.text}}, ...
                "message_data": alert.json_payload(),
            },
            idempotent=False,
        )
        try:
            response = await self._cio.send(request)
        except DeliveryError as exc:
            return ChannelResult("email", False, str(exc))
        return ChannelResult("email", True, f"sent through Customer.io ({response.status_code})")


def pinned_url(target: AlertTarget, address: IPAddress) -> httpx.URL:
    """`target.url` with its host replaced by `address` (the port stays explicit)."""
    return httpx.URL(target.url).copy_with(host=str(address), port=target.port)
