"""Where a message may go, checked on both sides: the send API refuses an address the
template's channel cannot send to and a channel that is not one of the workspace's of the
template's kind (422 naming the field, nothing saved); delivery fails, alone, a message
whose channel is of another kind or whose bounced address no suppression list can hold,
keeping the rest of its batch; and a message sent after a failed attempt loses its error."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from clarion.core.jobs.models import Job
from clarion.messaging import delivery, templates
from clarion.messaging.delivery import MessageRequest
from tests.conftest import Tenant, problem
from tests.messaging.conftest import HttpReceiver, Reply
from tests.messaging.shop import Post

SMS_CHANNEL = {
    "name": "Texts",
    "kind": "sms",
    "settings": {"account_sid": "AC123", "from_number": "+15550001111"},
    "secrets": {"auth_token": "twilio-token-0123456789abcdef"},
}


async def _template(post: Post, name: str, channel: str, content: dict[str, Any]) -> int:
    made = await post.client.post(
        "/api/v1/templates",
        json={"name": name, "channel": channel, "content": content},
        headers=post.tenant.admin,
    )
    assert made.status_code == 201, made.text
    template_id: int = made.json()["id"]
    return template_id


async def _channel(post: Post, body: dict[str, Any], tenant: Tenant | None = None) -> int:
    created = await post.client.post(
        "/api/v1/channels", json=body, headers=(tenant or post.tenant).admin
    )
    assert created.status_code == 201, created.text
    channel_id: int = created.json()["id"]
    return channel_id


async def _send(post: Post, **body: Any) -> Any:
    return await post.client.post("/api/v1/messages", json=body, headers=post.tenant.admin)


async def _nothing_queued(post: Post) -> None:
    listed = await post.client.get("/api/v1/messages", headers=post.tenant.admin)
    assert listed.json()["items"] == []
    async with post.database.read_session() as session:
        jobs = await session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.workspace_id == post.tenant.id, Job.kind == delivery.DELIVER)
        )
    assert jobs == 0


async def test_an_address_the_channel_cannot_send_to_is_refused_naming_it(post: Post) -> None:
    await post.profile("fay", email="fay@example.org")
    texts = await _template(post, "Code", "sms", {"body": "Your code: 1234"})
    pushes = await _template(post, "Ping", "push", {"title": "Hi", "body": "There"})
    hooks = await _template(post, "Sync", "webhook", {"body": {"user": "{{ profile.user_id }}"}})
    notes = await _template(post, "Note", "inbox", {"title": "Hi", "body": "There"})
    bad: list[tuple[int, str]] = [
        (post.template_id, "not-an-email"),
        (post.template_id, "bob@example.org\r\nBcc: evil@example.com"),
        (post.template_id, "bob@example.org, eve@example.org"),
        (post.template_id, "Bob <bob@example.org>"),
        (post.template_id, "josé@example.org"),  # the SMTP channel sends no SMTPUTF8
        (post.template_id, '"bob smith"@example.org'),  # sendable, but never suppressible
        (post.template_id, "   "),
        (texts, "not a number"),
        (texts, "+1 555 CALL NOW"),
        (texts, "12345"),
        (texts, "0612345678"),  # national: which country?
        (pushes, "a token with spaces"),
        (pushes, "x" * 321),
        (hooks, "ftp://hooks.example.com/x"),
        (hooks, "hooks.example.com/x"),
        (hooks, "https://hooks.example.com/\r\nX-Injected: 1"),
        (notes, "fay@example.org"),  # an in-app message goes to the profile itself
    ]
    for template_id, address in bad:
        response = await _send(post, template_id=template_id, user_id="fay", address=address)
        problem(response, 422, "address")
    await _nothing_queued(post)

    good: list[tuple[int, str, str]] = [
        (post.template_id, " Fay.Smith@Example.org ", "Fay.Smith@Example.org"),
        (texts, "+1 (555) 010-0000", "+15550100000"),
        (pushes, " fcm-token:APA91b-x_y ", "fcm-token:APA91b-x_y"),
        (hooks, "https://hooks.example.com/crm?x=1", "https://hooks.example.com/crm?x=1"),
    ]
    for template_id, address, stored in good:
        response = await _send(post, template_id=template_id, user_id="fay", address=address)
        assert response.status_code == 202, response.text
        assert response.json()["address"] == stored
    await post.worker.drain()
    [mail] = post.sink.messages()
    assert mail.rcpt_tos == ["Fay.Smith@Example.org"]


async def test_a_channel_that_is_not_the_workspaces_of_the_templates_kind_is_refused(
    post: Post, other_tenant: Tenant
) -> None:
    await post.profile("gus", email="gus@example.org")
    [mail] = (await post.client.get("/api/v1/channels", headers=post.tenant.admin)).json()["items"]
    texts = await _channel(post, SMS_CHANNEL)
    inbox = await _channel(post, {"name": "App", "kind": "inbox"})
    gone = await _channel(post, {**mail_settings(post), "name": "Old mail"})
    deleted = await post.client.delete(f"/api/v1/channels/{gone}", headers=post.tenant.admin)
    assert deleted.status_code == 204
    theirs = await _channel(post, mail_settings(post), other_tenant)
    for channel_id in (999_999, gone, theirs, texts, inbox):
        response = await _send(
            post, template_id=post.template_id, user_id="gus", channel_id=channel_id
        )
        problem(response, 422, "channel_id")
    await _nothing_queued(post)
    sent = await _send(post, template_id=post.template_id, user_id="gus", channel_id=mail["id"])
    assert sent.status_code == 202, sent.text
    await post.worker.drain()
    assert (await post.message(uuid.UUID(sent.json()["id"]))).status == "delivered"


def mail_settings(post: Post) -> dict[str, Any]:
    """An email channel on the sink, like the post's own."""
    return {
        "name": "Mail",
        "kind": "email",
        "settings": {
            "host": "127.0.0.1",
            "port": post.sink.port,
            "security": "none",
            "helo_hostname": "localhost",
            "from_address": "news@shop.example",
        },
    }


