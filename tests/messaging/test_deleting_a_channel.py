"""Deleting a channel fails the messages still queued to go through it, saying so: they
never go through another channel instead. (That campaigns and journeys naming a channel
keep it from being deleted is tested in `tests/journeys/test_channels_in_use.py`.)"""

from __future__ import annotations

import uuid

from tests.messaging.shop import Post
from tests.messaging.test_send_checks import mail_settings


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
