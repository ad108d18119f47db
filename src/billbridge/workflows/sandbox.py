"""The workflow templates' Jinja sandbox, under hard limits: no template can hold the process.

    with render_budget():                 # one budget for everything rendered inside
        SANDBOX.from_string(source).render(**context)

`templates.py` is the only user; it opens one budget per value, and `planner.plan_action`
one per action, which every value of the action shares. On top of Jinja's
`ImmutableSandboxedEnvironment` (no private attributes, no mutation of lists and dicts),
each limit is checked BEFORE the work is done: C code (a big-integer power, `str.center`)
cannot be interrupted once it runs, so a size is refused rather than computed.

    integers       `*`, `**`, `+`, `-` never give more than 4,096 bits
    repetition     `*` builds at most 100,000 characters or items (and `**` takes an
                   exponent of at most 64)
    text           `+`, `~`, `join`, `replace`, `indent`, `wordwrap`, `sum` and the string
                   methods build at most 1,000,000 characters; a value stringified (output,
                   `~`, `string`, `tojson`, `%`, `format`) weighs at most as much
    widths         widths and precisions of `%`, `str.format`, `format`, `center`,
                   `indent`, `ljust`, `rjust`, `zfill`, `expandtabs`: at most 10,000
    loops          100,000 iterations per budget, all loops together (`batch`/`slice`
                   counts at most 100,000)
    lipsum         at most 20 paragraphs of at most 200 words
    output         1,000,000 characters written per budget
    time           0.5 s of wall time per budget, checked at every loop iteration, call,
                   attribute, item, operator and output

Crossing one raises `TemplateLimitError` (a jinja2 `SecurityError`): `templates.py` turns
it into the field's `TemplateError`, and the executor fails the delivery (terminal).
"""

from __future__ import annotations

import operator
import re
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from string import Formatter
from typing import Any, Final, cast

from jinja2 import ChainableUndefined, nodes, pass_environment, pass_eval_context
from jinja2 import filters as jinja_filters
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, LoopContext, Undefined, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum

MAX_EXPONENT: Final = 64  # `**` beyond this is refused: it only serves to exhaust memory
MAX_LIPSUM_PARAGRAPHS: Final = 20
MAX_LIPSUM_WORDS: Final = 200


@dataclass(frozen=True)
class TemplateLimits:
    """The limits of one budget (see the module docstring)."""

    int_bits: int = 4096
    repeat: int = 100_000  # characters or items `*` may build; also loop and batch counts
    text: int = 1_000_000  # characters built, weighed or written
    width: int = 10_000  # format widths and precisions, padding widths
    iterations: int = 100_000
    seconds: float = 0.5


DEFAULT_LIMITS: Final = TemplateLimits()


class TemplateLimitError(SecurityError):
    """A template went over one of the sandbox's limits (the message says which)."""


