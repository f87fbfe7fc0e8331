"""The batch SQL compiler of segment rules (`segments/sql.py`), on SQLite and PostgreSQL.

Profiles and timelines are written by the real pipeline (ingestion API, then
`apply_events`) or the profile service; each rule's members are checked by name, with
cases chosen so that a wrong reading of README's semantics would change the answer.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.dialects import postgresql

from clarion.core.database import Database
from clarion.profiles import service
from clarion.profiles.models import Profile, ProfileIdentity
from clarion.segments.parsing import parse_rule
from clarion.segments.rules import RfmThresholds, Rule, RuleContext
from clarion.segments.sql import anniversaries, inline_segments, members_query
from tests.conftest import Tenant
from tests.profiles.conftest import apply, ingest

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def ago(days: float = 0, **delta: float) -> datetime:
    """`days` (and more) before NOW."""
    return NOW - timedelta(days=days, **delta)


def track(event: str, user: str, when: datetime, **properties: Any) -> dict[str, Any]:
    """A track message from `user` at `when`."""
    return {
        "type": "track",
        "event": event,
        "userId": user,
        "properties": properties,
        "timestamp": when.isoformat(),
    }


def identify(user: str, when: datetime = NOW, **traits: Any) -> dict[str, Any]:
    """An identify message."""
    return {"type": "identify", "userId": user, "traits": traits, "timestamp": when.isoformat()}


@dataclass
class World:
    """One workspace: helpers to fill it through the pipeline and to ask the compiler."""

    client: httpx.AsyncClient
    database: Database
    tenant: Tenant

    async def send(self, *messages: dict[str, Any]) -> None:
        """Ingest the messages and apply them to profiles, as the pipeline does."""
        await apply(
            self.database,
            self.tenant,
            await ingest(self.client, self.database, self.tenant, list(messages)),
        )

    async def person(self, user: str, **traits: Any) -> None:
        """A profile made through the profile service (never seen by any event)."""
        async with self.database.write_session() as session:
            await service.upsert_profile(
                session,
                workspace_id=self.tenant.id,
                user_id=user,
                traits=traits,
                now=NOW,
                source="api",
            )
            await session.commit()

    async def names(self) -> dict[uuid.UUID, str]:
        """Each canonical profile's id and user id (its first, when merged)."""
        query = (
            select(Profile.id, Profile.canonical_id, ProfileIdentity.value)
            .join(ProfileIdentity, ProfileIdentity.profile_id == Profile.id)
            .where(Profile.workspace_id == self.tenant.id, ProfileIdentity.kind == "user_id")
            .order_by(ProfileIdentity.value)
        )
        async with self.database.read_session() as session:
            rows = (await session.execute(query)).all()
        names: dict[uuid.UUID, str] = {}
        for profile_id, canonical_id, value in rows:
            names.setdefault(canonical_id or profile_id, value)
        return names

    async def members(self, rule: Any, *, now: datetime = NOW, **context: Any) -> set[str]:
        """The user ids of the members of `rule` (JSON, or a parsed rule)."""
        parsed: Rule = rule if not isinstance(rule, dict | list) else parse_rule(rule)
        query = members_query(
            parsed,
            dialect=self.database.dialect,
            workspace_id=self.tenant.id,
            context=RuleContext(now=now, **context),
        )
        async with self.database.read_session() as session:
            ids = list((await session.scalars(query)).all())
        assert len(ids) == len(set(ids)), "a profile answered twice"
        names = await self.names()
        return {names[i] for i in ids}


@pytest.fixture
def world(client: httpx.AsyncClient, database: Database, tenant: Tenant) -> World:
    """The test's workspace."""
    return World(client, database, tenant)


def trait(path: str, operator: str, value: Any = None) -> dict[str, Any]:
    """A trait condition."""
    node: dict[str, Any] = {"type": "trait", "trait": path, "operator": operator}
    if operator != "exists":
        node["value"] = value
    return node


