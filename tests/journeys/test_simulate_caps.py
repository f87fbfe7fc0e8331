"""The participation caps of the dry run, counted once: the same answer for each event as
counting at its own moment (runs ever; runs entered on the UTC day it is received), in one
statement however many events reach them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy import event

from clarion.core.database import Database
from clarion.journeys.entry import caps_left, caps_left_at
from clarion.journeys.graph import EntryRules
from tests.campaigns.conftest import Desk
from tests.journeys.test_runtime import publish
from tests.journeys.test_runtime_guards import mailer, runs, track, track_settled
from tests.journeys.test_simulate_guards import _simulate, hist

PER_DAY = "the journey's max_entries_per_day cap is reached"
EVER = "the journey's max_entries cap is reached"


@contextmanager
def reads_of_runs(database: Database) -> Iterator[list[str]]:
    """The statements reading `journey_runs` while the block runs."""
    statements: list[str] = []

    def record(_c: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM journey_runs" in statement:
            statements.append(statement)

    engine = database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def _two_days_of_runs(desk: Desk, graph: dict[str, Any]) -> tuple[int, datetime, datetime]:
    """The journey (published from `graph`) with a run entered at noon (UTC) on day A and
    one at noon on day B, two days later: the journey, A's noon and B's noon."""
    journey = await publish(desk, graph, name="Capped")
    await desk.identify("cy", email="cy@example.com")
    now = desk.clock.now()
    a = datetime.combine(now.astimezone(UTC).date() + timedelta(days=1), time(12), tzinfo=UTC)
    for noon in (a, a + timedelta(days=2)):
        desk.clock.advance(noon - desk.clock.now())
        await track_settled(desk, track("cy", "Hist"))
        await desk.later(timedelta(hours=2), deliver=False)  # the run is done: none is live
    assert sorted(run.entered_at for run in await runs(desk)) == [a, a + timedelta(days=2)]
    return journey, a, a + timedelta(days=2)


def _refused(why: str, *moments: datetime) -> str:
    return "; ".join(f"Hist at {moment.isoformat()}: {why}" for moment in moments)


async def test_each_event_meets_the_caps_at_its_own_moment(desk: Desk) -> None:
    template = await desk.template()
    graph = mailer({"kind": "event", "event": "Hist"}, template)
    graph["entry"] = {"frequency": "every_time", "max_entries_per_day": 1, "max_entries": 3}
    journey, a, b = await _two_days_of_runs(desk, graph)
    day = timedelta(days=1)
    # A day with a run is full, at any hour of it; the days around are free, before a run
    # as after it.
    full = [a - timedelta(hours=11), a + timedelta(hours=1), b - timedelta(hours=2)]
    full.append(b + timedelta(hours=11, minutes=59))
    refused = await _simulate(desk, journey, *(hist(moment) for moment in full))
    assert (refused["outcome"], refused["reason"]) == ("not_entered", _refused(PER_DAY, *full))
    for free in (a - timedelta(hours=12, microseconds=1), a + day, b + timedelta(hours=12)):
        entered = await _simulate(desk, journey, *(hist(moment) for moment in [*full, free]))
        assert entered["outcome"] == "completed", entered["reason"]
        assert entered["path"][0]["at"] == free.isoformat().replace("+00:00", "Z")

    # Both caps full: the first named (max_entries) is the reason, whatever the day.
    graph["entry"]["max_entries"] = 2
    url = f"/api/v1/journeys/{journey}"
    await desk.client.patch(url, json={"graph": graph}, headers=desk.tenant.admin)
    ever = await _simulate(desk, journey, *(hist(moment) for moment in [*full, a + day]))
    assert ever["reason"] == _refused(EVER, *sorted([*full, a + day]))


async def test_the_caps_are_read_in_one_statement_however_many_events_reach_them(
    desk: Desk,
) -> None:
    template = await desk.template()
    graph = mailer({"kind": "event", "event": "Hist"}, template)
    graph["entry"] = {"frequency": "every_time", "max_entries_per_day": 1, "max_entries": 2}
    journey, _, b = await _two_days_of_runs(desk, graph)
    cy = await desk.profile_id("cy")
    events = [hist(b + timedelta(hours=n)) for n in range(200)]  # over 9 days
    with reads_of_runs(desk.database) as statements:
        refused = await _simulate(desk, journey, *events, profile_id=cy)
    assert refused["reason"].count(EVER) == 200
    assert len(statements) == 2, statements  # the profile's runs, then the caps


async def test_caps_left_at_many_moments_match_caps_left_at_each(desk: Desk) -> None:
    template = await desk.template()
    graph = mailer({"kind": "event", "event": "Hist"}, template)
    graph["entry"] = {"frequency": "every_time"}
    journey, a, b = await _two_days_of_runs(desk, graph)
    day = timedelta(days=1)
    moments = [a - day, a, a + day, b, b + timedelta(hours=11, minutes=59), b + day]
    expected_per_day = [10, 10 - 1, 10, 10 - 1, 10 - 1, 10]
    cases = [
        (EntryRules(), [{}] * 6),
        (EntryRules(max_entries=5), [{"max_entries": 3}] * 6),
        (
            EntryRules(max_entries_per_day=10),
            [{"max_entries_per_day": n} for n in expected_per_day],
        ),
        (
            EntryRules(max_entries=2, max_entries_per_day=10),
            [{"max_entries": 0, "max_entries_per_day": n} for n in expected_per_day],
        ),
    ]
    async with desk.database.read_session() as session:
        for rules, expected in cases:
            at_once = await caps_left_at(session, journey_id=journey, rules=rules, moments=moments)
            assert [at_once[moment] for moment in moments] == expected, rules
            for moment, left in zip(moments, expected, strict=True):
                assert await caps_left(session, journey_id=journey, rules=rules, now=moment) == left
            assert await caps_left_at(session, journey_id=journey, rules=rules, moments=[]) == {}