class _Budget:
    """What one budget has used: loop iterations, characters written, and its deadline."""

    __slots__ = ("deadline", "iterations", "limits", "written")

    def __init__(self, limits: TemplateLimits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.seconds
        self.iterations = 0
        self.written = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateLimitError(
                f"the template ran for more than {self.limits.seconds:g} s (simplify it)"
            )

    def iterate(self) -> None:
        self.iterations += 1
        if self.iterations > self.limits.iterations:
            raise TemplateLimitError(
                f"loops ran more than {self.limits.iterations} iterations in one render"
            )
        self.tick()

    def write(self, size: int) -> None:
        self.written += size
        if self.written > self.limits.text:
            raise TemplateLimitError(f"the output is over {self.limits.text} characters")
        self.tick()


_CURRENT: ContextVar[_Budget | None] = ContextVar("billbridge_template_budget", default=None)


@contextmanager
def render_budget(limits: TemplateLimits = DEFAULT_LIMITS) -> Iterator[None]:
    """One budget for everything rendered inside; a nested call shares the outer one."""
    if _CURRENT.get() is not None:
        yield
        return
    token = _CURRENT.set(_Budget(limits))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def _budget() -> _Budget:
    # Outside any `render_budget` (Jinja folding a constant filter call at compile time),
    # the default limits still apply to that one call.
    return _CURRENT.get() or _Budget(DEFAULT_LIMITS)


# Sizes ----------------------------------------------------------------------------------


def _is_container(value: Any) -> bool:
    kind = type(value)
    if kind is str or kind is int:
        return False
    return (
        kind is list or kind is dict or isinstance(value, Mapping | list | tuple | set | frozenset)
    )


def _entries(value: Any) -> Sequence[Any]:
    """The entries of a container (keys and values of a mapping)."""
    if type(value) is list or type(value) is tuple:
        return cast("Sequence[Any]", value)
    if isinstance(value, Mapping):
        return [*value.keys(), *value.values()]
    return list(value)


def _scalar_weight(value: Any) -> int:
    if type(value) is str:
        return len(value)
    if type(value) is int:
        return value.bit_length() // 3 + 1
    return len(value) if isinstance(value, str) else 1


def check_weight(value: Any, budget: _Budget | None = None) -> None:
    """Refuse a value whose text form would be over the limit, before it is built.

    Counts characters of strings, digits of integers and one per container entry, shared
    parts each time they occur (`[x] * 1000` weighs 1,000 x's; `[d, d]` nested 40 times
    weighs 2**40), each distinct container weighed once, so the check costs what the
    distinct data costs, never what its text would.
    """
    if value is None or type(value) in (int, float, bool):
        return
    budget = budget or _budget()
    limit = budget.limits.text
    if not _is_container(value):
        if _scalar_weight(value) > limit:
            raise TemplateLimitError(_over_text(budget.limits))
        return
    weights: dict[int, int] = {}  # id of a container -> its weight (`value` keeps them alive)
    stack: list[tuple[Any, Sequence[Any] | None]] = [(value, None)]
    while stack:
        node, entries = stack.pop()
        if id(node) in weights:
            continue
        if entries is None:  # first visit: weigh the containers inside first
            entries = _entries(node)
            stack.append((node, entries))
            stack.extend((e, None) for e in entries if _is_container(e) and id(e) not in weights)
            continue
        total = 1 + len(entries)
        for entry in entries:
            total += weights[id(entry)] if id(entry) in weights else _scalar_weight(entry)
            if total > limit:
                raise TemplateLimitError(_over_text(budget.limits))
        weights[id(node)] = total


def _over_text(limits: TemplateLimits) -> str:
    return f"the text would be over {limits.text} characters"


def _check_width(width: Any, limits: TemplateLimits, what: str) -> None:
    if isinstance(width, int) and width > limits.width:
        raise TemplateLimitError(f"{what} wider than {limits.width} characters")


def _check_text(size: int, limits: TemplateLimits, what: str) -> None:
    if size > limits.text:
        raise TemplateLimitError(f"{what} would build over {limits.text} characters")


# `%` conversions: %[(key)][flags][width][.precision][length]type
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def _numbers_total(numbers: Iterable[str], limits: TemplateLimits, what: str) -> int:
    total = 0
    for number in numbers:
        if len(number) > 9 or int(number) > limits.width:
            raise TemplateLimitError(f"{what}: a width or precision over {limits.width}")
        total += int(number)
    return total


def check_printf(fmt: str, args: Any, limits: TemplateLimits) -> None:
    """Refuse a `%` format whose widths would build too much text (`'%0100000d' % 1`)."""
    numbers: list[str] = []
    for match in _PRINTF.finditer(fmt):
        for group in match.groups():
            if group == "*":
                raise TemplateLimitError("`%` with a `*` width is not allowed in templates")
            if group:
                numbers.append(group)
    total = _numbers_total(numbers, limits, "`%` format")
    _check_text(len(fmt) + total, limits, "`%` format")
    check_weight(args)


def check_str_format(fmt: str, args: Any, kwargs: Any, limits: TemplateLimits) -> None:
    """Refuse a `str.format` pattern whose widths would build too much text."""
    numbers: list[str] = []
    for _literal, _field, spec, _conversion in Formatter().parse(fmt):
        if spec and "{" in spec:
            raise TemplateLimitError("nested `{}` in a format spec is not allowed in templates")
        if spec:
            numbers.extend(re.findall(r"\d+", spec))
    total = _numbers_total(numbers, limits, "`format`")
    _check_text(len(fmt) + total, limits, "`format`")
    check_weight(args)
    check_weight(kwargs)


# Operators ------------------------------------------------------------------------------

_BINOPS: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
    "**": operator.pow,
}


