"""The fake Customer.io workspace: people, events, segments, sends and their validation rules.

Pure state, no HTTP: `tests/fakes/customerio.py` routes requests here. Every method is
thread-safe (one lock); mutations can be journaled to a JSON-lines file and replayed, so a
standalone fake killed with SIGKILL comes back with the same workspace.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Literal

LimitMode = Literal["record", "reject"]

PERSON_KEYS = ("id", "email", "phone", "cio_id")
V1_MERGE_KEYS = ("id", "email", "cio_id")
SEND_IDENTIFIER_KEYS = ("id", "email", "cio_id")
PERSON_ACTIONS = {
    "identify",
    "delete",
    "event",
    "page",
    "screen",
    "add_relationships",
    "delete_relationships",
    "add_device",
    "delete_device",
    "merge",
    "suppress",
    "unsuppress",
}
CAMPAIGN_WINDOW = 72 * 3600  # seconds: older event timestamps start no campaign
OBJECT_ACTIONS = {"identify", "identify_anonymous", "delete", "add_relationships"}
OBJECT_ACTIONS |= {"delete_relationships"}
EVENT_TYPES = ("event", "page", "screen")
MAX_OPERATION_BYTES = 32_000  # Track v2, per operation (KB read as 1000 bytes: stricter)
MAX_BATCH_BYTES = 500_000  # Track v2, whole batch request
MAX_ATTACHMENTS_BYTES = 2_000_000
MAX_RECIPIENTS = 15


class Rejected(Exception):
    """A request the fake refuses: HTTP status plus the JSON body Customer.io would send."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def v1_error(*messages: str) -> Rejected:
    return Rejected(400, {"meta": {"errors": list(messages)}})


def app_error(status: int, detail: str) -> Rejected:
    return Rejected(status, {"errors": [{"detail": detail, "status": str(status)}]})


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def person_kind(identifier: str) -> tuple[str, str]:
    """How Track v1 reads a path identifier: `cio_…` -> cio_id, contains `@` -> email, else id."""
    if identifier.startswith("cio_"):
        return "cio_id", identifier[4:]
    if "@" in identifier:
        return "email", identifier
    return "id", identifier


def _norm(kind: str, value: Any) -> tuple[str, str]:
    text = str(value)
    return kind, text.lower() if kind == "email" else text


