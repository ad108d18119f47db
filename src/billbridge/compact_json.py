"""Compact UTF-8 JSON, fast: orjson, with the standard library for what orjson refuses.

    compact_json({"a": "é", "n": 2})       # -> b'{"a":"é","n":2}'
    compact_json_text([1, 2])             # -> '[1,2]'

orjson writes the same compact form as `json.dumps(value, separators=(",", ":"),
ensure_ascii=False)` several times faster (a float in exponent form may be spelled
differently, `1.5e-7` for `1.5e-07`, with the same value); for the rare value orjson refuses
and the standard library takes (an integer beyond 64 bits) the standard library writes it.
NaN and infinities are refused (ValueError), as JSON has no such numbers.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS


def compact_json(value: Any) -> bytes:
    """`value` as compact UTF-8 JSON bytes; TypeError or ValueError when it is not JSON."""
    try:
        encoded = orjson.dumps(value, option=_OPTIONS)
    except orjson.JSONEncodeError:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")
    if b"null" in encoded and _has_non_finite(value):  # orjson writes NaN as null
        raise ValueError("NaN and infinity are not JSON numbers")
    return encoded


def compact_json_text(value: Any) -> str:
    """`compact_json` as text."""
    return compact_json(value).decode("utf-8")


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(item) for item in value)
    return False
