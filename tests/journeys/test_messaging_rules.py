"""Journey messages go through messaging's rules like any other: the workspace's frequency
caps refuse what is over them (the journey's own participation caps are tested with the
runtime)."""

from __future__ import annotations

from tests.journeys.test_alerts import publish, sign_up
from tests.messaging.shop import Post


async def test_journey_messages_obey_the_workspaces_frequency_caps(post: Post) -> None:
    made = await post.client.post(
        "/api/v1/frequency-caps",
        json={"max_messages": 1, "period_seconds": 86_400},
        headers=post.tenant.admin,
    )
    assert made.status_code == 201, made.text
    send = {"kind": "send", "template_id": post.template_id}
    body = {
        "name": "Twice",
        "graph": {
            "entry": {"frequency": "every_time"},
            "nodes": [
                {"id": "start", "type": "trigger",
                 "trigger": {"kind": "event", "event": "Signed Up"}, "next": "mail"},
                {"id": "mail", "type": "action", "mode": "series", "actions": [send, send],
                 "next": "done"},
                {"id": "done", "type": "exit"},
            ],
        },
    }  # fmt: skip
    await publish(post, body)
    await post.profile("fc", email="fc@example.com")
    await sign_up(post, "fc")  # the run queues two marketing emails; the cap lets one go
    found = await post.client.get(
        "/api/v1/messages", params={"origin": "journey"}, headers=post.tenant.admin
    )
    statuses = sorted(m["status"] for m in found.json()["items"])
    assert statuses == ["delivered", "refused"], found.json()
    [refused] = [m for m in found.json()["items"] if m["status"] == "refused"]
    assert "frequency_cap" in (refused["reason"] or "")
    assert len(post.sink.messages()) == 1
