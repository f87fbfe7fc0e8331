"""Campaigns delivered for real (the SMTP sink), and their results: outcomes, refusals with
their reasons, opens and clicks by people and by machines (a click counting as an open),
conversions within and outside the goal's window with their revenue, per hour, also for a
goal set after the campaign was scheduled; pause and resume with real delivery."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from clarion.campaigns.conversions import CONVERSIONS
from clarion.campaigns.dispatch import DISPATCH, LAUNCH
from clarion.core.jobs.models import RecurringJob
from clarion.core.jobs.queue import NewJob, enqueue
from clarion.messaging import engagement
from clarion.messaging.engagement import Interaction
from clarion.messaging.models import Message
from tests.campaigns.conftest import Desk
from tests.messaging.conftest import SmtpSink

BROWSER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Safari/537.36"
)


def _hour(moment: datetime) -> str:
    return moment.replace(minute=0, second=0, microsecond=0).isoformat().replace("+00:00", "Z")


def _order(user_id: str, at: datetime, **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": user_id,
        "timestamp": at.isoformat(),
        "properties": properties,
    }


async def _open(desk: Desk, message: Message, at: datetime, method: str = "GET") -> bool:
    """Record a fetch of the message's open pixel through messaging; whether a machine's."""
    async with desk.database.write_session() as session:
        verdict = await engagement.record_open(
            session,
            message_id=message.id,
            seen=Interaction(user_agent=BROWSER, ip="203.0.113.7", method=method, at=at),
        )
        await session.commit()
    assert verdict is not None
    return verdict.machine


async def _click(desk: Desk, message: Message, at: datetime, method: str = "GET") -> None:
    async with desk.database.write_session() as session:
        url = await engagement.record_click(
            session,
            message_id=message.id,
            link_index=0,
            seen=Interaction(user_agent=BROWSER, ip="203.0.113.7", method=method, at=at),
        )
        await session.commit()
    assert url == "https://shop.example/sale"


async def test_results_count_outcomes_people_machines_and_conversions(
    desk: Desk, smtp_sink: SmtpSink
) -> None:
    await desk.channel(port=smtp_sink.port)
    people = {
        "ann": "ann@example.com",
        "bob": "bob@example.com",
        "cat": "cat@example.com",
        "dan": "bounce-dan@example.com",
        "fay": "fay@example.com",
    }
    for user, email in people.items():
        await desk.identify(user, email=email)
    await desk.identify("eve")  # no address at all
    await desk.post("/api/v1/suppressions", {"channel": "email", "address": "fay@example.com"}, 201)
    campaign = await desk.campaign(
        audience={"type": "list", "user_ids": [*people, "eve"]},
        template_id=await desk.template(),
        goal={"event": "Order Completed", "within_days": 2},
    )
    url = f"/api/v1/campaigns/{campaign['id']}"
    await desk.post(f"{url}/send")
    await desk.run()

    received = Counter(to for mail in smtp_sink.messages() for to in mail.rcpt_tos)
    assert received == {"ann@example.com": 1, "bob@example.com": 1, "cat@example.com": 1}
    messages = {
        user: message
        for message in await desk.messages(campaign["id"])
        for user in people | {"eve": ""}
        if str(message.profile_id) == await desk.profile_id(user)
    }
    assert {user: m.status for user, m in messages.items()} == {
        "ann": "delivered",
        "bob": "delivered",
        "cat": "delivered",
        "dan": "bounced",
        "eve": "failed",
        "fay": "refused",
    }
    sent = messages["ann"].sent_at
    assert sent is not None

    # A scanner fetches bob's mail at once and follows cat's link; ann opens and clicks an
    # hour later; bob reads his mail after two hours. Each at its moment on the clock.
    async def at(delta: timedelta) -> datetime:
        desk.clock.advance(sent + delta - desk.clock.now())
        return desk.clock.now()

    assert await _open(desk, messages["bob"], await at(timedelta(seconds=1)))
    await _click(desk, messages["cat"], await at(timedelta(seconds=2)))
    assert not await _open(desk, messages["ann"], await at(timedelta(hours=1)))
    await _click(desk, messages["ann"], await at(timedelta(hours=1, minutes=30)))
    assert not await _open(desk, messages["bob"], await at(timedelta(hours=2)))
    await desk.run(deliver=False)

    await desk.track_raw(
        _order("ann", sent - timedelta(hours=1), revenue=99, currency="USD"),  # before: no
        _order("ann", sent + timedelta(days=1), revenue=42.5, currency="USD"),
        _order("ann", sent + timedelta(days=1, hours=1), revenue="7.25"),  # USD by default
        _order("bob", sent + timedelta(hours=1), total=10, currency="eur"),
        _order("cat", sent + timedelta(days=3), revenue=500, currency="USD"),  # too late
        _order("dan", sent + timedelta(hours=1), revenue=1, currency="USD"),  # never got it
        {
            "type": "track",
            "event": "Product Viewed",
            "userId": "cat",
            "timestamp": sent.isoformat(),
        },
    )

    results = await desk.get(f"{url}/results")
    refusals = results.pop("refusals")
    assert list(refusals.values()) == [1] and messages["fay"].reason in refusals
    hourly = results.pop("hourly")
    assert results == {
        "audience": 6,
        "pending": 0,
        "queued": 6,
        "skipped": 0,
        "waiting": 0,
        "sent": 3,
        "delivered": 3,
        "bounced": 1,
        "complained": 0,
        "failed": 1,
        "refused": 1,
        "opened": {"human": 2, "machine": 2},  # a click counts as an open: cat's scanner
        "clicked": {"human": 1, "machine": 1},
        "unsubscribed": 0,
        "converted": 2,
        "revenue": {"USD": 4250 + 725, "EUR": 1000},
    }
    expected: dict[str, list[int]] = {}
    for index, moment in [
        (0, sent),
        (0, sent),
        (0, sent),
        (1, sent + timedelta(hours=1)),
        (1, sent + timedelta(hours=2)),
        (2, sent + timedelta(hours=1, minutes=30)),
    ]:
        expected.setdefault(_hour(moment), [0, 0, 0])[index] += 1
    assert {
        h["hour"].replace("+00:00", "Z"): [h["sent"], h["opened"], h["clicked"]] for h in hourly
    } == expected

    # The conversions job (every 10 minutes) writes the same answer onto the messages: the
    # first goal event in the window is when each converted; cat's came too late.
    await desk.later(timedelta(minutes=10), deliver=False)
    converted = {
        user: (m.status, m.converted_at)
        for m in await desk.messages(campaign["id"])
        for user in ("ann", "bob", "cat")
        if str(m.profile_id) == await desk.profile_id(user)
    }
    assert converted == {
        "ann": ("converted", sent + timedelta(days=1)),
        "bob": ("converted", sent + timedelta(hours=1)),
        "cat": ("delivered", None),  # only a scanner clicked
    }
    history = await desk.get(f"/api/v1/messages/{messages['ann'].id}")
    assert [e["kind"] for e in history["history"]][-1] == "converted"
    again = await desk.get(f"{url}/results")
    assert (again["converted"], again["revenue"]) == (2, results["revenue"])
    # Marked once: a later run finds nothing left to mark.
    await desk.later(timedelta(minutes=10), deliver=False)
    history = await desk.get(f"/api/v1/messages/{messages['ann'].id}")
    assert [e["kind"] for e in history["history"]].count("converted") == 1

    no_goal = await desk.campaign(
        audience={"type": "list", "user_ids": ["ann"]}, template_id=campaign["template_id"]
    )
    empty = await desk.get(f"/api/v1/campaigns/{no_goal['id']}/results")
    assert (empty["audience"], empty["converted"], empty["revenue"], empty["hourly"]) == (
        0,
        None,
        {},
        [],
    )


async def test_pause_and_resume_with_real_delivery_send_each_recipient_once(
    desk: Desk, smtp_sink: SmtpSink
) -> None:
    await desk.channel(port=smtp_sink.port)
    users = [f"r{i}" for i in range(4)]
    for user in users:
        await desk.identify(user, email=f"{user}@example.com")
    campaign = await desk.campaign(
        audience={"type": "list", "user_ids": users},
        template_id=await desk.template(),
        throttle_per_minute=1,
    )
    url = f"/api/v1/campaigns/{campaign['id']}"
    await desk.post(f"{url}/send")
    await desk.run()
    first = len(smtp_sink.messages())
    assert 1 <= first < 4

    await desk.post(f"{url}/pause")
    await desk.later(timedelta(minutes=5))
    assert len(smtp_sink.messages()) <= 2  # what was asked for before the pause, at most
    await desk.post(f"{url}/resume")
    for _ in range(6):
        await desk.later(timedelta(minutes=1))
    assert (await desk.read(campaign["id"]))["state"] == "sent"

    # A crashed worker's jobs run again: nothing is sent twice.
    async with desk.database.write_session() as session:
        payload = {"campaign_id": campaign["id"], "version": 1}
        jobs = [NewJob(desk.tenant.id, LAUNCH, payload), NewJob(desk.tenant.id, DISPATCH, payload)]
        await enqueue(session, jobs, now=desk.clock.now())
        await session.commit()
    await desk.later(timedelta(minutes=1))

    received = Counter(to for mail in smtp_sink.messages() for to in mail.rcpt_tos)
    assert received == {f"{user}@example.com": 1 for user in users}
    results = await desk.get(f"{url}/results")
    assert (results["sent"], results["delivered"], results["waiting"]) == (4, 4, 0)
    assert len({mail.message["Message-ID"] for mail in smtp_sink.messages()}) == 4


async def test_a_click_without_an_open_counts_as_an_open_in_totals_and_hours(
    desk: Desk, smtp_sink: SmtpSink
) -> None:
    await desk.channel(port=smtp_sink.port)
    for user in ("ann", "bob"):
        await desk.identify(user, email=f"{user}@example.com")
    campaign = await desk.campaign(
        audience={"type": "list", "user_ids": ["ann", "bob"]}, template_id=await desk.template()
    )
    url = f"/api/v1/campaigns/{campaign['id']}"
    await desk.post(f"{url}/send")
    await desk.run()
    ann, bob = await desk.profile_id("ann"), await desk.profile_id("bob")
    messages = {str(m.profile_id): m for m in await desk.messages(campaign["id"])}
    sent = messages[ann].sent_at
    assert sent is not None

    # Images off: ann clicks without the pixel ever loading; a scanner follows bob's link.
    desk.clock.advance(sent + timedelta(seconds=2) - desk.clock.now())
    await _click(desk, messages[bob], desk.clock.now())
    desk.clock.advance(sent + timedelta(hours=1) - desk.clock.now())
    await _click(desk, messages[ann], desk.clock.now())
    await desk.run(deliver=False)

    results = await desk.get(f"{url}/results")
    assert (results["opened"], results["clicked"]) == (
        {"human": 1, "machine": 1},
        {"human": 1, "machine": 1},
    )
    hours = {h["hour"].replace("+00:00", "Z"): h for h in results["hourly"]}
    assert hours[_hour(sent + timedelta(hours=1))]["opened"] == 1
    assert sum(h["opened"] for h in results["hourly"]) == results["opened"]["human"]
    assert sum(h["clicked"] for h in results["hourly"]) == results["clicked"]["human"]


async def test_a_goal_set_while_scheduled_is_written_onto_the_messages(
    desk: Desk, smtp_sink: SmtpSink
) -> None:
    await desk.channel(port=smtp_sink.port)
    await desk.identify("ann", email="ann@example.com")
    template = await desk.template()
    audience = {"type": "list", "user_ids": ["ann"]}
    goal = {"event": "Order Completed", "within_days": 3}

    async def schedule(goal_then: dict[str, Any] | None, goal_now: dict[str, Any] | None) -> int:
        """A campaign with `goal_then`, scheduled in an hour, then given `goal_now`."""
        campaign = await desk.campaign(audience=audience, template_id=template, goal=goal_then)
        url = f"/api/v1/campaigns/{campaign['id']}"
        at = (desk.clock.now() + timedelta(hours=1)).isoformat()
        await desk.post(f"{url}/send", {"when": "at", "at": at})
        edited = await desk.client.patch(url, json={"goal": goal_now}, headers=desk.tenant.admin)
        assert edited.status_code == 200, edited.text
        assert edited.json()["goal"] == goal_now
        return int(campaign["id"])

    async def sent_and_bought(campaign_id: int) -> datetime:
        """Deliver the campaign, then ann buys a minute after; when she bought."""
        await desk.later(timedelta(hours=1))
        [message] = await desk.messages(campaign_id)
        assert message.sent_at is not None
        bought = message.sent_at + timedelta(minutes=1)
        await desk.track_raw(_order("ann", bought, revenue=5))
        await desk.later(timedelta(minutes=10), deliver=False)
        return bought

    gaining = await schedule(None, goal)  # the first campaign with a goal in the workspace
    async with desk.database.read_session() as session:
        recurring = await session.scalars(
            select(RecurringJob.kind).where(RecurringJob.workspace_id == desk.tenant.id)
        )
        assert CONVERSIONS in recurring.all()
    bought = await sent_and_bought(gaining)
    [converted] = await desk.messages(gaining)
    assert (converted.status, converted.converted_at) == ("converted", bought)

    losing = await schedule(goal, None)
    await sent_and_bought(losing)
    [unmarked] = await desk.messages(losing)
    assert unmarked.status == "delivered" and unmarked.converted_at is None
    assert (await desk.get(f"/api/v1/campaigns/{losing}/results"))["converted"] is None
