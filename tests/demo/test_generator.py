"""The demo generator: deterministic, realistic customers, spec-shaped e-commerce messages,
identity linkage, and the weekly and seasonal rhythm of a gift shop."""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from clarion.demo.behaviour import DEFAULT_CUSTOMERS, DemoPlan, generate
from clarion.demo.catalog import CURRENCY, load_catalog
from clarion.ingest.service import accept_messages

END = date(2025, 3, 1)
PLAN = DemoPlan(seed=7, end=END, customers=300)
Message = dict[str, Any]


@pytest.fixture(scope="module")
def raw() -> list[bytes]:
    return list(generate(PLAN))


@pytest.fixture(scope="module")
def messages(raw: list[bytes]) -> list[Message]:
    return [orjson.loads(message) for message in raw]


def _digest(plan: DemoPlan) -> str:
    digest = hashlib.sha256()
    for message in generate(plan):
        digest.update(message + b"\n")
    return digest.hexdigest()


def _cents(amount: float) -> int:
    return round(amount * 100)


def _when(message: Message) -> datetime:
    return datetime.fromisoformat(message["timestamp"].replace("Z", "+00:00"))


def _tracks(messages: list[Message], event: str) -> list[Message]:
    return [m for m in messages if m["type"] == "track" and m["event"] == event]


def test_same_seed_same_bytes_other_seed_other_shop() -> None:
    small = DemoPlan(seed=11, end=END, customers=40)
    assert _digest(small) == _digest(small)
    assert _digest(small) != _digest(DemoPlan(seed=12, end=END, customers=40))
    ids = {orjson.loads(m)["messageId"] for m in generate(small)}
    other = {orjson.loads(m)["messageId"] for m in generate(DemoPlan(12, END, 40))}
    assert not ids & other  # messageIds derive from the seed


def test_generation_is_lazy() -> None:
    stream = generate(DemoPlan(seed=1, end=END))
    assert not isinstance(stream, list)
    assert orjson.loads(next(stream))["type"] in ("page", "track")


def test_counts(raw: list[bytes], messages: list[Message]) -> None:
    assert DEFAULT_CUSTOMERS >= 2000 and DemoPlan(seed=1, end=END).customers >= 2000
    catalog = load_catalog()
    assert len(catalog) == 100
    assert len({p.product_id for p in catalog}) == len({p.sku for p in catalog}) == 100
    assert len({p.category for p in catalog}) >= 6
    assert all(p.price_cents > 0 for p in catalog)
    identifies = [m for m in messages if m["type"] == "identify"]
    assert len(identifies) == PLAN.customers
    assert len({m["userId"] for m in identifies}) == PLAN.customers
    assert len({m["messageId"] for m in messages}) == len(messages)
    # The default shop lands in the 100k-200k range the load is sized for.
    assert 100_000 <= len(raw) * DEFAULT_CUSTOMERS / PLAN.customers <= 200_000
    names = Counter(m.get("event") or m["type"] for m in messages)
    for event in ("Products Searched", "Product Viewed", "Product Added", "Cart Viewed"):
        assert names[event] > 0
    assert names["Checkout Started"] > names["Order Completed"] > PLAN.customers // 2


def test_every_message_is_accepted_by_ingestion(raw: list[bytes]) -> None:
    import uuid

    accepted = accept_messages(
        raw, workspace_id=1, source_id=uuid.uuid4(), received_at=datetime.now(UTC)
    )
    assert accepted.rejected == []
    assert len(accepted.rows) == len(raw)


def _zone_countries() -> dict[str, set[str]]:
    table = Path("/usr/share/zoneinfo/zone.tab")
    if not table.exists():
        pytest.skip("no zone.tab to check time zones against")
    zones: dict[str, set[str]] = defaultdict(set)
    for line in table.read_text().splitlines():
        if line and not line.startswith("#"):
            country, _, zone = line.split("\t")[:3]
            zones[zone].add(country)
    return zones


def test_customers_look_real(messages: list[Message]) -> None:
    zones = _zone_countries()
    traits = [m["traits"] for m in messages if m["type"] == "identify"]
    emails = [t["email"] for t in traits]
    assert len(set(emails)) == len(emails)
    assert all(re.fullmatch(r"[a-z0-9.]+@example\.(com|net|org)", e) for e in emails)
    phones = [t["phone"] for t in traits if "phone" in t]
    assert 0 < len(phones) < len(traits)
    assert all(re.fullmatch(r"\+[1-9]\d{9,12}", p) for p in phones)
    assert len(set(phones)) == len(phones)
    for trait in traits:
        country = trait["address"]["country"]
        assert trait["first_name"] and trait["last_name"]
        assert trait["locale"].split("-")[1] == country
        assert country in zones[trait["timezone"]]
        age = (END - date.fromisoformat(trait["birthday"])).days / 365.25
        assert 17.9 < age < 81
        assert datetime.fromisoformat(trait["created_at"].replace("Z", "+00:00"))
    assert len({t["address"]["country"] for t in traits}) >= 8
    assert Counter(t["address"]["country"] for t in traits).most_common(1)[0][0] == "GB"


