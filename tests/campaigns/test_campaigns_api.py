"""Campaigns over the API: defining and editing them, bad input refused naming the field with
nothing saved, audience previews, the states and their illegal transitions, and what keeps
a campaign from being sent."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from clarion.campaigns.dispatch import LAUNCH
from clarion.campaigns.models import Campaign
from tests.campaigns.conftest import PRO, Desk
from tests.conftest import problem


async def _campaigns(desk: Desk) -> int:
    async with desk.database.read_session() as session:
        count = await session.scalar(
            select(func.count()).where(Campaign.workspace_id == desk.tenant.id)
        )
        return int(count or 0)


async def test_a_campaign_is_created_read_listed_edited_and_deleted(desk: Desk) -> None:
    template = await desk.template()
    channel = await desk.channel()
    segment = await desk.segment()
    created = await desk.campaign(
        name="Spring sale",
        audience={"type": "segment", "segment_id": segment},
        template_id=template,
        channel_id=channel,
        priority=5,
        throttle_per_minute=100,
        goal={"event": "Order Completed", "within_days": 3},
    )
    assert created["state"] == "draft"
    assert (created["channel"], created["category"], created["channel_id"]) == (
        "email",
        "marketing",
        channel,
    )
    assert created["goal"] == {"event": "Order Completed", "within_days": 3}
    assert created["audience"] == {"type": "segment", "segment_id": segment}
    assert await desk.read(created["id"]) == created

    listed = await desk.get("/api/v1/campaigns")
    assert [c["id"] for c in listed["items"]] == [created["id"]]
    assert (await desk.get("/api/v1/campaigns", state="sent"))["items"] == []

    url = f"/api/v1/campaigns/{created['id']}"
    changes = {
        "name": "Summer sale",
        "audience": {"type": "list", "user_ids": ["u1"]},
        "goal": None,
        "throttle_per_minute": None,
    }
    response = await desk.client.patch(url, json=changes, headers=desk.tenant.admin)
    assert response.status_code == 200, response.text
    edited = response.json()
    assert edited["name"] == "Summer sale" and edited["goal"] is None
    assert edited["throttle_per_minute"] is None and edited["priority"] == 5
    assert edited["audience"] == {"type": "list", "user_ids": ["u1"], "profile_ids": []}

    assert (await desk.client.delete(url, headers=desk.tenant.admin)).status_code == 204
    problem(await desk.client.get(url, headers=desk.tenant.admin), 404)
    assert await _campaigns(desk) == 0


async def test_bad_input_is_refused_naming_the_field_and_nothing_is_saved(desk: Desk) -> None:
    template = await desk.template()
    archived = await desk.template(name="Old")
    gone = await desk.client.delete(f"/api/v1/templates/{archived}", headers=desk.tenant.admin)
    assert gone.status_code == 204
    sms = await desk.post(
        "/api/v1/channels",
        {
            "name": "Texts",
            "kind": "sms",
            "settings": {"account_sid": "AC1", "from_number": "+15550001111"},
            "secrets": {"auth_token": "twilio-token-1"},
        },
        201,
    )
    segment = await desk.segment()
    good: dict[str, Any] = {
        "name": "Good",
        "audience": {"type": "segment", "segment_id": segment},
        "template_id": template,
    }
    unknown = {"type": "segment", "segment_id": 999_999}
    huge = {"type": "list", "user_ids": ["x"] * 10_001}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({**good, "template_id": 999_999}, 422, "template_id"),
        ({**good, "template_id": archived}, 409, "template_id"),
        ({**good, "audience": unknown}, 422, "audience.segment_id"),
        ({**good, "audience": {"type": "list"}}, 422, "audience.list"),
        ({**good, "audience": huge}, 422, "audience.list.user_ids"),
        ({**good, "audience": {"type": "crowd"}}, 422, "audience"),
        ({**good, "channel_id": 999_999}, 422, "channel_id"),
        ({**good, "channel_id": sms["id"]}, 422, "channel_id"),
        ({**good, "throttle_per_minute": 0}, 422, "throttle_per_minute"),
        ({**good, "goal": {"event": "Order Completed", "within_days": 0}}, 422, "goal.within_days"),
        # Numbers are numbers: neither a boolean nor a numeral in a string is read as one.
        ({**good, "template_id": True}, 422, "template_id"),
        ({**good, "priority": True}, 422, "priority"),
        ({**good, "throttle_per_minute": "60"}, 422, "throttle_per_minute"),
        ({**good, "goal": {"event": "Ordered", "within_days": True}}, 422, "goal.within_days"),
        ({**good, "name": ""}, 422, "name"),
        ({**good, "surprise": 1}, 422, "surprise"),
    ]  # fmt: skip
    for body, status, field in cases:
        response = await desk.client.post("/api/v1/campaigns", json=body, headers=desk.tenant.admin)
        problem(response, status, field)
    assert await _campaigns(desk) == 0

    await desk.campaign(**{**good, "name": "Taken"})
    taken = await desk.client.post(
        "/api/v1/campaigns", json={**good, "name": "Taken"}, headers=desk.tenant.admin
    )
    problem(taken, 409, "name")
    assert await _campaigns(desk) == 1


async def test_previews_count_and_sample_the_audience(desk: Desk) -> None:
    a = await desk.identify("a", plan="pro")
    b = await desk.identify("b", plan="pro")
    await desk.identify("c", plan="free")
    segment = await desk.segment()
    body = {"audience": {"type": "segment", "segment_id": segment}}
    preview = await desk.post("/api/v1/campaigns/preview?sample=5", body)
    assert preview["count"] == 2
    assert sorted((s["profile_id"], s["user_id"]) for s in preview["sample"]) == sorted(
        [(a, "a"), (b, "b")]
    )
    one = await desk.post("/api/v1/campaigns/preview?sample=1", body)
    assert one["count"] == 2 and len(one["sample"]) == 1

    listed = {
        "type": "list",
        "user_ids": ["a", "nobody", "a"],
        "profile_ids": [b, str(uuid.uuid4())],
    }
    preview = await desk.post("/api/v1/campaigns/preview", {"audience": listed})
    assert preview["count"] == 2  # b, then a; the unknown ones are left out
    assert [s["profile_id"] for s in preview["sample"]] == [b, a]

    missing = {"audience": {"type": "segment", "segment_id": 999_999}}
    response = await desk.client.post(
        "/api/v1/campaigns/preview", json=missing, headers=desk.tenant.admin
    )
    problem(response, 422, "audience.segment_id")

    campaign = await desk.campaign(
        audience={"type": "segment", "segment_id": segment}, template_id=await desk.template()
    )
    saved = await desk.get(f"/api/v1/campaigns/{campaign['id']}/preview", sample=0)
    assert saved == {"count": 2, "sample": []}


async def test_illegal_transitions_are_409s_naming_the_state(desk: Desk) -> None:
    await desk.identify("a", plan="pro")
    await desk.channel()
    campaign = await desk.campaign(
        audience={"type": "segment", "segment_id": await desk.segment()},
        template_id=await desk.template(),
    )
    url = f"/api/v1/campaigns/{campaign['id']}"
    admin = desk.tenant.admin

    async def refused(method: str, suffix: str, body: Any = None) -> None:
        response = await desk.client.request(method, url + suffix, json=body, headers=admin)
        problem(response, 409, "state")

    for action in ("/pause", "/resume", "/cancel"):
        await refused("POST", action)  # a draft is neither sending nor paused nor scheduled

    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    scheduled = await desk.post(f"{url}/send", {"when": "at", "at": later})
    assert scheduled["state"] == "scheduled" and scheduled["launch_at"] is not None
    await refused("DELETE", "")
    await refused("POST", "/pause")
    await refused("POST", "/resume")
    edited = await desk.client.patch(url, json={"priority": 3}, headers=admin)
    assert edited.json()["priority"] == 3  # a scheduled campaign may still be edited

    sending = await desk.post(f"{url}/send", {"when": "now"})  # rescheduled to now
    assert sending["state"] == "sending"
    await refused("PATCH", "", {"priority": 4})
    await refused("DELETE", "")
    await refused("POST", "/send")
    await refused("POST", "/resume")
    paused = await desk.post(f"{url}/pause")
    assert paused["state"] == "paused" and paused["paused_at"] is not None
    await refused("POST", "/pause")
    await refused("PATCH", "", {"priority": 4})
    resumed = await desk.post(f"{url}/resume")
    assert resumed["state"] == "sending" and resumed["paused_at"] is None

    await desk.run(deliver=False)
    assert (await desk.read(campaign["id"]))["state"] == "sending"  # its message is queued
    await desk.settle()
    assert (await desk.read(campaign["id"]))["state"] == "sent"
    for method, action in (("POST", "/pause"), ("POST", "/cancel"), ("POST", "/send")):
        await refused(method, action)

    other = await desk.campaign(
        audience={"type": "list", "user_ids": ["a"]}, template_id=campaign["template_id"]
    )
    other_url = f"/api/v1/campaigns/{other['id']}"
    await desk.post(f"{other_url}/send", {"when": "at", "at": later})
    cancelled = await desk.post(f"{other_url}/cancel")
    assert cancelled["state"] == "cancelled" and cancelled["finished_at"] is not None
    for action in ("/cancel", "/resume", "/send"):
        response = await desk.client.post(other_url + action, headers=admin)
        problem(response, 409, "state")
    await desk.later(timedelta(hours=3), deliver=False)  # its stale launch job does nothing
    assert (await desk.read(other["id"]))["state"] == "cancelled"
    assert await desk.recipient_rows(other["id"]) == 0


async def test_what_keeps_a_campaign_from_being_sent(desk: Desk) -> None:
    await desk.identify("a", plan="pro")
    template = await desk.template()
    pros = await desk.segment()
    nobody = await desk.segment({**PRO, "value": "enterprise"}, name="Nobody")
    campaign = await desk.campaign(
        audience={"type": "segment", "segment_id": pros}, template_id=template
    )
    url = f"/api/v1/campaigns/{campaign['id']}"
    admin = desk.tenant.admin

    async def refused(status: int, field: str, body: Any = None) -> None:
        problem(await desk.client.post(f"{url}/send", json=body, headers=admin), status, field)
        assert (await desk.read(campaign["id"]))["state"] == "draft"
        assert await desk.jobs(LAUNCH) == []

    await refused(409, "channel_id")  # no email channel in the workspace
    await desk.channel()
    now = datetime.now(UTC)
    await refused(422, "at", {"when": "at"})
    await refused(422, "at", {"when": "at", "at": (now - timedelta(minutes=1)).isoformat()})
    await refused(422, "at", {"when": "at", "at": "2030-01-01T09:00:00"})  # no offset
    await refused(422, "local_time", {"when": "local", "local_date": "2030-01-01"})
    await refused(422, "local_date", {"when": "local", "local_time": "09:00"})
    for wall in ("25:00", "\u0662\u0663:\u0665\u0669", "9:00"):  # Arabic-Indic 23:59 was read
        bad_time = {"when": "local", "local_date": "2030-01-01", "local_time": wall}
        await refused(422, "local_time", bad_time)
    # 12 hours ahead: less than the 24 hours a local-time send needs, whatever the hour now.
    soon = now + timedelta(hours=12)
    late = {"when": "local", "local_date": soon.date().isoformat(), "local_time": f"{soon:%H:%M}"}
    await refused(409, "local_date", late)
    await refused(422, "when", {"when": "yesterday"})

    response = await desk.client.patch(
        url, json={"audience": {"type": "segment", "segment_id": nobody}}, headers=admin
    )
    assert response.status_code == 200
    await refused(409, "audience")  # the segment is empty
    empty_list = {"type": "list", "user_ids": ["nobody"]}
    response = await desk.client.patch(url, json={"audience": empty_list}, headers=admin)
    assert response.status_code == 200
    await refused(409, "audience")  # nobody on the list resolves

    response = await desk.client.patch(
        url, json={"audience": {"type": "segment", "segment_id": pros}}, headers=admin
    )
    assert response.status_code == 200
    deleted = await desk.client.delete(f"/api/v1/segments/{pros}", headers=admin)
    assert deleted.status_code == 204
    await refused(409, "audience.segment_id")

    response = await desk.client.patch(url, json={"audience": empty_list}, headers=admin)
    await desk.identify("nobody")
    archived = await desk.client.delete(f"/api/v1/templates/{template}", headers=admin)
    assert archived.status_code == 204
    await refused(409, "template_id")


async def test_editing_a_scheduled_campaign_checks_its_channel_as_sending_does(desk: Desk) -> None:
    await desk.identify("a", plan="pro")
    await desk.channel()  # email only: no sms channel yet
    email = await desk.template()
    text = await desk.template(name="Text", channel="sms", content={"body": "Hi"})
    admin = desk.tenant.admin
    audience = {"type": "list", "user_ids": ["a"]}
    draft = await desk.campaign(audience=audience, template_id=email)
    scheduled = await desk.campaign(audience=audience, template_id=email)
    url = f"/api/v1/campaigns/{scheduled['id']}"
    at = (desk.clock.now() + timedelta(hours=1)).isoformat()
    before = await desk.post(f"{url}/send", {"when": "at", "at": at})

    # A draft may be made ready step by step; a scheduled campaign must stay sendable.
    edited = await desk.client.patch(
        f"/api/v1/campaigns/{draft['id']}", json={"template_id": text}, headers=admin
    )
    assert edited.status_code == 200 and edited.json()["channel"] == "sms"
    refused = await desk.client.patch(url, json={"template_id": text, "priority": 9}, headers=admin)
    problem(refused, 409, "channel_id")
    assert await desk.read(scheduled["id"]) == before  # nothing changed
    assert len(await desk.jobs(LAUNCH)) == 1

    texts = await desk.post(
        "/api/v1/channels",
        {
            "name": "Texts",
            "kind": "sms",
            "settings": {"account_sid": "AC1", "from_number": "+15550001111"},
            "secrets": {"auth_token": "twilio-token-1"},
        },
        201,
    )
    edited = await desk.client.patch(url, json={"template_id": text}, headers=admin)
    assert edited.status_code == 200, edited.text
    assert (edited.json()["channel"], edited.json()["state"]) == ("sms", "scheduled")
    gone = await desk.client.delete(f"/api/v1/channels/{texts['id']}", headers=admin)
    assert gone.status_code == 204
    problem(await desk.client.patch(url, json={"priority": 2}, headers=admin), 409, "channel_id")


async def test_send_times_out_of_range_or_too_far_ahead_are_refused(desk: Desk) -> None:
    await desk.identify("a", plan="pro")
    await desk.channel()
    campaign = await desk.campaign(
        audience={"type": "list", "user_ids": ["a"]}, template_id=await desk.template()
    )
    url = f"/api/v1/campaigns/{campaign['id']}"
    admin = desk.tenant.admin
    now = desk.clock.now()

    def local(moment: datetime) -> dict[str, str]:
        return {"when": "local", "local_date": moment.date().isoformat(), "local_time": "09:00"}

    cases: list[tuple[dict[str, str], str]] = [
        ({"when": "at", "at": "9999-12-31T23:59:59-14:00"}, "at"),  # past the calendar in UTC
        ({"when": "at", "at": "9999-12-31T23:59:59Z"}, "at"),
        ({"when": "at", "at": (now + timedelta(days=367)).isoformat()}, "at"),
        ({"when": "at", "at": "0001-01-01T00:00:00+14:00"}, "at"),
        ({"when": "local", "local_date": "0001-01-01", "local_time": "00:00"}, "local_date"),
        ({"when": "local", "local_date": "9999-12-31", "local_time": "23:59"}, "local_date"),
        (local(now + timedelta(days=367)), "local_date"),
        (local(now - timedelta(days=2)), "local_date"),  # passed in every zone
    ]  # fmt: skip
    for body, field in cases:
        response = await desk.client.post(f"{url}/send", json=body, headers=admin)
        problem(response, 422, field)
        assert (await desk.read(campaign["id"]))["state"] == "draft"
        assert await desk.jobs(LAUNCH) == []

    in_a_year = (now + timedelta(days=364)).isoformat()
    far = await desk.post(f"{url}/send", {"when": "at", "at": in_a_year})
    assert far["state"] == "scheduled"
    far_local = await desk.post(f"{url}/send", local(now + timedelta(days=364)))
    assert far_local["state"] == "scheduled"


async def test_null_is_refused_for_what_a_campaign_cannot_be_without(desk: Desk) -> None:
    channel = await desk.channel()
    created = await desk.campaign(
        audience={"type": "list", "user_ids": ["a"]},
        template_id=await desk.template(),
        channel_id=channel,
        throttle_per_minute=10,
        goal={"event": "Order Completed", "within_days": 3},
    )
    url = f"/api/v1/campaigns/{created['id']}"
    admin = desk.tenant.admin
    for field in ("name", "template_id", "audience", "description", "priority"):
        response = await desk.client.patch(url, json={field: None}, headers=admin)
        problem(response, 422, field)
    assert await desk.read(created["id"]) == created

    removable = {"channel_id": None, "throttle_per_minute": None, "goal": None}
    edited = await desk.client.patch(url, json=removable, headers=admin)
    assert edited.status_code == 200, edited.text
    assert {name: edited.json()[name] for name in removable} == removable


async def test_time_fields_the_send_does_not_use_are_refused_naming_them(desk: Desk) -> None:
    await desk.identify("a", plan="pro")
    await desk.channel()
    campaign = await desk.campaign(
        audience={"type": "list", "user_ids": ["a"]}, template_id=await desk.template()
    )
    url = f"/api/v1/campaigns/{campaign['id']}"
    at = (desk.clock.now() + timedelta(hours=2)).isoformat()
    day = (desk.clock.now() + timedelta(days=3)).date().isoformat()
    local = {"when": "local", "local_date": day, "local_time": "09:00"}
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"when": "now", "at": at}, ["at"]),
        ({"at": at}, ["at"]),  # `when` is now unless said: a time alone is not a schedule
        ({"when": "now", "local_date": day, "local_time": "09:00"}, ["local_date", "local_time"]),
        ({"when": "at", "at": at, "local_date": day}, ["local_date"]),
        ({"when": "at", "at": at, "local_time": "09:00"}, ["local_time"]),
        ({**local, "at": at}, ["at"]),
    ]  # fmt: skip
    for body, fields in cases:
        response = await desk.client.post(f"{url}/send", json=body, headers=desk.tenant.admin)
        found = problem(response, 422)
        assert sorted(e["field"] for e in found["errors"]) == fields, found
        assert (await desk.read(campaign["id"]))["state"] == "draft"
        assert await desk.jobs(LAUNCH) == []

    # Null is the same as left out.
    sent = await desk.post(f"{url}/send", {"when": "at", "at": at, "local_date": None})
    assert (sent["state"], sent["send_mode"]) == ("scheduled", "at")
    sent = await desk.post(f"{url}/send", {**local, "at": None})
    assert (sent["state"], sent["send_mode"]) == ("scheduled", "local")


async def test_a_scheduled_campaign_cannot_be_edited_to_a_list_of_nobody(desk: Desk) -> None:
    a = await desk.identify("a", plan="pro")
    await desk.channel()
    template = await desk.template()
    empty_segment = await desk.segment({**PRO, "value": "enterprise"}, name="Nobody yet")
    admin = desk.tenant.admin
    draft = await desk.campaign(audience={"type": "list", "user_ids": ["a"]}, template_id=template)
    scheduled = await desk.campaign(
        audience={"type": "list", "user_ids": ["a"]}, template_id=template
    )
    url = f"/api/v1/campaigns/{scheduled['id']}"
    at = (desk.clock.now() + timedelta(hours=1)).isoformat()
    before = await desk.post(f"{url}/send", {"when": "at", "at": at})

    nobody = [
        {"type": "list", "user_ids": ["ghost"]},
        {"type": "list", "profile_ids": [str(uuid.uuid4())]},
    ]
    for audience in nobody:
        body = {"audience": audience, "priority": 7}
        problem(await desk.client.patch(url, json=body, headers=admin), 409, "audience")
        assert await desk.read(scheduled["id"]) == before  # nothing changed
    empty = await desk.client.patch(url, json={"audience": {"type": "list"}}, headers=admin)
    problem(empty, 422, "audience.list")  # as on creation

    # A draft may be made ready step by step, as on creation; sending checks it.
    edited = await desk.client.patch(
        f"/api/v1/campaigns/{draft['id']}", json={"audience": nobody[0]}, headers=admin
    )
    assert edited.status_code == 200, edited.text
    # A segment is taken at launch: empty now, it may have members by then.
    segment = {"type": "segment", "segment_id": empty_segment}
    edited = await desk.client.patch(url, json={"audience": segment}, headers=admin)
    assert edited.status_code == 200, edited.text
    listed = {"type": "list", "user_ids": ["ghost"], "profile_ids": [a]}
    edited = await desk.client.patch(url, json={"audience": listed}, headers=admin)
    assert (edited.status_code, edited.json()["audience"]) == (200, listed)