def prop(path: str, operator: str, value: Any = None) -> dict[str, Any]:
    """A property condition (in `where`)."""
    node: dict[str, Any] = {"type": "property", "property": path, "operator": operator}
    if operator != "exists":
        node["value"] = value
    return node


def negate(node: dict[str, Any]) -> dict[str, Any]:
    """`not` around a condition."""
    return {"type": "not", "condition": node}


# --- Traits -----------------------------------------------------------------------------------


@pytest.fixture
async def traits_world(world: World) -> World:
    await world.person(
        "ann",
        plan="pro",
        age=30,
        score=1.0,
        vip=True,
        tags=["a", 1, True],
        address={"city": "Paris", "zip": "75001"},
        nick="ab",
        **{'we"ird\\key': 1},
    )
    await world.person(
        "bob", plan="free", age="30", score=1, vip=1, tags="a,b", address="Paris", gone=None
    )
    await world.person("cid", name="Cid")
    await world.person("dan", plan="Pro", age=30.5, vip=False, tags=[True, "1"], nick="b")
    return world


EVERYONE = {"ann", "bob", "cid", "dan"}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (trait("plan", "eq", "pro"), {"ann"}),
        (trait("plan", "neq", "pro"), {"bob", "cid", "dan"}),  # missing holds neq
        (trait("age", "eq", 30), {"ann"}),  # "30" is a string
        (trait("age", "eq", "30"), {"bob"}),
        (trait("score", "eq", 1), {"ann", "bob"}),  # 1.0 = 1
        (trait("vip", "eq", True), {"ann"}),  # 1 is not true
        (trait("vip", "eq", 1), {"bob"}),  # true is not 1
        (trait("vip", "eq", False), {"dan"}),
        (trait("age", "gt", 29), {"ann", "dan"}),
        (trait("age", "gte", 30.5), {"dan"}),
        (trait("age", "lt", 30.5), {"ann"}),
        (trait("age", "lte", "30"), {"bob"}),  # strings only, against a string
        (trait("plan", "lt", "free"), {"dan"}),  # code points: "Pro" < "free"
        (trait("plan", "gte", "free"), {"ann", "bob"}),
        (trait("age", "between", [30, 31]), {"ann", "dan"}),
        (trait("plan", "between", ["a", "q"]), {"bob", "ann"}),
        (trait("plan", "in", ["pro", 1, True]), {"ann"}),
        (trait("vip", "in", [True, 1]), {"ann", "bob"}),
        (trait("score", "in", ["1", 2.0, 1.0]), {"ann", "bob"}),
        (trait("plan", "not_in", ["pro", "free"]), {"cid", "dan"}),
        (trait("tags", "contains", "a"), {"ann", "bob"}),  # an element, a substring
        (trait("tags", "contains", 1), {"ann"}),  # not true, not "1"
        (trait("tags", "contains", True), {"ann", "dan"}),
        (trait("tags", "contains", "1"), {"dan"}),
        (trait("plan", "contains", "o"), {"ann", "dan"}),
        (trait("plan", "contains", "P"), {"dan"}),  # case-sensitive
        (trait("nick", "starts_with", "a"), {"ann"}),
        (trait("nick", "starts_with", ""), {"ann", "dan"}),
        (trait("gone", "exists"), set()),  # JSON null is missing
        (trait("address", "exists"), {"ann", "bob"}),
        (trait("address.city", "exists"), {"ann"}),  # "Paris".city is missing
        (trait("address.city", "eq", "Paris"), {"ann"}),
        (trait("address.zip", "neq", "75001"), {"bob", "cid", "dan"}),
        (trait("tags.0", "exists"), set()),  # arrays are not followed by keys
        (trait('we"ird\\key', "eq", 1), {"ann"}),
        (negate(trait("age", "gt", 29)), {"bob", "cid"}),
        (negate(trait("nick", "starts_with", "a")), {"bob", "cid", "dan"}),
        ({"type": "all", "conditions": []}, EVERYONE),
        ({"type": "any", "conditions": []}, set()),
        (
            {"type": "any", "conditions": [trait("plan", "eq", "pro"), trait("vip", "eq", 1)]},
            {"ann", "bob"},
        ),
        ([["plan eq pro", "plan eq free"], ["age eq 30"]], {"ann"}),
        ([["age in 30,30.5"]], {"ann", "dan"}),
    ],
)
async def test_trait_operators(
    traits_world: World, condition: dict[str, Any] | list[Any], expected: set[str]
) -> None:
    assert await traits_world.members(condition) == expected
    if isinstance(condition, dict):
        # Every leaf is two-valued: `not` is the exact complement.
        assert await traits_world.members(negate(condition)) == EVERYONE - expected


