"""Campaigns sending through their jobs: the audience snapshot, throttle spacing, local time
in several time zones (the earliest one included, with a late worker), pause / resume /
cancel mid-send with at most one message per recipient, a campaign sending until its
messages deferred by quiet hours go (and cancelled before they do), jobs run twice (a
crash's retry) sending nothing twice, and launches that stop because what they need went
away."""

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
from clarion.core.pagination import encode_cursor
from clarion.messaging import channel_config, templates
from clarion.messaging.delivery import DELIVER
from clarion.segments import service as segments
from tests.campaigns.conftest import PRO, Desk
from tests.conftest import problem
from tests.messaging.conftest import SmtpSink


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
    # Every recipient is queued, but their messages wait for delivery: still sending.
    assert launched["state"] == "sending" and launched["audience_size"] == 3
    assert launched["launched_at"] is not None and launched["template_version_id"] is not None
    assert launched["finished_at"] is None

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
    assert (await desk.read(campaign["id"]))["state"] == "sending"

    await desk.settle()  # delivered (failed: no address), then sent
    done = await desk.read(campaign["id"])
    assert (done["state"], done["audience_size"]) == ("sent", 3)
    assert _at(done["finished_at"]) == desk.clock.now()
    assert {m.status for m in await desk.messages(campaign["id"])} == {"failed"}


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
    assert len(await desk.recipients(campaign["id"], state="queued")) == 5
    assert (await desk.read(campaign["id"]))["state"] == "sending"  # messages still queued
    messages = await desk.messages(campaign["id"])
    assert [m.send_after for m in messages] == times
    await desk.settle()
    assert (await desk.read(campaign["id"]))["state"] == "sent"


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

    # The late launch comes a minute after 09:00 in Paris: Paris is due on the day all the
    # same (late, asked for at once), never a day later.
    desk.clock.advance(local("Europe/Paris") + timedelta(minutes=1) - desk.clock.now())
    await desk.run(deliver=False)
    planned_late = {r["profile_id"]: _at(r["send_at"]) for r in await desk.recipients(late["id"])}
    assert planned_late == planned
    [late_message] = await desk.messages(late["id"])
    assert (str(late_message.profile_id), late_message.send_after) == (paris, local("Europe/Paris"))
    # Meanwhile the first campaign's Paris recipient was asked for, at 09:00 Paris time.
    [message] = await desk.messages(on_time["id"])
    assert (str(message.profile_id), message.send_after) == (paris, local("Europe/Paris"))

    desk.clock.advance(local("America/New_York") - desk.clock.now())
    await desk.run(deliver=False)
    for campaign in (on_time, late):
        sends = {str(m.profile_id): m.send_after for m in await desk.messages(campaign["id"])}
        assert sends == planned
        assert (await desk.read(campaign["id"]))["state"] == "sending"  # messages queued
    await desk.settle()
    for campaign in (on_time, late):
        assert (await desk.read(campaign["id"]))["state"] == "sent"


