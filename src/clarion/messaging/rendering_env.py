"""The template engine behind `messaging.rendering`: two environments on one sandbox
(`rendering_sandbox`), their filters, the registry of functions later domains add, and
the cache of compiled templates.

`html` autoescapes (email html, inbox body); `text` does not (subjects, SMS, push, webhook
leaves, the email text part). Filters beyond Jinja's: `money`, `date`, `datetime`. Compiled
templates are kept in a bounded LRU keyed by their source, so the same version rendered for
100,000 recipients compiles once.
"""

from __future__ import annotations

import functools
import keyword
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Template, pass_context
from jinja2.exceptions import TemplateError
from jinja2.nodes import Template as TemplateNode
from jinja2.runtime import Context
from markupsafe import escape

try:
    from markupsafe._speedups import _escape_inner
except ImportError:  # markupsafe without its C extension
    from markupsafe._native import _escape_inner

from clarion.core.errors import FieldError, InvalidInput
from clarion.messaging.rendering_sandbox import (
    STATE,
    ChainableStrictUndefined,
    Sandbox,
    guard_filters,
    guarded_range,
)

Mode = Literal["html", "text"]

CONTEXT_ROOTS = frozenset({"profile", "event", "journey", "message", "links", "now"})
# The attributes of the context's fixed-shape roots, so `profile.trait.x` is caught early.
ROOT_ATTRIBUTES: dict[str, frozenset[str]] = {
    "profile": frozenset({"id", "user_id", "email", "phone", "traits", "computed"}),
    "event": frozenset({"name", "properties"}),
    "message": frozenset({"id"}),
    "links": frozenset({"unsubscribe_url", "preferences_url", "view_in_browser_url"}),
}
TEMPLATE_CACHE_SIZE = 2048
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class TemplateProblem:
    """One thing wrong with a template: the field (`content.html`, `locales.fr.subject`),
    the line when known (1-based, within that field) and what is wrong."""

    field: str
    message: str
    line: int | None = None


class RenderError(InvalidInput):
    """A template that could not be rendered for this recipient: `field` names the field,
    `message` says why (the missing variable, the forbidden construct), `line` where."""

    def __init__(self, field: str, message: str, *, line: int | None = None) -> None:
        where = f"{field} (line {line})" if line else field
        super().__init__(f"{where}: {message}", errors=[FieldError(field, message)])
        self.field = field
        self.message = message
        self.line = line


# --- Filters -----------------------------------------------------------------------------------

