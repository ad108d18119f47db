"""The Customer.io boundary: planned requests, the HTTP client and Track v2 batch helpers."""

from __future__ import annotations

from billbridge.customerio.batch import (
    MAX_BATCH_REQUEST_BYTES,
    MAX_OPERATION_BYTES,
    BatchItemError,
    BatchResult,
    plan_batches,
)
from billbridge.customerio.client import (
    CustomerIOClient,
    error_detail,
    parse_retry_after,
    safe_path,
)
from billbridge.customerio.requests import (
    CioApi,
    CioRequest,
    CioResponse,
    HttpMethod,
    path_identifier,
)

__all__ = [
    "MAX_BATCH_REQUEST_BYTES",
    "MAX_OPERATION_BYTES",
    "BatchItemError",
    "BatchResult",
    "CioApi",
    "CioRequest",
    "CioResponse",
    "CustomerIOClient",
    "HttpMethod",
    "error_detail",
    "parse_retry_after",
    "path_identifier",
    "plan_batches",
    "safe_path",
]
