"""Workflow templates under hard limits: each hostile construct fails fast with a clear error."""

from __future__ import annotations

import time
from typing import Any

import pytest

from billbridge.workflows.limits import TemplateLimits, render_budget
from billbridge.workflows.templates import TemplateError, evaluate_filter, render_value

CONTEXT: dict[str, Any] = {"object": {"amount": 2900, "lines": [1, 2, 3]}, "event": {}}
FAST = 1.0  # seconds: every refusal must come well before this


def _refused(template: str, expected: str) -> float:
    """Render `template`, expect a TemplateError naming `expected`; the seconds it took."""
    started = time.perf_counter()
    with pytest.raises(TemplateError) as caught:
        render_value(template, CONTEXT, path="actions.0.data.x")
    elapsed = time.perf_counter() - started
    assert caught.value.field_path == "actions.0.data.x"
    assert expected in caught.value.message, caught.value.message
    return elapsed


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        # the power loop: 19 s with range(3), hours with range(4)
        (
            "{% set ns = namespace(x=10**64) %}{% for i in range(3) %}"
            "{% set ns.x = ns.x ** 64 %}{% endfor %}{{ ns.x > 0 }}",
            "integer over 4096 bits",
        ),
        (
            "{% set ns = namespace(x=10**64) %}{% for i in range(4) %}"
            "{% set ns.x = ns.x ** 64 %}{% endfor %}{{ ns.x > 0 }}",
            "integer over 4096 bits",
        ),
        (
            "{% set ns = namespace(x=3) %}{% for i in range(100) %}"
            "{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x }}",
            "integer over 4096 bits",
        ),
        ("{{ 'a' | center(5*10**7) }}", "`center` wider than 10000"),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
            "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
            "`~` would build over 1000000 characters",
        ),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
            "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s | length }}",
            "`+` would build over 1000000 characters",
        ),
        ("{{ '%0100000d' % 1 }}", "width or precision over 10000"),
        ("{{ '%.100000f' % 1 }}", "width or precision over 10000"),
        ("{{ '%*d' % (100000, 1) }}", "`*` width"),
        ("{{ '{:>100000}'.format(1) }}", "width or precision over 10000"),
        ("{{ '{:>{w}}'.format(1, w=100000) }}", "nested `{}`"),
        ("{{ '%0100000d' | format(1) }}", "width or precision over 10000"),
        ("{{ lipsum(100000) }}", "`lipsum` gives at most 20 paragraphs"),
        ("{{ lipsum(1, max=10**7) }}", "`lipsum` gives at most 20 paragraphs"),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "loops ran more than 100000 iterations",
        ),
        ("{{ 'a'.ljust(10**8) }}", "`ljust` wider than 10000"),
        ("{{ 'a\tb'.expandtabs(10**8) }}", "`expandtabs` wider than 10000"),
        ("{{ ('a' * 100000).replace('a', 'bbbbbbbbbbbbbbbbbbbb') }}", "`replace` would build"),
        ("{{ ('a' * 100000) | replace('a', 'bbbbbbbbbbbbbbbbbbbb') }}", "`replace` would build"),
        ("{{ ('x' * 50) | indent(99999) }}", "`indent` wider than 10000"),
        ("{{ ('x\n' * 50000) | indent(100) }}", "`indent` would build"),
        ("{{ ('a' * 99999) | wordwrap(1, wrapstring='xxxxxxxxxxxxxxx') }}", "`wordwrap` would"),
        ("{{ ('a' * 1000).join(['b'] * 10000) }}", "`join` would build over"),
        ("{{ (['b'] * 10000) | join('a' * 1000) }}", "`join` would build over"),
        ("{{ (['a' * 100000] * 20) | join }}", "the text would be over"),
        ("{{ [[0] * 100000] * 100 }}", "the text would be over"),
        ("{{ ([[0] * 100000] * 100) | sum(start=[]) | length }}", "`+` would build"),
        ("{{ [1] | batch(10**9, 0) | list }}", "`batch` with a fill"),
        ("{{ [1] | slice(10**9) | list }}", "`slice` into more than"),
        ("{{ 'abc'.translate({97: 'x'}) }}", "`translate` is not available"),
        (
            "{% set ns = namespace(d=[1]) %}{% for i in range(40) %}"
            "{% set ns.d = [ns.d, ns.d] %}{% endfor %}{{ ns.d | string | length }}",
            "the text would be over",
        ),
        (
            "{% set big = 'a' * 100000 %}{% for i in range(100) %}{{ big }}{% endfor %}",
            "the output is over 1000000 characters",
        ),
        (
            "{% macro m() %}{% for i in range(1000) %}{{ 'a' * 100000 }}{% endfor %}"
            "{% endmacro %}{{ m() | length }}",
            "the output is over 1000000 characters",
        ),
    ],
)
def test_hostile_template_is_refused_fast(template: str, expected: str) -> None:
    """Each construct of issue 12 (and its cousins) fails with a clear error in under 1 s."""
    assert _refused(template, expected) < FAST


