"""A year of the demo shop as Segment messages, generated lazily and deterministically.

Each customer first browses anonymously (page views, `Product Viewed`), signs up (a `Sign Up`
page and an `identify` carrying the same anonymousId), then visits now and then following
the Segment e-commerce spec: `Products Searched`, `Product Viewed`, `Product Added`,
`Cart Viewed`, `Checkout Started` and `Order Completed`, or leaves a cart behind. Visitors
who never sign up only browse. Every actor has its own random stream and every messageId is
derived from the seed, the actor and the message's position, so the same seed and end date
give byte-identical messages.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any

import orjson

from clarion.demo.catalog import CURRENCY, SHOP_URL, Product, categories, decimal, load_catalog
from clarion.demo.customers import (
    PERSONAS,
    Customer,
    Persona,
    actor_rng,
    draw_region,
    generate_customers,
    stable_id,
    zone_named,
)
from clarion.demo.rhythm import Calendar

DEFAULT_CUSTOMERS = 2000
LIBRARY = {"name": "clarion-demo", "version": "1.0"}
FREE_SHIPPING_CENTS = 4000
SHIPPING_CENTS = 495
SESSION_LIMIT = timedelta(hours=1)  # no visit lasts longer; none may end after the window


@dataclass(frozen=True, slots=True)
class DemoPlan:
    """What to generate: the seed, the last day (exclusive) and how many customers."""

    seed: int
    end: date
    customers: int = DEFAULT_CUSTOMERS

    @property
    def visitors(self) -> int:
        """Anonymous visitors who never sign up."""
        return self.customers // 2


def generate(plan: DemoPlan) -> Iterator[bytes]:
    """Every message of the demo year as Segment JSON, customer by customer."""
    calendar = Calendar(plan.end)
    for customer in generate_customers(plan.seed, calendar, plan.customers):
        yield from _encoded(_customer_history(plan.seed, calendar, customer))
    for index in range(plan.visitors):
        yield from _encoded(_visitor_history(plan.seed, calendar, index))


def _encoded(messages: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    for message in messages:
        yield orjson.dumps(message)


class _Actor:
    """Builds the messages of one customer or visitor, numbering them for their ids."""

    def __init__(self, seed: int, key: str, anonymous_id: str, locale: str, timezone: str) -> None:
        self.seed, self.key = seed, key
        self._prefix = f"demo-{stable_id(seed, key).hex[:20]}-"
        self.anonymous_id = anonymous_id
        self.user_id: str | None = None
        self.context = {"library": LIBRARY, "locale": locale, "timezone": timezone}
        self.zone = zone_named(timezone)
        self.orders = 0
        self._count = 0

    def message(self, kind: str, at: datetime, body: dict[str, Any]) -> dict[str, Any]:
        """A message of `kind` at `at`, with the actor's ids and context."""
        self._count += 1
        message: dict[str, Any] = {
            "type": kind,
            "messageId": f"{self._prefix}{self._count}",
            "anonymousId": self.anonymous_id,
        }
        if self.user_id is not None:
            message["userId"] = self.user_id
        message["timestamp"] = _iso(at)
        message.update(body)
        message["context"] = self.context
        return message

    def page(self, at: datetime, name: str, path: str) -> dict[str, Any]:
        """A page view (`name` is the page's name)."""
        properties = {"path": path, "url": f"{SHOP_URL}{path}", "title": f"{name} | Clarion Gifts"}
        return self.message("page", at, {"name": name, "properties": properties})

    def track(self, at: datetime, event: str, properties: dict[str, Any]) -> dict[str, Any]:
        """A track call."""
        return self.message("track", at, {"event": event, "properties": properties})

    def stable(self, *parts: object) -> str:
        """A short id for something of this actor's (a cart, an order)."""
        return stable_id(self.seed, self.key, *parts).hex[:16]


def _iso(at: datetime) -> str:
    """`2025-12-01T19:04:05.123Z`: UTC, milliseconds, as Segment's libraries send it."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Clock:
    """Time within one visit: each step a few seconds to a few minutes after the last."""

    def __init__(self, rng: random.Random, start: datetime) -> None:
        self.rng, self.now = rng, start

    def tick(self) -> datetime:
        """The time of the visit's next step."""
        self.now += timedelta(seconds=round(8 + 142 * self.rng.random(), 3))
        return self.now


