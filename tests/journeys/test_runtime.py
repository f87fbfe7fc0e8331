"""Journeys run for real: events enter profiles (per cart), waits time out or end on an
event, conditions read the profile, actions queue messages once, exits end runs early,
entry rules hold, and pause holds runs where they are. Time moves by the frozen clock."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy import select

from clarion.core.database import Database
from clarion.core.jobs.models import Job
from clarion.core.jobs.queue import NewJob, enqueue
from clarion.journeys.models import JourneyRun, JourneyTransition
from clarion.journeys.runtime import DATES
from clarion.journeys.steps import STEP
from clarion.messaging import templates as message_templates
from clarion.messaging.models import Message
from tests.campaigns.conftest import Desk
from tests.conftest import problem

HOUR = 3600


def cart_journey(template_id: int) -> dict[str, Any]:
    """Checkout started and no order for that cart within an hour: an email; a day later,
    a second one to VIPs; an order for the cart ends the run."""
    return {
        "entry": {"frequency": "every_time", "max_active": 3},
        "entry_key": "properties.cart_id",
        "exit_when": [{"event": "Order Completed", "same_key": True}],
        "nodes": [
            {
                "id": "start",
                "type": "trigger",
                "trigger": {"kind": "event", "event": "Checkout Started"},
                "next": "hour",
            },
            {
                "id": "hour",
                "type": "wait",
                "wait": {
                    "kind": "until_event",
                    "event": "Order Completed",
                    "same_key": True,
                    "timeout_seconds": HOUR,
                },
                "next": "done",
                "timeout_next": "first",
            },
            {
                "id": "first",
                "type": "action",
                "actions": [{"kind": "send", "template_id": template_id}],
                "next": "day",
            },
            {
                "id": "day",
                "type": "wait",
                "wait": {"kind": "duration", "seconds": 24 * HOUR},
                "next": "vip",
            },
            {
                "id": "vip",
                "type": "condition",
                "branches": [{"when": [["vip eq true"]], "next": "second"}],
                "otherwise": "done",
            },
            {
                "id": "second",
                "type": "action",
                "actions": [{"kind": "send", "template_id": template_id}],
                "next": "done",
            },
            {"id": "done", "type": "exit"},
        ],
    }


def checkout(user_id: str, cart: str) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Checkout Started",
        "userId": user_id,
        "properties": {"cart_id": cart},
    }


def order(user_id: str, cart: str) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": user_id,
        "properties": {"cart_id": cart},
    }


async def publish(desk: Desk, graph: dict[str, Any], name: str = "Cart") -> int:
    created = await desk.post("/api/v1/journeys", {"name": name, "graph": graph}, 201)
    await desk.post(f"/api/v1/journeys/{created['id']}/publish")
    return int(created["id"])


def send_journey(
    trigger: dict[str, Any], template: int, *, frequency: str = "once"
) -> dict[str, Any]:
    """A journey sending `template` once its trigger fires, then done."""
    return {
        "entry": {"frequency": frequency},
        "nodes": [
            {"id": "start", "type": "trigger", "trigger": trigger, "next": "mail"},
            {
                "id": "mail",
                "type": "action",
                "actions": [{"kind": "send", "template_id": template}],
                "next": "done",
            },
            {"id": "done", "type": "exit"},
        ],
    }


async def archive_in_use(database: Database, workspace_id: int, template_id: int) -> None:
    """Archive a template that live journeys send (the API refuses: 409), as an archive
    racing their publishing would leave it."""
    async with database.write_session() as session:
        await message_templates.archive_template(
            session, workspace_id=workspace_id, template_id=template_id, now=datetime.now(UTC)
        )
        await session.commit()


async def runs(desk: Desk) -> list[JourneyRun]:
    async with desk.database.read_session() as session:
        found = await session.scalars(
            select(JourneyRun)
            .where(JourneyRun.workspace_id == desk.tenant.id)
            .order_by(JourneyRun.entry_key, JourneyRun.id)
        )
        return list(found.all())


async def sent(desk: Desk) -> list[tuple[str, str]]:
    """(profile id, idempotency key) of the journey messages queued so far."""
    async with desk.database.read_session() as session:
        found = await session.execute(
            select(Message.profile_id, Message.idempotency_key)
            .where(Message.workspace_id == desk.tenant.id, Message.origin == "journey")
            .order_by(Message.created_at, Message.idempotency_key)
        )
        return [(str(p), key) for p, key in found]


async def path(desk: Desk, run_id: int) -> list[tuple[str | None, str, str]]:
    async with desk.database.read_session() as session:
        found = await session.execute(
            select(JourneyTransition.from_node, JourneyTransition.to_node, JourneyTransition.reason)
            .where(JourneyTransition.run_id == run_id)
            .order_by(JourneyTransition.id)
        )
        return [tuple(row) for row in found]  # type: ignore[misc]


async def test_the_abandoned_cart_runs_per_cart_with_waits_conditions_and_exits(desk: Desk) -> None:
    template = await desk.template()
    ann = await desk.identify("ann", email="ann@example.com", vip=True)
    bob = await desk.identify("bob", email="bob@example.com")
    await publish(desk, cart_journey(template))

    await desk.track_raw(checkout("ann", "c1"), checkout("bob", "c2"))
    first, second = await runs(desk)
    assert [(str(r.profile_id), r.entry_key, r.state, r.node) for r in (first, second)] == [
        (ann, "c1", "waiting", "hour"),
        (bob, "c2", "waiting", "hour"),
    ]
    # Bob orders within the hour: the exit criterion ends his run where it is.
    await desk.later(timedelta(minutes=30), deliver=False)
    await desk.track_raw(order("bob", "c2"))
    bob_run = (await runs(desk))[1]
    assert (bob_run.state, bob_run.node) == ("exited", "hour")
    assert [t[2] for t in await path(desk, bob_run.id)] == [
        "entered", "started", "exited: exit: Order Completed"
    ]  # fmt: skip

    # Ann's hour runs out: the first email, then the day's wait.
    await desk.later(timedelta(minutes=31), deliver=False)
    ann_run = (await runs(desk))[0]
    assert (ann_run.state, ann_run.node) == ("waiting", "day")
    assert await sent(desk) == [(ann, f"journey:{ann_run.id}:first:0")]

    # A second cart is a second run, at the same time.
    await desk.track_raw(checkout("ann", "c3"))
    assert [(r.entry_key, r.state) for r in await runs(desk)] == [
        ("c1", "waiting"), ("c2", "exited"), ("c3", "waiting")
    ]  # fmt: skip
    # A day later ann (a VIP) gets the second email and her first run ends; her order for
    # the third cart ends that run early, and only that one.
    await desk.later(timedelta(hours=24), deliver=False)
    await desk.track_raw(order("ann", "c3"))
    c1, _, c3 = await runs(desk)
    assert (c1.state, c1.node, c3.state, c3.reason) == (
        "completed", "done", "exited", "exit: Order Completed"
    )  # fmt: skip
    # (The clock jumped a day at once: c3's hour and c1's day ran out at the same moment.)
    keys = sorted(key for _, key in await sent(desk))
    assert keys == sorted(  # as strings: run 100 sorts before run 98
        [f"journey:{c1.id}:first:0", f"journey:{c1.id}:second:0", f"journey:{c3.id}:first:0"]
    )
    assert [t[1] for t in await path(desk, c1.id)] == [
        "start", "hour", "first", "day", "vip", "second", "done", "done"
    ]  # fmt: skip


async def test_a_step_job_run_twice_moves_and_sends_once(desk: Desk) -> None:
    template = await desk.template()
    await desk.identify("cy", email="cy@example.com")
    await publish(desk, cart_journey(template))
    await desk.track_raw(checkout("cy", "k1"))
    await desk.later(timedelta(hours=1, seconds=1), deliver=False)
    [run] = await runs(desk)
    assert run.node == "day"
    # The same step again (a retry after a crash, say): the run is past it, nothing moves.
    async with desk.database.write_session() as session:
        from clarion.core.jobs.queue import NewJob, enqueue

        await enqueue(
            session,
            [NewJob(desk.tenant.id, STEP, {"run_id": run.id, "node": "hour"})],
            now=desk.clock.now(),
        )
        await session.commit()
    await desk.run(deliver=False)
    [again] = await runs(desk)
    assert (again.node, again.state) == ("day", "waiting")
    assert len(await sent(desk)) == 1
    async with desk.database.read_session() as session:
        dead = await session.scalars(select(Job).where(Job.kind == STEP, Job.state == "dead"))
        assert dead.all() == []


async def test_entry_rules_once_and_a_paused_journey_holds_its_runs(desk: Desk) -> None:
    template = await desk.template()
    await desk.identify("di", email="di@example.com")
    graph = cart_journey(template)
    graph["entry"] = {"frequency": "once", "max_active": 3}
    journey = await publish(desk, graph)
    await desk.track_raw(checkout("di", "a"), checkout("di", "a"))
    assert len(await runs(desk)) == 1  # the same cart twice: one run
    await desk.track_raw(checkout("di", "b"))
    assert len(await runs(desk)) == 2  # once per cart
    await desk.post(f"/api/v1/journeys/{journey}/pause")
    await desk.track_raw(checkout("di", "c"))
    assert len(await runs(desk)) == 2  # paused: nobody enters
    await desk.later(timedelta(hours=2), deliver=False)
    assert {r.node for r in await runs(desk)} == {"hour"}  # held where they were
    assert await sent(desk) == []
    await desk.post(f"/api/v1/journeys/{journey}/resume")
    await desk.run(deliver=False)
    assert {(r.node, r.state) for r in await runs(desk)} == {("day", "waiting")}
    assert len(await sent(desk)) == 2
    await desk.post(f"/api/v1/journeys/{journey}/archive")
    await desk.run(deliver=False)
    assert {(r.state, r.reason) for r in await runs(desk)} == {("exited", "journey archived")}


async def test_a_template_archived_after_publishing_fails_the_run_with_its_reason(
    desk: Desk,
) -> None:
    template = await desk.template()
    await desk.identify("ed", email="ed@example.com")
    await publish(desk, cart_journey(template))
    await desk.track_raw(checkout("ed", "z"))
    response = await desk.client.delete(f"/api/v1/templates/{template}", headers=desk.tenant.admin)
    assert "is in use by journey" in problem(response, 409)["detail"]
    await archive_in_use(desk.database, desk.tenant.id, template)
    await desk.later(timedelta(hours=1, seconds=1), deliver=False)
    [run] = await runs(desk)
    assert run.state == "failed" and "archived" in (run.reason or "")
    assert await sent(desk) == []

    # Failed runs wait in a list where a person retries or skips them.
    journey = run.journey_id
    failed = await desk.get(f"/api/v1/journeys/{journey}/runs", state="failed")
    assert [r["id"] for r in failed["items"]] == [run.id]
    url = f"/api/v1/journeys/{journey}/runs/{run.id}"
    retried = await desk.post(f"{url}/retry")
    assert (retried["state"], retried["node"]) == ("active", "first")
    await desk.run(deliver=False)
    [run] = await runs(desk)
    assert run.state == "failed"  # the template is still archived
    skipped = await desk.post(f"{url}/skip")
    assert (skipped["state"], skipped["node"]) == ("active", "day")
    await desk.run(deliver=False)
    [run] = await runs(desk)
    assert (run.state, run.node) == ("waiting", "day")
    moves = await path(desk, run.id)
    assert moves[-3] == ("first", "first", "retried by hand")
    assert moves[-2][:2] == ("first", "first") and moves[-2][2].startswith("failed: ")
    assert moves[-1] == ("first", "day", "skipped by hand")
    response = await desk.client.post(f"{url}/retry", headers=desk.tenant.admin)
    problem(response, 409, "state")  # only a failed run


async def test_an_event_wait_ends_on_its_event_for_the_same_key_only(desk: Desk) -> None:
    template = await desk.template()
    await desk.identify("fa", email="fa@example.com")
    graph = cart_journey(template)
    del graph["exit_when"]
    await publish(desk, graph)
    await desk.track_raw(checkout("fa", "m1"))
    await desk.track_raw(order("fa", "other-cart"))
    # An order that happened before the checkout (arriving late) is not this cart's answer.
    earlier = (desk.clock.now() - timedelta(minutes=5)).isoformat()
    await desk.track_raw(order("fa", "m1") | {"timestamp": earlier})
    [run] = await runs(desk)
    assert (run.state, run.node) == ("waiting", "hour")
    await desk.track_raw(order("fa", "m1"))
    [run] = await runs(desk)
    assert (run.state, run.node) == ("completed", "done")
    assert [t[2] for t in await path(desk, run.id)] == [
        "entered", "started", "event: Order Completed", "completed: exit"
    ]  # fmt: skip
    await desk.later(timedelta(hours=2), deliver=False)  # its time-out job finds it gone
    assert await sent(desk) == []


async def test_time_of_day_and_date_waits_in_the_profiles_zone_and_an_emitted_event(
    desk: Desk,
) -> None:
    from zoneinfo import ZoneInfo

    from clarion.ingest.models import Event

    paris = ZoneInfo("Europe/Paris")
    now = desk.clock.now()
    renewal = (now + timedelta(days=30)).astimezone(paris).date()
    await desk.identify("gu", timezone="Europe/Paris", renewal_date=renewal.isoformat())
    graph = {
        "nodes": [
            {
                "id": "start",
                "type": "trigger",
                "trigger": {"kind": "event", "event": "Signed Up"},
                "next": "morning",
            },
            {
                "id": "morning",
                "type": "wait",
                "wait": {"kind": "until_time", "time": "09:00"},
                "next": "note",
            },
            {
                "id": "note",
                "type": "action",
                "actions": [
                    {"kind": "emit_event", "event": "Welcome Window", "properties": {"step": 1}}
                ],
                "next": "renewal",
            },
            {
                "id": "renewal",
                "type": "wait",
                "wait": {
                    "kind": "until_date",
                    "trait": "renewal_date",
                    "offset_days": -1,
                    "local_time": "10:00",
                },
                "next": "done",
            },
            {"id": "done", "type": "exit"},
        ]
    }
    await publish(desk, graph, name="Welcome")
    await desk.track_raw({"type": "track", "event": "Signed Up", "userId": "gu"})
    [run] = await runs(desk)
    local = now.astimezone(paris)
    nine = local.replace(hour=9, minute=0, second=0, microsecond=0)
    if nine <= local:
        nine += timedelta(days=1)
    assert run.node == "morning" and run.wake_at == nine
    desk.clock.advance(nine - desk.clock.now())
    await desk.run(deliver=False)
    [run] = await runs(desk)
    assert run.node == "renewal"
    expected = datetime.combine(renewal - timedelta(days=1), time(10), tzinfo=paris)
    assert run.wake_at == expected
    async with desk.database.read_session() as session:
        emitted = (
            await session.scalars(
                select(Event).where(
                    Event.workspace_id == desk.tenant.id, Event.name == "Welcome Window"
                )
            )
        ).all()
    assert [(e.user_id, e.properties["step"], e.properties["journey_run_id"]) for e in emitted] == [
        ("gu", 1, run.id)
    ]
    desk.clock.advance(expected - desk.clock.now())
    await desk.run(deliver=False)
    [run] = await runs(desk)
    assert (run.state, run.node) == ("completed", "done")


async def test_runs_stats_timing_and_a_profiles_history_through_the_api(desk: Desk) -> None:
    template = await desk.template()
    ha = await desk.identify("ha", email="ha@example.com")
    await desk.identify("io", email="io@example.com")
    journey = await publish(desk, cart_journey(template))
    url = f"/api/v1/journeys/{journey}"
    await desk.track_raw(checkout("ha", "h1"), checkout("io", "i1"))
    await desk.later(timedelta(minutes=20), deliver=False)
    await desk.track_raw(order("io", "i1"))  # io leaves at the wait
    await desk.later(timedelta(minutes=41), deliver=False)  # ha's hour runs out

    listed = await desk.get(f"{url}/runs")
    assert sorted((r["entry_key"], r["state"], r["node"]) for r in listed["items"]) == [
        ("h1", "waiting", "day"), ("i1", "exited", "hour")
    ]  # fmt: skip
    waiting = await desk.get(f"{url}/runs", state="waiting")
    assert [r["entry_key"] for r in waiting["items"]] == ["h1"]
    ha_run = waiting["items"][0]
    detail = await desk.get(f"{url}/runs/{ha_run['id']}")
    assert [(t["from_node"], t["to_node"]) for t in detail["transitions"]] == [
        (None, "start"), ("start", "hour"), ("hour", "first"), ("first", "day")
    ]  # fmt: skip
    history = await desk.get(f"/api/v1/profiles/{ha}/journeys")
    assert [r["id"] for r in history] == [ha_run["id"]]

    stats = await desk.get(f"{url}/stats")
    assert (stats["runs"], stats["states"]) == (2, {"exited": 1, "waiting": 1})
    by_node = {n["node"]: n for n in stats["nodes"]}
    assert [n["node"] for n in stats["nodes"]][:3] == ["start", "hour", "first"]
    assert (by_node["start"]["entered"], by_node["hour"]["entered"]) == (2, 2)
    assert (by_node["first"]["entered"], by_node["day"]["waiting"]) == (1, 1)
    assert by_node["hour"]["exited"] == 1 and by_node["done"]["entered"] == 0
    timing = await desk.get(f"{url}/timing", from_node="hour", to_node="first")
    assert (timing["runs"], timing["p50_seconds"], timing["p90_seconds"]) == (1, 3660.0, 3660.0)
    none = await desk.get(f"{url}/timing", from_node="first", to_node="done")
    assert (none["runs"], none["p50_seconds"]) == (0, None)
    missing = await desk.client.get(f"{url}/runs/999999", headers=desk.tenant.admin)
    assert missing.status_code == 404


async def test_a_goal_event_in_its_window_converts_the_run_whatever_its_state(desk: Desk) -> None:
    template = await desk.template()
    await desk.identify("jo", email="jo@example.com")
    await desk.identify("ki", email="ki@example.com")
    graph = cart_journey(template)
    del graph["exit_when"]
    graph["goal"] = {"event": "Order Completed", "within_days": 2}
    journey = await publish(desk, graph)
    await desk.track_raw(checkout("jo", "j1"), checkout("ki", "k1"))
    await desk.later(timedelta(hours=1, seconds=1), deliver=False)  # both get the email
    await desk.track_raw(order("jo", "j1"))
    await desk.later(timedelta(days=3), deliver=False)
    await desk.track_raw(order("ki", "k1"))  # three days on: past the window
    jo_run, ki_run = await runs(desk)
    assert jo_run.converted_at == jo_run.entered_at + timedelta(hours=1, seconds=1)
    assert ki_run.converted_at is None
    stats = await desk.get(f"/api/v1/journeys/{journey}/stats")
    assert stats["converted"] == 1
    listed = await desk.get(f"/api/v1/journeys/{journey}/runs")
    assert sorted(r["converted_at"] is not None for r in listed["items"]) == [False, True]


async def test_a_schedule_trigger_enters_the_segments_members_at_each_tick(desk: Desk) -> None:
    template = await desk.template()
    ann = await desk.identify("an", email="an@example.com", plan="pro")
    await desk.identify("bo", email="bo@example.com", plan="free")
    segment = await desk.segment()  # plan = pro
    graph = send_journey({"kind": "schedule", "cron": "0 9 * * *", "segment_id": segment}, template)
    await publish(desk, graph, name="Morning")
    assert await runs(desk) == []
    now = desk.clock.now()
    nine = now.replace(hour=9, minute=0, second=0, microsecond=0)
    if nine <= now:
        nine += timedelta(days=1)
    await desk.later(nine - now + timedelta(seconds=1), deliver=False)
    [run] = await runs(desk)
    assert (str(run.profile_id), run.state, run.context["schedule"]["segment_id"]) == (
        ann, "completed", segment
    )  # fmt: skip
    assert [p for p, _ in await sent(desk)] == [ann]
    await desk.later(timedelta(days=1), deliver=False)  # the next tick: once means once
    assert len(await runs(desk)) == 1 and len(await sent(desk)) == 1


async def test_a_trait_action_sets_the_profiles_traits(desk: Desk) -> None:
    await desk.identify("lu", email="lu@example.com")
    graph = {
        "nodes": [
            {
                "id": "start",
                "type": "trigger",
                "trigger": {"kind": "event", "event": "Signed Up"},
                "next": "tag",
            },
            {
                "id": "tag",
                "type": "action",
                "actions": [{"kind": "update_traits", "traits": {"onboarding": "started"}}],
                "next": "done",
            },
            {"id": "done", "type": "exit"},
        ]
    }
    await publish(desk, graph, name="Tagging")
    await desk.track_raw({"type": "track", "event": "Signed Up", "userId": "lu"})
    [run] = await runs(desk)
    assert run.state == "completed"
    found = await desk.get("/api/v1/profiles", user_id="lu")
    assert found["items"][0]["traits"]["onboarding"] == "started"
    # An anonymous profile has no user id to set traits on: the run fails, saying so.
    await desk.track_raw({"type": "track", "event": "Signed Up", "anonymousId": "anon-1"})
    failed = [r for r in await runs(desk) if r.state == "failed"]
    assert len(failed) == 1 and "no user id" in (failed[0].reason or "")


async def test_a_date_trigger_enters_on_the_birthday_at_the_local_time(desk: Desk) -> None:
    from zoneinfo import ZoneInfo

    paris = ZoneInfo("Europe/Paris")
    template = await desk.template()
    now = desk.clock.now()
    local = now.astimezone(paris)
    nine = local.replace(hour=9, minute=0, second=0, microsecond=0)
    if nine <= local:
        nine += timedelta(days=1)
    birthday = (nine.date() + timedelta(days=3)).replace(year=1990)
    ann = await desk.identify("al", email="al@example.com", timezone="Europe/Paris",
                              birthday=birthday.isoformat())  # fmt: skip
    await desk.identify("bj", email="bj@example.com",
                        birthday=(birthday + timedelta(days=10)).isoformat())  # fmt: skip
    graph = send_journey({"kind": "date", "trait": "birthday", "offset_days": -3}, template)
    await publish(desk, graph, name="Birthday")
    await desk.run(deliver=False)  # publishing runs today's pass at once
    [run] = await runs(desk)
    assert (str(run.profile_id), run.state, run.node) == (ann, "waiting", "start")
    assert run.wake_at == nine and run.entry_key == nine.astimezone(UTC).date().isoformat()
    assert await sent(desk) == []
    desk.clock.advance(nine - desk.clock.now())
    await desk.run(deliver=False)
    [run] = await runs(desk)
    assert run.state == "completed" and [p for p, _ in await sent(desk)] == [ann]
    await desk.later(timedelta(days=1), deliver=False)  # the next daily pass: nothing new
    assert len(await runs(desk)) == 1


def _birthday_journey(template: int, local_time: str) -> dict[str, Any]:
    """A date trigger whose entry rule lets a profile in every time: only the date pass
    holds one run per profile and date."""
    trigger = {"kind": "date", "trait": "birthday", "local_time": local_time}
    return send_journey(trigger, template, frequency="every_time")


async def test_a_date_pass_run_late_enters_the_moments_since_its_tick_once(desk: Desk) -> None:
    template = await desk.template()
    now = desk.clock.now()
    midnight = datetime.combine(now.date() + timedelta(days=1), time(0), tzinfo=UTC)
    birthday = midnight.date().replace(year=1990).isoformat()
    journey = await publish(desk, _birthday_journey(template, "03:00"), name="Birthday")
    await desk.run(deliver=False)  # the pass at publishing: nobody has a birthday yet
    # Set after that pass, and the worker is down at midnight and at 03:00: the pass
    # scheduled for midnight runs at 04:00 and sends at once what it should have waited for.
    early = await desk.identify("ea", email="ea@example.com", timezone="UTC", birthday=birthday)
    desk.clock.advance(midnight + timedelta(hours=4) - desk.clock.now())
    await desk.run(deliver=False)
    [run] = await runs(desk)
    assert (str(run.profile_id), run.state, run.entry_key) == (
        early, "completed", midnight.date().isoformat(),
    )  # fmt: skip
    assert [p for p, _ in await sent(desk)] == [early]
    # A second pass over the same window (passes overlap: the one at publishing, a late
    # one) finds the finished run by its key: the live runs' unique index no longer would.
    async with desk.database.write_session() as session:
        payload = {"journey_id": journey, "scheduled_for": midnight.isoformat()}
        await enqueue(session, [NewJob(desk.tenant.id, DATES, payload)], now=desk.clock.now())
        await session.commit()
    await desk.run(deliver=False)
    await desk.later(timedelta(days=1), deliver=False)
    assert len(await runs(desk)) == 1 and len(await sent(desk)) == 1


async def test_a_run_the_pass_at_publishing_entered_is_not_entered_again_late(
    desk: Desk,
) -> None:
    # Published at noon: from between midnight and 00:10 the moment below would be more
    # than a day ahead (the desk's clock is the real time, plus 10 minutes).
    start = desk.clock.now()
    noon = datetime.combine(start.date() + timedelta(days=1), time(12), tzinfo=UTC)
    desk.clock.advance(noon - start)
    template = await desk.template()
    now = desk.clock.now()
    midnight = datetime.combine(now.date() + timedelta(days=1), time(0), tzinfo=UTC)
    # A moment 10 minutes after midnight: within a day of publishing, so that pass enters it
    # (waiting), and within the window of the midnight pass too, which runs after it.
    birthday = midnight.date().replace(year=1990).isoformat()
    ann = await desk.identify("an", email="an@example.com", timezone="UTC", birthday=birthday)
    await publish(desk, _birthday_journey(template, "00:10"), name="Birthday")
    await desk.run(deliver=False)
    [run] = await runs(desk)
    assert (run.state, run.wake_at) == ("waiting", midnight + timedelta(minutes=10))
    desk.clock.advance(midnight + timedelta(hours=1) - desk.clock.now())
    await desk.run(deliver=False)  # the step and the late midnight pass, in either order
    [run] = await runs(desk)
    assert run.state == "completed" and [p for p, _ in await sent(desk)] == [ann]


async def test_a_date_pass_over_a_day_late_misses_the_moments_before(desk: Desk) -> None:
    template = await desk.template()
    now = desk.clock.now()
    midnight = datetime.combine(now.date() + timedelta(days=1), time(0), tzinfo=UTC)
    birthday = midnight.date().replace(year=1990).isoformat()
    await publish(desk, _birthday_journey(template, "03:00"), name="Birthday")
    await desk.run(deliver=False)
    await desk.identify("ol", email="ol@example.com", timezone="UTC", birthday=birthday)
    desk.clock.advance(midnight + timedelta(days=1, hours=4) - desk.clock.now())
    await desk.run(deliver=False)  # 28 hours after its tick: a birthday a day late is none
    assert await runs(desk) == [] and await sent(desk) == []
