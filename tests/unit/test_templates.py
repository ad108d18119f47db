"""Sandboxed workflow templates: native values, dropped unknowns, refused unsafe access."""

from __future__ import annotations

from typing import Any

import pytest
from jinja2.exceptions import SecurityError

from billbridge.errors import BillbridgeError
from billbridge.workflows import templates
from billbridge.workflows.templates import (
    MISSING,
    TemplateError,
    evaluate_filter,
    filter_syntax_problem,
    render_mapping,
    render_value,
    template_problems,
    template_syntax_problem,
)

CONTEXT: dict[str, Any] = {
    "event": {"id": "evt_1", "type": "invoice.paid", "livemode": False},
    "object": {
        "id": "in_1",
        "amount_paid": 2900,
        "currency": "usd",
        "paid": True,
        "ratio": 0.5,
        "number": None,
        "metadata": {"plan": "pro", "seats": "3"},
        "items": {"data": [{"price": {"id": "price_pro", "unit_amount": 2900}}]},
        "lines": [1, 2, 3],
    },
    "previous": {},
    "customer": {"email": "jane@example.com"},
    "person": {"identifier": "cus_1", "email": "jane@example.com", "customer_id": "cus_1"},
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ object.amount_paid }}", 2900),
        ("{{object.amount_paid}}", 2900),
        ("  {{ object.amount_paid }}  ", 2900),
        ("{{- object.amount_paid -}}", 2900),
        ("{{ object.paid }}", True),
        ("{{ object.ratio }}", 0.5),
        ("{{ object.metadata }}", {"plan": "pro", "seats": "3"}),
        ("{{ object.lines }}", [1, 2, 3]),
        ("{{ object.amount_paid / 100 }}", 29.0),
        ("{{ object.metadata.seats | int }}", 3),
        ("{{ -object.amount_paid }}", -2900),
    ],
)
def test_a_single_expression_keeps_its_native_type(template: str, expected: Any) -> None:
    """A string that is exactly one `{{ expr }}` gives the expression's own value and type."""
    result = render_value(template, CONTEXT)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Invoice {{ object.id }}", "Invoice in_1"),
        ("{{ object.amount_paid }} {{ object.currency }}", "2900 usd"),
        ("{{ object.amount_paid }}{{ object.currency }}", "2900usd"),
        ("no template at all", "no template at all"),
        ("number: {{ object.number }}.", "number: ."),
        ("missing: {{ object.nope.deeper }}!", "missing: !"),
        ("{% if object.paid %}paid{% endif %}", "paid"),
    ],
)
def test_other_strings_render_to_strings(template: str, expected: str) -> None:
    """Text around or between expressions makes the result a string; None renders empty."""
    assert render_value(template, CONTEXT) == expected


@pytest.mark.parametrize(
    "value",
    [
        "{{ object.nope }}",
        "{{ object.nope.a.b.c }}",
        "{{ object.number }}",
        "{{ previous.status }}",
        "{{ object.lines[10] }}",
        None,
    ],
)
def test_undefined_and_none_are_missing(value: Any) -> None:
    """An unknown path, an out-of-range index or a null value is MISSING, not an error."""
    assert render_value(value, CONTEXT) is MISSING


def test_render_mapping_drops_missing_keys_recursively() -> None:
    """Keys whose value is unknown are left out at every depth; lists lose missing items."""
    mapping = {
        "amount": "{{ object.amount_paid }}",
        "number": "{{ object.number }}",
        "gone": "{{ object.nothing }}",
        "literal": 7,
        "flag": False,
        "nested": {"plan": "{{ object.metadata.plan }}", "none": None},
        "list": ["{{ object.currency }}", "{{ object.nothing }}", 3],
    }
    assert render_mapping(mapping, CONTEXT) == {
        "amount": 2900,
        "literal": 7,
        "flag": False,
        "nested": {"plan": "pro"},
        "list": ["usd", 3],
    }


