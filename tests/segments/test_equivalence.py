"""The two compilers agree: for random rules over random profiles (traits of every JSON kind,
merge trees, events with random properties and times on window edges), the SQL membership
over the database equals the in-memory predicate over aggregates built from the same events.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clarion.core.database import Database
from clarion.ingest.models import Event
from clarion.profiles.computed import empty
from clarion.profiles.models import Profile, ProfileEvent
from clarion.segments import aggregates, predicate
from clarion.segments.parsing import parse_rule
from clarion.segments.rules import RfmThresholds, Rule, RuleContext
from clarion.segments.sql import members_query
from tests.conftest import make_tenant

NOW = datetime(2026, 11, 22, 15, 30, tzinfo=UTC)
EVENTS = ["Order Completed", "Product Viewed"]
TRAIT_PATHS = ["plan", "age", "score", "tags", "vip", "birthday", "address.city", "address"]
PROPERTIES = ["revenue", "sku", "qty"]
ZONES = ["Europe/Paris", "America/New_York", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Nope/X"]
DAYS = [1, 2, 7, 30, 365]

# --- Values ----------------------------------------------------------------------------------

texts = st.sampled_from(["", "a", "ab", "b", "pro", "Pro", "1", "2026-11-20", "1990-11-25", "é"])
dates = st.sampled_from(
    [
        "2026-11-22",
        "2026-11-21",
        "2026-11-15",
        "2026-10-23",
        "1990-11-23",
        "1992-02-29",
        "2000-11-29",
        "2026-11-23T01:00:00Z",
        "11/22/2026",
    ]
)
numbers = st.one_of(st.integers(-3, 40), st.sampled_from([0.5, 1.0, 2.25, -1.5, 19.99, 30.25]))
scalars = st.one_of(st.booleans(), numbers, texts, dates)
documents = st.one_of(
    st.none(),
    scalars,
    st.lists(scalars, max_size=3),
    st.fixed_dictionaries({}, optional={"city": scalars}),
)


def traits_strategy() -> st.SearchStrategy[dict[str, Any]]:
    keys = ["plan", "age", "score", "tags", "vip", "birthday", "address"]
    return st.dictionaries(st.sampled_from(keys), documents, max_size=6).flatmap(
        lambda traits: st.one_of(
            st.just(traits), st.sampled_from(ZONES).map(lambda zone: {**traits, "timezone": zone})
        )
    )


properties = st.fixed_dictionaries(
    {},
    optional={
        "revenue": st.one_of(numbers, texts, st.booleans()),
        "sku": st.one_of(texts, st.integers(0, 3), st.sampled_from([1.0, 2.0])),
        "qty": st.one_of(st.integers(0, 3), st.booleans(), st.none()),
    },
)

# --- Rules -----------------------------------------------------------------------------------


@st.composite
def compare(draw: st.DrawFn, source: str) -> dict[str, Any]:
    paths = TRAIT_PATHS if source == "trait" else PROPERTIES
    operators = [
        "eq",
        "neq",
        "gt",
        "gte",
        "lt",
        "lte",
        "in",
        "not_in",
        "contains",
        "starts_with",
        "exists",
        "between",
    ] + (
        ["within_last_days", "more_than_days_ago", "anniversary_within_days"]
        if source == "trait"
        else []
    )
    operator = draw(st.sampled_from(operators))
    node: dict[str, Any] = {"type": source, source: draw(st.sampled_from(paths))}
    node["operator"] = operator
    if operator in ("eq", "neq", "contains"):
        node["value"] = draw(scalars)
    elif operator in ("gt", "gte", "lt", "lte"):
        node["value"] = draw(st.one_of(numbers, texts, dates))
    elif operator == "starts_with":
        node["value"] = draw(st.one_of(texts, dates))
    elif operator in ("in", "not_in"):
        node["value"] = draw(st.lists(scalars, min_size=1, max_size=3))
    elif operator == "between":
        pair = draw(
            st.one_of(
                st.lists(numbers, min_size=2, max_size=2),
                st.lists(st.one_of(texts, dates), min_size=2, max_size=2),
            )
        )
        node["value"] = sorted(pair)
    elif operator != "exists":
        node["value"] = draw(st.sampled_from([1, 2, 6, 7, 30, 400]))
    return node


def where_strategy() -> st.SearchStrategy[dict[str, Any] | None]:
    leaf = compare("property")
    return st.one_of(
        st.none(),
        leaf,
        st.builds(lambda a, b: {"type": "any", "conditions": [a, b]}, leaf, leaf),
        leaf.map(lambda a: {"type": "not", "condition": a}),
    )


windows = st.one_of(
    st.none(),
    st.sampled_from(DAYS).map(lambda days: {"last_days": days}),
    st.sampled_from([("2026-11-01", "2026-11-21"), ("2026-10-23T15:30:00Z", "2026-11-22")]).map(
        lambda pair: {"from": pair[0], "to": pair[1]}
    ),
)
time_values = st.one_of(
    st.sampled_from(DAYS).map(lambda days: ("days", days)),
    st.sampled_from(["2026-11-21T15:30:00Z", "2026-10-01", "2026-11-22T15:30:00Z"]).map(
        lambda moment: ("moment", moment)
    ),
)


def _time(node: dict[str, Any], value: tuple[str, Any], operators: list[str]) -> dict[str, Any]:
    kind, raw = value
    pick = [op for op in operators if (op in ("before", "after")) == (kind == "moment")]
    node["operator"] = pick[hash(raw) % len(pick)]
    node["value"] = raw
    return node


@st.composite
def behaviour(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["event", "aggregate", "occurrence", "attribute"]))
    node: dict[str, Any] = {"type": kind}
    if kind == "attribute":
        node["attribute"] = draw(st.sampled_from(["first_seen_at", "last_seen_at"]))
        return _time(
            node, draw(time_values), ["before", "after", "within_last_days", "more_than_days_ago"]
        )
    node["event"] = draw(st.sampled_from(EVENTS))
    where = draw(where_strategy())
    if where is not None:
        node["where"] = where
    if kind == "occurrence":
        node["which"] = draw(st.sampled_from(["first", "last"]))
        return _time(
            node, draw(time_values), ["before", "after", "within_last_days", "more_than_days_ago"]
        )
    window = draw(windows)
    if window is not None:
        node["window"] = window
    operator = draw(st.sampled_from(["eq", "neq", "gt", "gte", "lt", "lte"]))
    node["operator"] = operator
    if kind == "event":
        node["count"] = draw(st.integers(0, 3))
        return node
    node["property"] = draw(st.sampled_from(PROPERTIES))
    node["function"] = draw(st.sampled_from(["sum", "avg", "min", "max", "count_distinct"]))
    if draw(st.booleans()):
        node["operator"] = "between"
        node["value"] = sorted(draw(st.lists(numbers, min_size=2, max_size=2)))
    else:
        node["value"] = draw(st.sampled_from([0, 1, 2, 2.25, 10, 30.25, 50.24]))
    return node


scores = st.lists(st.integers(1, 5), max_size=3, unique=True)
rfm = st.builds(
    lambda r, f, m: {"type": "rfm", "recency": r or [1, 5], "frequency": f, "monetary": m},
    scores,
    scores,
    scores,
)
leaves = st.one_of(
    compare("trait"),
    behaviour(),
    rfm,
    st.sampled_from([1, 2]).map(lambda i: {"type": "segment", "segment_id": i}),
    st.sampled_from([1, 10, 50, 99]).map(
        lambda p: {"type": "top_percent", "measure": "lifetime_value", "percent": p}
    ),
)
rules = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda c: {"type": "all", "conditions": c}),
        st.lists(children, max_size=3).map(lambda c: {"type": "any", "conditions": c}),
        children.map(lambda c: {"type": "not", "condition": c}),
    ),
    max_leaves=5,
)

SEGMENTS: dict[int, Rule] = {
    1: parse_rule({"type": "trait", "trait": "plan", "operator": "eq", "value": "pro"}),
    2: parse_rule(
        {"type": "event", "event": "Order Completed", "count": 2, "window": {"last_days": 30}}
    ),
}
RFM = RfmThresholds(
    currency="USD",
    recency=tuple(NOW - timedelta(days=d) for d in (60, 30, 7, 1)),
    frequency=(1, 1, 2, 3),
    monetary=(500, 1_000, 2_000, 5_000),
    monetary_percentiles=tuple(float(60 * k) for k in range(1, 100)),
)

# --- Profiles --------------------------------------------------------------------------------

offsets = st.one_of(
    st.sampled_from(DAYS).map(lambda days: timedelta(days=-days)),  # exactly on window edges
    st.integers(-70 * 86_400, 2 * 86_400).map(lambda seconds: timedelta(seconds=seconds)),
)
moments = offsets.map(lambda offset: NOW + offset)


@dataclass
class Person:
    """A canonical profile, the profiles merged into it, and its events by tree row."""

    traits: dict[str, Any]
    computed: dict[str, Any]
    first_seen_at: datetime | None
    last_seen_at: datetime | None
    events: list[tuple[int, str, datetime, dict[str, Any]]] = field(default_factory=list)
    absorbed: int = 0


@st.composite
def people(draw: st.DrawFn) -> list[Person]:
    found = []
    for _ in range(draw(st.integers(1, 4))):
        computed = empty()
        orders = draw(st.integers(0, 4))
        if orders:
            computed["orders"] = orders
            computed["last_order_at"] = draw(moments).isoformat()
            computed["revenue"] = {"USD": draw(st.integers(0, 6_000))}
        person = Person(
            traits=draw(traits_strategy()),
            computed=computed,
            first_seen_at=draw(st.one_of(st.none(), moments)),
            last_seen_at=draw(st.one_of(st.none(), moments)),
            absorbed=draw(st.integers(0, 2)),
        )
        for _ in range(draw(st.integers(0, 6))):
            person.events.append(
                (
                    draw(st.integers(0, person.absorbed)),
                    draw(st.sampled_from([*EVENTS, "Other"])),
                    draw(moments),
                    draw(properties),
                )
            )
        found.append(person)
    return found


async def store(database: Database, workspace_id: int, population: list[Person]) -> list[uuid.UUID]:
    """Write the people as the pipeline would have; their canonical ids, in order."""
    ids = []
    async with database.write_session() as session:
        for person in population:
            canonical = uuid.uuid4()
            rows = [canonical] + [uuid.uuid4() for _ in range(person.absorbed)]
            for n, row_id in enumerate(rows):
                session.add(
                    Profile(
                        id=row_id,
                        workspace_id=workspace_id,
                        canonical_id=None if n == 0 else canonical,
                        traits=person.traits if n == 0 else {},
                        trait_times={},
                        computed=person.computed if n == 0 else empty(),
                        first_seen_at=person.first_seen_at if n == 0 else None,
                        last_seen_at=person.last_seen_at if n == 0 else None,
                        created_at=NOW,
                        updated_at=NOW,
                    )
                )
            await session.flush()
            for row, name, moment, props in person.events:
                event = Event(
                    workspace_id=workspace_id,
                    source_id=uuid.uuid4(),
                    message_id=uuid.uuid4().hex,
                    type="track" if name != "Other" else "page",
                    name=name if name != "Other" else EVENTS[0],
                    timestamp=moment,
                    received_at=NOW,
                    properties=props,
                )
                session.add(event)
                await session.flush()
                session.add(
                    ProfileEvent(
                        workspace_id=workspace_id,
                        profile_id=rows[row],
                        event_id=event.id,
                        timestamp=moment,
                        applied_at=NOW,
                    )
                )
            ids.append(canonical)
        await session.commit()
    return ids


def in_memory(rule: Rule, person: Person, context: RuleContext) -> bool:
    specs = aggregates.specs_for([rule, *SEGMENTS.values()])
    tracked = [
        aggregates.TrackEvent(name, moment, props)
        for _, name, moment, props in person.events
        if name != "Other"  # stored as a page of the same name: not a track event
    ]
    facts = predicate.ProfileFacts(
        traits=person.traits,
        computed=person.computed,
        first_seen_at=person.first_seen_at,
        last_seen_at=person.last_seen_at,
        aggregates=aggregates.build(specs, tracked, context.now),
    )
    return predicate.evaluate(rule, facts, context)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(document=rules, population=people())
async def test_sql_and_predicate_agree(
    database: Database, document: dict[str, Any], population: list[Person]
) -> None:
    rule = parse_rule(document)
    tenant = await make_tenant(database)
    ids = await store(database, tenant.id, population)
    zones = frozenset(
        p.traits["timezone"] for p in population if isinstance(p.traits.get("timezone"), str)
    )
    context = RuleContext(now=NOW, segments=SEGMENTS, rfm=RFM, time_zones=zones)
    async with database.read_session() as session:
        query = members_query(
            rule, dialect=database.dialect, workspace_id=tenant.id, context=context
        )
        by_sql = set((await session.scalars(query)).all())
    by_predicate = {
        i for i, person in zip(ids, population, strict=True) if in_memory(rule, person, context)
    }
    assert by_sql == by_predicate, (document, population)
