"""The alert loop: every so often, report new permanent failures (grouped: at most one
message per `group_minutes`) and each watched condition that started or cleared (a
"firing" message, later a "resolved" one; see `conditions.py`).

    monitor = AlertMonitor(services)
    await monitor.check_once()        # what the loop does every BILLBRIDGE_ALERTS_CHECK_INTERVAL
    await monitor.run(stop)

State lives in the database (`alert_state`): for failures a watermark (failures changed
after it are not reported yet) and when the last message went out; for each condition a
row `condition.<name>` (firing since, last change). Every send is claimed by
compare-and-set, so several workers never send the same message twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import anyio
import structlog

from billbridge.alerts.conditions import (
    CONDITIONS,
    ConditionName,
    Facts,
    diagnose,
    evaluate,
)
from billbridge.alerts.config import ALERT_CONFIG_KEY, AlertConfig
from billbridge.alerts.refusals import SIGNATURE_COUNT
from billbridge.alerts.sender import Alert, AlertSender, ChannelResult
from billbridge.delivery.worker import KNOWN_WITHIN, split_workers
from billbridge.errors import BillbridgeError
from billbridge.secret_box import SecretBox
from billbridge.services import Services
from billbridge.store.records import WorkerRecord
from billbridge.store.records_ops import RetryingSummary
from billbridge.stripe.endpoint_sync import EndpointCheck

log = structlog.get_logger("billbridge.alerts")

STATE_NAME = "alerts"  # the failures watermark
CONDITION_PREFIX = "condition."  # + a condition's name: its firing/resolved state
ENDPOINT_CHECK_SECONDS = 300.0  # the Stripe endpoint is listed at most this often


def _enabled(config: AlertConfig) -> dict[ConditionName, bool]:
    flags: dict[ConditionName, bool] = {
        "stall": config.on_stall,
        "retrying": config.on_retrying,
        "signatures": config.on_signatures,
        "stripe_silent": config.on_stripe_silence,
        "endpoint": config.on_endpoint,
        "no_worker": config.on_no_worker,
    }
    assert set(flags) == set(CONDITIONS)  # noqa: S101 - every condition has a switch
    return flags


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


class AlertMonitor:
    """Checks and sends; one in every `serve` and every `billbridge worker` (a `serve
    --no-worker` must watch too: it is who notices that every worker is gone)."""

    def __init__(
        self,
        services: Services,
        sender: AlertSender | None = None,
        *,
        endpoint_check_seconds: float = ENDPOINT_CHECK_SECONDS,
    ) -> None:
        self._services = services
        self._box = services.secret_box
        self._sender = sender or AlertSender(services.settings, services.cio)
        self._endpoint_every = endpoint_check_seconds
        self._endpoint_checked_at: float | None = None  # time.monotonic()

    async def check_once(self) -> list[ChannelResult] | None:
        """Send what is due (failures, conditions that started or cleared); returns every
        channel result of every message, or None when nothing was sent."""
        prepared = await anyio.to_thread.run_sync(self._prepare)
        if prepared is None:
            return None
        config, alerts = prepared
        results: list[ChannelResult] = []
        for alert in alerts:
            results.extend(await self._sender.send(config, alert))
        return results

    def _prepare(self) -> tuple[AlertConfig, list[Alert]] | None:
        config = load_alert_config(self._services, self._box)
        if not config.has_channels:
            return None
        now = self._services.store.now()
        facts = self._facts(config, now)
        alerts: list[Alert] = []
        if config.on_failures:
            failures = self._failures(config, facts)
            if failures is not None:
                alerts.append(failures)
        checks = evaluate(config, facts, retry_window=self._services.settings.retry_window)
        for check in checks:
            if self._transition(check.name, check.firing, config, now, send=True):
                alerts.append(check.alert(self._services.settings.public_url))
        for name, enabled in _enabled(config).items():
            if not enabled:  # switched off while firing: clear it without a message
                self._transition(name, False, config, now, send=False)
        return (config, alerts) if alerts else None

    # Facts --------------------------------------------------------------------------------

    def _facts(self, config: AlertConfig, now: float) -> Facts:
        store = self._services.store
        window = config.signature_window_minutes * 60
        alive: list[WorkerRecord] = []
        silent: list[WorkerRecord] = []
        if config.on_no_worker:
            alive, silent = split_workers(store.list_workers(KNOWN_WITHIN))
        return Facts(
            now=now,
            stats=store.stats(),
            retrying=store.retrying_summary() if config.on_retrying else RetryingSummary(0, None),
            recent_failures=(
                store.recent_failed_attempts() if config.on_retrying or config.on_failures else []
            ),
            signature_refusals=(
                store.alert_count_since(SIGNATURE_COUNT, now - window)
                if config.on_signatures
                else 0
            ),
            last_webhook_at=store.last_webhook_received_at() if config.on_stripe_silence else None,
            endpoint=self._endpoint_check() if config.on_endpoint else None,
            live_workers=alive,
            silent_workers=silent,
        )

    def _endpoint_check(self) -> EndpointCheck:
        """The Stripe endpoint against the enabled workflows: the dashboard's check
        (`Services.stripe_endpoint`), listed again at most every `endpoint_check_seconds`."""
        watch = self._services.stripe_endpoint
        clock = time.monotonic()
        if self._endpoint_checked_at is None or (
            clock - self._endpoint_checked_at >= self._endpoint_every
        ):
            self._endpoint_checked_at = clock
            watch.invalidate()
        return watch.status()

    # Failures (grouped) and conditions (firing, resolved) ----------------------------------

    def _failures(self, config: AlertConfig, facts: Facts) -> Alert | None:
        """Deliveries failed since the last failures message, at most one per window."""
        store = self._services.store
        now = facts.now
        state = store.get_alert_state(STATE_NAME)
        if state is None:
            # Alerts configured before this version: start from one window back.
            store.claim_alert(STATE_NAME, None, now - config.group_minutes * 60, 0.0)
            state = store.get_alert_state(STATE_NAME)
            if state is None:
                return None
        if now - (state.last_sent_at or 0.0) < config.group_minutes * 60:
            return None  # grouped: what happens now goes into the next message
        failed = store.failed_since(state.watermark)
        if failed.count == 0:
            return None
        watermark = failed.newest_at or state.watermark
        if not store.claim_alert(STATE_NAME, state.last_sent_at, watermark, now):
            return None  # another process sent it
        lines = [
            f"{workflow_id}: {count} failed"
            for workflow_id, count in sorted(failed.by_workflow.items())
        ]
        if failed.last_error:
            lines.append(f"latest error: {failed.last_error[:300]}")
        actions: tuple[str, ...] = (
            "Open Events with status “failed” to read why, fix the cause, then replay: "
            "“Replay all failed” or `billbridge replay --failed`.",
        )
        found = diagnose(facts.recent_failures, now)
        if found is not None:
            lines.append(found.line)
            actions = found.actions
        return Alert(
            kind="failures",
            title=f"Billbridge: {failed.count} deliveries failed permanently",
            lines=tuple(lines),
            actions=actions,
            failed=failed.count,
            failed_by_workflow=dict(failed.by_workflow),
            dashboard_url=self._services.settings.public_url,
        )

    def _transition(
        self, name: ConditionName, firing: bool, config: AlertConfig, now: float, *, send: bool
    ) -> bool:
        """Move the condition's state to `firing` if it is not there yet: True when this
        process won the compare-and-set (and so sends the message).

        The state is an `alert_state` row `condition.<name>`: watermark = when it started
        firing (0 when clear), last_sent_at = its last change. A condition changes at most
        once per grouping window, so a flapping one does not flood the channel."""
        store = self._services.store
        key = CONDITION_PREFIX + name
        state = store.get_alert_state(key)
        if state is None:
            if not firing:
                return False  # clear and never seen: nothing to record
            store.claim_alert(key, None, 0.0, 0.0)  # start clear; a racing process may too
            state = store.get_alert_state(key)
            if state is None:
                return False
        if (state.watermark > 0) == firing:
            return False
        if send and now - (state.last_sent_at or 0.0) < config.group_minutes * 60:
            return False
        return store.claim_alert(key, state.last_sent_at, now if firing else 0.0, now)

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