# --- Calendar days --------------------------------------------------------------------------

# At 2026-02-28 20:00 UTC it is already 1 March in Kiritimati (UTC+14), still 28 February in
# Los Angeles, and 2026 is not a leap year.
EVENING = datetime(2026, 2, 28, 20, 0, tzinfo=UTC)
ZONES = frozenset({"Pacific/Kiritimati", "America/Los_Angeles", "Mars/Olympus"})


@pytest.fixture
async def calendar_world(world: World) -> World:
    both = {"day": "2026-02-27", "birthday": "1990-03-01", "feb28": "1990-02-28"}
    await world.person("utc", **both, leap="2000-02-29")
    await world.person("kiri", timezone="Pacific/Kiritimati", **both, leap="2000-02-29")
    await world.person(
        "la", timezone="America/Los_Angeles", day="2026-02-28T23:00:00Z", birthday="1990-02-28"
    )
    await world.person("mars", timezone="Mars/Olympus", day="2026-02-26", birthday="1990-03-02")
    fullwidth = "\uff12\uff10\uff10\uff10-02-29"  # not ASCII digits
    await world.person("bad", day="2026-2-27", birthday=19900301, leap=fullwidth)
    return world


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (trait("day", "within_last_days", 1), {"utc", "la"}),  # kiri: 28 Feb .. 1 Mar
        (trait("day", "within_last_days", 2), {"utc", "kiri", "la", "mars"}),
        (trait("day", "more_than_days_ago", 1), {"kiri", "mars"}),  # D < today - 1
        (trait("day", "more_than_days_ago", 2), set()),  # mars: 26 Feb < 26 Feb is false
        (trait("feb28", "anniversary_within_days", 1), {"utc"}),  # kiri: 1 .. 2 March
        (trait("birthday", "anniversary_within_days", 1), {"utc", "kiri", "la"}),
        (trait("birthday", "anniversary_within_days", 2), {"utc", "kiri", "la", "mars"}),
        # 29 February falls on 28 February in 2026: today in UTC, yesterday in Kiritimati.
        (trait("leap", "anniversary_within_days", 1), {"utc"}),
        (trait("leap", "anniversary_within_days", 364), {"utc", "kiri"}),
        (negate(trait("day", "within_last_days", 1)), {"kiri", "mars", "bad"}),
    ],
)
async def test_calendar_days_in_the_profile_time_zone(
    calendar_world: World, condition: dict[str, Any], expected: set[str]
) -> None:
    assert await calendar_world.members(condition, now=EVENING, time_zones=ZONES) == expected


async def test_a_zone_the_context_does_not_name_counts_as_utc(calendar_world: World) -> None:
    # Without the workspace's zones every profile's today is UTC's (28 February).
    condition = trait("feb28", "anniversary_within_days", 1)
    assert await calendar_world.members(condition, now=EVENING) == {"utc", "kiri"}


def test_anniversaries_fold_29_february_onto_28_in_common_years() -> None:
    assert anniversaries(datetime(2026, 2, 27).date(), 1) == ["02-27", "02-28", "02-29"]
    assert anniversaries(datetime(2028, 2, 27).date(), 1) == ["02-27", "02-28"]
    assert anniversaries(datetime(2028, 2, 27).date(), 2) == ["02-27", "02-28", "02-29"]
    assert len(anniversaries(datetime(2027, 3, 1).date(), 36_600)) == 366


# --- Profile times --------------------------------------------------------------------------


