"""What the runtime refuses to let events do: loop through journeys (a journey's emitted
events never enter it again, nor a journey they already came through), forge Clarion's own
events (segment entries and exits only from Clarion), enter customers on old or imported
events; and what it still does: apply exits, event waits and goals while a journey is
paused, and count goals in event order, per entry key."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from clarion.core.jobs.models import Job
from clarion.ingest.models import Event
from tests.campaigns.conftest import Desk
from tests.journeys.test_runtime import HOUR, cart_journey, checkout, order, publish, runs, sent

ROUNDS = 40  # job rounds a test lets run: a loop would still be going after them


def track(user_id: str, event: str, **fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": event, "userId": user_id, **fields}


async def track_settled(desk: Desk, *messages: dict[str, Any]) -> None:
    """Ingest the messages and run what they cause for at most ROUNDS rounds of jobs;
    asserts nothing is left to run (a loop through journeys never settles)."""
    for message in messages:
        message.setdefault("messageId", uuid.uuid4().hex)
    response = await desk.client.post(
        "/v1/batch", json={"batch": list(messages)}, auth=desk.tenant.writer
    )
    assert response.status_code == 200, response.text
    await desk.no_delivery.drain(rounds=ROUNDS)
    if await desk.no_delivery.drain(rounds=1):
        async with desk.database.write_session() as session:  # or it goes on in later tests
            await session.execute(delete(Job).where(Job.workspace_id == desk.tenant.id))
            await session.commit()
        raise AssertionError("jobs still coming: a loop")


def every_time(trigger: dict[str, Any], actions: list[dict[str, Any]]) -> dict[str, Any]:
    """Every time `trigger` fires: run `actions`, then exit."""
    return {
        "entry": {"frequency": "every_time"},
        "nodes": [
            {"id": "start", "type": "trigger", "trigger": trigger, "next": "act"},
            {"id": "act", "type": "action", "actions": actions, "next": "done"},
            {"id": "done", "type": "exit"},
        ],
    }


def echo(trigger: str, emits: str, template: int | None = None) -> dict[str, Any]:
    """Every `trigger` event: emit `emits` (and send the template), then exit."""
    actions: list[dict[str, Any]] = [{"kind": "emit_event", "event": emits}]
    if template is not None:
        actions.append({"kind": "send", "template_id": template})
    return every_time({"kind": "event", "event": trigger}, actions)


def mailer(trigger: dict[str, Any], template: int) -> dict[str, Any]:
    """On the trigger: an hour's wait, then an email."""
    return {
        "entry": {"frequency": "every_time"},
        "nodes": [
            {"id": "start", "type": "trigger", "trigger": trigger, "next": "hour"},
            {
                "id": "hour",
                "type": "wait",
                "wait": {"kind": "duration", "seconds": HOUR},
                "next": "mail",
            },
            {
                "id": "mail",
                "type": "action",
                "actions": [{"kind": "send", "template_id": template}],
                "next": "done",
            },
            {"id": "done", "type": "exit"},
        ],
    }


async def events_named(desk: Desk, name: str) -> int:
    async with desk.database.read_session() as session:
        count = await session.scalar(
            select(func.count()).where(Event.workspace_id == desk.tenant.id, Event.name == name)
        )
        return int(count or 0)


# --- loops ----------------------------------------------------------------------------------


async def test_a_journey_emitting_its_own_trigger_runs_once(desk: Desk) -> None:
    template = await desk.template()
    await desk.identify("pi", email="pi@example.com")
    await publish(desk, echo("Ping", "Ping", template), name="Echo")
    await track_settled(desk, track("pi", "Ping"))
    [run] = await runs(desk)
    assert run.state == "completed"
    assert len(await sent(desk)) == 1
    assert await events_named(desk, "Ping") == 2  # the customer's and the journey's
    # Another Ping from the customer is a new originating event: one more run.
    await track_settled(desk, track("pi", "Ping"))
    assert len(await runs(desk)) == 2 and len(await sent(desk)) == 2