async def test_local_time_reaches_the_earliest_zone_on_its_day_with_a_late_worker(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    # UTC+14 reaches 09:00 first: its moment is the launch's own, so whatever the launch
    # does after it is due (a worker's poll delay, pages handed over to new jobs) is after
    # that moment. Pages of one profile, one page a job: the launch takes two jobs.
    monkeypatch.setattr(dispatch, "SNAPSHOT_PAGE", 1)
    monkeypatch.setattr(dispatch, "PAGES_PER_RUN", 1)
    kiribati = [
        await desk.identify(user, timezone="Pacific/Kiritimati") for user in ("kiri", "tabu")
    ]
    honolulu = await desk.identify("hono", timezone="Pacific/Honolulu")
    await desk.channel()
    day = (desk.clock.now() + timedelta(days=3)).date()
    campaign = await desk.campaign(
        audience={"type": "list", "user_ids": ["kiri", "tabu", "hono"]},
        template_id=await desk.template(),
    )
    body = {"when": "local", "local_date": day.isoformat(), "local_time": "09:00"}
    scheduled = await desk.post(f"/api/v1/campaigns/{campaign['id']}/send", body)
    launch = _at(scheduled["launch_at"])
    kiritimati = datetime.combine(day, time(9, 0), tzinfo=ZoneInfo("Pacific/Kiritimati"))
    assert kiritimati.astimezone(UTC) == launch

    # A worker picks the launch job up 2 seconds after it is due, its second page later.
    desk.clock.advance(launch + timedelta(seconds=2) - desk.clock.now())
    while await desk.recipient_rows(campaign["id"]) == 0:
        await desk.no_delivery.drain(rounds=1)
    assert await desk.recipient_rows(campaign["id"]) == 1
    desk.clock.advance(timedelta(minutes=5))
    await desk.run(deliver=False)
    planned = {r["profile_id"]: _at(r["send_at"]) for r in await desk.recipients(campaign["id"])}
    hawaii = datetime.combine(day, time(9, 0), tzinfo=ZoneInfo("Pacific/Honolulu"))
    assert planned == {**dict.fromkeys(kiribati, launch), honolulu: hawaii.astimezone(UTC)}
    sends = {str(m.profile_id): m.send_after for m in await desk.messages(campaign["id"])}
    assert sends == dict.fromkeys(kiribati, launch)  # asked for at once, on their day


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
    campaign = await desk.launched([f"c{i}" for i in range(4)])
    before = await desk.read(campaign["id"])
    assert before["state"] == "sending" and before["audience_size"] == 4  # messages queued
    assert len(await desk.recipients(campaign["id"], state="queued")) == 4
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
    assert after["state"] == "sending" and after["audience_size"] == 4
    assert await desk.recipient_rows(campaign["id"]) == 4
    again = {m.profile_id: m.id for m in await desk.messages(campaign["id"])}
    assert again == messages
    recipients = await desk.recipients(campaign["id"])
    assert {r["message_id"] for r in recipients} == {str(i) for i in messages.values()}
    delivery_jobs = await desk.jobs(DELIVER)
    assert sum(len(j.payload["message_ids"]) for j in delivery_jobs) == 4  # none made twice
    await desk.settle()
    assert (await desk.read(campaign["id"]))["state"] == "sent"
    assert len(await desk.messages(campaign["id"])) == 4


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
    refused = await desk.client.delete(f"/api/v1/templates/{archived}", headers=admin)
    body = problem(refused, 409)
    assert f"campaign {made['archived']['id']} ({made['archived']['name']})" in body["detail"]
    # As an archive racing the schedule would leave it: archived under the campaign.
    async with desk.database.write_session() as session:
        await templates.archive_template(
            session, workspace_id=desk.tenant.id, template_id=archived, now=desk.clock.now()
        )
        await session.commit()
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
    assert (found["state"], found["audience_size"]) == ("sending", 7)  # messages queued
    recipients = await desk.recipients(campaign["id"], state="queued")
    assert sorted(r["profile_id"] for r in recipients) == sorted(people)
    assert len(await desk.messages(campaign["id"])) == 7
    await desk.settle()
    found = await desk.read(campaign["id"])
    assert (found["state"], found["audience_size"]) == ("sent", 7)


async def _delete_channel(desk: Desk, channel_id: int) -> None:
    """Delete the channel past the API's check of who uses it."""
    async with desk.database.write_session() as session:
        await channel_config.delete_channel(
            session, workspace_id=desk.tenant.id, channel_id=channel_id, now=desk.clock.now()
        )
        await session.commit()


async def test_a_launch_stops_when_its_channel_went_away(desk: Desk) -> None:
    await desk.identify("a", email="a@example.com")
    admin = desk.tenant.admin
    default = await desk.channel()  # the workspace's first email channel: its default
    named = await desk.channel(name="Named")
    spare = await desk.channel(name="Spare")  # an email channel, but not the default
    template = await desk.template()
    audience = {"type": "list", "user_ids": ["a"]}
    through_named = await desk.campaign(audience=audience, template_id=template, channel_id=named)
    through_default = await desk.campaign(audience=audience, template_id=template)
    at = (desk.clock.now() + timedelta(hours=1)).isoformat()
    for campaign in (through_named, through_default):
        await desk.post(f"/api/v1/campaigns/{campaign['id']}/send", {"when": "at", "at": at})
    refused = await desk.client.delete(f"/api/v1/channels/{named}", headers=admin)
    assert f"campaign {through_named['id']}" in problem(refused, 409)["detail"]
    await _delete_channel(desk, named)  # as a delete racing the schedule would leave it
    refused = await desk.client.delete(f"/api/v1/channels/{default}", headers=admin)
    assert f"channel {spare} (Spare)" in problem(refused, 409, "is_default")["detail"]
    deleted = await desk.client.delete(f"/api/v1/channels/{spare}", headers=admin)
    assert deleted.status_code == 204  # not the default
    deleted = await desk.client.delete(f"/api/v1/channels/{default}", headers=admin)
    assert deleted.status_code == 204  # no campaign names it, nor is another to be chosen

    await desk.later(timedelta(hours=1), deliver=False)
    problems = {}
    for name, campaign in (("named", through_named), ("default", through_default)):
        found = await desk.read(campaign["id"])
        assert (found["state"], found["launched_at"]) == ("cancelled", None)
        assert found["finished_at"] is not None
        problems[name] = found["problem"]
        assert await desk.messages(campaign["id"]) == []
        assert await desk.recipient_rows(campaign["id"]) == 0
    assert problems == {
        "named": f"not launched: channel {named} was deleted",
        "default": "not launched: the workspace has no default email channel",
    }
    assert await desk.jobs(DISPATCH) == []


async def test_a_send_stops_when_its_channel_is_deleted_midway(desk: Desk) -> None:
    users = [f"t{i}" for i in range(3)]
    for user in users:
        await desk.identify(user, email=f"{user}@example.com")
    await desk.channel()
    named = await desk.channel(name="Named")
    campaign = await desk.campaign(
        audience={"type": "list", "user_ids": users},
        template_id=await desk.template(),
        channel_id=named,
        throttle_per_minute=1,
    )
    await desk.post(f"/api/v1/campaigns/{campaign['id']}/send")
    await desk.run(deliver=False)
    first = len(await desk.recipients(campaign["id"], state="queued"))
    assert 1 <= first < 3
    refused = await desk.client.delete(f"/api/v1/channels/{named}", headers=desk.tenant.admin)
    problem(refused, 409)
    await _delete_channel(desk, named)  # as a delete racing the dispatch would leave it

    await desk.later(timedelta(minutes=3), deliver=False)
    found = await desk.read(campaign["id"])
    assert (found["state"], found["problem"]) == (
        "cancelled",
        f"stopped: channel {named} was deleted",
    )
    states = Counter(r["state"] for r in await desk.recipients(campaign["id"]))
    assert states == {"queued": first, "skipped": 3 - first}
    assert [j.state for j in await desk.jobs(DISPATCH) if j.state == "dead"] == []


async def test_a_campaign_sends_until_its_deferred_messages_go_and_can_be_cancelled(
    desk: Desk, smtp_sink: SmtpSink
) -> None:
    # Quiet hours around now in UTC: "night" (UTC) is inside them, "day" (UTC+12) is not.
    now = desk.clock.now()
    start, end = now - timedelta(hours=1), now + timedelta(hours=3)
    quiet = {
        "quiet_hours_start": f"{start:%H:%M}",
        "quiet_hours_end": f"{end:%H:%M}",
        "quiet_channels": ["email"],
        "default_timezone": "UTC",
    }
    put = await desk.client.put("/api/v1/messaging/policy", json=quiet, headers=desk.tenant.admin)
    assert put.status_code == 200, put.text
    quiet_end = end.replace(second=0, microsecond=0)
    night = await desk.identify("night", email="night@example.com", timezone="UTC")
    await desk.identify("day", email="day@example.com", timezone="Etc/GMT-12")
    await desk.channel(port=smtp_sink.port)
    template = await desk.template()
    both = {"type": "list", "user_ids": ["night", "day"]}
    cancelled = await desk.campaign(audience=both, template_id=template)
    waiting = await desk.campaign(audience=both, template_id=template)
    normal = await desk.campaign(
        audience={"type": "list", "user_ids": ["day"]}, template_id=template
    )
    for campaign in (cancelled, waiting, normal):
        await desk.post(f"/api/v1/campaigns/{campaign['id']}/send")
    await desk.settle()

    def received() -> Counter[str]:
        return Counter(to for mail in smtp_sink.messages() for to in mail.rcpt_tos)

    assert received() == {"day@example.com": 3}
    done = await desk.read(normal["id"])
    assert (done["state"], _at(done["finished_at"])) == ("sent", desk.clock.now())
    for campaign in (cancelled, waiting):
        found = await desk.read(campaign["id"])
        assert (found["state"], found["finished_at"]) == ("sending", None)
        [deferred] = [m for m in await desk.messages(campaign["id"]) if str(m.profile_id) == night]
        assert (deferred.status, deferred.send_after) == ("queued", quiet_end)
        results = await desk.get(f"/api/v1/campaigns/{campaign['id']}/results")
        assert (results["queued"], results["delivered"], results["waiting"]) == (2, 1, 1)
    # One look again, when the deferred message is due: no polling meanwhile.
    assert sorted(j.run_at for j in await desk.jobs(DISPATCH) if j.state == "ready") == [
        quiet_end,
        quiet_end,
    ]

    url = f"/api/v1/campaigns/{cancelled['id']}"
    stopped = await desk.post(f"{url}/cancel")
    assert (stopped["state"], _at(stopped["finished_at"])) == ("cancelled", desk.clock.now())
    # Pausing holds back recipients not yet asked for; a message already asked for goes.
    paused = await desk.post(f"/api/v1/campaigns/{waiting['id']}/pause")
    assert paused["state"] == "paused"

    desk.clock.advance(quiet_end - desk.clock.now())
    await desk.run()
    assert received() == {"day@example.com": 3, "night@example.com": 1}  # the paused one's
    statuses = {str(m.profile_id): (m.status, m.reason) for m in await desk.messages(stopped["id"])}
    assert statuses[night] == ("refused", "campaign cancelled")
    results = await desk.get(f"{url}/results")
    assert (results["delivered"], results["refused"], results["waiting"]) == (1, 1, 0)
    assert results["refusals"] == {"campaign cancelled": 1}
    assert (await desk.read(stopped["id"]))["state"] == "cancelled"
    assert (await desk.read(waiting["id"]))["state"] == "paused"

    resumed = await desk.post(f"/api/v1/campaigns/{waiting['id']}/resume")
    assert resumed["state"] == "sending"
    await desk.run()
    finished = await desk.read(waiting["id"])
    assert (finished["state"], _at(finished["finished_at"])) == ("sent", quiet_end)
    await desk.later(timedelta(hours=6))
    assert received() == {"day@example.com": 3, "night@example.com": 1}


async def test_a_campaign_looks_rarely_at_a_message_long_overdue(
    desk: Desk, smtp_sink: SmtpSink
) -> None:
    """A message whose delivery never runs (its job dead, say) keeps its campaign sending;
    once it is `STUCK` overdue the campaign looks again every `STUCK`, not every `RECHECK`."""
    await desk.identify("ann", email="ann@example.com")
    await desk.channel(port=smtp_sink.port)
    campaign = await desk.campaign(
        audience={"type": "list", "user_ids": ["ann"]}, template_id=await desk.template()
    )
    await desk.post(f"/api/v1/campaigns/{campaign['id']}/send")
    await desk.run(deliver=False)

    def next_look(jobs: list[Job]) -> list[datetime]:
        return [j.run_at for j in jobs if j.state == "ready"]

    assert next_look(await desk.jobs(DISPATCH)) == [desk.clock.now() + dispatch.RECHECK]
    await desk.later(dispatch.STUCK + timedelta(seconds=1), deliver=False)
    assert next_look(await desk.jobs(DISPATCH)) == [desk.clock.now() + dispatch.STUCK]
    assert (await desk.read(campaign["id"]))["state"] == "sending"
    await desk.run()  # delivered at last: the next look finds nothing waiting
    assert [m.status for m in await desk.messages(campaign["id"])] == ["delivered"]
    await desk.later(dispatch.STUCK)
    assert (await desk.read(campaign["id"]))["state"] == "sent"


async def test_recipients_page_by_profile_and_refuse_a_cursor_not_ours(desk: Desk) -> None:
    campaign = await desk.launched([f"u{i}" for i in range(5)])
    paged = await desk.recipients(campaign["id"], limit=2)
    whole = await desk.recipients(campaign["id"])
    assert len(paged) == 5 and paged == whole
    assert [r["profile_id"] for r in paged] == sorted(r["profile_id"] for r in paged)
    path = f"/api/v1/campaigns/{campaign['id']}/recipients"
    for cursor in (encode_cursor("not a uuid"), encode_cursor(7), "%%%"):
        refused = await desk.client.get(path, params={"cursor": cursor}, headers=desk.tenant.admin)
        problem(refused, 400, "cursor")
