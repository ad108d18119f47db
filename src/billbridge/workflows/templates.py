"""Sandboxed Jinja2 for workflow mappings and filters: user text is data, never code.

    render_value("{{ object.amount }}", {"object": {"amount": 2900}})     # -> 2900 (an int)
    render_value("Plan {{ object.plan }}", {"object": {"plan": "Pro"}})  # -> "Plan Pro"
    render_mapping({"a": "{{ object.missing }}", "b": 1}, {"object": {}})  # -> {"b": 1}
    evaluate_filter("object.amount >= 1000", {"object": {"amount": 2900}})  # -> True

Rules (docs/internals.md): a string that is exactly one `{{ expression }}` keeps the
expression's native type; any other string renders to a string; lists and mappings are
rendered recursively; an undefined value or `None` is MISSING, and a mapping drops the
key ("absent when unknown, never invented"). On a mapping a key wins over a method of
the same name, so `object.items.data[0]` reads a subscription's items. The sandbox
refuses private and dunder attributes, and anything over its hard limits (integer sizes,
text built, widths, loop iterations, output, 0.5 s per render: `limits.py`), with a
`SecurityError`, which becomes a `TemplateError` naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, Final

from jinja2 import Template, TemplateSyntaxError, Undefined
from jinja2.exceptions import SecurityError

from billbridge.errors import BillbridgeError
from billbridge.workflows.limits import check_weight, render_budget
from billbridge.workflows.sandbox import SANDBOX

_CACHE_SIZE: Final = 2048  # compiled templates kept; a few per action of every workflow

# "{{ expr }}" and nothing else (surrounding whitespace allowed). `{{-`/`-}}` are Jinja's
# whitespace control markers, not part of the expression.
_SINGLE_EXPRESSION = re.compile(r"\A\s*\{\{-?(?P<expr>.*?)-?\}\}\s*\Z", re.DOTALL)


class TemplateError(BillbridgeError):
    """A template failed while rendering (an unsafe access, a type error...).

    `field_path` is the dotted path of the mapping value, e.g. `actions.1.data.amount`,
    so the message points at what to fix in the workflow.
    """

    def __init__(self, field_path: str, message: str) -> None:
        self.field_path = field_path
        self.message = message
        super().__init__(f"{field_path or 'template'}: {message}")


class _MissingType:
    """The single MISSING value: the template had nothing to say for this field."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _MissingType()


_ENV: Final = SANDBOX


@lru_cache(maxsize=_CACHE_SIZE)
def _single_expression(source: str) -> str | None:
    """The expression of a string that is exactly one `{{ expr }}`, else None."""
    match = _SINGLE_EXPRESSION.match(source)
    if match is None:
        return None
    expr = match.group("expr")
    if "{{" in expr or "}}" in expr or "{%" in source or "{#" in source:
        return None
    return expr.strip()


@lru_cache(maxsize=_CACHE_SIZE)
def _compile_expression(expr: str) -> Callable[..., Any]:
    return _ENV.compile_expression(expr, undefined_to_none=False)


# Most mapping values are a plain path (`{{ object.amount }}`, `{{ object.items.data[0].id }}`),
# sometimes a few joined by `or` (`{{ a.b or c.d }}`). Such a path is read directly, step by
# step, as the sandbox would read it: a key of a mapping wins over a method, an index reads a
# list, and a missing key, a null or an index out of range gives Jinja's (chainable)
# undefined. The same answer without building a Jinja context per value. Whatever the
# direct read cannot answer exactly as Jinja would (a name that is not in the context, which
# may be a Jinja global; an attribute of a string, a number or a list; a name the mapping
# has as an attribute, like `keys` or `__class__`) goes through Jinja.
_PATH = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\[-?[0-9]+\])*\Z")
_PATH_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(-?[0-9]+)\]")
_OR = re.compile(r"\s+or\s+")
_JINJA_WORDS = frozenset(
    {"true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is", "if"}
)
_NEEDS_JINJA: Final = object()  # what `_read_path` gives when only Jinja can answer


@lru_cache(maxsize=_CACHE_SIZE)
def _plain_paths(expr: str) -> tuple[tuple[str | int, ...], ...] | None:
    """`a.b[0] or c.d` as ((a, b, 0), (c, d)); None when the expression is anything else."""
    paths = []
    for part in _OR.split(expr.strip()):
        if _PATH.match(part) is None:
            return None
        steps = tuple(name or int(index) for name, index in _PATH_STEP.findall(part))
        if _JINJA_WORDS.intersection(step for step in steps if isinstance(step, str)):
            return None
        paths.append(steps)
    return tuple(paths)


def _read_path(steps: tuple[str | int, ...], context: Mapping[str, Any]) -> Any:
    """The value of one plain path, or `_NEEDS_JINJA`."""
    head = steps[0]
    if not isinstance(head, str) or head not in context:
        return _NEEDS_JINJA
    value: Any = context[head]
    for step in steps[1:]:
        if isinstance(step, str):
            if isinstance(value, Mapping) and step in value:
                value = value[step]
            elif (value is None or isinstance(value, Mapping)) and not hasattr(value, step):
                return _ENV.undefined(obj=value, name=step)
            else:
                return _NEEDS_JINJA
        elif type(value) is list:
            if not -len(value) <= step < len(value):
                return _ENV.undefined(obj=value, name=str(step))
            value = value[step]
        elif value is None or (isinstance(value, Mapping) and step not in value):
            return _ENV.undefined(obj=value, name=str(step))
        else:
            return _NEEDS_JINJA
    return value


