"""The limits workflow templates run under, and the checks made before work is done.

    with render_budget():                       # one budget: loops, output, deadline
        checked_binop("**", 10, 64, current_budget().limits)   # refused: over 4,096 bits

`sandbox.py` calls these from its hooks (operators, calls, loops, output). The numbers,
in `TemplateLimits`:

    integers       `*`, `**`, `+`, `-` never give more than 4,096 bits
    repetition     `*` builds at most 100,000 characters or items (and `**` takes an
                   exponent of at most 64)
    text           at most 1,000,000 characters built by one operation, or weighed by
                   `check_weight` (a value about to become text), or written per budget
    widths         widths and precisions of formats and padding: at most 10,000
    loops          100,000 iterations per budget, all loops together
    time           0.5 s of wall time per budget, checked at every hook

Crossing one raises `TemplateLimitError` (a jinja2 `SecurityError`).
"""

from __future__ import annotations

import operator
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from string import Formatter
from typing import Any, Final, cast

from jinja2.exceptions import SecurityError

MAX_EXPONENT: Final = 64  # `**` beyond this is refused: it only serves to exhaust memory


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


class Budget:
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


_CURRENT: ContextVar[Budget | None] = ContextVar("billbridge_template_budget", default=None)


@contextmanager
def render_budget(limits: TemplateLimits = DEFAULT_LIMITS) -> Iterator[None]:
    """One budget for everything rendered inside; a nested call shares the outer one."""
    if _CURRENT.get() is not None:
        yield
        return
    token = _CURRENT.set(Budget(limits))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current_budget() -> Budget:
    # Outside any `render_budget` (Jinja folding a constant filter call at compile time),
    # the default limits still apply to that one call.
    return _CURRENT.get() or Budget(DEFAULT_LIMITS)


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


def check_weight(value: Any, budget: Budget | None = None) -> None:
    """Refuse a value whose text form would be over the limit, before it is built.

    Counts characters of strings, digits of integers and one per container entry, shared
    parts each time they occur (`[x] * 1000` weighs 1,000 x's; `[d, d]` nested 40 times
    weighs 2**40), each distinct container weighed once, so the check costs what the
    distinct data costs, never what its text would.
    """
    if value is None or type(value) in (int, float, bool):
        return
    budget = budget or current_budget()
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


def check_width(width: Any, limits: TemplateLimits, what: str) -> None:
    if isinstance(width, int) and width > limits.width:
        raise TemplateLimitError(f"{what} wider than {limits.width} characters")


def check_text(size: int, limits: TemplateLimits, what: str) -> None:
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
    check_text(len(fmt) + total, limits, "`%` format")
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
    check_text(len(fmt) + total, limits, "`format`")
    check_weight(args)
    check_weight(kwargs)


# Operators ------------------------------------------------------------------------------

BINOPS: Final[dict[str, Callable[[Any, Any], Any]]] = {
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
        check_text(len(left) + len(right), limits, "`+`")
    elif op == "%" and isinstance(left, str):
        check_printf(left, right, limits)
    return BINOPS[op](left, right)


__all__ = [
    "BINOPS",
    "DEFAULT_LIMITS",
    "MAX_EXPONENT",
    "Budget",
    "TemplateLimitError",
    "TemplateLimits",
    "check_printf",
    "check_str_format",
    "check_text",
    "check_weight",
    "check_width",
    "checked_binop",
    "current_budget",
    "render_budget",
]
