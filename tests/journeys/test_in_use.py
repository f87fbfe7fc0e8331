"""What journeys and campaigns still need is not taken from under them: a template they have
yet to send cannot be deleted (archived), and a segment, channel or template named by a
version that live runs are still on (runs stay on the version they entered) is held as the
published version's are; a 409 names them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from clarion.messaging.models import Message
from tests.campaigns.conftest import Desk
from tests.conftest import problem
from tests.journeys.test_runtime import publish, runs

DAY = 24 * 3600
VIP = {"type": "trait", "trait": "vip", "operator": "eq", "value": True}


def _mailer(
    trigger: dict[str, Any], actions: list[dict[str, Any]], when: Any = None
) -> dict[str, Any]:
    """The trigger, a day's wait, then (for those `when` holds, when given) the actions."""
    branch = (
        [{"id": "check", "type": "condition", "branches": [{"when": when, "next": "tell"}],
          "otherwise": "done"}]
        if when is not None
        else []
    )  # fmt: skip
    return {
        "nodes": [
            {"id": "start", "type": "trigger", "trigger": trigger, "next": "day"},
            {
                "id": "day",
                "type": "wait",
                "wait": {"kind": "duration", "seconds": DAY},
                "next": "check" if branch else "tell",
            },
            *branch,
            {"id": "tell", "type": "action", "actions": actions, "next": "done"},
            {"id": "done", "type": "exit"},
        ]
    }


def _signed_up(user_id: str) -> dict[str, Any]:
    return {"type": "track", "event": "Signed Up", "userId": user_id}


async def _publish_again(desk: Desk, journey: int, graph: dict[str, Any]) -> None:
    """The graph published as the journey's next version."""
    url = f"/api/v1/journeys/{journey}"
    edited = await desk.client.patch(url, json={"graph": graph}, headers=desk.tenant.admin)
    assert edited.status_code == 200, edited.text
    await desk.post(f"{url}/publish")


async def _refused(desk: Desk, path: str, *users: str) -> None:
    """DELETE `path` answers 409 naming `users`, and the thing is still there as it was."""
    before = await desk.get(path)
    thing = path.split("/")[3].removesuffix("s")  # /api/v1/templates/6: "template"
    response = await desk.client.delete(path, headers=desk.tenant.admin)
    assert problem(response, 409)["detail"] == f"This {thing} is in use by {', '.join(users)}."
    assert await desk.get(path) == before


async def _deleted(desk: Desk, path: str) -> None:
    response = await desk.client.delete(path, headers=desk.tenant.admin)
    assert response.status_code == 204, response.text