async def test_attribute_times(world: World) -> None:
    await world.send(
        identify("old", ago(40)),
        identify("old", ago(1)),
        identify("new", ago(2)),
        identify("edge", ago(10)),
    )
    await world.person("never")

    def attribute(name: str, operator: str, value: Any) -> dict[str, Any]:
        return {"type": "attribute", "attribute": name, "operator": operator, "value": value}

    assert await world.members(attribute("first_seen_at", "before", ago(10).isoformat())) == {"old"}
    assert await world.members(attribute("first_seen_at", "after", ago(10).isoformat())) == {"new"}
    # within_last_days: T >= now - N days, the edge included; more_than_days_ago: T < it.
    assert await world.members(attribute("first_seen_at", "within_last_days", 10)) == {
        "new",
        "edge",
    }
    assert await world.members(attribute("first_seen_at", "more_than_days_ago", 10)) == {"old"}
    assert await world.members(attribute("last_seen_at", "within_last_days", 1)) == {"old"}
    # Never seen: every time condition is false, its negation true.
    assert await world.members(negate(attribute("last_seen_at", "before", NOW.isoformat()))) == {
        "never"
    }


# --- Events ---------------------------------------------------------------------------------


async def test_event_counts_windows_and_where(world: World, other: World) -> None:
    await world.send(
        track("Viewed", "ann", ago(1), sku="a", price=10, **{'q"k': {"x": 1}}),
        track("Viewed", "ann", ago(5), sku="b", price="10"),
        track("Viewed", "ann", ago(30), sku="a", price=True),
        track("Viewed", "bob", ago(7), sku="a"),  # exactly 7 days ago: inside last_days 7
        track("Viewed", "bob", ago(7, microseconds=1), sku="a"),  # just outside
        track("Bought", "cid", ago(2)),
        {"type": "page", "name": "Viewed", "userId": "cid", "timestamp": ago(1).isoformat()},
    )
    # Another workspace's events never count, though its user ids are the same.
    await other.send(*[track("Viewed", "cid", ago(1)) for _ in range(3)])

    def performed(**fields: Any) -> dict[str, Any]:
        return {"type": "event", "event": "Viewed", **fields}

    assert await world.members(performed()) == {"ann", "bob"}
    assert await world.members(performed(operator="eq", count=0)) == {"cid"}
    assert await world.members(performed(operator="gte", count=3)) == {"ann"}
    assert await world.members(performed(operator="lt", count=3)) == {"bob", "cid"}
    assert await world.members(performed(operator="neq", count=2)) == {"ann", "cid"}
    assert await world.members(performed(window={"last_days": 7}, count=2)) == {"ann"}
    assert await world.members(performed(window={"last_days": 7}, operator="eq", count=1)) == {
        "bob"
    }
    # from <= t < to
    window = {"from": ago(7).isoformat(), "to": ago(1).isoformat()}
    assert await world.members(performed(window=window, operator="eq", count=1)) == {
        "ann",
        "bob",
    }
    assert await world.members(performed(where=prop("price", "eq", 10))) == {"ann"}
    assert await world.members(performed(where=prop("price", "eq", "10"))) == {"ann"}
    assert await world.members(performed(where=prop("price", "exists"), count=3)) == {"ann"}
    assert await world.members(performed(where=prop("price", "eq", True))) == {"ann"}
    assert await world.members(performed(where=prop("price", "eq", 1))) == set()
    assert await world.members(
        performed(where=negate(prop("sku", "eq", "a")), operator="eq", count=0)
    ) == {"bob", "cid"}
    assert await world.members(
        performed(where={"type": "any", "conditions": [prop("sku", "eq", "b")]})
    ) == {"ann"}
    assert await world.members({"type": "event", "event": "Bought"}) == {"cid"}
    # A key SQLite's JSON paths cannot spell is still read (through json_each).
    assert await world.members(performed(where=prop('q"k.x', "eq", 1))) == {"ann"}


@pytest.fixture
async def other(client: httpx.AsyncClient, database: Database, other_tenant: Tenant) -> World:
    """A second workspace."""
    return World(client, database, other_tenant)