async def test_delivery_never_sends_through_a_channel_of_another_kind(
    post: Post, other_tenant: Tenant
) -> None:
    """Messages queued before the API checked, or by journeys and campaigns naming a
    channel, fail with the reason instead of going to the wrong place or nowhere."""
    ada = await post.profile("ada", email="ada@example.org")
    inbox = await _channel(post, {"name": "App", "kind": "inbox"})
    texts = await _channel(post, SMS_CHANNEL)
    theirs = await _channel(post, mail_settings(post), other_tenant)
    via_inbox, via_sms, via_theirs, fine = await post.queue(
        post.request(ada, "via-inbox", channel_id=inbox),
        post.request(ada, "via-sms", channel_id=texts),
        post.request(ada, "via-theirs", channel_id=theirs),
        post.request(ada, "fine"),
    )
    await post.worker.drain()
    reasons = {
        via_inbox: f"channel {inbox} sends inbox messages, not email",
        via_sms: f"channel {texts} sends sms messages, not email",
        via_theirs: f"channel {theirs} is not one of the workspace's",
    }
    for message_id, reason in reasons.items():
        message = await post.message(message_id)
        assert (message.status, message.reason) == ("failed", reason)
    assert (await post.message(fine)).status == "delivered"
    assert [m.rcpt_tos for m in post.sink.messages()] == [["ada@example.org"]]


