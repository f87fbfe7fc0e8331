"""What a message template may do: the sandbox, its undefined, its guards, and the state
one message's render shares between its fields.

The sandbox is Jinja's `ImmutableSandboxedEnvironment` (no `_private` or internal
attributes, no `list.append` or `dict.update`) plus guards against templates that would
exhaust the worker rather than escape it: `range()` produces at most `MAX_RANGE_ITEMS`
items per message in all; `*` builds no string or list longer than `MAX_GROWTH`, nor do
the string methods and filters that pad or replace (`center`, `ljust`, `zfill`, `replace`,
`indent`...); formats (`%`, `format`, `str.format`) take no width over `MAX_WIDTH`; `**`
takes no integer exponent over `MAX_POWER_EXPONENT`; `lipsum` is gone. A worker should
still bound each message's time and memory: these guards stop the cheap attacks, not all.

The undefined is strict (printing, iterating, comparing or testing a missing value fails)
yet chainable: `profile.traits.address.city | default('')` works when `address` is missing.
Dictionaries are looked up item first, so a trait called `items` is the trait.

Everything a render needs beyond its variables (the message's context, locale and
timezone, the loop budget, the memo of registered functions) lives in a `ContextVar` that
`render_scope` sets, so compiled templates are shared by every recipient and thread.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from types import BuiltinMethodType
from typing import TYPE_CHECKING, Any, Literal

from jinja2 import ChainableUndefined, StrictUndefined
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

if TYPE_CHECKING:
    from clarion.messaging.rendering_content import RenderContext

MAX_RANGE_ITEMS = 10_000
MAX_GROWTH = 100_000
MAX_WIDTH = 999
MAX_POWER_EXPONENT = 1_000
# Conversions whose width or precision has 4 digits or more, or comes from an argument.
_WIDE_FORMATS = {
    "%": re.compile(
        r"%(?:\([^)]*\))?[-+ #0]*(?:\*|\d{4,}|\d*\.(?:\*|\d{4,}))[\d.]*[diouxXeEfFgGcrsa]"
    ),
    "{}": re.compile(r"\{[^{}]*:[^{}]*?(?:\d{4,}|\{)"),
}


class ChainableStrictUndefined(ChainableUndefined, StrictUndefined):
    """Missing values may be chained and given a `default`; any other use fails."""

    __slots__ = ()


@dataclass(slots=True)
class RenderState:
    """What one message's render shares between its fields."""

    context: RenderContext | None
    locale: str = "en"
    timezone: tzinfo = UTC
    range_budget: int = MAX_RANGE_ITEMS
    memo: dict[tuple[Any, ...], Any] = field(default_factory=dict)


STATE: ContextVar[RenderState | None] = ContextVar("clarion_render_state", default=None)


@contextmanager
def render_scope(state: RenderState) -> Iterator[RenderState]:
    """Make `state` the current message's state for the templates rendered inside."""
    token = STATE.set(state)
    try:
        yield state
    finally:
        STATE.reset(token)


def current_render_context() -> RenderContext:
    """The context of the message being rendered, for registered functions (`coupon()`
    needs the profile); raises `LookupError` outside a render."""
    state = STATE.get()
    if state is None or state.context is None:
        raise LookupError("no message is being rendered")
    return state.context


def check_growth(size: int, what: str) -> None:
    """Refuse to build a string or list of `size` items."""
    if size > MAX_GROWTH:
        raise SecurityError(
            f"{what} would build {size:,} characters or items (most {MAX_GROWTH:,})"
        )


def check_format(spec: str, style: Literal["%", "{}"]) -> None:
    """Refuse a format string asking for a width or precision past `MAX_WIDTH`, or one
    given as an argument."""
    if _WIDE_FORMATS[style].search(spec):
        raise SecurityError(f"format widths past {MAX_WIDTH} are not allowed")


def _replaced_size(text: str, old: str, new: str, count: int = -1) -> int:
    found = len(text) + 1 if not old else text.count(old)
    found = found if count < 0 else min(found, count)
    return len(text) + found * (len(new) - len(old))


# String methods that can grow a string past what the template holds: the size they would
# build, from the string and the call's arguments.
_GROWING_METHODS: dict[str, Callable[..., int]] = {
    "center": lambda text, width, *_: width,
    "ljust": lambda text, width, *_: width,
    "rjust": lambda text, width, *_: width,
    "zfill": lambda text, width: width,
    "expandtabs": lambda text, tabsize=8: len(text) + text.count("\t") * tabsize,
    "replace": _replaced_size,
}


class Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox every message template runs in (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Item first for plain dicts: the context is JSON data, and trying the attribute
        # first costs an AttributeError per lookup. `loop` has no unsafe public attribute.
        kind = type(obj)
        if kind is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        elif kind is LoopContext and attribute[:1] != "_":
            try:
                return getattr(obj, attribute)
            except AttributeError:
                pass
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    check_growth(len(seq) * times, "repetition")
            return left * right
        if operator == "%":
            if isinstance(left, str):
                check_format(left, "%")
            return left % right
        big = isinstance(right, int) and right > MAX_POWER_EXPONENT
        if big and isinstance(left, int) and abs(left) > 1:
            raise SecurityError(f"exponent larger than {MAX_POWER_EXPONENT}")
        return super().call_binop(context, operator, left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        if type(obj) is BuiltinMethodType and isinstance(obj.__self__, str):
            size = _GROWING_METHODS.get(obj.__name__)
            if size is not None and all(type(arg) in (int, str) for arg in args):
                check_growth(size(obj.__self__, *args, **kwargs), f"str.{obj.__name__}")
        return super().call(context, obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            check_format(value.__self__, "{}")
        return wrapped


def guarded_range(*args: int) -> range:
    """`range()` within the message's budget of `MAX_RANGE_ITEMS` items."""
    values = range(*args)
    state = STATE.get()
    budget = state.range_budget if state is not None else MAX_RANGE_ITEMS
    if len(values) > budget:
        raise SecurityError(f"loops over more than {MAX_RANGE_ITEMS:,} range() items")
    if state is not None:
        state.range_budget -= len(values)
    return values


def guard_filters(filters: dict[str, Callable[..., Any]]) -> None:
    """Wrap the standard filters that pad, indent, replace or format with the checks the
    sandbox applies to the same string methods."""
    center, indent, replace, format_ = (
        filters[name] for name in ("center", "indent", "replace", "format")
    )

    def guarded_center(value: str, width: int = 80) -> str:
        check_growth(width, "center")
        return str(center(value, width))

    def guarded_indent(value: str, width: int | str = 4, *args: Any, **kwargs: Any) -> str:
        size = width if isinstance(width, int) else len(width)
        check_growth(size * (str(value).count("\n") + 1) + len(str(value)), "indent")
        return str(indent(value, width, *args, **kwargs))

    def guarded_replace(
        eval_ctx: Any, value: str, old: str, new: str, count: int | None = None
    ) -> str:
        check_growth(
            _replaced_size(str(value), str(old), str(new), -1 if count is None else count),
            "replace",
        )
        return str(replace(eval_ctx, value, old, new, count))

    def guarded_format(value: str, *args: Any, **kwargs: Any) -> str:
        check_format(str(value), "%")
        return str(format_(value, *args, **kwargs))

    guarded_replace.jinja_pass_arg = replace.jinja_pass_arg  # type: ignore[attr-defined]
    filters.update(
        center=guarded_center, indent=guarded_indent, replace=guarded_replace, format=guarded_format
    )
