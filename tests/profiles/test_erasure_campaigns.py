"""An erased person leaves campaigns' list audiences: their profile ids (merged-away ones
too) and user ids go from every list, whatever the campaign's state, so a scheduled one
no longer sends to them and none keeps naming them."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI

from clarion.campaigns import audience
from clarion.cli import profiles as profiles_cli
from clarion.erasers import PROFILE_ERASERS
from clarion.segments import membership
from tests.campaigns.conftest import Desk
from tests.messaging.conftest import SmtpSink


async def test_an_erased_person_leaves_every_list_audience(desk: Desk, smtp_sink: SmtpSink) -> None:
    await desk.track_raw(
        {"type": "identify", "anonymousId": "device-1", "traits": {"email": "ann@example.com"}}
    )
    device = await desk.get("/api/v1/profiles", anonymous_id="device-1")
    [anonymous] = device["items"]
    ann = await desk.identify("ann", email="ann@example.com")  # absorbs the device's
    bo = await desk.identify("bo", email="bo@example.com")
    await desk.channel(smtp_sink.port)
    template = await desk.template()
    everyone = {
        "type": "list",
        "user_ids": ["ann", "bo"],
        "profile_ids": [anonymous["id"], bo],
    }
    draft = await desk.campaign(audience=everyone, template_id=template)
    scheduled = await desk.campaign(audience={"type": "list", "user_ids": ["ann", "bo"]},
                                    template_id=template)  # fmt: skip
    at = (desk.clock.now() + timedelta(hours=1)).isoformat()
    await desk.post(f"/api/v1/campaigns/{scheduled['id']}/send", {"when": "at", "at": at})
    alone = await desk.campaign(audience={"type": "list", "profile_ids": [ann]},
                                template_id=template)  # fmt: skip

    erased = await desk.client.delete(f"/api/v1/profiles/{ann}", headers=desk.tenant.admin)
    assert erased.status_code == 204, erased.text

    assert (await desk.read(draft["id"]))["audience"] == {
        "type": "list", "user_ids": ["bo"], "profile_ids": [bo],
    }  # fmt: skip
    assert (await desk.read(scheduled["id"]))["audience"]["user_ids"] == ["bo"]
    assert (await desk.read(alone["id"]))["audience"]["profile_ids"] == []
    await desk.later(timedelta(hours=1))
    await desk.settle()
    recipients = await desk.recipients(scheduled["id"])
    assert [r["profile_id"] for r in recipients] == [bo]
    assert [mail.rcpt_tos for mail in smtp_sink.messages()] == [["bo@example.com"]]


def test_the_api_and_the_command_run_the_same_erasers(app: FastAPI) -> None:
    """`clarion profiles erase` passes `PROFILE_ERASERS` too: both erase as much."""
    assert app.state.profile_erasers is PROFILE_ERASERS
    assert profiles_cli.PROFILE_ERASERS is PROFILE_ERASERS
    assert list(PROFILE_ERASERS) == [membership.erase_profiles, audience.forget_profiles]
