"""Deleting a channel fails the messages still queued to go through it, saying so, and
those it was sending when they are retried: they never go through another channel instead.
A kind's default channel is not deleted while other channels of its kind are left to be
made the default. (That campaigns and journeys naming a channel keep it from being deleted
is tested in `tests/journeys/test_channels_in_use.py`.)"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from clarion.messaging import templates
from clarion.messaging.delivery import MessageRequest
from clarion.messaging.models import Message
from tests.conftest import problem
from tests.messaging.conftest import HttpReceiver, Reply
from tests.messaging.shop import Post
from tests.messaging.test_send_checks import mail_settings


async def _channel(post: Post, body: dict[str, Any]) -> int:
    created = await post.client.post("/api/v1/channels", json=body, headers=post.tenant.admin)
    assert created.status_code == 201, created.text
    channel_id: int = created.json()["id"]
    return channel_id


async def test_a_message_queued_through_a_deleted_channel_fails_and_goes_nowhere_else(
    post: Post,
) -> None:
    """The message names its channel until the channel is deleted (then its row names none,
    as if it asked for the default): it used to go through the default channel."""
    ada = await post.profile("ada", email="ada@example.org")
    other = await post.client.post(
        "/api/v1/channels", json={**mail_settings(post), "name": "Other"}, headers=post.tenant.admin
    )
    assert other.status_code == 201, other.text
    gone = other.json()["id"]
    sent = await post.client.post(
        "/api/v1/messages",
        json={"template_id": post.template_id, "user_id": "ada", "channel_id": gone},
        headers=post.tenant.admin,
    )
    assert sent.status_code == 202, sent.text
    named = uuid.UUID(sent.json()["id"])
    [unnamed] = await post.queue(post.request(ada, "through-the-default"))

    deleted = await post.client.delete(f"/api/v1/channels/{gone}", headers=post.tenant.admin)
    assert deleted.status_code == 204, deleted.text
    message = await post.message(named)
    assert (message.status, message.reason, message.channel_id) == (
        "failed",
        f"channel {gone} was deleted",
        None,
    )
    assert await post.history(named) == ["failed"]
    [event] = await post.events("Email Failed")
    assert (event["message_id"], event["reason"]) == (str(named), f"channel {gone} was deleted")

    await post.worker.drain()
    assert (await post.message(named)).status == "failed"  # its delivery found nothing to do
    assert (await post.message(unnamed)).status == "delivered"
    assert len(post.sink.messages()) == 1


async def test_the_default_channel_goes_only_once_another_is_the_default(post: Post) -> None:
    """Deleting the default while other channels of its kind are left would leave what
    names no channel without one although the marketer has one to choose: refused, naming
    them, until one is made the default. The kind's only channel may go. It used to be
    deleted, leaving the kind without a default."""
    admin = post.tenant.admin
    [mail] = (await post.client.get("/api/v1/channels", headers=admin)).json()["items"]
    assert mail["is_default"]
    other = await _channel(post, {**mail_settings(post), "name": "Other"})
    spare = await _channel(post, {**mail_settings(post), "name": "Spare"})

    refused = await post.client.delete(f"/api/v1/channels/{mail['id']}", headers=admin)
    body = problem(refused, 409, "is_default")
    assert body["detail"] == (
        f"Channel {mail['id']} is the default email channel: make another email channel the "
        f"default first (channel {other} (Other), channel {spare} (Spare))."
    )
    kept = await post.client.get(f"/api/v1/channels/{mail['id']}", headers=admin)
    assert kept.status_code == 200 and kept.json()["is_default"]
    ada = await post.profile("ada", email="ada@example.org")
    [unnamed] = await post.queue(post.request(ada, "through-the-default"))
    await post.worker.drain()
    assert (await post.message(unnamed)).status == "delivered"

    # A channel that is not the default goes; so does the default once another is it.
    assert (await post.client.delete(f"/api/v1/channels/{spare}", headers=admin)).status_code == 204
    made = await post.client.patch(
        f"/api/v1/channels/{other}", json={"is_default": True}, headers=admin
    )
    assert made.status_code == 200, made.text
    deleted = await post.client.delete(f"/api/v1/channels/{mail['id']}", headers=admin)
    assert deleted.status_code == 204, deleted.text
    # The only email channel left, default, goes too: there is no other to choose.
    deleted = await post.client.delete(f"/api/v1/channels/{other}", headers=admin)
    assert deleted.status_code == 204, deleted.text
    assert (await post.client.get("/api/v1/channels", headers=admin)).json()["items"] == []


async def _webhook_template(post: Post) -> tuple[int, int]:
    made = await post.client.post(
        "/api/v1/templates",
        json={"name": "CRM sync", "channel": "webhook", "content": {"body": {"ok": True}}},
        headers=post.tenant.admin,
    )
    assert made.status_code == 201, made.text
    async with post.database.read_session() as session:
        _, version = await templates.current_version(
            session, workspace_id=post.tenant.id, template_id=made.json()["id"]
        )
    return made.json()["id"], version.id


async def test_a_message_sending_through_a_deleted_channel_fails_when_retried(
    post: Post, http_receiver: HttpReceiver
) -> None:
    """The channel is deleted while its provider is answering; the answer is a temporary
    failure, so the message is queued again, naming no channel since (the foreign key set
    it to null). Its retry used to go through the kind's default channel."""
    base = http_receiver.url
    hook = {"name": "Hooks", "kind": "webhook", "settings": {"url": f"{base}/hooks/default"}}
    await _channel(post, hook)  # the first webhook channel: the default
    gone = await _channel(
        post,
        {"name": "Other", "kind": "webhook", "settings": {"url": f"{base}/hooks/other"}},
    )
    http_receiver.reply("POST", "/hooks/other", Reply(503, delay=1.0))
    http_receiver.reply("POST", "/hooks/default", Reply(204))
    template_id, version_id = await _webhook_template(post)
    ivy = await post.profile("ivy", email="ivy@example.org")
    [message_id] = await post.queue(
        MessageRequest(
            profile_id=ivy, template_id=template_id, template_version_id=version_id,
            channel="webhook", idempotency_key="crm:ivy", origin="api", channel_id=gone,
        )
    )  # fmt: skip

    delivering = asyncio.create_task(post.worker.drain())
    deadline = time.monotonic() + 20
    while not http_receiver.requests:  # the message is sending: its provider is answering
        assert time.monotonic() < deadline and not delivering.done()
        await asyncio.sleep(0.01)
    deleted = await post.client.delete(f"/api/v1/channels/{gone}", headers=post.tenant.admin)
    assert deleted.status_code == 204, deleted.text
    await delivering
    waiting = await post.message(message_id)
    assert (waiting.status, waiting.channel_id) == ("queued", None)

    post.clock.advance(timedelta(minutes=1))
    await post.worker.drain()
    failed = await post.message(message_id)
    assert (failed.status, failed.reason) == ("failed", f"channel {gone} was deleted")
    assert [request.path for request in http_receiver.requests] == ["/hooks/other"]
    assert await post.history(message_id) == ["channel_deleted", "retrying", "failed"]
    [event] = await post.events("Webhook Failed")
    assert (event["message_id"], event["reason"]) == (
        str(message_id),
        f"channel {gone} was deleted",
    )


async def test_a_message_left_sending_through_a_deleted_channel_fails_when_its_batch_reruns(
    post: Post,
) -> None:
    """A worker killed after marking the message `sending` leaves it so; the channel is
    deleted, then the batch's job runs again. It used to send the message through the
    kind's default channel."""
    other = await _channel(post, {**mail_settings(post), "name": "Other"})
    ada = await post.profile("ada", email="ada@example.org")
    [message_id] = await post.queue(post.request(ada, "left-sending", channel_id=other))
    async with post.database.write_session() as session:  # as the killed worker left it
        await session.execute(
            update(Message).where(Message.id == message_id).values(status="sending", attempts=1)
        )
        await session.commit()

    deleted = await post.client.delete(f"/api/v1/channels/{other}", headers=post.tenant.admin)
    assert deleted.status_code == 204, deleted.text
    left = await post.message(message_id)
    assert (left.status, left.channel_id) == ("sending", None)  # its batch may still send it
    await post.worker.drain()
    failed = await post.message(message_id)
    assert (failed.status, failed.reason) == ("failed", f"channel {other} was deleted")
    assert post.sink.messages() == []
    assert await post.history(message_id) == ["channel_deleted", "failed"]