async def test_a_template_live_journeys_or_campaigns_yet_to_launch_send_is_not_archived(
    desk: Desk,
) -> None:
    await desk.identify("a", email="a@example.com")
    await desk.channel()
    hooks = {"name": "CRM", "kind": "webhook", "settings": {"url": "https://hooks.example.com/"}}
    hook = int((await desk.post("/api/v1/channels", hooks, 201))["id"])
    mail, other = await desk.template(), await desk.template("Other")
    sync = await desk.template("Sync", {"body": {"user": "{{ profile.user_id }}"}}, "webhook")
    unused = await desk.template("Unused")
    actions = [
        {"kind": "send", "template_id": mail},
        {"kind": "webhook", "template_id": sync, "channel_id": hook},
    ]
    trigger = {"kind": "event", "event": "Signed Up"}
    journey = await publish(desk, _mailer(trigger, actions), name="Welcome")
    welcome = f"journey {journey} (Welcome)"
    audience = {"type": "list", "user_ids": ["a"]}
    later = {"when": "at", "at": (desk.clock.now() + timedelta(hours=1)).isoformat()}
    scheduled = await desk.campaign(audience=audience, template_id=mail)
    await desk.post(f"/api/v1/campaigns/{scheduled['id']}/send", later)
    launched = await desk.campaign(audience=audience, template_id=other)
    await desk.post(f"/api/v1/campaigns/{launched['id']}/send")
    await desk.run(deliver=False)  # launched with its version fixed; its message waits
    assert (await desk.read(launched["id"]))["state"] == "sending"
    await desk.campaign(audience=audience, template_id=unused)  # a draft holds nothing

    mail_url, sync_url = f"/api/v1/templates/{mail}", f"/api/v1/templates/{sync}"
    await _refused(desk, mail_url, welcome, f"campaign {scheduled['id']} ({scheduled['name']})")
    await _refused(desk, sync_url, welcome)
    await _deleted(desk, f"/api/v1/templates/{other}")  # sent as the version it fixed
    await _deleted(desk, f"/api/v1/templates/{unused}")
    await desk.post(f"/api/v1/campaigns/{scheduled['id']}/cancel")

    # A run waits on version 1; version 2 sends another template: version 1's runs still
    # send these, and a paused journey's runs go on when it is resumed.
    await desk.track_raw(_signed_up("a"))
    replaced = _mailer(trigger, [{"kind": "send", "template_id": await desk.template("New")}])
    await _publish_again(desk, journey, replaced)
    await desk.post(f"/api/v1/journeys/{journey}/pause")
    await _refused(desk, mail_url, f"{welcome} for its runs on version 1")
    await desk.post(f"/api/v1/journeys/{journey}/resume")
    await desk.later(timedelta(seconds=DAY), deliver=False)
    [run] = await runs(desk)
    assert (run.version, run.state, run.reason) == (1, "completed", "exit")
    for template in (mail, sync):  # no run is left on version 1
        await _deleted(desk, f"/api/v1/templates/{template}")


async def test_segments_and_channels_a_version_with_live_runs_names_are_held(
    desk: Desk,
) -> None:
    await desk.identify("b", email="b@example.com", plan="free", vip=True)
    pros = await desk.segment()  # plan = pro
    vips = await desk.segment(VIP, "VIPs")
    await desk.channel()  # the default, which version 2 sends through
    named = await desk.channel(name="Named")
    template = await desk.template()
    entered = {"kind": "segment_entered", "segment_id": pros}
    send = [{"kind": "send", "template_id": template, "channel_id": named}]
    vip = {"type": "segment", "segment_id": vips}
    journey = await publish(desk, _mailer(entered, send, vip), name="Pros")
    await desk.identify("b", plan="pro")  # enters the segment, then the journey
    [run] = await runs(desk)
    assert (run.version, run.state, run.node) == (1, "waiting", "day")
    # Version 2 enters on an event, branches on nothing and sends through the default.
    signed_up = {"kind": "event", "event": "Signed Up"}
    plain = _mailer(signed_up, [{"kind": "send", "template_id": template}])
    await _publish_again(desk, journey, plain)

    held = f"journey {journey} (Pros) for its runs on version 1"
    await _refused(desk, f"/api/v1/segments/{vips}", held)  # its runs still branch on it
    await _refused(desk, f"/api/v1/channels/{named}", held)  # and send through it
    # Its trigger enters no one any more: runs that entered by it need it no more.
    await _deleted(desk, f"/api/v1/segments/{pros}")

    await desk.later(timedelta(seconds=DAY), deliver=False)
    [run] = await runs(desk)
    assert (run.version, run.state, run.reason) == (1, "completed", "exit")
    # The VIP branch, through the channel version 1 names.
    assert await _journey_messages(desk) == [named]
    await _deleted(desk, f"/api/v1/segments/{vips}")
    await _deleted(desk, f"/api/v1/channels/{named}")


async def _journey_messages(desk: Desk) -> list[int | None]:
    """The channel of each message journeys queued."""
    async with desk.database.read_session() as session:
        rows = await session.scalars(
            select(Message.channel_id).where(
                Message.workspace_id == desk.tenant.id, Message.origin == "journey"
            )
        )
        return list(rows.all())
