"""Bounded fuzzing (hypothesis, fixed seed) of what outsiders and workflow authors feed
Billbridge: the webhook body parser, the Stripe-Signature header parser and the template
renderer. Each input is either accepted or refused with Billbridge's own error (never an
unexpected exception, which would be a 500), within a deadline per input."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billbridge.errors import WebhookRejected
from billbridge.stripe.events import parse_event
from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload, verify_signature
from billbridge.workflows.templates import TemplateError, evaluate_filter, render_value

SECRET = "whsec_fuzz_secret"
BOUNDED = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=1),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# JSON values, nested a little; the sample event as a template to mutate.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
EVENT_KEYS = ("id", "object", "type", "created", "livemode", "data", "api_version", "account")


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    """A real-looking Stripe event with some top-level fields replaced or removed."""
    event: dict[str, Any] = sample_event(draw(st.sampled_from(["invoice.paid", "charge.failed"])))
    for key in draw(st.lists(st.sampled_from(EVENT_KEYS), max_size=3, unique=True)):
        if draw(st.booleans()):
            event.pop(key, None)
        else:
            event[key] = draw(json_values)
    return event


def _parse(body: bytes) -> None:
    try:
        event = parse_event(body)
    except WebhookRejected as exc:
        refused: WebhookRejected = exc
    else:
        assert event["object"] == "event"
        assert str(event["id"]).startswith("evt_")
        return
    assert refused.status_code == 400


@BOUNDED
@given(body=st.binary(max_size=512))
def test_parse_event_refuses_arbitrary_bytes_cleanly(body: bytes) -> None:
    """Any bytes: a parsed event or a 400 WebhookRejected, nothing else."""
    _parse(body)


@BOUNDED
@given(event=mutated_events() | json_values)
def test_parse_event_accepts_or_refuses_any_json(event: Any) -> None:
    """Any JSON value, and real events with fields broken: parsed or a 400."""
    _parse(json.dumps(event).encode())


@settings(BOUNDED, max_examples=10)
@given(depth=st.integers(min_value=1, max_value=5000))
def test_parse_event_bounds_nesting(depth: int) -> None:
    """A body nested thousands deep is parsed or refused quickly (orjson stops at 1,024)."""
    body = b'{"object":"event","id":"evt_1","data":{"object":' + b"[" * depth + b"]" * depth + b"}}"
    started = time.monotonic()
    _parse(body)
    assert time.monotonic() - started < 0.5


# Stripe-Signature -------------------------------------------------------------------------

header_parts = st.one_of(
    st.builds(lambda d: f"t={d}", st.text("0123456789", max_size=4000)),
    st.builds(lambda v: f"v1={v}", st.text("0123456789abcdef", max_size=80)),
    st.builds(lambda v: f"v0={v}", st.text(max_size=20)),
    st.text(max_size=30),
    st.just("t=1,t=2"),
    st.just("="),
)
headers = st.lists(header_parts, max_size=6).map(",".join) | st.text(max_size=200)


@BOUNDED
@given(header=headers, payload=st.binary(max_size=64))
def test_signature_header_parser_refuses_cleanly(header: str, payload: bytes) -> None:
    """Any header (digit runs up to 4,000, repeated keys, junk): a 400 WebhookRejected
    whose reason never echoes the header."""
    try:
        verify_signature(payload, header, [SECRET])
    except WebhookRejected as exc:
        refused: WebhookRejected = exc
    else:
        raise AssertionError("an unsigned header was accepted")
    assert refused.status_code == 400
    assert header not in refused.reason or len(header) < 3


@BOUNDED
@given(text=st.text(max_size=256), extra=st.lists(header_parts, max_size=3))
def test_a_real_signature_passes_whatever_else_the_header_holds(
    text: str, extra: list[str]
) -> None:
    """A valid t and v1 are accepted with extra unknown parts around them, unless another
    `t=` is among them (refused as malformed)."""
    payload = text.encode()
    header = ",".join([sign_payload(payload, SECRET), *extra])
    keys = [item.partition("=")[0] for item in header.split(",") if "=" in item]
    extra_t = keys.count("t") > 1
    try:
        verify_signature(payload, header, [SECRET])
    except WebhookRejected:
        assert extra_t
        return
    assert not extra_t


# Templates --------------------------------------------------------------------------------

PATHS = (
    "object.amount_paid",
    "object.currency",
    "object.lines.data[0].price.id",
    "object.missing.deeper",
    "event.id",
    "event.data.object",
    "previous.status",
    "customer.email",
    "person.identifier",
    "object.__class__",
    "event.__init__",
    "object.items",
    "object.items.data[-1]",
)
FILTERS = (
    "upper",
    "lower",
    "length",
    "int",
    "string",
    "abs",
    "trim",
    "first",
    "default('x')",
    "join(',')",
    "replace('a', 'b')",
    "tojson",
    "round",
)
literals = st.one_of(
    st.integers(min_value=-99, max_value=99).map(str),
    st.sampled_from(["'abc'", "''", "none", "true", "[1, 2]", "{'k': 1}", "1.5"]),
)


def _combine(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    operators = st.sampled_from(["+", "-", "*", "/", "//", "%", "~", "==", "and", "or", "in"])
    return st.one_of(
        st.tuples(inner, operators, inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(inner, st.sampled_from(FILTERS)).map(lambda t: f"{t[0]}|{t[1]}"),
        st.tuples(inner, st.integers(min_value=0, max_value=9)).map(lambda t: f"{t[0]} ** {t[1]}"),
        inner.map(lambda e: f"not {e}"),
        st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
    )


expressions = st.recursive(st.sampled_from(PATHS) | literals, _combine, max_leaves=8)
templates = st.one_of(
    expressions.map(lambda e: "{{ " + e + " }}"),
    st.tuples(st.text(max_size=10), expressions).map(lambda t: t[0] + "{{ " + t[1] + " }}!"),
    expressions.map(lambda e: "{% if " + e + " %}yes{% else %}no{% endif %}"),
    expressions.map(lambda e: "{% for x in [1, 2] %}{{ " + e + " }}{% endfor %}"),
    st.text(max_size=40),
)


def _context() -> dict[str, Any]:
    event = sample_event("invoice.paid")
    return {
        "event": event,
        "object": event["data"]["object"],
        "previous": {},
        "customer": {"email": "ada@example.com"},
        "person": {"identifier": "cus_1", "email": "ada@example.com", "customer_id": "cus_1"},
    }


CONTEXT = _context()


@BOUNDED
@given(template=templates)
def test_templates_render_or_fail_with_a_template_error(template: str) -> None:
    """Generated templates (paths, literals, operators, filters, sandbox probes): a value
    that serialises to JSON, or a TemplateError naming the field; never another exception
    and never longer than the deadline."""
    try:
        value = render_value(template, CONTEXT, path="data.field")
    except TemplateError as exc:
        message = str(exc)
    else:
        orjson.dumps(value, default=str)
        return
    assert "data.field" in message


@BOUNDED
@given(expression=expressions | st.text(max_size=40))
def test_filters_evaluate_to_a_bool_or_a_template_error(expression: str) -> None:
    """A workflow filter is True, False or a TemplateError."""
    try:
        result = evaluate_filter(expression, CONTEXT)
    except TemplateError:
        return
    assert isinstance(result, bool)
