"""Track v2 batch helpers: size-aware chunking of operations and parsing of 207 answers.

Customer.io accepts a `POST /api/v2/batch` request under 500 KB whose operations are each at
most 32 KB. The limits are counted here in bytes of compact UTF-8 JSON, with KB read as 1000
bytes (the stricter reading), so a request that fits here fits at Customer.io.

    chunks, too_large = plan_batches(operations)
    # chunks: lists of indexes into `operations`, each list one request body
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from billbridge.compact_json import compact_json

MAX_BATCH_REQUEST_BYTES = 500_000  # the whole body must stay below this
MAX_OPERATION_BYTES = 32_000  # one operation, compact JSON
_ENVELOPE_BYTES = len(b'{"batch":[]}')


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON, the exact bytes the client sends."""
    return compact_json(value)


@dataclass(frozen=True)
class BatchItemError:
    """One operation that Customer.io (or the size check) refused.

    `index` is the operation's position in the list given to `CustomerIOClient.batch()`.
    """

    index: int
    reason: str
    field: str | None
    message: str


@dataclass(frozen=True)
class BatchResult:
    """The outcome of `CustomerIOClient.batch()`: every operation not in `errors` was accepted."""

    total: int
    requests: int  # HTTP requests sent
    errors: tuple[BatchItemError, ...] = ()

    @property
    def accepted(self) -> int:
        return self.total - len(self.errors)

    @property
    def ok(self) -> bool:
        return not self.errors


def plan_batches(
    operations: list[dict[str, Any]],
    *,
    max_request_bytes: int = MAX_BATCH_REQUEST_BYTES,
    max_operation_bytes: int = MAX_OPERATION_BYTES,
) -> tuple[list[list[int]], list[BatchItemError]]:
    """Split operations into request-sized chunks of indexes, keeping their order.

    An operation above `max_operation_bytes` (or one that is not JSON-serialisable) is
    left out of every chunk and reported as a `BatchItemError` instead.
    """
    chunks: list[list[int]] = []
    rejected: list[BatchItemError] = []
    current: list[int] = []
    current_bytes = _ENVELOPE_BYTES
    for index, operation in enumerate(operations):
        try:
            size = len(encode_json(operation))
        except (TypeError, ValueError):
            rejected.append(
                BatchItemError(
                    index, "invalid", None, "operation is not JSON-serialisable; nothing was sent"
                )
            )
            continue
        if size > max_operation_bytes:
            rejected.append(
                BatchItemError(
                    index,
                    "too_large",
                    None,
                    f"operation is {size} bytes; Customer.io accepts at most "
                    f"{max_operation_bytes} bytes per batch operation; it was not sent",
                )
            )
            continue
        separator = 1 if current else 0
        if current and current_bytes + separator + size >= max_request_bytes:
            chunks.append(current)
            current, current_bytes, separator = [], _ENVELOPE_BYTES, 0
        current.append(index)
        current_bytes += separator + size
    if current:
        chunks.append(current)
    return chunks, rejected


def parse_partial_errors(body: str, chunk: list[int]) -> list[BatchItemError]:
    """Map the `{"errors": [{"batch_index", "reason", "field", "message"}]}` of a 207 answer
    back to indexes of the caller's list. An error without a usable index is dropped."""
    try:
        data = json.loads(body)
    except ValueError:
        return []
    items = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return []
    errors: list[BatchItemError] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        position = item.get("batch_index")
        if not isinstance(position, int) or isinstance(position, bool):
            continue
        if not 0 <= position < len(chunk):
            continue
        field = item.get("field")
        errors.append(
            BatchItemError(
                index=chunk[position],
                reason=str(item.get("reason") or "invalid"),
                field=str(field) if field is not None else None,
                message=str(item.get("message") or item.get("detail") or "")[:500],
            )
        )
    return errors