def _customer_history(
    seed: int, calendar: Calendar, customer: Customer
) -> Iterator[dict[str, Any]]:
    rng = random.Random(customer.seed)  # noqa: S311 - a simulation, not secrets
    key = f"customer/{customer.index}"
    actor = _Actor(seed, key, customer.anonymous_id, customer.locale, customer.timezone)
    signed_up = customer.signed_up_day
    for day in calendar.pick_days(
        rng, first=max(signed_up - 14, 0), last=signed_up - 1, count=rng.randint(1, 3)
    ):
        yield from _browse(actor, rng, calendar, day, customer.favourite_category)
    sign_up = calendar.moment(rng, signed_up, customer.zone)
    yield from _sign_up(actor, rng, sign_up, customer)
    _, rate, buy, abandon, items = PERSONAS[customer.persona]
    tenure = customer.last_active_day - signed_up
    mean = rate * tenure
    visits = max(1, round(rng.gauss(mean, math.sqrt(mean))))
    days = calendar.pick_days(rng, first=signed_up + 1, last=customer.last_active_day, count=visits)
    for number, day in enumerate(days):
        start = calendar.moment(rng, day, customer.zone)
        if start + SESSION_LIMIT >= calendar.end_utc:
            continue
        roll = rng.random()
        if roll < buy * calendar.season(day):
            kind = "order"
        else:
            kind = "cart" if roll < buy + abandon else "browse"
        shop = _Visit(actor, rng, _Clock(rng, start), customer, number)
        yield from shop.run(kind, items, calendar.days[day])


def _visitor_history(seed: int, calendar: Calendar, index: int) -> Iterator[dict[str, Any]]:
    rng = actor_rng(seed, "visitor", index)
    _, region = draw_region(rng)
    anonymous_id = str(stable_id(seed, "visitor", index))
    actor = _Actor(seed, f"visitor/{index}", anonymous_id, region.locale, region.zone)
    favourite = rng.choice(categories())
    for day in calendar.pick_days(
        rng, first=0, last=len(calendar.days) - 1, count=rng.randint(1, 3)
    ):
        yield from _browse(actor, rng, calendar, day, favourite)


def _browse(
    actor: _Actor, rng: random.Random, calendar: Calendar, day: int, favourite: str
) -> Iterator[dict[str, Any]]:
    """An anonymous visit: a landing page and a few products viewed."""
    start = calendar.moment(rng, day, actor.zone)
    if start + SESSION_LIMIT >= calendar.end_utc:
        return
    clock = _Clock(rng, start)
    month = calendar.days[day].month
    if rng.random() < 0.5:
        yield actor.page(clock.tick(), "Home", "/")
    else:
        yield actor.page(clock.tick(), favourite, f"/categories/{_slug(favourite)}")
    for product in _pick_products(rng, favourite, month, rng.randint(1, 3)):
        yield actor.track(clock.tick(), "Product Viewed", _viewed(product))


def _sign_up(
    actor: _Actor, rng: random.Random, at: datetime, customer: Customer
) -> Iterator[dict[str, Any]]:
    clock = _Clock(rng, at)
    yield actor.page(clock.tick(), "Sign Up", "/account/sign-up")
    created_at = clock.tick()
    actor.user_id = customer.user_id
    yield actor.message("identify", created_at, {"traits": _traits(customer, created_at)})
    yield actor.page(clock.tick(), "Home", "/")


def _traits(customer: Customer, created_at: datetime) -> dict[str, Any]:
    traits: dict[str, Any] = {
        "email": customer.email,
        "first_name": customer.first_name,
        "last_name": customer.last_name,
    }
    if customer.phone is not None:
        traits["phone"] = customer.phone
    traits.update(
        timezone=customer.timezone,
        locale=customer.locale,
        birthday=customer.birthday.isoformat(),
        address={"country": customer.country},
        created_at=_iso(created_at),
    )
    return traits


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).replace("---", "-")


def _viewed(product: Product) -> dict[str, Any]:
    return {**product.properties(), "currency": CURRENCY}


@cache
def _product_weights(favourite: str, month: int) -> tuple[float, ...]:
    """Cumulative weights of the catalog for a customer: popular products, their favourite
    category, Christmas in November and December, warmth in winter."""
    weights = []
    for product in load_catalog():
        weight = float(product.popularity)
        if product.category == favourite:
            weight *= 3
        if product.category == "Christmas":
            weight *= 6 if month in (11, 12) else 0.15
        elif product.category == "Cosy & Comfort" and month in (10, 11, 12, 1, 2):
            weight *= 2
        weights.append(weight)
    total, cumulative = 0.0, []
    for weight in weights:
        total += weight
        cumulative.append(total)
    return tuple(cumulative)


def _pick_products(rng: random.Random, favourite: str, month: int, count: int) -> list[Product]:
    """`count` different products, the customer's taste and the season considered."""
    chosen: dict[str, Product] = {}
    weights = _product_weights(favourite, month)
    for product in rng.choices(load_catalog(), cum_weights=weights, k=count * 2):
        chosen.setdefault(product.product_id, product)
    return list(chosen.values())[:count]