# ISO 4217 minor digits where they are not 2, and symbols for the common currencies.
_MINOR_DIGITS = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG"), 0),
    **dict.fromkeys(("RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}
_SYMBOLS = {
    "USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CNY": "CN¥", "INR": "₹", "KRW": "₩",
    "CAD": "CA$", "AUD": "A$", "NZD": "NZ$", "BRL": "R$", "MXN": "MX$", "CHF": "CHF",
    "ILS": "₪", "VND": "₫", "PLN": "zł", "SEK": "kr", "NOK": "kr", "DKK": "kr",
}  # fmt: skip
# Per language: (thousands separator, decimal mark, symbol before the amount?).
_NUMBER_STYLES: dict[str, tuple[str, str, bool]] = {
    "en": (",", ".", True), "ja": (",", ".", True), "zh": (",", ".", True),
    "ko": (",", ".", True), "he": (",", ".", True), "fr": ("\u202f", ",", False),
    "de": (".", ",", False), "es": (".", ",", False), "it": (".", ",", False),
    "pt": (".", ",", False), "nl": (".", ",", True), "pl": ("\u00a0", ",", False),
    "sv": ("\u00a0", ",", False), "nb": ("\u00a0", ",", False), "da": (".", ",", False),
}  # fmt: skip


def minor_digits(currency: str) -> int:
    """Digits after the decimal mark in `currency` (ISO 4217): JPY 0, USD 2, KWD 3."""
    return _MINOR_DIGITS.get(currency.upper(), 2)


def money(minor_units: Any, currency: str, locale: str | None = None) -> str:
    """Format an amount in minor units (cents) as the locale writes it: 1250, "USD" ->
    "$12.50"; "fr" -> "12,50 €". The locale defaults to the message's."""
    if type(minor_units) is not int:
        minor_units = _integral(minor_units)
    if locale is None:
        state = STATE.get()
        locale = state.locale if state is not None else "en"
    digits, group, decimal_mark, prefix, suffix = _money_style(currency, locale)
    whole, fraction = divmod(abs(minor_units), 10**digits)
    number = f"{whole:,}".replace(",", group) if whole >= 1000 else str(whole)
    if digits:
        number = f"{number}{decimal_mark}{fraction:0{digits}d}"
    return f"{'-' if minor_units < 0 else ''}{prefix}{number}{suffix}"


@functools.lru_cache(maxsize=1024)
def _money_style(currency: str, locale: str) -> tuple[int, str, str, str, str]:
    """Minor digits, thousands separator, decimal mark, and what goes before and after."""
    code = currency.upper()
    group, decimal_mark, before = _NUMBER_STYLES.get(_language(locale), _NUMBER_STYLES["en"])
    symbol = _SYMBOLS.get(code, code)
    if before:
        return (
            _MINOR_DIGITS.get(code, 2),
            group,
            decimal_mark,
            symbol + (" " if symbol == code else ""),
            "",
        )
    return _MINOR_DIGITS.get(code, 2), group, decimal_mark, "", "\u00a0" + symbol


def _integral(value: Any) -> int:
    """Minor units given as a float, Decimal or numeric string, rounded half-even."""
    if isinstance(value, float | Decimal | str) and not isinstance(value, bool):
        try:
            return int(Decimal(str(value)).to_integral_value())
        except (InvalidOperation, ValueError):
            pass
    raise TypeError(f"money() needs an amount in minor units, not {value!r}")


def _language(locale: str) -> str:
    return locale.replace("_", "-").split("-", 1)[0].lower()


def _as_datetime(value: Any, tz: str | None) -> datetime | date:
    moment: datetime
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        return value
    elif isinstance(value, str):
        moment = datetime.fromisoformat(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(value, UTC)
    else:
        raise TypeError(f"not a date or time: {value!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if tz is not None:
        return moment.astimezone(ZoneInfo(tz))
    state = STATE.get()
    return moment.astimezone(state.timezone if state is not None else UTC)


def format_date(value: Any, format: str = "%Y-%m-%d", tz: str | None = None) -> str:
    """Format a date, datetime, ISO string or Unix time in the profile's timezone (or
    `tz`) with a `strftime` format."""
    moment = _as_datetime(value, tz)
    return moment.strftime(format)


def format_datetime(value: Any, format: str = "%Y-%m-%d %H:%M", tz: str | None = None) -> str:
    """Like `date`, with the time of day in the default format."""
    return format_date(value, format, tz)


def timezone_of(name: Any) -> tzinfo:
    """The IANA timezone called `name`, or UTC when it is missing or unknown (a bad trait
    must not stop a message)."""
    return _timezone(name) if isinstance(name, str) and name else UTC


@functools.lru_cache(maxsize=1024)
def _timezone(name: str) -> tzinfo:
    # Cached here as ZoneInfo does not cache the names it failed to find: a profile with
    # a bad timezone trait would cost a file lookup per message.
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


# --- Environments, registry and cache ----------------------------------------------------------


def _make_environment(autoescape: bool) -> Sandbox:
    env = Sandbox(
        undefined=ChainableStrictUndefined,
        autoescape=autoescape,
        extensions=["jinja2.ext.loopcontrols"],
        cache_size=0,
    )
    env.globals["range"] = guarded_range
    del env.globals["lipsum"]  # filler text on demand: no use, and a way to exhaust memory
    guard_filters(env.filters)
    env.filters.update(money=_money_filter, date=_date_filter, datetime=_datetime_filter)
    return env


# `pass_context` only to stop Jinja from folding `{{ 1250 | money('EUR') }}` into a constant
# at compile time: the result depends on the message's locale and timezone.
@pass_context
def _money_filter(
    context: Context, minor_units: Any, currency: str, locale: str | None = None
) -> str:
    return money(minor_units, currency, locale)


@pass_context
def _date_filter(
    context: Context, value: Any, format: str = "%Y-%m-%d", tz: str | None = None
) -> str:
    return format_date(value, format, tz)


@pass_context
def _datetime_filter(
    context: Context, value: Any, format: str = "%Y-%m-%d %H:%M", tz: str | None = None
) -> str:
    return format_date(value, format, tz)


ENVIRONMENTS: dict[Mode, Sandbox] = {
    "html": _make_environment(True),
    "text": _make_environment(False),
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {}


def register_function(name: str, fn: Callable[..., Any], *, replace: bool = False) -> None:
    """Make `fn` callable from every template as `name(...)`; within one message, a call
    with the same (hashable) arguments runs once, so html and text parts agree."""
    if not _NAME.match(name) or keyword.iskeyword(name) or name in CONTEXT_ROOTS:
        raise ValueError(f"{name!r} cannot name a template function")
    taken = name in _FUNCTIONS or name in ENVIRONMENTS["text"].globals
    if taken and not (replace and name in _FUNCTIONS):
        raise ValueError(f"a template function called {name!r} already exists")

    @functools.wraps(fn)
    def once_per_message(*args: Any, **kwargs: Any) -> Any:
        state = STATE.get()
        if state is None:
            return fn(*args, **kwargs)
        key = (name, args, tuple(sorted(kwargs.items())))
        try:
            return state.memo[key]
        except KeyError:
            value = state.memo[key] = fn(*args, **kwargs)
            return value
        except TypeError:  # unhashable arguments: no memo
            return fn(*args, **kwargs)

    _FUNCTIONS[name] = fn
    for env in ENVIRONMENTS.values():
        env.globals[name] = once_per_message


def unregister_function(name: str) -> None:
    """Remove a function `register_function` added; unknown names are ignored."""
    if _FUNCTIONS.pop(name, None) is not None:
        for env in ENVIRONMENTS.values():
            env.globals.pop(name, None)


def known_names() -> frozenset[str]:
    """The root names a template may use: the context's, the registered functions and the
    sandbox's globals (`range`, `dict`, `namespace`...)."""
    return CONTEXT_ROOTS | ENVIRONMENTS["text"].globals.keys()


def parse(source: str, mode: Mode = "text") -> TemplateNode:
    """Parse `source`, raising `TemplateSyntaxError`."""
    return ENVIRONMENTS[mode].parse(source)


def _escape_output(value: Any) -> str:
    # What compiled templates call on each output under autoescape. Everything they do
    # with the result is join it into output already treated as safe, so a plain `str`
    # serves, and skipping `Markup`'s construction makes HTML renders a quarter faster.
    kind = type(value)
    if kind is str:
        return _escape_inner(value)
    if kind is int or kind is float:
        return str(value)
    return escape(value)


@functools.lru_cache(maxsize=TEMPLATE_CACHE_SIZE)
def compile_template(source: str, mode: Mode) -> Template:
    """The compiled template for `source`, compiled once while it stays among the
    `TEMPLATE_CACHE_SIZE` most recently used."""
    template = ENVIRONMENTS[mode].from_string(source)
    if mode == "html":
        template.root_render_func.__globals__["escape"] = _escape_output
    return template


@functools.lru_cache(maxsize=TEMPLATE_CACHE_SIZE)
def compile_expression(source: str) -> Callable[..., Any]:
    """The compiled expression for `source` (without braces), cached like templates."""
    return ENVIRONMENTS["text"].compile_expression(source, undefined_to_none=False)


def with_globals(variables: dict[str, Any]) -> dict[str, Any]:
    """`variables` plus the globals (`range`, registered functions), as `run` wants them."""
    return {**ENVIRONMENTS["text"].globals, **variables}


def run(template: Template, variables: dict[str, Any]) -> str:
    """`template.render(variables)` without its per-call copy of the globals into a new
    dict (a tenth of a small render): `variables` must come from `with_globals`."""
    env = template.environment
    context = env.context_class(env, variables, template.name, template.blocks)
    try:
        return "".join(template.root_render_func(context))
    except Exception:
        env.handle_exception()  # re-raises, the traceback pointing at template lines


RENDER_FAILURES = (
    TemplateError,
    ArithmeticError,
    LookupError,
    TypeError,
    ValueError,
    RecursionError,
)


def template_line(exc: BaseException) -> int | None:
    """The template line an exception raised while rendering points at, if any."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