def test_mapping_keys_win_over_dict_methods() -> None:
    """`object.items` reads a Stripe object's `items` field, not the dict method."""
    assert render_value("{{ object.items.data[0].price.id }}", CONTEXT) == "price_pro"
    assert render_value("{{ object['items'].data[0].price.unit_amount }}", CONTEXT) == 2900


def test_default_filter_fills_a_missing_value() -> None:
    """Jinja's `default` works on an undefined value, so a mapping can supply a fallback."""
    assert render_value("{{ object.nope | default('none') }}", CONTEXT) == "none"


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ object.__init__ }}",
        "{{ object.__class__ }}",
        "{{ object['__class__'] }}",
        "Text {{ event.__class__.__base__ }}",
        "{{ object.metadata.update({'plan': 'free'}) }}",
        "{{ object.lines.append(4) }}",
        "{{ 'x' * 10000000 }}",
        "{{ 10 ** 100000 }}",
    ],
)
def test_sandbox_refuses_unsafe_access(template: str) -> None:
    """Dunder and private attributes, mutation and huge allocations raise TemplateError."""
    with pytest.raises(TemplateError) as caught:
        render_value(template, CONTEXT, path="actions.0.data.x")
    assert caught.value.field_path == "actions.0.data.x"
    assert "not allowed" in caught.value.message
    assert CONTEXT["object"]["lines"] == [1, 2, 3]
    assert CONTEXT["object"]["metadata"] == {"plan": "pro", "seats": "3"}


@pytest.mark.parametrize(
    "template",
    [
        "{{ object.amount_paid / 0 }}",
        "{{ object.nope + 1 }}",
        "{{ object.currency + 1 }}",
        "{{ object.lines | map('string') }}",
    ],
)
def test_runtime_errors_become_template_errors(template: str) -> None:
    """A template that fails at run time names the field path in a TemplateError."""
    with pytest.raises(TemplateError) as caught:
        render_mapping({"amount": template}, CONTEXT, path="actions.2.data")
    assert caught.value.field_path == "actions.2.data.amount"
    assert isinstance(caught.value, BillbridgeError)
    assert str(caught.value).startswith("actions.2.data.amount: ")


def test_non_string_values_pass_through() -> None:
    """Numbers, booleans and nested literals are returned as they are."""
    assert render_value(12, CONTEXT) == 12
    assert render_value(False, CONTEXT) is False
    assert render_value([1, {"a": 2}], CONTEXT) == [1, {"a": 2}]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("object.amount_paid >= 1000", True),
        ("object.amount_paid > 5000", False),
        ("object.currency == 'usd' and object.paid", True),
        ("object.metadata.plan in ['pro', 'team']", True),
        ("object.nope", False),
        ("object.nope.deeper == 'x'", False),
        ("previous.status is defined", False),
        ("{{ object.paid }}", True),
        ("  object.paid  ", True),
    ],
)
def test_evaluate_filter(expr: str, expected: bool) -> None:
    """A filter is a Jinja2 expression; truthy runs the workflow, undefined is false."""
    assert evaluate_filter(expr, CONTEXT) is expected


def test_filter_errors_name_the_filter() -> None:
    """A filter that fails at run time or touches unsafe attributes raises TemplateError."""
    with pytest.raises(TemplateError) as caught:
        evaluate_filter("object.amount_paid / 0 > 1", CONTEXT)
    assert caught.value.field_path == "filter"
    with pytest.raises(TemplateError):
        evaluate_filter("object.__class__", CONTEXT)


