"""A channel that campaigns yet to finish or live journeys name cannot be deleted: a 409
names them, as deleting a segment they use is refused; what names no channel (its kind's
default at send time) holds none back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.campaigns.conftest import Desk
from tests.conftest import problem


async def _webhook_channel(desk: Desk, name: str) -> int:
    body = {"name": name, "kind": "webhook", "settings": {"url": "https://hooks.example.com/"}}
    return int((await desk.post("/api/v1/channels", body, 201))["id"])


def _journey(send: int, hook: int, template: int, hook_template: int, alarms: int) -> Any:
    """Checkout started: an email through channel `send` and a webhook through `hook`;
    alerts posted to `alarms`."""
    return {
        "alerts": {"channel_id": alarms},
        "nodes": [
            {
                "id": "start",
                "type": "trigger",
                "trigger": {"kind": "event", "event": "Checkout Started"},
                "next": "tell",
            },
            {
                "id": "tell",
                "type": "action",
                "actions": [
                    {"kind": "send", "template_id": template, "channel_id": send},
                    {"kind": "webhook", "template_id": hook_template, "channel_id": hook},
                    {"kind": "send", "template_id": template},  # the default: holds none
                ],
                "next": "done",
            },
            {"id": "done", "type": "exit"},
        ],
    }


async def test_a_channel_campaigns_or_journeys_send_through_cannot_be_deleted(
    desk: Desk,
) -> None:
    admin = desk.tenant.admin
    await desk.identify("a", email="a@example.com", plan="pro")
    default = await desk.channel()  # the first email channel: the default
    named = await desk.channel(name="Named")
    hook, alarms = await _webhook_channel(desk, "CRM"), await _webhook_channel(desk, "Alarms")
    template = await desk.template()
    hook_template = await desk.template(
        "Sync", {"body": {"user": "{{ profile.user_id }}"}}, "webhook"
    )
    audience = {"type": "list", "user_ids": ["a"]}
    later = {"when": "at", "at": (desk.clock.now() + timedelta(hours=1)).isoformat()}
    scheduled = await desk.campaign(audience=audience, template_id=template, channel_id=named)
    await desk.post(f"/api/v1/campaigns/{scheduled['id']}/send", later)
    sending = await desk.campaign(audience=audience, template_id=template, channel_id=named)
    await desk.post(f"/api/v1/campaigns/{sending['id']}/send")
    await desk.run(deliver=False)  # launched; its message waits in the queue
    assert (await desk.read(sending["id"]))["state"] == "sending"
    draft = await desk.campaign(audience=audience, template_id=template, channel_id=named)
    through_default = await desk.campaign(audience=audience, template_id=template)
    await desk.post(f"/api/v1/campaigns/{through_default['id']}/send", later)
    graph = _journey(named, hook, template, hook_template, alarms)
    journey = await desk.post("/api/v1/journeys", {"name": "Checkout", "graph": graph}, 201)
    journey_url = f"/api/v1/journeys/{journey['id']}"
    await desk.post(f"{journey_url}/publish")

    async def refused(channel: int, *users: str) -> None:
        body = problem(await desk.client.delete(f"/api/v1/channels/{channel}", headers=admin), 409)
        assert body["detail"] == f"This channel is in use by {', '.join(users)}."
        assert (await desk.client.get(f"/api/v1/channels/{channel}", headers=admin)).is_success

    def named_as(thing: str, found: dict[str, Any]) -> str:
        return f"{thing} {found['id']} ({found['name']})"

    journey_name = named_as("journey", journey)
    # Journeys first, then campaigns (scheduled, sending; never a draft), each by id.
    await refused(
        named, journey_name, named_as("campaign", scheduled), named_as("campaign", sending)
    )
    await refused(hook, journey_name)  # a webhook step's channel
    await refused(alarms, journey_name)  # where its alerts go
    await desk.post(f"/api/v1/campaigns/{sending['id']}/pause")
    await desk.post(f"{journey_url}/pause")
    await refused(
        named, journey_name, named_as("campaign", scheduled), named_as("campaign", sending)
    )
    await desk.post(f"{journey_url}/archive")
    for campaign in (scheduled, sending):
        await desk.post(f"/api/v1/campaigns/{campaign['id']}/cancel")
    for channel in (named, alarms, hook):  # the default webhook channel last: the only one
        deleted = await desk.client.delete(f"/api/v1/channels/{channel}", headers=admin)
        assert deleted.status_code == 204, deleted.text
    # A campaign naming no channel sends through the default then: it holds none back (and
    # stops at launch when there is none, saying so).
    deleted = await desk.client.delete(f"/api/v1/channels/{default}", headers=admin)
    assert deleted.status_code == 204, deleted.text
    assert (await desk.read(draft["id"]))["state"] == "draft"