async def test_merged_profiles_events_count_for_the_canonical_profile(world: World) -> None:
    await world.send(
        {
            "type": "track",
            "event": "Viewed",
            "anonymousId": "visitor",
            "properties": {"price": 5},
            "timestamp": ago(3).isoformat(),
        },
        track("Viewed", "ann", ago(2), price=7),
        track("Viewed", "bob", ago(2), price=1),
    )
    await world.send(
        {"type": "alias", "previousId": "visitor", "userId": "ann", "timestamp": ago(1).isoformat()}
    )
    rule = {"type": "event", "event": "Viewed", "count": 2}
    assert await world.members(rule) == {"ann"}
    total = {
        "type": "aggregate",
        "event": "Viewed",
        "property": "price",
        "function": "sum",
        "operator": "eq",
        "value": 12,
    }
    assert await world.members(total) == {"ann"}
    first = {
        "type": "occurrence",
        "event": "Viewed",
        "which": "first",
        "operator": "before",
        "value": ago(2.5).isoformat(),
    }
    assert await world.members(first) == {"ann"}


def aggregate(function: str, operator: str, value: Any, **fields: Any) -> dict[str, Any]:
    """An aggregate over the `amount` of `Paid` events."""
    return {
        "type": "aggregate",
        "event": "Paid",
        "property": "amount",
        "function": function,
        "operator": operator,
        "value": value,
        **fields,
    }


@pytest.fixture
async def paid_world(world: World) -> World:
    def paid(user: str, days: float, amount: Any = None, **more: Any) -> dict[str, Any]:
        properties = {} if amount is None else {"amount": amount}
        return track("Paid", user, ago(days), **properties, **more)

    await world.send(
        # ann: numbers 10 and 2.5; a string, a boolean, null and nothing are skipped.
        paid("ann", 1, 10),
        paid("ann", 2, 2.5),
        paid("ann", 3, "7"),
        paid("ann", 4, True),
        paid("ann", 5, None, note="no amount"),
        track("Paid", "ann", ago(6), amount=None),
        # bob: distinct values 1 = 1.0, "1", true: three.
        paid("bob", 1, 1),
        paid("bob", 2, 1.0),
        paid("bob", 3, "1"),
        paid("bob", 4, True),
        paid("bob", 5, [1]),
        # cid: only values no function reads as a number.
        paid("cid", 1, "x"),
        # dan: 0.1 + 0.2 sums to 0.30000000000000004; 5e-7 rounds to 0 (Python's round).
        paid("dan", 1, 0.1),
        paid("dan", 2, 0.2),
        paid("eve", 1, 0.0000005),
        paid("eve", 40, 100),
    )
    await world.person("fay")  # no events at all
    return world


PAYERS = {"ann", "bob", "cid", "dan", "eve", "fay"}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (aggregate("sum", "eq", 12.5), {"ann"}),
        (aggregate("sum", "eq", 0), {"cid", "fay"}),  # the sum of nothing is 0
        (aggregate("sum", "eq", 2), {"bob"}),
        (aggregate("sum", "eq", 0.3), {"dan"}),
        (aggregate("sum", "eq", 100), {"eve"}),  # 100.0000005 rounds to 100.0
        (aggregate("sum", "eq", 100, window={"last_days": 30}), set()),
        (aggregate("sum", "eq", 0, window={"last_days": 30}), {"cid", "eve", "fay"}),
        (aggregate("sum", "gt", 0, window={"last_days": 30}), {"ann", "bob", "dan"}),
        (aggregate("sum", "between", [0.3, 2]), {"bob", "dan"}),
        (aggregate("avg", "eq", 6.25), {"ann"}),
        (aggregate("avg", "eq", 0.15), {"dan"}),
        # avg, min and max of nothing make every comparison false, even neq and lt.
        (aggregate("avg", "neq", 1), {"ann", "dan", "eve"}),
        (aggregate("avg", "lt", 1000), {"ann", "bob", "dan", "eve"}),
        (aggregate("min", "eq", 2.5), {"ann"}),
        (aggregate("max", "gte", 10), {"ann", "eve"}),
        (aggregate("max", "lt", 10), {"bob", "dan"}),
        (aggregate("min", "between", [0.1, 1]), {"bob", "dan"}),
        (aggregate("count_distinct", "eq", 3), {"bob"}),
        (aggregate("count_distinct", "eq", 4), {"ann"}),  # 10, 2.5, "7", true
        (aggregate("count_distinct", "eq", 0), {"fay"}),
        (aggregate("count_distinct", "eq", 1), {"cid"}),
        (aggregate("count_distinct", "eq", 2), {"dan", "eve"}),
        (aggregate("sum", "eq", 10, where=prop("amount", "gt", 5)), {"ann"}),
    ],
)
async def test_aggregates(paid_world: World, condition: dict[str, Any], expected: set[str]) -> None:
    assert await paid_world.members(condition) == expected
    assert await paid_world.members(negate(condition)) == PAYERS - expected