async def test_two_journeys_emitting_each_others_trigger_enter_once_each(desk: Desk) -> None:
    await desk.identify("po", email="po@example.com")
    first = await publish(desk, echo("Ping", "Pong"), name="Ping")
    second = await publish(desk, echo("Pong", "Ping"), name="Pong")
    await track_settled(desk, track("po", "Ping"))
    found = await runs(desk)
    assert sorted(run.journey_id for run in found) == [first, second]
    [pong] = [run for run in found if run.journey_id == second]
    assert pong.context["chain"] == [first]  # it came from the first journey's event
    assert await events_named(desk, "Ping") == 2 and await events_named(desk, "Pong") == 1
    await track_settled(desk, track("po", "Ping"))
    assert len(await runs(desk)) == 4  # bounded per originating event


async def test_a_chain_of_emitted_events_stops_after_max_chain_journeys(desk: Desk) -> None:
    from clarion.journeys.matching import MAX_CHAIN

    await desk.identify("pc", email="pc@example.com")
    journeys = [
        await publish(desk, echo(f"E{n}", f"E{n + 1}"), name=f"Relay {n}")
        for n in range(MAX_CHAIN + 1)
    ]
    await track_settled(desk, track("pc", "E0"))
    entered = sorted(run.journey_id for run in await runs(desk))
    assert entered == journeys[:MAX_CHAIN]  # the last one's event came through MAX_CHAIN
    assert await events_named(desk, f"E{MAX_CHAIN}") == 1  # emitted, entering nobody


async def test_a_forged_journey_id_on_a_customers_event_is_no_chain(desk: Desk) -> None:
    await desk.identify("pu", email="pu@example.com")
    journey = await publish(desk, echo("Ping", "Pong"), name="Ping")
    forged = {"journey_id": journey, "journey_run_id": 1}
    await track_settled(desk, track("pu", "Ping", properties=forged))
    [run] = await runs(desk)
    assert "chain" not in run.context


# --- Clarion's own events -------------------------------------------------------------------


async def test_a_forged_segment_entry_enters_nobody_a_real_one_does(desk: Desk) -> None:
    template = await desk.template()
    await desk.identify("u3", email="u3@example.com", plan="free")
    segment = await desk.segment()  # plan = pro
    trigger = {"kind": "segment_entered", "segment_id": segment}
    await publish(desk, mailer(trigger, template), name="Pros")
    await track_settled(desk, track("u3", "Segment Entered", properties={"segment_id": segment}))
    assert await runs(desk) == []
    await desk.later(timedelta(hours=2), deliver=False)
    assert await sent(desk) == []
    # Joining the segment for real enters the profile.
    u3 = await desk.identify("u3", plan="pro")
    [run] = await runs(desk)
    assert (str(run.profile_id), run.state, run.node) == (u3, "waiting", "hour")


async def test_a_forged_segment_exit_ends_no_run_a_real_one_does(desk: Desk) -> None:
    template = await desk.template()
    segment = await desk.segment()  # plan = pro
    graph = mailer({"kind": "event", "event": "Browsed"}, template)
    where = {"type": "property", "property": "segment_id", "operator": "eq", "value": segment}
    graph["exit_when"] = [{"event": "Segment Exited", "where": where}]
    await publish(desk, graph, name="Browsers")
    await desk.identify("ve", email="ve@example.com", plan="pro")
    await track_settled(desk, track("ve", "Browsed"))
    await track_settled(desk, track("ve", "Segment Exited", properties={"segment_id": segment}))
    [run] = await runs(desk)
    assert run.state == "waiting"
    await desk.identify("ve", plan="free")  # leaves the segment for real
    [run] = await runs(desk)
    assert (run.state, run.reason) == ("exited", "exit: Segment Exited")


async def test_clarions_own_names_include_segment_and_message_events() -> None:
    from clarion.journeys.entry import OWN_EVENT_NAMES

    assert {"Segment Entered", "Segment Exited", "Email Delivered", "Email Opened"} <= (
        OWN_EVENT_NAMES
    )


# --- old and imported events ----------------------------------------------------------------