def _int_bits(op: str, left: int, right: int) -> int:
    """An upper bound of the result's size in bits (0 for ops that cannot grow it)."""
    if op == "*":
        return left.bit_length() + right.bit_length()
    if op == "**":
        if right < 0 or abs(left) <= 1:
            return 1
        return left.bit_length() * right
    if op in ("+", "-"):
        return max(left.bit_length(), right.bit_length()) + 1
    return 0


def checked_binop(op: str, left: Any, right: Any, limits: TemplateLimits) -> Any:
    """`left op right`, refused when the result would be over a limit."""
    if op == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
        raise TemplateLimitError(f"`**` with an exponent above {MAX_EXPONENT} is not allowed")
    if isinstance(left, int) and isinstance(right, int):
        if _int_bits(op, left, right) > limits.int_bits:
            raise TemplateLimitError(f"`{op}` would give an integer over {limits.int_bits} bits")
    elif op == "*":
        for seq, count in ((left, right), (right, left)):
            if (
                isinstance(seq, str | list | tuple)
                and isinstance(count, int)
                and len(seq) * count > limits.repeat
            ):
                raise TemplateLimitError(f"`*` would build more than {limits.repeat} items")
    elif (
        op == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple)
    ):
        _check_text(len(left) + len(right), limits, "`+`")
    elif op == "%" and isinstance(left, str):
        check_printf(left, right, limits)
    return _BINOPS[op](left, right)


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
    limits = _budget().limits
    name = method.__name__
    text = method.__self__
    if name in _REFUSED_METHODS:
        raise TemplateLimitError(f"`{name}` is not available in templates")
    if name in _PADDING_METHODS:
        _check_width(_arg(args, kwargs, 0, "width"), limits, f"`{name}`")
    elif name == "expandtabs":
        tabsize = _arg(args, kwargs, 0, "tabsize")
        tabsize = 8 if tabsize is None else tabsize
        _check_width(tabsize, limits, "`expandtabs`")
        if isinstance(tabsize, int):
            tabs = text.count("\t" if isinstance(text, str) else b"\t")
            _check_text(len(text) + tabs * tabsize, limits, "`expandtabs`")
    elif name == "replace":
        size = _replace_size(
            text,
            _arg(args, kwargs, 0, "old"),
            _arg(args, kwargs, 1, "new"),
            _arg(args, kwargs, 2, "count"),
        )
        _check_text(size, limits, "`replace`")


def _checked_join(separator: Any, items: Any, limits: TemplateLimits) -> list[Any]:
    """The items to join, once their joined size is known to be within the limit."""
    listed = list(budgeted_iter(items))
    check_weight(listed)
    _check_text(len(separator) * len(listed), limits, "`join`")
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
    _check_width(width, _budget().limits, "`center`")
    return jinja_filters.do_center(value, width)


def _indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    limits = _budget().limits
    pad = width if isinstance(width, int) else len(str(width))
    _check_width(pad, limits, "`indent`")
    _check_text(len(str(s)) + (str(s).count("\n") + 1) * pad, limits, "`indent`")
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
    limits = _budget().limits
    newline = environment.newline_sequence if wrapstring is None else str(wrapstring)
    lines = len(str(s)) // max(int(width), 1) + str(s).count("\n") + 1
    _check_text(len(str(s)) + lines * len(newline), limits, "`wordwrap`")
    return jinja_filters.do_wordwrap(
        environment, s, width, break_long_words, wrapstring, break_on_hyphens
    )