class Workspace:
    """One Customer.io workspace's data, guarded by a lock."""

    def __init__(self, *, limit_mode: LimitMode = "record", journal: Path | None = None) -> None:
        self.lock = threading.Lock()
        self.limit_mode: LimitMode = limit_mode
        self._journal_path = journal
        self._journal: Any = None
        self.clear()
        if journal is not None:
            self._replay(journal)
            self._journal = journal.open("a", encoding="utf-8")

    def clear(self) -> None:
        self.people: dict[str, dict[str, Any]] = {}  # cio_id -> attributes
        self._stamps: dict[str, dict[str, int]] = {}  # cio_id -> attribute -> _timestamp
        self._index: dict[tuple[str, str], str] = {}  # (kind, value) -> cio_id
        self._keys: dict[str, set[tuple[str, str]]] = {}  # cio_id -> its index keys
        self._suppressed: dict[tuple[str, str], int] = {}  # key -> suppression group
        self._next_group = 0
        self._next_cio = 0x3000001
        self.events: list[dict[str, Any]] = []
        self.event_ids: set[str] = set()
        self.duplicate_events = 0
        self.devices: dict[str, dict[str, dict[str, Any]]] = {}
        self.segments: dict[int, set[str]] = {}
        self.sends: list[dict[str, Any]] = []
        self.triggers: list[dict[str, Any]] = []
        self.objects: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.app_calls: deque[float] = deque()
        self.last_broadcast = 0.0

    def reset(self) -> None:
        with self.lock:
            self.clear()
            if self._journal is not None:
                self._journal.truncate(0)

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    # Journal ---------------------------------------------------------------------------

    def _log(self, *entry: Any) -> None:
        if self._journal is not None:
            self._journal.write(json.dumps(entry, separators=(",", ":")) + "\n")
            self._journal.flush()

    def _replay(self, path: Path) -> None:
        if not path.exists():
            return
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                op, *args = json.loads(line)
            except ValueError:
                continue  # a torn last line after SIGKILL
            getattr(self, f"_do_{op}")(*args)

    # People ----------------------------------------------------------------------------

    def find(self, kind: str, value: str) -> str | None:
        if kind == "cio_id":
            return value if value in self.people else None
        return self._index.get(_norm(kind, value))

    def primary_key(self, cio_id: str) -> str:
        person = self.people[cio_id]
        for key in ("id", "email", "phone"):
            if person.get(key) not in (None, ""):
                return str(person[key])
        return f"cio_{cio_id}"

    def is_suppressed(self, kind: str, value: str) -> bool:
        return _norm(kind, value) in self._suppressed

    def _unindex(self, cio_id: str) -> None:
        for key in self._keys.pop(cio_id, set()):
            if self._index.get(key) == cio_id:
                del self._index[key]

    def _reindex(self, cio_id: str) -> None:
        self._unindex(cio_id)
        person = self.people[cio_id]
        keys = {
            _norm(k, person[k]) for k in ("id", "email", "phone") if person.get(k) not in (None, "")
        }
        for key in keys:
            self._index[key] = cio_id
        self._keys[cio_id] = keys

    def check_attributes(self, attributes: dict[str, Any]) -> None:
        problems = []
        if len(attributes) > 300:
            problems.append(f"{len(attributes)} attributes in one call (limit 300)")
        for name, value in attributes.items():
            if len(name.encode()) > 150:
                problems.append(f"attribute name longer than 150 bytes: {name[:40]}…")
            encoded = value if isinstance(value, str) else json.dumps(value)
            if len(encoded.encode()) > 1000:
                problems.append(f"attribute {name[:40]} value longer than 1000 bytes")
        self._limits(problems)

    def check_event(self, name: str, data: Any) -> None:
        problems = []
        if len(name.encode()) > 100:
            problems.append(f"event name longer than 100 bytes: {name[:40]}…")
        if data is not None and len(compact(data)) > 100_000:
            problems.append("event data larger than 100000 bytes")
        self._limits(problems)

    def _limits(self, problems: list[str]) -> None:
        if not problems:
            return
        if self.limit_mode == "reject":
            raise v1_error(*problems)
        self.violations.extend(problems)

    def identify(self, kind: str, value: str, attributes: dict[str, Any]) -> None:
        self._log("identify", kind, value, attributes)
        self._do_identify(kind, value, attributes)

    def _do_identify(self, kind: str, value: str, attributes: dict[str, Any]) -> None:
        if self.is_suppressed(kind, value):
            return  # 200, ignored until unsuppressed
        cio_id = self.find(kind, value)
        if cio_id is None:
            if kind == "cio_id" or attributes.get("_update") is True:
                return  # unknown cio_… is dropped; `_update: true` never creates
            cio_id = format(self._next_cio, "x")
            self._next_cio += 1
            self.people[cio_id] = {kind: value, "cio_id": cio_id}
            self._stamps[cio_id] = {}
        person, stamps = self.people[cio_id], self._stamps[cio_id]
        stamp = attributes.get("_timestamp")
        stamp = stamp if is_int(stamp) else None
        for name, new in attributes.items():
            if name in ("_update", "_timestamp", "cio_id") or (name == "id" and kind == "id"):
                continue
            if stamp is not None:
                if stamps.get(name, -1) > stamp:
                    continue  # an older update arriving late does not win
                stamps[name] = stamp
            # Removal, not an empty value: Customer.io's Track spec says "Pass `null` or an
            # empty string to remove an attribute" (said of object attributes; assumed for
            # people, docs/internals.md "Removing attributes"). Billbridge sends "".
            if new is None or new == "":
                person.pop(name, None)
            else:
                person[name] = new
        self._reindex(cio_id)

    def delete(self, kind: str, value: str) -> None:
        self._log("delete", kind, value)
        self._do_delete(kind, value)

    def _do_delete(self, kind: str, value: str) -> None:
        cio_id = self.find(kind, value)
        if cio_id is not None:
            self._forget(cio_id)

    def _forget(self, cio_id: str) -> None:
        del self.people[cio_id]
        self._stamps.pop(cio_id, None)
        self.devices.pop(cio_id, None)
        self._unindex(cio_id)

    def suppress(self, kind: str, value: str) -> None:
        self._log("suppress", kind, value)
        self._do_suppress(kind, value)

    def _do_suppress(self, kind: str, value: str) -> None:
        self._next_group += 1
        group = self._next_group
        keys = {_norm(kind, value)}
        cio_id = self.find(kind, value)
        if cio_id is not None:
            person = self.people[cio_id]
            keys |= {_norm(key, person[key]) for key in ("id", "email", "phone") if key in person}
            keys.add(("cio_id", cio_id))
            self._forget(cio_id)
        for key in keys:
            self._suppressed[key] = group

    def unsuppress(self, kind: str, value: str) -> None:
        self._log("unsuppress", kind, value)
        self._do_unsuppress(kind, value)

    def _do_unsuppress(self, kind: str, value: str) -> None:
        group = self._suppressed.get(_norm(kind, value))
        if group is not None:
            self._suppressed = {k: g for k, g in self._suppressed.items() if g != group}

    def merge(self, primary: tuple[str, str], secondary: tuple[str, str]) -> None:
        self._log("merge", list(primary), list(secondary))
        self._do_merge(primary, secondary)

    def _do_merge(self, primary: Any, secondary: Any) -> None:
        first, second = self.find(*primary), self.find(*secondary)
        if first is None or second is None or first == second:
            return
        for name, value in self.people[second].items():
            self.people[first].setdefault(name, value)
        self.people[first]["cio_id"] = first
        self._forget(second)
        self._reindex(first)

    # Events ----------------------------------------------------------------------------

    def track(self, event: dict[str, Any], kind: str | None, value: str | None) -> bool:
        """Store an event; False when it was ignored (duplicate id or suppressed person).

        Each stored event says whether it could start campaigns: only an event whose
        `timestamp` lies within the past 72 hours when it arrives can (customerio-api.md
        §3); one without a timestamp takes the time of receipt.
        """
        received = int(time.time())
        stamp = event.get("timestamp")
        fresh = not is_int(stamp) or received - int(stamp) <= CAMPAIGN_WINDOW
        event = {**event, "received_at": received, "triggers_campaigns": fresh}
        self._log("track", event, kind, value)
        return self._do_track(event, kind, value)

    def _do_track(self, event: dict[str, Any], kind: str | None, value: str | None) -> bool:
        event_id = event.get("id")
        if isinstance(event_id, str) and event_id in self.event_ids:
            self.duplicate_events += 1
            return False
        if kind is not None and value is not None:
            if self.is_suppressed(kind, value):
                return False
            cio_id = self.find(kind, value)
            if cio_id is None:
                if kind == "cio_id":
                    return False
                self._do_identify(kind, value, {})  # an event creates its person
                cio_id = self.find(kind, value)
            event = {**event, "cio_id": cio_id}
        if isinstance(event_id, str):
            self.event_ids.add(event_id)
        self.events.append(event)
        return True

    # Devices, segments, objects ---------------------------------------------------------

    def set_device(self, kind: str, value: str, device: dict[str, Any]) -> None:
        self._log("set_device", kind, value, device)
        self._do_set_device(kind, value, device)

    def _do_set_device(self, kind: str, value: str, device: dict[str, Any]) -> None:
        if self.is_suppressed(kind, value):
            return
        cio_id = self.find(kind, value)
        if cio_id is None:
            self._do_identify(kind, value, {})
            cio_id = self.find(kind, value)
        if cio_id is not None:
            token = str(device.get("id") or device.get("token"))
            self.devices.setdefault(cio_id, {})[token] = device

    def delete_device(self, kind: str, value: str, token: str) -> None:
        self._log("delete_device", kind, value, token)
        self._do_delete_device(kind, value, token)

    def _do_delete_device(self, kind: str, value: str, token: str) -> None:
        cio_id = self.find(kind, value)
        if cio_id is not None:
            self.devices.get(cio_id, {}).pop(token, None)

    def segment(self, segment_id: int, ids: list[str], *, add: bool) -> None:
        self._log("segment", segment_id, ids, add)
        self._do_segment(segment_id, ids, add)

    def _do_segment(self, segment_id: int, ids: list[str], add: bool) -> None:
        members = self.segments.setdefault(segment_id, set())
        if add:
            members.update(ids)
        else:
            members.difference_update(ids)

    def record_object(self, operation: dict[str, Any]) -> None:
        self._log("record_object", operation)
        self._do_record_object(operation)

    def _do_record_object(self, operation: dict[str, Any]) -> None:
        self.objects.append(operation)

    def record_send(self, record: dict[str, Any]) -> None:
        self._log("record_send", record)
        self._do_record_send(record)

    def _do_record_send(self, record: dict[str, Any]) -> None:
        self.sends.append(record)

    def record_trigger(self, record: dict[str, Any]) -> None:
        self._log("record_trigger", record)
        self._do_record_trigger(record)

    def _do_record_trigger(self, record: dict[str, Any]) -> None:
        self.triggers.append(record)

    # Snapshots for inspection -----------------------------------------------------------

    def snapshot_people(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {self.primary_key(cio): dict(person) for cio, person in self.people.items()}


# Validation (raises Rejected) ---------------------------------------------------------


def validate_v1_event(body: Any, *, anonymous: bool) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise v1_error("request body must be a JSON object")
    problems = []
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append("name is required")
    if "timestamp" in body and not is_int(body["timestamp"]):
        problems.append("timestamp must be an integer (unix seconds)")
    if "data" in body and body["data"] is not None and not isinstance(body["data"], dict):
        problems.append("data must be an object")
    if "id" in body and not isinstance(body["id"], str):
        problems.append("id must be a string")
    if body.get("type", "event") not in EVENT_TYPES:
        problems.append("type must be event, page or screen")
    if anonymous and "anonymous_id" in body and not isinstance(body["anonymous_id"], str):
        problems.append("anonymous_id must be a string")
    if problems:
        raise v1_error(*problems)
    event = {
        "name": str(name).strip(),
        "type": body.get("type", "event"),
        "data": body.get("data") or {},
        "timestamp": body.get("timestamp"),
        "id": body.get("id"),
    }
    if anonymous:
        event["anonymous_id"] = body.get("anonymous_id")
    return event


def one_identifier(value: Any, keys: tuple[str, ...], field: str) -> tuple[str, str]:
    """Exactly one of `keys`, with a string or integer value; raises ValueError otherwise."""
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(f"{field} must hold exactly one of {', '.join(keys)}")
    ((key, item),) = value.items()
    if key not in keys or not (isinstance(item, str) or is_int(item)) or item == "":
        raise ValueError(f"{field} must hold exactly one of {', '.join(keys)}")
    return key, str(item)


def v2_problem(operation: Any) -> dict[str, str] | None:
    """Why a Track v2 operation is invalid (`{reason, field, message}`), or None."""
    if not isinstance(operation, dict):
        return {"reason": "invalid", "field": "", "message": "operation must be an object"}
    size = len(compact(operation))
    if size > MAX_OPERATION_BYTES:
        return {"reason": "too_large", "field": "", "message": f"operation is {size} bytes"}
    kind, action = operation.get("type"), operation.get("action")
    allowed = {"person": PERSON_ACTIONS, "object": OBJECT_ACTIONS, "delivery": {"event"}}
    if kind not in allowed:
        return {"reason": "required", "field": "type", "message": "type is invalid"}
    if action not in allowed[str(kind)]:
        return {"reason": "invalid", "field": "action", "message": f"unknown action {action}"}
    try:
        if kind == "person" and action == "merge":
            one_identifier(operation.get("primary"), V1_MERGE_KEYS, "primary")
            one_identifier(operation.get("secondary"), V1_MERGE_KEYS, "secondary")
        elif kind == "person":
            one_identifier(operation.get("identifiers"), PERSON_KEYS, "identifiers")
    except ValueError as exc:
        field = str(exc).split(" ", 1)[0]
        return {"reason": "invalid", "field": field, "message": str(exc)}
    if kind != "person" and not isinstance(operation.get("identifiers"), dict):
        message = "identifiers must be an object"
        return {"reason": "required", "field": "identifiers", "message": message}
    if "attributes" in operation and not isinstance(operation["attributes"], dict):
        return {"reason": "invalid", "field": "attributes", "message": "must be an object"}
    if action in EVENT_TYPES or kind == "delivery":
        name = operation.get("name")
        if not isinstance(name, str) or not name.strip():
            return {"reason": "required", "field": "name", "message": "name is required"}
        if "timestamp" in operation and not is_int(operation["timestamp"]):
            return {"reason": "invalid", "field": "timestamp", "message": "must be an integer"}
    if action == "add_device":
        device = operation.get("device")
        if not isinstance(device, dict) or not device.get("token"):
            return {"reason": "required", "field": "device.token", "message": "token required"}
        if device.get("platform") not in ("ios", "android"):
            return {"reason": "invalid", "field": "device.platform", "message": "ios|android"}
    return None


def _recipients(value: Any) -> int:
    if not isinstance(value, str):
        return 0
    return len([part for part in value.split(",") if part.strip()])


def validate_send_email(body: Any, forbidden_extensions: set[str]) -> None:
    """`POST /v1/send/email` rules; raises Rejected with `{"meta":{"error":…}}`."""

    def fail(status: int, message: str) -> Rejected:
        return Rejected(status, {"meta": {"error": message}})

    if not isinstance(body, dict):
        raise fail(400, "request body must be a JSON object")
    if not isinstance(body.get("to"), str) or not body["to"].strip():
        raise fail(400, "to is required")
    if sum(_recipients(body.get(key)) for key in ("to", "cc", "bcc")) > MAX_RECIPIENTS:
        raise fail(400, "too many recipients: at most 15 across to, cc and bcc")
    try:
        one_identifier(body.get("identifiers"), SEND_IDENTIFIER_KEYS, "identifiers")
    except ValueError as exc:
        raise fail(400, str(exc)) from None
    template = body.get("transactional_message_id")
    has_template = (is_int(template) and template is not None and template > 0) or (
        isinstance(template, str) and bool(template)
    )
    if not has_template and not all(body.get(key) for key in ("body", "subject", "from")):
        raise fail(400, "transactional_message_id is required (or body, subject and from)")
    if "message_data" in body and not isinstance(body["message_data"], dict):
        raise fail(400, "message_data must be an object")
    if "send_at" in body and not is_int(body["send_at"]):
        raise fail(400, "send_at must be an integer (unix seconds)")
    attachments = body.get("attachments") or {}
    if not isinstance(attachments, dict):
        raise fail(400, "attachments must be an object of filename to base64 content")
    total = 0
    for name, content in attachments.items():
        if name.rsplit(".", 1)[-1].lower() in forbidden_extensions:
            extension = name.rsplit(".", 1)[-1]
            raise fail(403, f"Forbidden file type {extension} for attachment {name}.")
        try:
            total += len(base64.b64decode(str(content), validate=True))
        except (binascii.Error, ValueError):
            raise fail(400, f'Attachment must be base64 encoded: "{name}"') from None
    if total >= MAX_ATTACHMENTS_BYTES:
        raise fail(413, "Total attachment size exceeds the limit")


TRIGGER_VARIANTS = ("recipients", "emails", "ids", "per_user_data", "data_file_url")
TRIGGER_FLAGS = {
    "id_ignore_missing": ("ids", "per_user_data", "data_file_url"),
    "email_ignore_missing": ("emails", "per_user_data", "data_file_url"),
    "email_add_duplicates": ("emails", "per_user_data", "data_file_url"),
}


def validate_trigger(body: Any, workspace: Workspace) -> None:
    """`POST /v1/campaigns/{id}/triggers` rules (call with the workspace lock held)."""
    if not isinstance(body, dict):
        raise app_error(400, "request body must be a JSON object")
    variants = [key for key in TRIGGER_VARIANTS if key in body]
    if len(variants) > 1:
        raise app_error(400, f"use only one of {', '.join(variants)}")
    variant = variants[0] if variants else None
    for flag, owners in TRIGGER_FLAGS.items():
        if flag in body and variant not in owners:
            raise app_error(400, f"{flag} is not allowed with {variant or 'no recipients'}")
    if "data" in body and not isinstance(body["data"], dict):
        raise app_error(400, "data must be an object")
    if variant in ("emails", "ids", "per_user_data"):
        items = body[variant]
        if not isinstance(items, list) or not items or len(items) > 10_000:
            raise app_error(400, f"{variant} must be a list of 1 to 10000 items")
        missing = []
        for item in items:
            if variant == "per_user_data":
                if not isinstance(item, dict) or not ("id" in item or "email" in item):
                    raise app_error(400, "each per_user_data item needs id or email")
                kind = "id" if "id" in item else "email"
                value = str(item[kind])
            else:
                kind, value = ("id" if variant == "ids" else "email"), str(item)
            ignore = body.get(f"{kind}_ignore_missing") is True
            if not ignore and workspace.find(kind, value) is None:
                missing.append(value)
        if missing:
            raise Rejected(
                422,
                {
                    "errors": [
                        {
                            "detail": f"{len(missing)} recipients were not found",
                            "source": {"pointer": f"/data/attributes/{variant}"},
                            "status": "422",
                        }
                    ]
                },
            )


def new_delivery_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def now() -> float:
    return time.time()