class _Visit:
    """A signed-in customer's visit: browsing, and perhaps a cart or an order."""

    def __init__(
        self, actor: _Actor, rng: random.Random, clock: _Clock, customer: Customer, number: int
    ) -> None:
        self.actor, self.rng, self.clock = actor, rng, clock
        self.customer, self.number = customer, number

    def run(self, kind: str, items: tuple[int, int], day: date) -> Iterator[dict[str, Any]]:
        """The visit's messages; `kind` is `browse`, `cart` (abandoned) or `order`."""
        actor, rng, favourite = self.actor, self.rng, self.customer.favourite_category
        yield actor.page(self.clock.tick(), "Home", "/")
        viewed = _pick_products(rng, favourite, day.month, rng.randint(1, 4))
        if rng.random() < 0.4:
            query = " ".join(viewed[0].name.lower().split()[-2:])
            yield actor.track(self.clock.tick(), "Products Searched", {"query": query})
        for product in viewed:
            yield actor.track(self.clock.tick(), "Product Viewed", _viewed(product))
        if kind == "browse":
            return
        wanted = rng.randint(*items)
        basket = viewed[:wanted]
        if len(basket) < wanted:
            extra = _pick_products(rng, favourite, day.month, wanted * 2)
            basket += [p for p in extra if p not in basket][: wanted - len(basket)]
        yield from self._checkout(kind, basket, day)

    def _checkout(self, kind: str, basket: list[Product], day: date) -> Iterator[dict[str, Any]]:
        actor, rng, tick = self.actor, self.rng, self.clock.tick
        cart_id = actor.stable("cart", self.number)
        most = 4 if self.customer.persona is Persona.LOYAL else 2
        lines = [(product, rng.choice((1, 1, 1, 2, 2, 3, most))) for product in basket]
        for position, (product, quantity) in enumerate(lines, start=1):
            added = {"cart_id": cart_id, **_line(product, quantity), "position": position}
            yield actor.track(tick(), "Product Added", {**added, "currency": CURRENCY})
        products = [_line(product, quantity) for product, quantity in lines]
        yield actor.track(tick(), "Cart Viewed", {"cart_id": cart_id, "products": products})
        if kind == "cart" and rng.random() < 0.55:
            return  # abandoned in the cart
        order_id = f"ord_{actor.stable('order', self.number)}"
        amounts = _amounts(lines, self._coupon(day))
        started = {
            "order_id": order_id,
            "value": decimal(amounts.subtotal),
            "revenue": decimal(amounts.revenue),
            "currency": CURRENCY,
            "products": products,
        }
        yield actor.track(tick(), "Checkout Started", started)
        if kind == "cart":
            return  # abandoned at checkout
        self.actor.orders += 1
        yield actor.track(tick(), "Order Completed", _order(order_id, amounts, products))

    def _coupon(self, day: date) -> tuple[str, int] | None:
        """A discount code and its percentage, when the customer uses one."""
        if day.month == 12 and day.day <= 22 and self.rng.random() < 0.3:
            return "XMAS15", 15
        if self.actor.orders == 0 and self.rng.random() < 0.4:
            return "WELCOME10", 10
        return None


@dataclass(frozen=True, slots=True)
class _Amounts:
    """An order's money in minor units: revenue is the subtotal less the discount, and the
    total adds shipping (prices include tax)."""

    subtotal: int
    discount: int
    coupon: str | None
    shipping: int

    @property
    def revenue(self) -> int:
        return self.subtotal - self.discount

    @property
    def total(self) -> int:
        return self.revenue + self.shipping


def _amounts(lines: list[tuple[Product, int]], coupon: tuple[str, int] | None) -> _Amounts:
    subtotal = sum(product.price_cents * quantity for product, quantity in lines)
    discount = subtotal * coupon[1] // 100 if coupon else 0
    shipping = 0 if subtotal - discount >= FREE_SHIPPING_CENTS else SHIPPING_CENTS
    return _Amounts(subtotal, discount, coupon[0] if coupon else None, shipping)


def _line(product: Product, quantity: int) -> dict[str, Any]:
    return {**product.properties(), "quantity": quantity}


def _order(order_id: str, amounts: _Amounts, products: list[dict[str, Any]]) -> dict[str, Any]:
    order: dict[str, Any] = {
        "order_id": order_id,
        "affiliation": "Clarion Gifts",
        "subtotal": decimal(amounts.subtotal),
        "discount": decimal(amounts.discount),
        "shipping": decimal(amounts.shipping),
        "tax": 0.0,
        "revenue": decimal(amounts.revenue),
        "total": decimal(amounts.total),
        "currency": CURRENCY,
        "products": products,
    }
    if amounts.coupon is not None:
        order["coupon"] = amounts.coupon
    return order
