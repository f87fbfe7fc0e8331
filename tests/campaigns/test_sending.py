"""Campaigns sending through their jobs: the audience snapshot, throttle spacing, local time
in two time zones, pause / resume / cancel mid-send with at most one message per
recipient, and jobs run twice (a crash's retry) sending nothing twice."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from clarion.campaigns import dispatch
from clarion.campaigns.dispatch import DISPATCH, LAUNCH
from clarion.campaigns.models import Campaign, CampaignRecipient
from clarion.core.jobs.models import Job
from clarion.core.jobs.queue import NewJob, enqueue
from clarion.messaging.delivery import DELIVER
from clarion.segments import service as segments
from tests.campaigns.conftest import PRO, Desk
from tests.conftest import problem


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


async def test_the_audience_is_the_segment_when_the_campaign_launches(desk: Desk) -> None:
    early = await desk.identify("early", plan="pro")
    leaving = await desk.identify("leaving", plan="pro")
    await desk.identify("free", plan="free")
    segment = await desk.segment()
    await desk.channel()
    campaign = await desk.campaign(
        audience={"type": "segment", "segment_id": segment}, template_id=await desk.template()
    )
    url = f"/api/v1/campaigns/{campaign['id']}"
    at = desk.clock.now() + timedelta(hours=1)
    await desk.post(f"{url}/send", {"when": "at", "at": at.isoformat()})

    joined = await desk.identify("joined", plan="pro")  # before the launch: included
    await desk.run(deliver=False)
    assert await desk.recipient_rows(campaign["id"]) == 0  # not launched yet
    await desk.later(timedelta(hours=1), deliver=False)
    launched = await desk.read(campaign["id"])
    assert launched["state"] == "sent" and launched["audience_size"] == 3
    assert launched["launched_at"] is not None and launched["template_version_id"] is not None

    late = await desk.identify("late", plan="pro")  # after the launch: not included
    await desk.identify("leaving", plan="free")  # left after the launch: still included
    await desk.later(timedelta(hours=1), deliver=False)
    recipients = await desk.recipients(campaign["id"])
    assert sorted(r["profile_id"] for r in recipients) == sorted([early, leaving, joined])
    assert late not in {r["profile_id"] for r in recipients}
    assert all(r["state"] == "queued" and _at(r["send_at"]) == at for r in recipients)
    messages = await desk.messages(campaign["id"])
    assert sorted(str(m.profile_id) for m in messages) == sorted([early, leaving, joined])
    assert {m.idempotency_key for m in messages} == {
        f"campaign:{campaign['id']}:{p}" for p in (early, leaving, joined)
    }
    assert {(m.status, m.origin, m.send_after) for m in messages} == {("queued", "campaign", at)}
    by_profile = {str(m.profile_id): m.id for m in messages}
    assert {r["profile_id"]: r["message_id"] for r in recipients} == {
        p: str(i) for p, i in by_profile.items()
    }


async def test_a_throttle_spreads_the_sends(desk: Desk) -> None:
    users = [f"u{i}" for i in range(5)]
    for user in users:
        await desk.identify(user)
    await desk.channel()
    campaign = await desk.campaign(
        audience={"type": "list", "user_ids": users},
        template_id=await desk.template(),
        throttle_per_minute=2,
    )
    sent = await desk.post(f"/api/v1/campaigns/{campaign['id']}/send")
    start = _at(sent["send_at"])
    await desk.run(deliver=False)
    recipients = await desk.recipients(campaign["id"])
    times = sorted(_at(r["send_at"]) for r in recipients)
    assert times == [start + timedelta(seconds=30 * i) for i in range(5)]

    # Only those due within the minute are asked for; the rest wait for their turn.
    queued = await desk.recipients(campaign["id"], state="queued")
    assert len(queued) == len([t for t in times if t <= desk.clock.now() + timedelta(minutes=1)])
    assert len(queued) < 5
    assert (await desk.read(campaign["id"]))["state"] == "sending"
    [waiting] = await desk.jobs(DISPATCH)
    assert waiting.run_at > desk.clock.now()

    for _ in range(4):
        await desk.later(timedelta(seconds=30), deliver=False)
    assert (await desk.read(campaign["id"]))["state"] == "sent"
    messages = await desk.messages(campaign["id"])
    assert [m.send_after for m in messages] == times


async def test_local_time_sends_in_each_recipients_zone(desk: Desk) -> None:
    paris = await desk.identify("paris", timezone="Europe/Paris")
    york = await desk.identify("york", timezone="America/New_York")
    nowhere = await desk.identify("nowhere", timezone="Mars/Olympus_Mons")
    await desk.channel()
    template = await desk.template()
    day = (desk.clock.now() + timedelta(days=3)).date()

    def local(where: str, on: date = day) -> datetime:
        return datetime.combine(on, time(9, 0), tzinfo=ZoneInfo(where)).astimezone(UTC)

    audience = {"type": "list", "user_ids": ["paris", "york", "nowhere"]}
    on_time = await desk.campaign(audience=audience, template_id=template)
    late = await desk.campaign(audience=audience, template_id=template)
    body = {"when": "local", "local_date": day.isoformat(), "local_time": "09:00"}
    for campaign in (on_time, late):
        scheduled = await desk.post(f"/api/v1/campaigns/{campaign['id']}/send", body)
        assert scheduled["state"] == "scheduled"
        launch = datetime.combine(day, time(9, 0), tzinfo=UTC) - timedelta(hours=14)
        assert _at(scheduled["launch_at"]) == launch

    # The first campaign launches on time (the second is held back: its launch job is
    # deferred, as a busy or stopped worker would leave it).
    async with desk.database.write_session() as session:
        [held] = [j for j in await desk.jobs(LAUNCH) if j.payload["campaign_id"] == late["id"]]
        deferred = local("Europe/Paris") + timedelta(minutes=1)
        await session.execute(update(Job).where(Job.id == held.id).values(run_at=deferred))
        await session.commit()
    desk.clock.advance(launch - desk.clock.now())
    await desk.run(deliver=False)
    planned = {r["profile_id"]: _at(r["send_at"]) for r in await desk.recipients(on_time["id"])}
    assert planned == {
        paris: local("Europe/Paris"),
        york: local("America/New_York"),
        nowhere: local("UTC"),
    }
    assert await desk.messages(on_time["id"]) == []  # nobody is due yet

    # The late launch comes after 09:00 in Paris: Paris gets it the next day.
    desk.clock.advance(local("Europe/Paris") + timedelta(minutes=1) - desk.clock.now())
    await desk.run(deliver=False)
    planned_late = {r["profile_id"]: _at(r["send_at"]) for r in await desk.recipients(late["id"])}
    tomorrow = day + timedelta(days=1)
    assert planned_late == {
        paris: local("Europe/Paris", tomorrow),
        york: local("America/New_York"),
        nowhere: local("UTC"),
    }
    # Meanwhile the first campaign's Paris recipient was asked for, at 09:00 Paris time.
    [message] = await desk.messages(on_time["id"])
    assert (str(message.profile_id), message.send_after) == (paris, local("Europe/Paris"))

    desk.clock.advance(local("America/New_York") - desk.clock.now())
    await desk.run(deliver=False)
    sends = {str(m.profile_id): m.send_after for m in await desk.messages(on_time["id"])}
    assert sends == planned
    assert (await desk.read(on_time["id"]))["state"] == "sent"
    assert (await desk.read(late["id"]))["state"] == "sending"  # Paris waits for tomorrow


async def test_pause_resume_and_cancel_mid_send(desk: Desk) -> None:
    users = [f"p{i}" for i in range(6)]
    for user in users:
        await desk.identify(user, email=f"{user}@example.com")
    await desk.channel()
    campaign = await desk.campaign(
        audience={"type": "list", "user_ids": users},
        template_id=await desk.template(),
        throttle_per_minute=1,
    )
    url = f"/api/v1/campaigns/{campaign['id']}"
    await desk.post(f"{url}/send")
    await desk.run(deliver=False)
    first = len(await desk.recipients(campaign["id"], state="queued"))
    assert 1 <= first < 6

    paused = await desk.post(f"{url}/pause")
    await desk.later(timedelta(minutes=10), deliver=False)
    assert len(await desk.recipients(campaign["id"], state="queued")) == first
    assert (await desk.read(campaign["id"]))["state"] == "paused" == paused["state"]

    resumed = await desk.post(f"{url}/resume")
    assert resumed["paused_seconds"] == 600  # pending recipients go 10 minutes later
    await desk.later(timedelta(minutes=2), deliver=False)
    queued = await desk.recipients(campaign["id"], state="queued")
    second = len(queued)
    assert first < second < 6
    planned = {r["profile_id"]: _at(r["send_at"]) for r in queued}
    sends = {str(m.profile_id): m.send_after for m in await desk.messages(campaign["id"])}
    shifted = {p for p in sends if sends[p] == planned[p] + timedelta(minutes=10)}
    assert len(shifted) == second - first and sends.keys() == planned.keys()

    cancelled = await desk.post(f"{url}/cancel")
    assert cancelled["state"] == "cancelled"
    recipients = await desk.recipients(campaign["id"])
    states = Counter(r["state"] for r in recipients)
    assert dict(states) == {"queued": second, "skipped": 6 - second}
    assert {r["reason"] for r in recipients if r["state"] == "skipped"} == {"campaign cancelled"}
    messages = await desk.messages(campaign["id"])
    assert len(messages) == second
    assert {(m.status, m.reason) for m in messages} == {("refused", "campaign cancelled")}

    await desk.later(timedelta(hours=1))  # deliveries run: nothing refused goes out
    messages = await desk.messages(campaign["id"])
    assert {m.status for m in messages} == {"refused"}
    assert max(Counter(m.profile_id for m in messages).values()) == 1
    results = await desk.get(f"{url}/results")
    assert (results["queued"], results["skipped"], results["refused"]) == (
        second,
        6 - second,
        second,
    )
    assert results["refusals"] == {"campaign cancelled": second}


async def test_jobs_run_twice_send_nothing_twice(desk: Desk) -> None:
    users = [f"c{i}" for i in range(4)]
    for user in users:
        await desk.identify(user)
    await desk.channel()
    campaign = await desk.campaign(
        audience={"type": "list", "user_ids": users}, template_id=await desk.template()
    )
    await desk.post(f"/api/v1/campaigns/{campaign['id']}/send")
    await desk.run(deliver=False)
    before = await desk.read(campaign["id"])
    assert before["state"] == "sent" and before["audience_size"] == 4
    messages = {m.profile_id: m.id for m in await desk.messages(campaign["id"])}
    assert len(messages) == 4

    # A crash after messages were made but before their recipients were marked: the
    # dispatch asks again under the same idempotency keys and gets the same messages.
    async with desk.database.write_session() as session:
        await session.execute(
            update(CampaignRecipient)
            .where(CampaignRecipient.campaign_id == campaign["id"])
            .values(state="pending", message_id=None)
        )
        await session.execute(
            update(Campaign).where(Campaign.id == campaign["id"]).values(state="sending")
        )
        version = await session.scalar(
            select(Campaign.schedule_version).where(Campaign.id == campaign["id"])
        )
        payload = {"campaign_id": campaign["id"], "version": version}
        await enqueue(
            session,
            [NewJob(desk.tenant.id, LAUNCH, payload), NewJob(desk.tenant.id, DISPATCH, payload)],
            now=desk.clock.now(),
        )
        await session.commit()
    await desk.run(deliver=False)
    after = await desk.read(campaign["id"])
    assert after["state"] == "sent" and after["audience_size"] == 4
    assert await desk.recipient_rows(campaign["id"]) == 4
    again = {m.profile_id: m.id for m in await desk.messages(campaign["id"])}
    assert again == messages
    recipients = await desk.recipients(campaign["id"])
    assert {r["message_id"] for r in recipients} == {str(i) for i in messages.values()}
    delivery_jobs = await desk.jobs(DELIVER)
    assert sum(len(j.payload["message_ids"]) for j in delivery_jobs) == 4  # none made twice


async def test_a_launch_stops_when_its_template_or_audience_went_away(desk: Desk) -> None:
    await desk.identify("a", plan="pro")
    await desk.identify("b", plan="pro")
    await desk.channel()
    admin = desk.tenant.admin
    at = (desk.clock.now() + timedelta(hours=1)).isoformat()
    made = {}
    for name, rule in (("deleted", PRO), ("archived", PRO), ("emptied", {**PRO, "value": "x"})):
        segment = await desk.segment(rule, name=name)
        template = await desk.template(name=name)
        made[name] = await desk.campaign(
            audience={"type": "segment", "segment_id": segment}, template_id=template
        )
        if name == "emptied":  # someone is in it when it is scheduled, and leaves after
            await desk.identify("c", plan="x")
            await desk.run(deliver=False)
        await desk.post(f"/api/v1/campaigns/{made[name]['id']}/send", {"when": "at", "at": at})
    deleted = made["deleted"]["audience"]["segment_id"]
    refused = await desk.client.delete(f"/api/v1/segments/{deleted}", headers=admin)
    body = problem(refused, 409)
    assert f"campaign {made['deleted']['id']} ({made['deleted']['name']})" in body["detail"]
    # As a delete racing the schedule would leave it: gone under the scheduled campaign.
    async with desk.database.write_session() as session:
        await segments.delete_segment(session, workspace_id=desk.tenant.id, segment_id=deleted)
        await session.commit()
    archived = made["archived"]["template_id"]
    assert (
        await desk.client.delete(f"/api/v1/templates/{archived}", headers=admin)
    ).status_code == 204
    await desk.identify("c", plan="free")

    await desk.later(timedelta(hours=1), deliver=False)
    problems = {}
    for name, campaign in made.items():
        found = await desk.read(campaign["id"])
        assert found["state"] == "cancelled" and found["finished_at"] is not None
        problems[name] = found["problem"]
        assert await desk.messages(campaign["id"]) == []
    assert problems["deleted"] == f"not launched: segment {deleted} was deleted"
    assert problems["archived"].startswith("not launched:") and "archived" in problems["archived"]
    assert problems["emptied"] == "the audience was empty at launch"


async def test_a_long_launch_goes_on_in_new_jobs(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pages of two profiles, two pages a job: a launch of seven takes four jobs.
    monkeypatch.setattr(dispatch, "SNAPSHOT_PAGE", 2)
    monkeypatch.setattr(dispatch, "PAGES_PER_RUN", 2)
    people = [await desk.identify(f"m{i}", plan="pro") for i in range(7)]
    await desk.channel()
    campaign = await desk.campaign(
        audience={"type": "segment", "segment_id": await desk.segment()},
        template_id=await desk.template(),
    )
    await desk.post(f"/api/v1/campaigns/{campaign['id']}/send")
    while await desk.recipient_rows(campaign["id"]) == 0:
        await desk.no_delivery.drain(rounds=1)
    assert await desk.recipient_rows(campaign["id"]) == 4
    [handed_over] = await desk.jobs(LAUNCH)
    assert handed_over.state == "ready" and handed_over.payload["campaign_id"] == campaign["id"]
    assert (await desk.read(campaign["id"]))["state"] == "sending"

    await desk.run(deliver=False)
    found = await desk.read(campaign["id"])
    assert (found["state"], found["audience_size"]) == ("sent", 7)
    recipients = await desk.recipients(campaign["id"], state="queued")
    assert sorted(r["profile_id"] for r in recipients) == sorted(people)
    assert len(await desk.messages(campaign["id"])) == 7
