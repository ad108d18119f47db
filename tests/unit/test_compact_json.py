"""compact_json writes what `json.dumps(..., separators=(",", ":"), ensure_ascii=False)` does."""

from __future__ import annotations

import json
from typing import Any

import pytest

from billbridge.compact_json import compact_json, compact_json_text


def _stdlib(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


@pytest.mark.parametrize(
    "value",
    [
        {"type": "person", "identifiers": {"id": "cus_1"}, "attributes": {"plan": "Pro"}},
        {"name": "Zoë — Ünïcode ✓ 日本", "emoji": "🎉", "quote": 'a "b" \\ c\n\t'},
        {"amount": 2900, "ratio": 0.1, "big": 2**63 - 1, "neg": -(2**63), "flag": True},
        {"nested": [[], {}, [None, 1.5, -0.25]], "null": None},
        {"beyond_64_bits": 2**70, "also": -(2**64)},  # orjson refuses: the stdlib writes it
        {1: "int key", "s": "str key"},
        [1, 2, 3],
        "text",
    ],
)
def test_same_bytes_as_the_standard_library(value: Any) -> None:
    assert compact_json(value) == _stdlib(value)
    assert compact_json_text(value) == _stdlib(value).decode("utf-8")
    assert json.loads(compact_json(value)) == json.loads(_stdlib(value))


def test_floats_in_exponent_form_keep_their_value() -> None:
    value = {"small": 1.5e-7, "large": 1e21, "third": 1 / 3}
    assert json.loads(compact_json(value)) == value  # "1.5e-7" where the stdlib writes "1.5e-07"


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused(number: float) -> None:
    with pytest.raises(ValueError, match="not JSON"):
        compact_json({"data": {"amount": [1, number]}, "other": None})
    with pytest.raises(ValueError, match="not JSON"):
        compact_json({"data": {"amount": number, "big": 2**70}})


def test_what_is_not_json_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        compact_json({"when": object()})
