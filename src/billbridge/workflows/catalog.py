"""The workflow catalog: workflows kept in the store, cached in memory for the webhook path.

    catalog = WorkflowCatalog(store)
    catalog.ensure_defaults()                     # first start only
    catalog.deliveries_for("charge.failed", livemode=True)  # -> [NewDelivery, ...]

Ingest asks `deliveries_for` on every webhook, so the catalog answers from a snapshot of
the parsed workflows, indexed by event type. The snapshot is rebuilt when it is older
than `ttl` seconds (other processes may have changed the store) or after `invalidate()`
(this process changed it). Thread-safe: readers take the current snapshot without a
lock; one thread rebuilds it while the others keep reading the old one.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from billbridge.errors import WorkflowValidationError
from billbridge.store.base import Store
from billbridge.store.records import NewDelivery, WorkflowRecord
from billbridge.workflows.builtin import ERASURE_WORKFLOW_ID, erasure_workflow
from billbridge.workflows.defaults import default_workflows
from billbridge.workflows.model import Workflow, validate_workflow

DEFAULTS_SEEDED_KEY = "defaults_seeded"
_ERASURE_WORKFLOW = erasure_workflow()

_log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class _Snapshot:
    """Every valid stored workflow (by id, in store order) and the enabled ones by event type."""

    built_at: float  # clock() when built
    workflows: dict[str, Workflow] = field(default_factory=dict)
    versions: dict[str, tuple[int, float]] = field(default_factory=dict)  # version, updated_at
    enabled_by_event: dict[str, tuple[Workflow, ...]] = field(default_factory=dict)
    # deliveries_for's answers, filled as event types arrive (immutable records, so shared)
    deliveries: dict[tuple[str, bool], tuple[NewDelivery, ...]] = field(default_factory=dict)


class WorkflowCatalog:
    """Workflows in the store plus an in-memory, time-limited cache of them."""

    def __init__(
        self,
        store: Store,
        *,
        ttl: float = 1.0,  # seconds a snapshot is trusted before the store is read again
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._clock = clock
        self._refresh_lock = threading.Lock()
        self._snapshot: _Snapshot | None = None

    # Seeding ----------------------------------------------------------------------------

    def ensure_defaults(self) -> list[str]:
        """Store the default workflows not seeded before; returns the ids it created.

        The meta key `defaults_seeded` records the default ids already seeded, so a
        default the user deleted is never re-created, while a default added by a later
        Billbridge version is seeded once on upgrade.
        """
        seeded = self._seeded_ids()
        created: list[str] = []
        defaults = default_workflows()
        for workflow in defaults:
            if workflow.id in seeded or self._store.get_workflow(workflow.id) is not None:
                continue
            self._save(workflow)
            created.append(workflow.id)
        all_ids = sorted(seeded | {workflow.id for workflow in defaults})
        if set(all_ids) != seeded:
            self._store.set_meta(DEFAULTS_SEEDED_KEY, json.dumps(all_ids))
        if created:
            self.invalidate()
        return created

    def _seeded_ids(self) -> set[str]:
        raw = self._store.get_meta(DEFAULTS_SEEDED_KEY)
        if raw is None:
            return set()
        try:
            ids = json.loads(raw)
        except ValueError:
            ids = None
        if isinstance(ids, list) and all(isinstance(item, str) for item in ids):
            return set(ids)
        # Some other marker: the defaults of this version count as seeded.
        return {workflow.id for workflow in default_workflows()}

    # Reads --------------------------------------------------------------------------------

    def all(self) -> list[Workflow]:
        """Every stored workflow that validates, in store order (by name)."""
        return list(self._current().workflows.values())

    def get(self, workflow_id: str) -> Workflow | None:
        """The workflow with this id (enabled or not), or None. The built-in erasure
        workflow (`workflows/builtin.py`) is answered too, though never stored nor listed."""
        if workflow_id == ERASURE_WORKFLOW_ID:
            return _ERASURE_WORKFLOW
        return self._current().workflows.get(workflow_id)

    def deliveries_for(self, event_type: str, livemode: bool) -> list[NewDelivery]:
        """One pending NewDelivery per action of each enabled workflow the event triggers."""
        snapshot = self._current()
        key = (event_type, livemode)
        cached = snapshot.deliveries.get(key)
        if cached is None:
            cached = tuple(
                NewDelivery(workflow_id=workflow.id, action_index=index, action_type=action.type)
                for workflow in snapshot.enabled_by_event.get(event_type, ())
                if workflow.matches(event_type, livemode)
                for index, action in enumerate(workflow.actions)
            )
            snapshot.deliveries[key] = cached
        return list(cached)

    # Writes -------------------------------------------------------------------------------

    def save(self, data: Mapping[str, Any]) -> Workflow:
        """Validate and store (create or replace) a workflow. Raises WorkflowValidationError."""
        workflow = validate_workflow(data)
        self._save(workflow)
        self.invalidate()
        return workflow

    def delete(self, workflow_id: str) -> bool:
        """Delete a workflow; False when there was none with this id."""
        deleted = self._store.delete_workflow(workflow_id)
        self.invalidate()
        return deleted

    def invalidate(self) -> None:
        """Forget the cached snapshot: the next read goes to the store."""
        self._snapshot = None

    def _save(self, workflow: Workflow) -> WorkflowRecord:
        return self._store.save_workflow(
            workflow.id, workflow.name, workflow.enabled, workflow.to_data()
        )

    # The snapshot -------------------------------------------------------------------------

    def _current(self) -> _Snapshot:
        snapshot = self._snapshot
        if snapshot is not None and self._clock() - snapshot.built_at < self._ttl:
            return snapshot
        with self._refresh_lock:
            snapshot = self._snapshot  # another thread may have rebuilt it meanwhile
            if snapshot is not None and self._clock() - snapshot.built_at < self._ttl:
                return snapshot
            snapshot = self._build(previous=snapshot)
            self._snapshot = snapshot
            return snapshot

    def _build(self, previous: _Snapshot | None) -> _Snapshot:
        built_at = self._clock()
        workflows: dict[str, Workflow] = {}
        versions: dict[str, tuple[int, float]] = {}
        for record in self._store.list_workflows():
            workflow = self._parse(record, previous)
            if workflow is not None:
                workflows[record.workflow_id] = workflow
                versions[record.workflow_id] = (record.version, record.updated_at)
        by_event: dict[str, list[Workflow]] = {}
        for workflow in workflows.values():
            if workflow.enabled:
                for event_type in workflow.trigger.events:
                    by_event.setdefault(event_type, []).append(workflow)
        return _Snapshot(
            built_at=built_at,
            workflows=workflows,
            versions=versions,
            enabled_by_event={key: tuple(value) for key, value in by_event.items()},
        )

    @staticmethod
    def _parse(record: WorkflowRecord, previous: _Snapshot | None) -> Workflow | None:
        # Re-validating an unchanged workflow every ttl would be wasted work.
        stamp = (record.version, record.updated_at)
        if previous is not None and previous.versions.get(record.workflow_id) == stamp:
            cached = previous.workflows.get(record.workflow_id)
            if cached is not None:
                return cached
        try:
            workflow = validate_workflow(record.definition)
        except WorkflowValidationError as exc:
            _log.warning(
                "stored workflow is invalid and is ignored",
                workflow_id=record.workflow_id,
                problems=exc.problems,
            )
            return None
        if workflow.enabled != record.enabled:  # the column wins over the stored definition
            workflow = workflow.model_copy(update={"enabled": record.enabled})
        return workflow
