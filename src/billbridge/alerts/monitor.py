"""The alert loop: look at failures and the queue every so often, send at most one grouped
message per `group_minutes`.

    monitor = AlertMonitor(services)
    await monitor.check_once()        # what the loop does every BILLBRIDGE_ALERTS_CHECK_INTERVAL
    await monitor.run(stop)

State lives in the database (`alert_state`): a watermark (failures changed after it are
not reported yet) and when the last message went out. Claiming a send is a
compare-and-set, so several workers never send the same alert twice.
"""

from __future__ import annotations

import asyncio
import contextlib

import anyio
import structlog

from billbridge.alerts.config import ALERT_CONFIG_KEY, AlertConfig
from billbridge.alerts.sender import Alert, AlertSender, ChannelResult
from billbridge.errors import BillbridgeError
from billbridge.secret_box import SecretBox
from billbridge.services import Services

log = structlog.get_logger("billbridge.alerts")

STATE_NAME = "alerts"


def load_alert_config(services: Services, box: SecretBox) -> AlertConfig:
    """The saved alert settings, or the defaults (no channels)."""
    token = services.store.get_alert_settings(ALERT_CONFIG_KEY)
    if token is None:
        return AlertConfig()
    return AlertConfig.model_validate(box.decrypt_json(token))


def save_alert_config(services: Services, box: SecretBox, config: AlertConfig) -> None:
    """Encrypt and store; the first save starts the failure watermark now (old failures
    are not reported)."""
    services.store.save_alert_settings(ALERT_CONFIG_KEY, box.encrypt_json(config.model_dump()))
    if services.store.get_alert_state(STATE_NAME) is None:
        now = services.store.now()
        services.store.claim_alert(STATE_NAME, None, watermark=now, sent_at=0.0)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


class AlertMonitor:
    """Checks and sends; one per process that runs a worker."""

    def __init__(self, services: Services, sender: AlertSender | None = None) -> None:
        self._services = services
        self._box = services.secret_box
        self._sender = sender or AlertSender(services.settings, services.cio)

    async def check_once(self) -> list[ChannelResult] | None:
        """Send a grouped alert if one is due; returns the channel results, or None."""
        prepared = await anyio.to_thread.run_sync(self._prepare)
        if prepared is None:
            return None
        config, alert = prepared
        return await self._sender.send(config, alert)

    def _prepare(self) -> tuple[AlertConfig, Alert] | None:
        store = self._services.store
        config = load_alert_config(self._services, self._box)
        if not config.has_channels or not (config.on_failures or config.on_stall):
            return None
        now = store.now()
        state = store.get_alert_state(STATE_NAME)
        if state is None:
            # Alerts configured before this version: start from one window back.
            store.claim_alert(STATE_NAME, None, now - config.group_minutes * 60, 0.0)
            state = store.get_alert_state(STATE_NAME)
            if state is None:
                return None
        last_sent = state.last_sent_at or 0.0
        if now - last_sent < config.group_minutes * 60:
            return None  # grouped: what happens now goes into the next message
        failed = store.failed_since(state.watermark) if config.on_failures else None
        stats = store.stats()
        stalled = config.on_stall and stats.oldest_pending_age >= config.stall_minutes * 60
        if not stalled and (failed is None or failed.count == 0):
            return None
        watermark = failed.newest_at if failed and failed.newest_at else state.watermark
        if not store.claim_alert(STATE_NAME, state.last_sent_at, watermark, now):
            return None  # another process sent it
        lines: list[str] = []
        title_parts: list[str] = []
        if failed is not None and failed.count:
            title_parts.append(f"{failed.count} deliveries failed permanently")
            for workflow_id, count in sorted(failed.by_workflow.items()):
                lines.append(f"{workflow_id}: {count} failed")
            if failed.last_error:
                lines.append(f"latest error: {failed.last_error[:300]}")
        if stalled:
            title_parts.append(
                f"the queue is stalled (oldest due delivery waiting "
                f"{_minutes(stats.oldest_pending_age)})"
            )
            lines.append(f"{stats.queue_depth} deliveries pending, {stats.due_now} due now")
        alert = Alert(
            kind="failures" if failed and failed.count else "stall",
            title="Billbridge: " + "; ".join(title_parts),
            lines=tuple(lines),
            failed=failed.count if failed else 0,
            failed_by_workflow=dict(failed.by_workflow) if failed else {},
            oldest_pending_age=stats.oldest_pending_age,
            queue_depth=stats.queue_depth,
            dashboard_url=self._services.settings.public_url,
        )
        return config, alert

    async def send_test(self, config: AlertConfig) -> list[ChannelResult]:
        """The "send test alert" button: one message to every channel of `config`."""
        alert = Alert(
            kind="test",
            title="Billbridge test alert",
            lines=("If you can read this, alerts reach you.",),
            dashboard_url=self._services.settings.public_url,
        )
        return await self._sender.send(config, alert)

    async def run(self, stop: asyncio.Event) -> None:
        """Check every BILLBRIDGE_ALERTS_CHECK_INTERVAL seconds until `stop` is set."""
        interval = self._services.settings.alerts_check_interval
        while not stop.is_set():
            try:
                await self.check_once()
            except BillbridgeError as exc:
                log.warning("alert check failed", error=str(exc))
            except Exception:
                log.exception("alert check crashed; trying again later")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