def test_orders_follow_the_ecommerce_spec(messages: list[Message]) -> None:
    prices = {p.product_id: p.price_cents for p in load_catalog()}
    started = {m["properties"]["order_id"]: m for m in _tracks(messages, "Checkout Started")}
    orders = _tracks(messages, "Order Completed")
    assert orders
    for order in orders:
        props = order["properties"]
        assert props["currency"] == CURRENCY and props["order_id"] in started
        assert props["products"]
        lines = 0
        for line in props["products"]:
            assert set(line) >= {"product_id", "sku", "name", "category", "price", "quantity"}
            assert _cents(line["price"]) == prices[line["product_id"]]
            assert line["quantity"] >= 1
            lines += _cents(line["price"]) * line["quantity"]
        assert _cents(props["subtotal"]) == lines
        assert _cents(props["revenue"]) == lines - _cents(props["discount"])
        assert _cents(props["total"]) == _cents(props["revenue"]) + _cents(props["shipping"])
        assert order["userId"] and _when(started[props["order_id"]]) < _when(order)
    assert any("coupon" in o["properties"] for o in orders)


def test_some_carts_are_abandoned(messages: list[Message]) -> None:
    ordered = {m["properties"]["order_id"] for m in _tracks(messages, "Order Completed")}
    checkouts = {m["properties"]["order_id"] for m in _tracks(messages, "Checkout Started")}
    carts = {m["properties"]["cart_id"] for m in _tracks(messages, "Cart Viewed")}
    added = {m["properties"]["cart_id"] for m in _tracks(messages, "Product Added")}
    assert carts == added
    assert checkouts - ordered  # left at checkout
    assert len(carts) > len(checkouts)  # left in the cart


def test_anonymous_browsing_then_identify_links_the_same_anonymous_id(
    messages: list[Message],
) -> None:
    by_anonymous: dict[str, list[Message]] = defaultdict(list)
    for message in messages:
        by_anonymous[message["anonymousId"]].append(message)
    identified = 0
    for history in by_anonymous.values():
        history.sort(key=_when)
        kinds = [m["type"] for m in history]
        if "identify" not in kinds:
            assert all("userId" not in m for m in history)  # a visitor who never signed up
            continue
        identified += 1
        sign_up = kinds.index("identify")
        user_id = history[sign_up]["userId"]
        assert sign_up > 0 and all("userId" not in m for m in history[:sign_up])
        assert any(m.get("event") == "Product Viewed" for m in history[:sign_up])
        assert all(m["userId"] == user_id for m in history[sign_up:])
    assert identified == PLAN.customers
    assert len(by_anonymous) > identified


def test_events_fall_in_the_year_before_the_end_date(messages: list[Message]) -> None:
    end = datetime.combine(END, time(), UTC)
    moments = [_when(m) for m in messages]
    assert min(moments) >= end - timedelta(days=366)
    assert max(moments) < end


def test_seasonal_rhythm(messages: list[Message]) -> None:
    months = Counter(_when(m).month for m in _tracks(messages, "Order Completed"))
    assert months[12] > 1.5 * months[7]
    assert months[11] > months[6]


def test_weekly_and_evening_rhythm_in_local_time(messages: list[Message]) -> None:
    weekdays: Counter[int] = Counter()
    hours: Counter[int] = Counter()
    for message in messages:
        local = _when(message).astimezone(ZoneInfo(message["context"]["timezone"]))
        weekdays[local.weekday()] += 1
        hours[local.hour] += 1
    weekend_per_day = (weekdays[5] + weekdays[6]) / 2
    weekday_per_day = sum(weekdays[d] for d in range(5)) / 5
    assert weekend_per_day > 1.2 * weekday_per_day
    evening_per_hour = sum(hours[h] for h in range(19, 22)) / 3
    office_per_hour = sum(hours[h] for h in range(9, 17)) / 8
    night_per_hour = sum(hours[h] for h in range(1, 6)) / 5
    assert evening_per_hour > 1.3 * office_per_hour > 3 * night_per_hour


def _revenue_by_user(messages: list[Message]) -> dict[str, list[int]]:
    orders: dict[str, list[int]] = defaultdict(list)
    for order in _tracks(messages, "Order Completed"):
        orders[order["userId"]].append(_cents(order["properties"]["revenue"]))
    return orders


def test_repeat_buyers_and_churned_customers(messages: list[Message]) -> None:
    orders = _revenue_by_user(messages)
    lifetime = sorted((sum(v) for v in orders.values()), reverse=True)
    top = lifetime[: max(len(lifetime) // 20, 3)]
    median = lifetime[len(lifetime) // 2]
    assert min(top) > 5 * median  # a few high-value customers
    assert max(len(v) for v in orders.values()) >= 10  # who buy again and again
    last_seen: dict[str, datetime] = {}
    for message in messages:
        if "userId" in message:
            moment = _when(message)
            last_seen[message["userId"]] = max(last_seen.get(message["userId"], moment), moment)
    cutoff = datetime.combine(END, time(), UTC) - timedelta(days=90)
    churned = [user for user, seen in last_seen.items() if seen < cutoff and user in orders]
    assert len(churned) >= PLAN.customers // 20


def test_more_customers_leave_the_first_ones_as_they_were() -> None:
    fewer = set(generate(DemoPlan(seed=9, end=END, customers=40)))
    more = set(generate(DemoPlan(seed=9, end=END, customers=60)))
    assert fewer < more