async def test_old_and_imported_events_enter_no_journey(desk: Desk) -> None:
    template = await desk.template()
    await desk.identify("hi", email="hi@example.com")
    await publish(desk, mailer({"kind": "event", "event": "Hist"}, template), name="Hist")
    await track_settled(desk, track("hi", "Hist", timestamp="2024-01-01T00:00:00Z"))
    yesterday = (desk.clock.now() - timedelta(hours=25)).isoformat()
    await track_settled(desk, track("hi", "Hist", timestamp=yesterday))
    imported = {"library": {"name": "clarion-import-orders", "version": "1.0"}}
    await track_settled(desk, track("hi", "Hist", context=imported))
    demo = {"library": {"name": "clarion-demo", "version": "1.0"}}
    await track_settled(desk, track("hi", "Hist", context=demo))
    assert await runs(desk) == []
    assert await events_named(desk, "Hist") == 4  # stored all the same
    # An event an hour old (a phone that was offline) still enters.
    recent = (desk.clock.now() - timedelta(hours=1)).isoformat()
    await track_settled(desk, track("hi", "Hist", timestamp=recent))
    assert len(await runs(desk)) == 1


async def test_bulk_libraries_name_the_loaders() -> None:
    from clarion.demo.behaviour import LIBRARY as DEMO
    from clarion.ingest.orders import LIBRARY as ORDERS
    from clarion.journeys.entry import BULK_LIBRARIES

    assert {DEMO["name"], ORDERS["name"]} == BULK_LIBRARIES


async def test_a_late_goal_event_converts_only_if_it_happened_after_the_entry(desk: Desk) -> None:
    template = await desk.template()
    await desk.identify("la", email="la@example.com")
    graph = cart_journey(template)
    del graph["exit_when"]
    graph["goal"] = {"event": "Order Completed", "within_days": 2}
    await publish(desk, graph)
    await desk.track_raw(checkout("la", "l1"))
    before = (desk.clock.now() - timedelta(minutes=5)).isoformat()
    await desk.track_raw(order("la", "l1") | {"timestamp": before})
    [run] = await runs(desk)
    assert run.converted_at is None
    # An order from after the checkout arriving two days late (old for entries) counts.
    after = desk.clock.now() + timedelta(minutes=5)
    await desk.later(timedelta(days=1, hours=2), deliver=False)
    await desk.track_raw(order("la", "l1") | {"timestamp": after.isoformat()})
    [run] = await runs(desk)
    assert run.converted_at == after


# --- paused journeys ------------------------------------------------------------------------


async def test_a_paused_journeys_runs_still_exit_on_their_events(desk: Desk) -> None:
    template = await desk.template()
    await desk.identify("u2", email="u2@example.com")
    graph = mailer({"kind": "event", "event": "F Go"}, template)
    graph["exit_when"] = [{"event": "F Stop"}]
    journey = await publish(desk, graph, name="Stop")
    await desk.track_raw(track("u2", "F Go"))
    await desk.post(f"/api/v1/journeys/{journey}/pause")
    await desk.track_raw(track("u2", "F Stop"), track("u2", "F Go"))
    [run] = await runs(desk)  # exited; and nobody enters while paused
    assert (run.state, run.reason) == ("exited", "exit: F Stop")
    await desk.post(f"/api/v1/journeys/{journey}/resume")
    await desk.later(timedelta(hours=2), deliver=False)
    assert await sent(desk) == []


async def test_a_paused_journeys_event_wait_moves_on_its_event_and_goals_count(
    desk: Desk,
) -> None:
    template = await desk.template()
    await desk.identify("wa", email="wa@example.com")
    graph = cart_journey(template)
    del graph["exit_when"]
    graph["goal"] = {"event": "Order Completed", "within_days": 2}
    journey = await publish(desk, graph)
    await desk.track_raw(checkout("wa", "w1"))
    await desk.post(f"/api/v1/journeys/{journey}/pause")
    await desk.later(timedelta(minutes=10), deliver=False)
    await desk.track_raw(order("wa", "w1"))
    [run] = await runs(desk)
    assert (run.state, run.node, run.converted_at) == ("active", "done", desk.clock.now())
    await desk.later(timedelta(hours=2), deliver=False)  # the time-out passes, paused
    await desk.post(f"/api/v1/journeys/{journey}/resume")
    await desk.run(deliver=False)
    [run] = await runs(desk)
    assert (run.state, run.node) == ("completed", "done")
    assert await sent(desk) == []