async def test_an_address_no_suppression_list_can_hold_fails_alone_and_the_batch_is_kept(
    post: Post,
) -> None:
    """A hard bounce suppresses its address; one that cannot be suppressed used to roll
    back the recording of the whole batch, which was then sent again on every retry."""
    ada = await post.profile("ada", email="ada@example.org")
    bo = await post.profile("bo", email="bo@example.org")
    # An email trait with a header in it is no address (profiles refuse it as an identity).
    cy = await post.profile("cy", email="cy@example.org\r\nBcc: evil@example.com")
    first, given, from_trait, last = await post.queue(
        post.request(ada, "batch:ada"),
        post.request(bo, "batch:bo", address="not-an-email"),  # queued before the API checked
        post.request(cy, "batch:cy"),
        post.request(bo, "batch:bo:2"),
    )
    await post.worker.drain()
    assert sorted(m.rcpt_tos[0] for m in post.sink.messages()) == [
        "ada@example.org",
        "bo@example.org",
    ]
    for message_id in (first, last):
        assert (await post.message(message_id)).status == "delivered"
    failed = await post.message(given)
    assert failed.status == "failed", (failed.status, failed.reason)
    assert "not an email address" in (failed.reason or "")
    assert "not a valid email address" in (failed.reason or "")
    no_address = await post.message(from_trait)
    assert (no_address.status, no_address.reason) == ("failed", "the profile has no email address")
    for message_id in (given, from_trait):
        assert await post.history(message_id) == ["failed"]
    listed = await post.client.get("/api/v1/suppressions", headers=post.tenant.admin)
    assert listed.json()["items"] == []
    async with post.database.read_session() as session:
        left = await session.scalar(
            select(func.count()).select_from(Job).where(Job.workspace_id == post.tenant.id)
        )
    assert left == 0  # the batch's job completed
    post.clock.advance(timedelta(hours=2))
    await post.worker.drain()
    assert len(post.sink.messages()) == 2  # nothing sent twice


async def test_a_message_sent_after_a_failed_attempt_keeps_no_error(
    post: Post, http_receiver: HttpReceiver
) -> None:
    http_receiver.reply("POST", "/hooks/crm", Reply(500), Reply(204))
    hook = {
        "name": "CRM",
        "kind": "webhook",
        "settings": {"url": f"{http_receiver.url}/hooks/crm"},
    }
    await _channel(post, hook)
    template_id = await _template(post, "CRM sync", "webhook", {"body": {"ok": True}})
    async with post.database.read_session() as session:
        _, version = await templates.current_version(
            session, workspace_id=post.tenant.id, template_id=template_id
        )
    ivy = await post.profile("ivy", email="ivy@example.org")
    [message_id] = await post.queue(
        MessageRequest(
            profile_id=ivy, template_id=template_id, template_version_id=version.id,
            channel="webhook", idempotency_key="crm:ivy", origin="api",
        )
    )  # fmt: skip
    await post.worker.drain()
    waiting = await post.message(message_id)
    assert waiting.status == "queued" and "500" in (waiting.reason or "")
    post.clock.advance(timedelta(minutes=1))
    await post.worker.drain()
    delivered = await post.message(message_id)
    assert (delivered.status, delivered.reason) == ("delivered", None)
    assert await post.history(message_id) == ["retrying", "delivered"]
    read = await post.client.get(f"/api/v1/messages/{message_id}", headers=post.tenant.admin)
    assert read.json()["reason"] is None
    # The history keeps what happened to the first attempt.
    assert "500" in read.json()["history"][0]["detail"]["reason"]


async def test_a_bounce_mail_about_an_address_no_list_can_hold_is_still_recorded(
    post: Post,
) -> None:
    """An address the SMTP relay took but no suppression list can hold (queued before the
    API checked addresses): its bounce mail moves the message and suppresses nothing,
    instead of failing the request and losing the report."""
    from tests.messaging.test_bounces import HARD_BOUNCE

    ann = await post.profile("ann", email="ann@example.org")
    [message_id] = await post.queue(post.request(ann, "promo:ann", address='"ann b"@example.org'))
    await post.worker.drain()
    sent = await post.message(message_id)
    assert sent.status == "delivered" and sent.provider_id is not None
    [mail] = (await post.client.get("/api/v1/channels", headers=post.tenant.admin)).json()["items"]
    report = HARD_BOUNCE.replace(b"<msg-0001@news.example.com>", sent.provider_id.encode())
    answer = await post.client.post(
        f"/api/v1/channels/{mail['id']}/bounces", content=report, headers=post.tenant.admin
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "bounced"}
    assert await post.history(message_id) == ["delivered", "bounced"]
    listed = await post.client.get("/api/v1/suppressions", headers=post.tenant.admin)
    assert listed.json()["items"] == []