async def test_sum_rounds_as_python_does(paid_world: World) -> None:
    # round(5e-7, 6) is 0.0 in Python (5e-7 is a little under the tie); SQL's ROUND says 1e-6.
    recent = {"window": {"last_days": 30}}
    assert "eve" in await paid_world.members(aggregate("sum", "eq", 0, **recent))
    assert "eve" not in await paid_world.members(aggregate("sum", "gt", 0, **recent))
    assert "eve" in await paid_world.members(aggregate("avg", "eq", 0, **recent))


async def test_occurrences(world: World) -> None:
    await world.send(
        track("Opened", "ann", ago(20)),
        track("Opened", "ann", ago(2)),
        track("Opened", "bob", ago(9)),
        track("Closed", "cid", ago(1)),
    )

    def occurrence(which: str, operator: str, value: Any) -> dict[str, Any]:
        return {
            "type": "occurrence",
            "event": "Opened",
            "which": which,
            "operator": operator,
            "value": value,
        }

    assert await world.members(occurrence("first", "before", ago(10).isoformat())) == {"ann"}
    assert await world.members(occurrence("last", "within_last_days", 2)) == {"ann"}
    assert await world.members(occurrence("last", "more_than_days_ago", 5)) == {"bob"}
    assert await world.members(occurrence("first", "after", ago(25).isoformat())) == {
        "ann",
        "bob",
    }
    # Never performed: false, and its negation true.
    assert await world.members(negate(occurrence("last", "after", ago(100).isoformat()))) == {"cid"}


# --- RFM --------------------------------------------------------------------------------------

THRESHOLDS = RfmThresholds(
    currency="USD",
    recency=(
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 5, tzinfo=UTC),
        datetime(2026, 1, 10, tzinfo=UTC),
        datetime(2026, 1, 15, tzinfo=UTC),
    ),
    frequency=(1, 2, 3, 4),
    monetary=(1000, 2000, 3000, 4000),
)


async def test_rfm_scores(world: World) -> None:
    def order(user: str, when: datetime, revenue: float, currency: str = "USD") -> dict[str, Any]:
        return track("Order Completed", user, when, revenue=revenue, currency=currency)

    jan = datetime(2026, 1, 10, tzinfo=UTC)
    await world.send(
        # ann: last order exactly on a threshold (not above it): recency 3; 2 orders: 2;
        # $25.00: monetary 3.
        order("ann", jan - timedelta(days=3), 5),
        order("ann", jan, 20),
        # bob: a microsecond after it: recency 4; 5 orders: 5; euros only: monetary 1.
        *[
            order("bob", jan + timedelta(microseconds=1) - timedelta(days=i), 100, "EUR")
            for i in range(5)
        ],
        track("Viewed", "cid", jan),  # no orders: no scores
    )
    assert await world.members({"type": "rfm", "recency": [3]}, rfm=THRESHOLDS) == {"ann"}
    assert await world.members({"type": "rfm", "recency": [4]}, rfm=THRESHOLDS) == {"bob"}
    assert await world.members({"type": "rfm", "frequency": [2, 5]}, rfm=THRESHOLDS) == {
        "ann",
        "bob",
    }
    assert await world.members({"type": "rfm", "monetary": [1]}, rfm=THRESHOLDS) == {"bob"}
    assert await world.members(
        {"type": "rfm", "recency": [3, 4], "frequency": [5], "monetary": [1]}, rfm=THRESHOLDS
    ) == {"bob"}
    assert await world.members({"type": "rfm", "monetary": [3]}, rfm=THRESHOLDS) == {"ann"}
    # No thresholds yet: no scores, the condition is false (its negation true for all).
    assert await world.members({"type": "rfm", "frequency": [2]}) == set()
    assert await world.members(
        negate({"type": "rfm", "frequency": [1, 2, 3, 4, 5]}), rfm=THRESHOLDS
    ) == {"cid"}