# --- goals ----------------------------------------------------------------------------------


async def test_a_goal_in_the_batch_that_entered_the_run_converts_it(desk: Desk) -> None:
    template = await desk.template()
    await desk.identify("gc", email="gc@example.com")
    graph = cart_journey(template)
    graph["goal"] = {"event": "Order Completed", "within_days": 2}
    await publish(desk, graph)
    await desk.track_raw(checkout("gc", "c7"), order("gc", "c7"))
    [run] = await runs(desk)
    assert (run.state, run.reason) == ("exited", "exit: Order Completed")
    assert run.converted_at is not None


async def test_a_goal_converts_only_the_run_of_its_entry_key(desk: Desk) -> None:
    template = await desk.template()
    await desk.identify("gk", email="gk@example.com")
    graph = cart_journey(template)
    graph["goal"] = {"event": "Order Completed", "within_days": 2}
    await publish(desk, graph)
    await desk.track_raw(checkout("gk", "c3"), checkout("gk", "c7"))
    await desk.later(timedelta(minutes=5), deliver=False)
    await desk.track_raw(order("gk", "c7"))
    c3, c7 = await runs(desk)
    assert (c3.entry_key, c3.state, c3.converted_at) == ("c3", "waiting", None)
    assert (c7.entry_key, c7.state) == ("c7", "exited") and c7.converted_at is not None
    # A goal event without the key property converts every run it may be for.
    await desk.track_raw(track("gk", "Order Completed"))
    c3, _ = await runs(desk)
    assert c3.converted_at is not None


def tagger(segment_id: int, stage: str) -> dict[str, Any]:
    """Every entry into the segment: set the profile's `stage` trait, then exit."""
    return every_time(
        {"kind": "segment_entered", "segment_id": segment_id},
        [{"kind": "update_traits", "traits": {"stage": stage}}],
    )


async def test_two_journeys_moving_a_profile_between_their_segments_enter_once_each(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loop through traits and segments: each journey's trait update makes the profile
    enter the other's segment. The segment events a run's trait update causes name that
    run, so they carry its chain as emitted events do: the second journey's update puts
    the profile back in the first's segment, which the first does not enter again."""
    stage = {"type": "trait", "trait": "stage", "operator": "eq"}
    first_segment = await desk.segment({**stage, "value": "a"}, name="Stage A")
    second_segment = await desk.segment({**stage, "value": "b"}, name="Stage B")
    first = await publish(desk, tagger(first_segment, "b"), name="A to B")
    second = await publish(desk, tagger(second_segment, "a"), name="B to A")
    # Time moves between transactions, as it does outside tests: a re-entry at the very
    # instant of the first entry would be taken for its retry (the same messageId).
    frozen = desk.clock.now

    def ticking() -> datetime:
        desk.clock.advance(timedelta(milliseconds=1))
        return frozen()

    monkeypatch.setattr(desk.clock, "now", ticking)
    await track_settled(desk, {"type": "identify", "userId": "lo", "traits": {"stage": "a"}})
    found = await runs(desk)
    assert sorted(run.journey_id for run in found) == [first, second]
    [moved_back] = [run for run in found if run.journey_id == second]
    assert moved_back.context["chain"] == [first]
    async with desk.database.read_session() as session:
        caused = (
            await session.scalars(
                select(Event.properties)
                .where(
                    Event.workspace_id == desk.tenant.id,
                    Event.name == "Segment Entered",
                    Event.properties["segment_id"].as_integer() == first_segment,
                )
                .order_by(Event.id)
            )
        ).all()
    # Entered by the customer's identify, then again by the second journey's update.
    assert [p.get("journey_id") for p in caused] == [None, second]
    assert caused[1]["journey_run_id"] == moved_back.id