def _format(value: str, *args: Any, **kwargs: Any) -> str:
    check_printf(str(value), (args, kwargs), _budget().limits)
    return jinja_filters.do_format(value, *args, **kwargs)


@pass_eval_context
def _join(eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    listed = _checked_join(str(d), value, _budget().limits)
    return jinja_filters.sync_do_join(eval_ctx, listed, d, attribute)


@pass_eval_context
def _replace(eval_ctx: EvalContext, s: str, old: str, new: str, count: int | None = None) -> str:
    size = _replace_size(str(s), str(old), str(new), count)
    _check_text(size, _budget().limits, "`replace`")
    return jinja_filters.do_replace(eval_ctx, s, old, new, count)


@pass_environment
def _sum(environment: Any, iterable: Iterable[Any], attribute: Any = None, start: Any = 0) -> Any:
    limits = _budget().limits
    items: Iterable[Any] = budgeted_iter(iterable)
    if attribute is not None:
        items = map(jinja_filters.make_attrgetter(environment, attribute), items)
    total = start
    for item in items:
        total = checked_binop("+", total, item, limits)
    return total


def _batch(value: Iterable[Any], linecount: int, fill_with: Any = None) -> Iterator[list[Any]]:
    if fill_with is not None and linecount > _budget().limits.repeat:
        raise TemplateLimitError(f"`batch` with a fill over {_budget().limits.repeat} items")
    return jinja_filters.do_batch(value, linecount, fill_with)


def _slice(value: Any, slices: int, fill_with: Any = None) -> Iterator[list[Any]]:
    if slices > _budget().limits.repeat:
        raise TemplateLimitError(f"`slice` into more than {_budget().limits.repeat} parts")
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
    budget = _budget()
    for item in iterable:
        budget.iterate()
        yield item


def _finalize(value: Any) -> Any:
    """Every value written by `{{ }}`: weighed and charged to the budget's output."""
    if value is None:  # inside a longer string, a null renders as nothing, not "None"
        return ""
    budget = _budget()
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

    intercepted_binops = frozenset(_BINOPS)
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
        budget = _budget()
        budget.tick()
        total = 0
        for value in values:
            if isinstance(value, str):
                total += len(value)
            else:
                check_weight(value, budget)
        _check_text(total, budget.limits, "`~`")
        result = str_join(values)
        _check_text(len(result), budget.limits, "`~`")
        return result

    def getattr(self, obj: Any, attribute: str) -> Any:
        _budget().tick()
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _budget().tick()
        return super().getitem(obj, argument)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        raise SecurityError(
            f"access to attribute {attribute!r} of a {type(obj).__name__!r} is not allowed"
        )

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        budget.tick()
        return checked_binop(operator, left, right, budget.limits)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        pattern = str(value.__self__)

        def checked(*args: Any, **kwargs: Any) -> str:
            fields = args[0] if value.__name__ == "format_map" and args else kwargs
            check_str_format(pattern, args, fields, _budget().limits)
            return wrapped(*args, **kwargs)

        return checked

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _budget().tick()
        if isinstance(obj, LoopContext) and args:  # a recursive loop's `loop(children)`
            args = (budgeted_iter(args[0]), *args[1:])
        elif isinstance(obj, types.BuiltinMethodType) and isinstance(
            getattr(obj, "__self__", None), str | bytes
        ):
            _check_string_method(obj, args, kwargs)
            if obj.__name__ == "join" and args:
                args = (_checked_join(obj.__self__, args[0], _budget().limits), *args[1:])
        return super().call(context, obj, *args, **kwargs)


SANDBOX: Final = LimitedSandbox(
    undefined=ChainableUndefined,
    autoescape=False,
    finalize=_finalize,
    keep_trailing_newline=True,
)

__all__ = [
    "DEFAULT_LIMITS",
    "SANDBOX",
    "LimitedSandbox",
    "TemplateLimitError",
    "TemplateLimits",
    "check_weight",
    "render_budget",
]
