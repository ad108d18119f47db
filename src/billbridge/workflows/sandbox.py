"""The workflow templates' Jinja sandbox, under hard limits: no template can hold the process.

    with render_budget():                 # one budget for everything rendered inside
        SANDBOX.from_string(source).render(**context)

`templates.py` is the only user. On top of Jinja's `ImmutableSandboxedEnvironment` (no
private attributes, no mutation of lists and dicts), every operator, `~`, call (string
methods, a recursive `loop()`), attribute and item read, `{% for %}` iteration and output
goes through a hook that checks `limits.py`'s limits BEFORE the work is done: C code (a
big-integer power, `str.center`) cannot be interrupted once it runs, so a size is refused
rather than computed. The filters that build text (`center`, `indent`, `wordwrap`,
`format`, `join`, `replace`, `sum`, `batch`, `slice`, and those stringifying a value) are
replaced by checked ones; `lipsum` gives at most 20 paragraphs of at most 200 words.

A limit crossed raises `TemplateLimitError`: `templates.py` turns it into the field's
`TemplateError`, and the executor fails the delivery (terminal).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, cast

from jinja2 import ChainableUndefined, nodes, pass_environment, pass_eval_context
from jinja2 import filters as jinja_filters
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, LoopContext, Undefined, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum

from billbridge.workflows.limits import (
    BINOPS,
    TemplateLimitError,
    TemplateLimits,
    check_printf,
    check_str_format,
    check_text,
    check_weight,
    check_width,
    checked_binop,
    current_budget,
)

MAX_LIPSUM_PARAGRAPHS: Final = 20
MAX_LIPSUM_WORDS: Final = 200


# String methods called from a template ----------------------------------------------------

_PADDING_METHODS: Final = frozenset({"center", "ljust", "rjust", "zfill"})
_REFUSED_METHODS: Final = frozenset({"translate", "maketrans"})


def _arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _replace_size(text: Any, old: Any, new: Any, count: Any) -> int:
    """How long `text.replace(old, new, count)` would be (counted without building it)."""
    if not (isinstance(text, str | bytes) and isinstance(old, type(text))):
        return 0
    if not isinstance(new, type(text)):
        return 0
    found = len(text) + 1 if not old else cast("Any", text).count(old)  # str or bytes
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * (len(new) - len(old))


def _check_string_method(method: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Widths and sizes for a call of a `str`/`bytes` method (`'a'.center(10**7)`)."""
    limits = current_budget().limits
    name = method.__name__
    text = method.__self__
    if name in _REFUSED_METHODS:
        raise TemplateLimitError(f"`{name}` is not available in templates")
    if name in _PADDING_METHODS:
        check_width(_arg(args, kwargs, 0, "width"), limits, f"`{name}`")
    elif name == "expandtabs":
        tabsize = _arg(args, kwargs, 0, "tabsize")
        tabsize = 8 if tabsize is None else tabsize
        check_width(tabsize, limits, "`expandtabs`")
        if isinstance(tabsize, int):
            tabs = text.count("\t" if isinstance(text, str) else b"\t")
            check_text(len(text) + tabs * tabsize, limits, "`expandtabs`")
    elif name == "replace":
        size = _replace_size(
            text,
            _arg(args, kwargs, 0, "old"),
            _arg(args, kwargs, 1, "new"),
            _arg(args, kwargs, 2, "count"),
        )
        check_text(size, limits, "`replace`")


def _checked_join(separator: Any, items: Any, limits: TemplateLimits) -> list[Any]:
    """The items to join, once their joined size is known to be within the limit."""
    listed = list(budgeted_iter(items))
    check_weight(listed)
    check_text(len(separator) * len(listed), limits, "`join`")
    return listed


# Filters --------------------------------------------------------------------------------

_STRINGIFYING_FILTERS: Final = (  # each weighs its value before turning it into text
    "string",
    "tojson",
    "pprint",
    "urlencode",
    "xmlattr",
    "e",
    "escape",
    "forceescape",
)