def _evaluate(expr: str, context: Mapping[str, Any]) -> Any:
    """The value of an expression (Jinja's, read directly for plain paths)."""
    paths = _plain_paths(expr)
    if paths is not None:
        value: Any = None
        for steps in paths:  # `a or b`: the first truthy value, else the last one
            value = _read_path(steps, context)
            if value is _NEEDS_JINJA or value:
                break
        if value is not _NEEDS_JINJA:
            return value
    with render_budget():
        value = _compile_expression(expr)(**context)
        check_weight(value)  # before `_to_data` walks it (`[x] * 1000` nested 20 deep)
    return value


@lru_cache(maxsize=_CACHE_SIZE)
def _compile_template(source: str) -> Template:
    return _ENV.from_string(source)


def _syntax_message(exc: TemplateSyntaxError, *, multiline: bool) -> str:
    where = f" (line {exc.lineno})" if multiline and exc.lineno else ""
    return f"template syntax error{where}: {exc.message or exc}"


def template_syntax_problem(source: str) -> str | None:
    """Why `source` does not compile as a mapping template, or None when it does."""
    if "{" not in source:
        return None  # plain text: nothing to compile
    try:
        expr = _single_expression(source)
        if expr is not None:
            _compile_expression(expr)
        else:
            _compile_template(source)
    except TemplateSyntaxError as exc:
        return _syntax_message(exc, multiline="\n" in source)
    return None


def filter_syntax_problem(expr: str) -> str | None:
    """Why a filter expression does not compile, or None when it does."""
    try:
        _compile_expression(_filter_expression(expr))
    except TemplateSyntaxError as exc:
        return _syntax_message(exc, multiline="\n" in expr)
    return None


def template_problems(value: Any, path: str) -> dict[str, str]:
    """Every string in `value` (recursively) that fails to compile, by dotted path."""
    problems: dict[str, str] = {}
    if isinstance(value, str):
        problem = template_syntax_problem(value)
        if problem is not None:
            problems[path] = problem
    elif isinstance(value, Mapping):
        for key, item in value.items():
            problems.update(template_problems(item, _join(path, str(key))))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problems.update(template_problems(item, _join(path, str(index))))
    return problems


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _to_data(value: Any, path: str) -> Any:
    """A rendered native value as JSON data: undefined/None -> MISSING, tuples -> lists."""
    if value is None or isinstance(value, Undefined):
        return MISSING
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for key, item in value.items():
            converted = _to_data(item, _join(path, str(key)))
            if converted is not MISSING:
                result[str(key)] = converted
        return result
    if isinstance(value, list | tuple):
        items = (_to_data(item, _join(path, str(i))) for i, item in enumerate(value))
        return [item for item in items if item is not MISSING]
    raise TemplateError(
        path,
        f"the expression gives a {type(value).__name__}, which is not JSON data"
        " (add `| list` after a filter like `map`, or `| string`)",
    )


def _render_string(source: str, context: Mapping[str, Any], path: str) -> Any:
    if "{" not in source:
        return source
    try:
        expr = _single_expression(source)
        if expr is not None:
            return _to_data(_evaluate(expr, context), path)
        with render_budget():
            return _compile_template(source).render(**context)
    except TemplateError:
        raise
    except TemplateSyntaxError as exc:
        raise TemplateError(path, _syntax_message(exc, multiline="\n" in source)) from exc
    except SecurityError as exc:
        raise TemplateError(path, f"not allowed in a template: {exc}") from exc
    except Exception as exc:  # any runtime failure of user text is that template's error
        raise TemplateError(path, f"{type(exc).__name__}: {exc}") from exc


def render_value(value: Any, context: Mapping[str, Any], *, path: str = "") -> Any:
    """Render one mapping value against the context (see the module docstring).

    Returns MISSING when the value is undefined or None. Raises TemplateError (with
    `path`) when a template fails at run time.
    """
    if value is None:
        return MISSING
    if isinstance(value, str):
        return _render_string(value, context, path)
    if isinstance(value, Mapping):
        return render_mapping(value, context, path=path)
    if isinstance(value, list | tuple):
        rendered = (render_value(v, context, path=_join(path, str(i))) for i, v in enumerate(value))
        return [item for item in rendered if item is not MISSING]
    return value


def render_mapping(
    mapping: Mapping[str, Any], context: Mapping[str, Any], *, path: str = ""
) -> dict[str, Any]:
    """Render every value of `mapping`; keys whose value is MISSING are left out."""
    result: dict[str, Any] = {}
    for key, value in mapping.items():
        rendered = render_value(value, context, path=_join(path, str(key)))
        if rendered is not MISSING:
            result[str(key)] = rendered
    return result


def _filter_expression(expr: str) -> str:
    # A filter is an expression; `{{ expr }}` is accepted too, since people write it.
    single = _single_expression(expr)
    return single if single is not None else expr.strip()


def evaluate_filter(expr: str, context: Mapping[str, Any], *, path: str = "filter") -> bool:
    """Whether the filter expression is truthy for this context (undefined is false)."""
    try:
        result = _evaluate(_filter_expression(expr), context)
        return bool(result)
    except TemplateSyntaxError as exc:
        raise TemplateError(path, _syntax_message(exc, multiline="\n" in expr)) from exc
    except SecurityError as exc:
        raise TemplateError(path, f"not allowed in a template: {exc}") from exc
    except Exception as exc:  # any runtime failure of user text is that filter's error
        raise TemplateError(path, f"{type(exc).__name__}: {exc}") from exc
