"""A webhook action calls the customer's endpoint through messaging: the webhook template's
body rendered for the profile, signed per Standard Webhooks, retried, sent once per run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from clarion.messaging.channels.webhook import verify_webhook
from tests.messaging.conftest import Reply
from tests.messaging.shop import Post

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def test_a_webhook_action_posts_the_templates_body_once_per_run(
    post: Post, http_receiver: Any
) -> None:
    admin = post.tenant.admin
    http_receiver.reply("POST", "/hooks/crm", Reply(500), Reply(204))
    channel = await post.client.post(
        "/api/v1/channels",
        json={"name": "CRM", "kind": "webhook",
              "settings": {"url": f"{http_receiver.url}/hooks/crm"}, "secrets": {"secret": SECRET}},
        headers=admin,
    )  # fmt: skip
    assert channel.status_code == 201, channel.text
    body = {"body": {"user": "{{ profile.user_id }}", "plan": "{{ event.properties.plan }}"}}
    template = await post.client.post(
        "/api/v1/templates",
        json={"name": "CRM upgrade", "channel": "webhook", "content": body},
        headers=admin,
    )
    assert template.status_code == 201, template.text
    graph = {
        "nodes": [
            {"id": "start", "type": "trigger",
             "trigger": {"kind": "event", "event": "Plan Upgraded"}, "next": "crm"},
            {"id": "crm", "type": "action",
             "actions": [{"kind": "webhook", "template_id": template.json()["id"],
                          "channel_id": channel.json()["id"]}], "next": "done"},
            {"id": "done", "type": "exit"},
        ]
    }  # fmt: skip
    made = await post.client.post(
        "/api/v1/journeys", json={"name": "CRM sync", "graph": graph}, headers=admin
    )
    published = await post.client.post(
        f"/api/v1/journeys/{made.json()['id']}/publish", headers=admin
    )
    assert published.status_code == 200, published.text
    await post.profile("vi", email="vi@example.org")
    upgrade = {"type": "track", "event": "Plan Upgraded", "userId": "vi",
               "properties": {"plan": "team"}, "messageId": "up-1"}  # fmt: skip
    sent = await post.client.post("/v1/batch", json={"batch": [upgrade]}, auth=post.tenant.writer)
    assert sent.status_code == 200, sent.text
    await post.worker.drain()  # the receiver answers 500: retried later
    post.clock.advance(timedelta(minutes=1))
    await post.worker.drain()
    first, second = http_receiver.requests
    assert first.json() == second.json() == {"user": "vi", "plan": "team"}
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert verify_webhook(SECRET, second.headers, second.body, now=datetime.now(UTC))