def test_a_recursive_loop_counts_its_inner_iterations() -> None:
    """`loop(children)` of a recursive loop is charged to the same iteration budget."""
    template = (
        "{% for i in range(100) recursive %}{% if loop.depth < 3 %}"
        "{{ loop(range(100)) }}{% endif %}{% endfor %}"
    )
    started = time.perf_counter()
    with render_budget(TemplateLimits(iterations=5_000)), pytest.raises(TemplateError) as caught:
        render_value(template, CONTEXT, path="x")
    assert time.perf_counter() - started < FAST
    assert "loops ran more than 5000 iterations" in caught.value.message


def test_a_native_value_too_heavy_to_convert_is_refused() -> None:
    """A single expression giving a structure whose shared parts weigh too much fails."""
    elapsed = _refused("{{ [[0] * 100000] * 100 }}", "the text would be over")
    assert elapsed < FAST


def test_the_filter_expression_is_limited_too() -> None:
    """A workflow filter runs under the same limits."""
    started = time.perf_counter()
    with pytest.raises(TemplateError) as caught:
        evaluate_filter("(10**64) ** 64 > 0", CONTEXT)
    assert time.perf_counter() - started < FAST
    assert "integer over 4096 bits" in caught.value.message
    assert caught.value.field_path == "filter"


def test_wall_time_is_bounded_per_render() -> None:
    """A render still working past its deadline is stopped at the next loop iteration."""
    slow = "{% for i in range(100000) %}{% set x = ('a' * 99999) ~ 'b' %}{% endfor %}done"
    started = time.perf_counter()
    with render_budget(TemplateLimits(seconds=0.05)), pytest.raises(TemplateError) as caught:
        render_value(slow, CONTEXT, path="x")
    elapsed = time.perf_counter() - started
    assert "ran for more than 0.05 s" in caught.value.message
    assert 0.05 <= elapsed < FAST


def test_one_budget_is_shared_by_the_values_rendered_inside_it() -> None:
    """Loops in several values of one action add up: the budget is per render, not per value."""
    loop = "{% for i in range(60000) %}{% endfor %}ok"
    assert render_value(loop, CONTEXT) == "ok"  # alone, within its own budget
    with render_budget(), pytest.raises(TemplateError) as caught:
        render_value({"a": loop, "b": loop}, CONTEXT)
    assert "loops ran more than 100000 iterations" in caught.value.message


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ object.amount * 100 }}", 290000),
        ("{{ object.amount ** 2 }}", 8410000),
        ("{{ 2 ** 64 }}", 18446744073709551616),
        ("{{ 10 ** 64 }}", 10**64),
        ("{{ '%05.1f' % 3.14159 }}", "003.1"),
        ("{{ '{:>8}'.format('ab') }}", "      ab"),
        ("{{ 'ab' | center(6) }}", "  ab  "),
        ("{{ 'a' ~ object.amount ~ 'b' }}", "a2900b"),
        ("{{ object.lines | join(',') }}", "1,2,3"),
        ("{{ object.lines | sum }}", 6),
        (
            "{% for n in object.lines %}{{ n }}{% if not loop.last %}-{% endif %}{% endfor %}",
            "1-2-3",
        ),
        ("{{ lipsum(2, html=False) | length > 0 }}", True),
    ],
)
def test_ordinary_templates_are_unchanged(template: str, expected: Any) -> None:
    """Ordinary arithmetic, formatting, joins and loops give what they always gave."""
    assert render_value(template, CONTEXT) == expected
