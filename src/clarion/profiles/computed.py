"""Computed traits, maintained per event and combined on merge.

The document kept in `Profile.computed`:

    {"event_counts": {"Order Completed": 2, ...},   # track events by name
     "page_views": 3, "screen_views": 0,
     "orders": 2, "last_order_at": "2026-...Z",
     "revenue": {"USD": 12_990},                    # integer minor units per ISO 4217 currency
     "orders_by_currency": {"USD": 2}}

first_seen_at / last_seen_at are columns of `profiles`. Money follows Segment's e-commerce
spec: `Order Completed` carries `revenue` (falling back to `total`) and `currency` (USD).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

ORDER_COMPLETED = "Order Completed"
DEFAULT_CURRENCY = "USD"
# ISO 4217 minor-unit exponents that are not 2.
_ZERO_DECIMAL = ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX")
_ZERO_DECIMAL_MORE = ("UYI", "VND", "VUV", "XAF", "XOF", "XPF")
_THREE_DECIMAL = ("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND")
_EXPONENTS = {
    **dict.fromkeys(_ZERO_DECIMAL + _ZERO_DECIMAL_MORE, 0),
    **dict.fromkeys(_THREE_DECIMAL, 3),
}


@dataclass(frozen=True, slots=True)
class Seen:
    """What computed traits need of one event."""

    type: str
    name: str | None
    timestamp: datetime
    properties: dict[str, Any]


# One order's amount at most, in minor units (a hundred billion dollars): past it an amount
# is a mistake, not money, and sums of such amounts would outgrow the 64-bit integers JSON
# columns keep.
MAX_MINOR_UNITS = 10**13
_MAX_DIGITS = 20  # larger amounts are refused before they are scaled


def empty() -> dict[str, Any]:
    """The computed traits of a profile that has seen nothing."""
    return {
        "event_counts": {},
        "page_views": 0,
        "screen_views": 0,
        "orders": 0,
        "last_order_at": None,
        "revenue": {},
        "orders_by_currency": {},
    }


def minor_units(amount: Any, currency: str) -> int | None:
    """`amount` (a number or numeric string) in the currency's minor units; None if not money
    (not a number, or beyond `MAX_MINOR_UNITS` either way)."""
    if isinstance(amount, bool) or not isinstance(amount, int | float | str):
        return None
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        return None
    if not value.is_finite() or value.adjusted() > _MAX_DIGITS:
        return None
    units = int((value.scaleb(_EXPONENTS.get(currency, 2))).to_integral_value())
    return units if -MAX_MINOR_UNITS <= units <= MAX_MINOR_UNITS else None


def order_currency(properties: dict[str, Any]) -> str:
    """An order's ISO 4217 currency: its `currency` property, else the default (USD)."""
    raw = properties.get("currency")
    if isinstance(raw, str) and is_currency_code(code := raw.strip().upper()):
        return code
    return DEFAULT_CURRENCY


def is_currency_code(code: str) -> bool:
    """Whether `code` has the shape of an ISO 4217 code: three ASCII capital letters ("ß"
    is a letter, and upper-cases to "SS")."""
    return len(code) == 3 and code.isascii() and code.isalpha() and code.isupper()


def add_event(computed: dict[str, Any], event: Seen) -> None:
    """Count one event into `computed` (in place)."""
    if event.type == "track" and event.name:
        counts = computed["event_counts"]
        counts[event.name] = counts.get(event.name, 0) + 1
        if event.name == ORDER_COMPLETED:
            _add_order(computed, event)
    elif event.type == "page":
        computed["page_views"] += 1
    elif event.type == "screen":
        computed["screen_views"] += 1


def _add_order(computed: dict[str, Any], event: Seen) -> None:
    computed["orders"] += 1
    moment = event.timestamp.isoformat()
    if computed["last_order_at"] is None or computed["last_order_at"] < moment:
        computed["last_order_at"] = moment
    currency = order_currency(event.properties)
    amount = event.properties.get("revenue")
    if amount is None:
        amount = event.properties.get("total")
    value = minor_units(amount, currency)
    if value is None:
        return
    computed["revenue"][currency] = computed["revenue"].get(currency, 0) + value
    by_currency = computed["orders_by_currency"]
    by_currency[currency] = by_currency.get(currency, 0) + 1


def combine(into: dict[str, Any], other: dict[str, Any]) -> None:
    """Add `other`'s computed traits to `into` (in place): the merge of two profiles."""
    for name, count in other["event_counts"].items():
        into["event_counts"][name] = into["event_counts"].get(name, 0) + count
    for key in ("page_views", "screen_views", "orders"):
        into[key] += other[key]
    for key in ("revenue", "orders_by_currency"):
        for currency, value in other[key].items():
            into[key][currency] = into[key].get(currency, 0) + value
    last = [t for t in (into["last_order_at"], other["last_order_at"]) if t is not None]
    into["last_order_at"] = max(last) if last else None


def money(computed: dict[str, Any]) -> list[dict[str, Any]]:
    """Lifetime value and average order value per currency, for display."""
    out = []
    for currency, total in sorted(computed["revenue"].items()):
        orders = computed["orders_by_currency"].get(currency, 0)
        out.append(
            {
                "currency": currency,
                "lifetime_value": total,
                "average_order_value": round(total / orders) if orders else 0,
                "orders": orders,
            }
        )
    return out
