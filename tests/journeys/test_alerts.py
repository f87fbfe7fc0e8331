"""Journey alerts: a failure rate over the journey's threshold and runs stuck at a node open
an alert (listed by the API, posted to the journey's alert webhook, signed, retried under
one webhook-id), refreshed while the condition holds and resolved when it clears."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from clarion.core.jobs.models import Job
from clarion.journeys.steps import STEP
from clarion.messaging.channels.webhook import verify_webhook
from tests.conftest import problem
from tests.journeys.test_runtime import archive_in_use
from tests.messaging.conftest import Reply
from tests.messaging.shop import Post

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def webhook_channel(post: Post, url: str) -> int:
    made = await post.client.post(
        "/api/v1/channels",
        json={"name": "Alerts", "kind": "webhook", "settings": {"url": url},
              "secrets": {"secret": SECRET}},
        headers=post.tenant.admin,
    )  # fmt: skip
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


def graph(template_id: int, alerts: dict[str, Any], *, wait: bool = False) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [
        {"id": "start", "type": "trigger",
         "trigger": {"kind": "event", "event": "Signed Up"}, "next": "wait" if wait else "mail"},
        {"id": "mail", "type": "action",
         "actions": [{"kind": "send", "template_id": template_id}], "next": "done"},
        {"id": "done", "type": "exit"},
    ]  # fmt: skip
    if wait:
        nodes.insert(1, {"id": "wait", "type": "wait",
                         "wait": {"kind": "duration", "seconds": 600}, "next": "mail"})  # fmt: skip
    return {"entry": {"frequency": "every_time"}, "alerts": alerts, "nodes": nodes}


async def publish(post: Post, body: dict[str, Any]) -> int:
    made = await post.client.post("/api/v1/journeys", json=body, headers=post.tenant.admin)
    assert made.status_code == 201, made.text
    published = await post.client.post(
        f"/api/v1/journeys/{made.json()['id']}/publish", headers=post.tenant.admin
    )
    assert published.status_code == 200, published.text
    return int(made.json()["id"])


async def sign_up(post: Post, *users: str) -> None:
    batch = [{"type": "track", "event": "Signed Up", "userId": u, "messageId": f"su-{u}"}
             for u in users]  # fmt: skip
    sent = await post.client.post("/v1/batch", json={"batch": batch}, auth=post.tenant.writer)
    assert sent.status_code == 200, sent.text
    await post.worker.drain()


async def alerts(post: Post, **params: Any) -> list[dict[str, Any]]:
    found = await post.client.get(
        "/api/v1/journeys/alerts", params=params, headers=post.tenant.admin
    )
    assert found.status_code == 200, found.text
    items: list[dict[str, Any]] = found.json()["items"]
    return items


async def test_a_failure_rate_over_the_threshold_opens_and_resolves_an_alert(
    post: Post, http_receiver: Any
) -> None:
    http_receiver.reply("POST", "/hooks/alerts", Reply(500), Reply(204))
    channel = await webhook_channel(post, f"{http_receiver.url}/hooks/alerts")
    rules = {"failure_percent": 50, "min_runs": 3, "window_minutes": 60, "channel_id": channel}
    journey = await publish(post, {"name": "Welcome", "graph": graph(post.template_id, rules)})
    for user in ("a1", "a2", "a3"):
        await post.profile(user, email=f"{user}@example.com")
    await archive_in_use(post.database, post.tenant.id, post.template_id)
    await sign_up(post, "a1", "a2", "a3")  # each run fails at its send: the template is gone

    post.clock.advance(timedelta(minutes=5))
    await post.worker.drain()  # the check opens the alert; its webhook answers 500
    [alert] = await alerts(post, state="open")
    assert (alert["journey_id"], alert["kind"], alert["node"]) == (journey, "failure_rate", None)
    assert alert["detail"]["failed"] == alert["detail"]["ended"] == 3
    assert alert["detail"]["failure_percent"] == 100.0
    mine = await post.client.get(f"/api/v1/journeys/{journey}/alerts", headers=post.tenant.admin)
    assert [a["id"] for a in mine.json()["items"]] == [alert["id"]]

    post.clock.advance(timedelta(minutes=2))
    await post.worker.drain()  # retried: 204
    first, second = http_receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    body = json.loads(second.body)
    verify_webhook(SECRET, dict(second.headers), second.body, now=post.clock.now())
    assert body["type"] == "journey.alert.opened"
    assert body["alert"]["id"] == alert["id"] and body["alert"]["journey_name"] == "Welcome"

    post.clock.advance(timedelta(minutes=5))
    await post.worker.drain()  # still failing: refreshed, not opened again
    assert len(await alerts(post)) == 1 and len(http_receiver.requests) == 2

    post.clock.advance(timedelta(minutes=60))  # the failures leave the window
    await post.worker.drain()
    [resolved] = await alerts(post)
    assert resolved["state"] == "resolved" and resolved["resolved_at"] is not None
    assert json.loads(http_receiver.requests[-1].body)["type"] == "journey.alert.resolved"
    assert await alerts(post, state="open") == []


async def test_runs_stuck_at_a_node_open_an_alert_until_they_move(post: Post) -> None:
    rules = {"stuck_minutes": 30}
    journey = await publish(
        post, {"name": "Slow", "graph": graph(post.template_id, rules, wait=True)}
    )
    await post.profile("s1", email="s1@example.com")
    await sign_up(post, "s1")
    async with post.database.write_session() as session:  # its wake-up job died
        await session.execute(update(Job).where(Job.kind == STEP).values(state="dead"))
        await session.commit()

    post.clock.advance(timedelta(minutes=10 + 25))
    await post.worker.drain()
    assert await alerts(post) == []  # overdue by 25 minutes: not yet stuck
    post.clock.advance(timedelta(minutes=10))
    await post.worker.drain()
    [alert] = await alerts(post, journey_id=journey)
    assert (alert["kind"], alert["node"], alert["state"]) == ("stuck_node", "wait", "open")
    assert alert["detail"]["runs"] == 1

    async with post.database.write_session() as session:  # a person revives the job
        await session.execute(update(Job).where(Job.kind == STEP).values(state="ready"))
        await session.commit()
    await post.worker.drain()
    post.clock.advance(timedelta(minutes=5))
    await post.worker.drain()
    [alert] = await alerts(post)
    assert alert["state"] == "resolved"


async def test_alert_rules_are_checked_when_published(post: Post) -> None:
    email_channel = (await post.client.get("/api/v1/channels", headers=post.tenant.admin)).json()[
        "items"
    ][0]["id"]
    body = {"name": "Bad", "graph": graph(post.template_id, {"channel_id": email_channel})}
    made = await post.client.post("/api/v1/journeys", json=body, headers=post.tenant.admin)
    response = await post.client.post(
        f"/api/v1/journeys/{made.json()['id']}/publish", headers=post.tenant.admin
    )
    problem(response, 400, "alerts.channel_id")
    body = {"name": "Worse", "graph": graph(post.template_id, {"failure_percent": 0})}
    response = await post.client.post(
        "/api/v1/journeys/validate", json={"graph": body["graph"]}, headers=post.tenant.admin
    )
    assert response.status_code == 200 and not response.json()["valid"]
    assert "alerts.failure_percent" in {e["field"] for e in response.json()["errors"]}
