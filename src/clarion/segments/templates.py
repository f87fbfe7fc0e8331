"""Ready-made segments: the groups every shop asks for first, as ordinary rules a marketer
can create in one call and then edit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Template:
    """A ready-made segment: its key, name, description and rule document."""

    key: str
    name: str
    description: str
    rule: dict[str, Any]


def _orders(count: int, operator: str, days: int | None = None) -> dict[str, Any]:
    condition: dict[str, Any] = {
        "type": "event",
        "event": "Order Completed",
        "operator": operator,
        "count": count,
    }
    if days is not None:
        condition["window"] = {"last_days": days}
    return condition


def _rfm(**scores: list[int]) -> dict[str, Any]:
    return {"type": "rfm", **scores}


TEMPLATES: dict[str, Template] = {
    template.key: template
    for template in (
        Template(
            "high_value",
            "High-value customers",
            "The top 10 % of buyers by lifetime value (in the workspace's main currency).",
            {"type": "top_percent", "measure": "lifetime_value", "percent": 10},
        ),
        Template(
            "at_risk",
            "At risk",
            "Ordered at least twice, but not in the last 90 days.",
            {"type": "all", "conditions": [_orders(2, "gte"), _orders(0, "eq", 90)]},
        ),
        Template(
            "cart_abandoners",
            "Cart abandoners",
            # Klaviyo's pattern: cart activity and no order in the same trailing window.
            "Added a product to the cart in the last 24 hours and ordered nothing in them.",
            {
                "type": "all",
                "conditions": [
                    {
                        "type": "event",
                        "event": "Product Added",
                        "operator": "gte",
                        "count": 1,
                        "window": {"last_days": 1},
                    },
                    _orders(0, "eq", 1),
                ],
            },
        ),
        Template(
            "new_customers",
            "New customers",
            "First seen within the last 7 days.",
            {
                "type": "attribute",
                "attribute": "first_seen_at",
                "operator": "within_last_days",
                "value": 7,
            },
        ),
        Template(
            "birthdays_this_week",
            "Birthdays this week",
            "The `birthday` trait falls within the next 7 days, in the profile's time zone.",
            {
                "type": "trait",
                "trait": "birthday",
                "operator": "anniversary_within_days",
                "value": 6,
            },
        ),
        Template(
            "rfm_champions",
            "Champions (RFM)",
            "Bought recently, often and for the most.",
            _rfm(recency=[4, 5], frequency=[4, 5], monetary=[4, 5]),
        ),
        Template(
            "rfm_loyal",
            "Loyal (RFM)",
            "Buy often, and not long ago.",
            _rfm(recency=[3, 4, 5], frequency=[4, 5]),
        ),
        Template(
            "rfm_at_risk",
            "At risk (RFM)",
            "Used to buy often, but not for a long time.",
            _rfm(recency=[1, 2], frequency=[3, 4, 5]),
        ),
        Template(
            "rfm_hibernating",
            "Hibernating (RFM)",
            "Bought rarely, and long ago.",
            _rfm(recency=[1, 2], frequency=[1, 2]),
        ),
    )
}