def _center(value: Any, width: int = 80) -> str:
    check_width(width, current_budget().limits, "`center`")
    return jinja_filters.do_center(value, width)


def _indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    limits = current_budget().limits
    pad = width if isinstance(width, int) else len(str(width))
    check_width(pad, limits, "`indent`")
    check_text(len(str(s)) + (str(s).count("\n") + 1) * pad, limits, "`indent`")
    return jinja_filters.do_indent(s, width, first, blank)


@pass_environment
def _wordwrap(  # noqa: PLR0917 - Jinja's signature: templates pass these by position
    environment: Any,
    s: str,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    limits = current_budget().limits
    newline = environment.newline_sequence if wrapstring is None else str(wrapstring)
    lines = len(str(s)) // max(int(width), 1) + str(s).count("\n") + 1
    check_text(len(str(s)) + lines * len(newline), limits, "`wordwrap`")
    return jinja_filters.do_wordwrap(
        environment, s, width, break_long_words, wrapstring, break_on_hyphens
    )


def _format(value: str, *args: Any, **kwargs: Any) -> str:
    check_printf(str(value), (args, kwargs), current_budget().limits)
    return jinja_filters.do_format(value, *args, **kwargs)


@pass_eval_context
def _join(eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    listed = _checked_join(str(d), value, current_budget().limits)
    return jinja_filters.sync_do_join(eval_ctx, listed, d, attribute)


@pass_eval_context
def _replace(eval_ctx: EvalContext, s: str, old: str, new: str, count: int | None = None) -> str:
    size = _replace_size(str(s), str(old), str(new), count)
    check_text(size, current_budget().limits, "`replace`")
    return jinja_filters.do_replace(eval_ctx, s, old, new, count)


@pass_environment
def _sum(environment: Any, iterable: Iterable[Any], attribute: Any = None, start: Any = 0) -> Any:
    limits = current_budget().limits
    items: Iterable[Any] = budgeted_iter(iterable)
    if attribute is not None:
        items = map(jinja_filters.make_attrgetter(environment, attribute), items)
    total = start
    for item in items:
        total = checked_binop("+", total, item, limits)
    return total


def _batch(value: Iterable[Any], linecount: int, fill_with: Any = None) -> Iterator[list[Any]]:
    if fill_with is not None and linecount > current_budget().limits.repeat:
        raise TemplateLimitError(f"`batch` with a fill over {current_budget().limits.repeat} items")
    return jinja_filters.do_batch(value, linecount, fill_with)


def _slice(value: Any, slices: int, fill_with: Any = None) -> Iterator[list[Any]]:
    if slices > current_budget().limits.repeat:
        raise TemplateLimitError(f"`slice` into more than {current_budget().limits.repeat} parts")
    return jinja_filters.sync_do_slice(value, slices, fill_with)


def _weighed(original: Callable[..., Any]) -> Callable[..., Any]:
    """A filter turning its value into text, refused first when the text would be too big."""

    def checked(*args: Any, **kwargs: Any) -> Any:
        # pass_* filters get the context first: the value is the first non-context argument
        for arg in args:
            if not isinstance(arg, Context | EvalContext | ImmutableSandboxedEnvironment):
                check_weight(arg)
                break
        return original(*args, **kwargs)

    checked.__name__ = getattr(original, "__name__", "filter")
    pass_arg = getattr(original, "jinja_pass_arg", None)
    if pass_arg is not None:
        checked.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
    return checked


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    if n > MAX_LIPSUM_PARAGRAPHS or max > MAX_LIPSUM_WORDS or min > MAX_LIPSUM_WORDS:
        raise TemplateLimitError(
            f"`lipsum` gives at most {MAX_LIPSUM_PARAGRAPHS} paragraphs of at most"
            f" {MAX_LIPSUM_WORDS} words"
        )
    return str(generate_lorem_ipsum(n, html, min, max))


def budgeted_iter(iterable: Any) -> Iterator[Any]:
    """What every `{% for %}` loop iterates: the items, each charged to the budget."""
    budget = current_budget()
    for item in iterable:
        budget.iterate()
        yield item


def _finalize(value: Any) -> Any:
    """Every value written by `{{ }}`: weighed and charged to the budget's output."""
    if value is None:  # inside a longer string, a null renders as nothing, not "None"
        return ""
    budget = current_budget()
    if isinstance(value, str):
        budget.write(len(value))
    else:
        check_weight(value, budget)
        budget.write(1)
    return value


# The environment ------------------------------------------------------------------------


class _LimitedCodeGenerator(CodeGenerator):
    """Compiles `a ~ b` to a checked concatenation (Jinja's own is a plain `str` join)."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class LimitedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox with Billbridge's choices and limits.

    - Keys win over methods on mappings: Stripe objects have an `items` field, and
      `object.items.data[0]` must read it rather than `dict.items`.
    - An unsafe attribute raises at once instead of becoming a silent (chainable)
      undefined, so `''.__class__.__mro__` fails loudly.
    - Every operator, concatenation, call, attribute, item and loop iteration goes
      through a hook that checks the limits and the deadline.
    """

    intercepted_binops = frozenset(BINOPS)
    code_generator_class = _LimitedCodeGenerator

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        replaced: dict[str, Callable[..., Any]] = {
            "center": _center,
            "indent": _indent,
            "wordwrap": _wordwrap,
            "format": _format,
            "join": _join,
            "replace": _replace,
            "sum": _sum,
            "batch": _batch,
            "slice": _slice,
        }
        for name in _STRINGIFYING_FILTERS:
            replaced[name] = _weighed(self.filters[name])
        self.filters.update(replaced)
        self.globals["lipsum"] = _lipsum

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(
                nodes.EnvironmentAttribute("budgeted_iter"),
                [loop.iter],
                [],
                None,
                None,
                lineno=loop.iter.lineno,
            )
        return tree

    budgeted_iter = staticmethod(budgeted_iter)

    def checked_concat(self, values: tuple[Any, ...]) -> str:
        budget = current_budget()
        budget.tick()
        total = 0
        for value in values:
            if isinstance(value, str):
                total += len(value)
            else:
                check_weight(value, budget)
        check_text(total, budget.limits, "`~`")
        result = str_join(values)
        check_text(len(result), budget.limits, "`~`")
        return result

    def getattr(self, obj: Any, attribute: str) -> Any:
        current_budget().tick()
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        current_budget().tick()
        return super().getitem(obj, argument)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        raise SecurityError(
            f"access to attribute {attribute!r} of a {type(obj).__name__!r} is not allowed"
        )

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = current_budget()
        budget.tick()
        return checked_binop(operator, left, right, budget.limits)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        pattern = str(value.__self__)

        def checked(*args: Any, **kwargs: Any) -> str:
            fields = args[0] if value.__name__ == "format_map" and args else kwargs
            check_str_format(pattern, args, fields, current_budget().limits)
            return wrapped(*args, **kwargs)

        return checked

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        current_budget().tick()
        if isinstance(obj, LoopContext) and args:  # a recursive loop's `loop(children)`
            args = (budgeted_iter(args[0]), *args[1:])
        elif isinstance(obj, types.BuiltinMethodType) and isinstance(
            getattr(obj, "__self__", None), str | bytes
        ):
            _check_string_method(obj, args, kwargs)
            if obj.__name__ == "join" and args:
                args = (_checked_join(obj.__self__, args[0], current_budget().limits), *args[1:])
        return super().call(context, obj, *args, **kwargs)


SANDBOX: Final = LimitedSandbox(
    undefined=ChainableUndefined,
    autoescape=False,
    finalize=_finalize,
    keep_trailing_newline=True,
)

__all__ = ["SANDBOX", "LimitedSandbox", "budgeted_iter"]