# --- Segment references ---------------------------------------------------------------------


async def test_segment_references_are_inlined(traits_world: World) -> None:
    pro = parse_rule(trait("plan", "eq", "pro"))
    pro_or_bob = parse_rule(
        {"type": "any", "conditions": [{"type": "segment", "segment_id": 1}, trait("vip", "eq", 1)]}
    )
    segments = {1: pro, 2: pro_or_bob}
    assert await traits_world.members({"type": "segment", "segment_id": 2}, segments=segments) == {
        "ann",
        "bob",
    }
    # A missing segment matches no one.
    assert await traits_world.members({"type": "segment", "segment_id": 9}) == set()
    assert await traits_world.members(negate({"type": "segment", "segment_id": 9})) == EVERYONE
    # A cycle (refused on save) ends at the depth limit instead of recursing forever.
    looping = {3: parse_rule(negate({"type": "segment", "segment_id": 3}))}
    # 32 levels of `not` around false, as predicate.py follows references.
    assert (
        await traits_world.members({"type": "segment", "segment_id": 3}, segments=looping) == set()
    )


def test_inlining_shares_each_segment_tree() -> None:
    leaf = parse_rule(trait("plan", "eq", "pro"))
    twice = parse_rule({"type": "all", "conditions": [{"type": "segment", "segment_id": 1}] * 2})
    inlined = inline_segments(twice, {1: leaf})
    assert inlined == parse_rule({"type": "all", "conditions": [trait("plan", "eq", "pro")] * 2})
    with pytest.raises(ValueError, match="nodes once inlined"):
        doubling = {
            1: parse_rule({"type": "all", "conditions": [{"type": "segment", "segment_id": 1}] * 2})
        }
        inline_segments(parse_rule({"type": "segment", "segment_id": 1}), doubling)


async def test_merged_away_profiles_are_never_members(world: World) -> None:
    await world.send(
        identify("ann", ago(3), plan="pro"),
        {
            "type": "identify",
            "anonymousId": "visitor",
            "traits": {"plan": "pro"},
            "timestamp": ago(3).isoformat(),
        },
    )
    await world.send(
        {"type": "alias", "previousId": "visitor", "userId": "ann", "timestamp": ago(1).isoformat()}
    )
    rule = parse_rule(trait("plan", "eq", "pro"))
    query = members_query(
        rule,
        dialect=world.database.dialect,
        workspace_id=world.tenant.id,
        context=RuleContext(now=NOW),
    )
    async with world.database.read_session() as session:
        ids = list((await session.scalars(query)).all())
    assert len(ids) == 1
    assert await world.members(rule) == {"ann"}


def test_postgresql_orders_strings_by_code_point() -> None:
    # The test databases collate as C.UTF-8 already; production ones may not.
    rule = parse_rule(trait("plan", "lt", "free"))
    query = members_query(rule, dialect="postgresql", workspace_id=1, context=RuleContext(now=NOW))
    assert 'COLLATE "C"' in str(query.compile(dialect=postgresql.dialect()))


def test_unknown_dialect_is_refused() -> None:
    with pytest.raises(ValueError, match="dialect"):
        members_query(
            parse_rule(trait("plan", "eq", "pro")),
            dialect="mysql",
            workspace_id=1,
            context=RuleContext(now=NOW),
        )