def test_syntax_problems_are_reported_by_path() -> None:
    """Compiling finds every syntax error with its dotted path; valid text has none."""
    problems = template_problems(
        {"ok": "{{ object.id }}", "bad": "{{ object.id", "deep": {"list": ["x", "{% if %}"]}},
        "actions.0.data",
    )
    assert set(problems) == {"actions.0.data.bad", "actions.0.data.deep.list.1"}
    assert all(message.startswith("template syntax error") for message in problems.values())
    assert template_syntax_problem("plain text") is None
    assert template_syntax_problem("{{ a }} and {{ b }}") is None
    assert filter_syntax_problem("object.amount >") is not None
    assert filter_syntax_problem("object.amount > 1") is None


@pytest.mark.parametrize(
    "expr",
    [
        "object.amount_paid",
        "object.items",
        "object.metadata.plan",
        "object.number",
        "object.missing",
        "object.missing.deeper",
        "object.lines",
        "object.keys",  # not a key: the dict method, which is not JSON data
        "event",
        "nope",
        "nope.deeper",
        "range",  # a Jinja global, not in the context
        "true",
        "none",
        "person.identifier",
        "object.items.data[0].price.id",
        "object.items.data[0].price",
        "object.items.data[1].price.id",  # index out of range
        "object.items.data[-1].price.unit_amount",
        "object.lines[2]",
        "object.lines[-4]",
        "object.number.deeper",  # a step into a null
        "object.number[0]",
        "object.missing[0].deeper",
        "object.metadata[0]",  # an int key a JSON object never has
        "object.currency.upper",  # a method of a string: only Jinja knows
        "object.currency[0]",
        "object.lines.count",
        "object.metadata.items",  # not a key of this mapping: the dict method
        "object.metadata.__class__",  # refused by the sandbox
        "object.number.__class__",
        "object.missing or object.currency",
        "object.number or object.missing",
        "object.number  or\n object.paid or object.ratio",
        "object.paid or object.amount_paid",
        "nope or object.currency",
        "object.missing or range",
        "object.metadata.plan or none",
    ],
)
def test_a_plain_path_reads_the_same_as_jinja(expr: str) -> None:
    """Plain paths (keys, list indexes, joined by `or`) are read without Jinja where they
    can be; the answer (value, MISSING or error) is the one the sandbox gives."""

    def through_jinja() -> Any:
        value = templates._compile_expression(expr)(**CONTEXT)
        return templates._to_data(value, "f")

    expected: Any
    try:
        expected = through_jinja()
    except TemplateError as exc:
        expected = exc.message
    except SecurityError as exc:
        expected = f"not allowed in a template: {exc}"
    try:
        actual = render_value("{{ " + expr + " }}", CONTEXT, path="f")
    except TemplateError as exc:
        actual = exc.message
    assert actual == expected

    def filter_through_jinja() -> Any:
        try:
            return bool(templates._compile_expression(expr)(**CONTEXT))
        except Exception as exc:  # the sandbox refusing is the answer too
            return type(exc).__name__

    def filter_answer() -> Any:
        try:
            return evaluate_filter(expr, CONTEXT)
        except TemplateError as exc:
            return type(exc.__cause__).__name__

    assert filter_answer() == filter_through_jinja()


def test_plain_paths_do_not_go_through_jinja(monkeypatch: pytest.MonkeyPatch) -> None:
    """The direct read answers keys, indexes, nulls and `or` itself; Jinja is left for the
    rest (here: a name that is not in the context)."""

    def no_jinja(expr: str) -> Any:
        raise AssertionError(f"went through Jinja: {expr}")

    monkeypatch.setattr(templates, "_compile_expression", no_jinja)
    assert render_value("{{ object.items.data[0].price.id }}", CONTEXT) == "price_pro"
    assert render_value("{{ object.items.data[3].price.id }}", CONTEXT) is MISSING
    assert render_value("{{ object.number.deeper }}", CONTEXT) is MISSING
    assert render_value("{{ object.missing or object.currency }}", CONTEXT) == "usd"
    assert evaluate_filter("object.paid or object.missing", CONTEXT) is True
    with pytest.raises(TemplateError, match="went through Jinja: range"):
        render_value("{{ range }}", CONTEXT)
