"""Delivery end to end: messages queued through the service, sent by the worker's delivery
jobs through a real SMTP server (aiosmtpd in a subprocess), with consent, quiet hours,
frequency caps, bounces and retries decided on the way."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.jobs.models import Job
from clarion.core.settings import Settings
from clarion.ingest.models import Event
from clarion.messaging import delivery, policy, templates
from clarion.messaging.delivery import MessageRequest
from clarion.messaging.models import FrequencyCap, Message, MessagingPolicy
from clarion.messaging.tracking import LinkSigner
from clarion.profiles.models import ProfileEvent
from tests.messaging.shop import NOON, PUBLIC, Post
from tests.support import plan_of


async def test_a_message_is_rendered_tracked_signed_and_delivered_once(
    post: Post, settings: Settings
) -> None:
    ada = await post.profile("ada", email="Ada@Example.org", first_name="Ada")
    [message_id] = await post.queue(post.request(ada, "welcome:ada"))
    # Asked again (a retried job, say): the same message, nothing more.
    assert await post.queue(post.request(ada, "welcome:ada")) == [message_id]
    await post.worker.drain()
    [mail] = post.sink.messages()
    assert mail.rcpt_tos == ["Ada@Example.org"]  # as the customer wrote it
    email = mail.message
    assert email["Subject"] == "Our sale, Ada"
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert email["List-Unsubscribe"].startswith(f"<{PUBLIC}/u/")
    html = next(p for p in email.walk() if p.get_content_type() == "text/html").get_content()
    text = next(p for p in email.walk() if p.get_content_type() == "text/plain").get_content()
    assert "Hi Ada" in html and "Hi Ada" in text
    assert 'style="color: #333' in html  # CSS inlined
    assert "https://shop.example/sale" not in html  # the link is tracked...
    assert f"{PUBLIC}/t/c/" in html and f"{PUBLIC}/t/o/" in html  # ... and the open pixel too
    sent = await post.message(message_id)
    assert sent.status == "delivered" and sent.attempts == 1
    assert sent.links == ["https://shop.example/sale"]
    assert sent.provider_id == email["Message-ID"]
    assert await post.history(message_id) == ["delivered"]
    # The click token names the message and the link's index, nothing else.
    token = html.split(f"{PUBLIC}/t/c/")[1].split('"')[0]
    click = LinkSigner(settings.resolved_secret_key()).verify(token, "click")
    assert (click.message_id, click.link_index) == (message_id, 0)
    [event] = await post.events("Email Delivered")
    assert event["user_id"] == "ada" and event["message_id"] == str(message_id)
    await post.worker.drain()
    assert len(post.sink.messages()) == 1


async def test_refusals_are_recorded_with_their_reason_and_nothing_is_sent(post: Post) -> None:
    bo = await post.profile("bo", email="bo@example.org")
    nobody = await post.profile("cy")  # no email address at all
    suppressed = await post.client.post(
        "/api/v1/suppressions",
        json={"channel": "email", "address": "bo@example.org", "reason": "manual"},
        headers=post.tenant.admin,
    )
    assert suppressed.status_code == 201, suppressed.text
    ids = await post.queue(
        post.request(bo, "promo:bo"),
        post.request(bo, "receipt:bo", category="transactional"),
        post.request(nobody, "promo:cy"),
    )
    await post.worker.drain()
    assert post.sink.messages() == []
    promo, receipt, missing = [await post.message(i) for i in ids]
    assert (promo.status, promo.reason) == ("refused", "suppressed:manual")
    assert (receipt.status, receipt.reason) == ("refused", "suppressed:manual")
    assert missing.status == "failed" and "no email address" in (missing.reason or "")
    assert await post.events("Email Delivered") == []


async def test_quiet_hours_defer_a_marketing_message_to_their_end_in_local_time(
    post: Post,
) -> None:
    # 12:00 UTC is 21:00 in Tokyo: inside 20:00-08:00, which ends at 23:00 UTC.
    kei = await post.profile("kei", email="kei@example.org", timezone="Asia/Tokyo")
    await post.add(
        MessagingPolicy(
            workspace_id=post.tenant.id,
            quiet_hours_start="20:00",
            quiet_hours_end="08:00",
            quiet_channels=["email"],
            default_timezone="UTC",
            updated_at=post.clock.now(),
        )
    )
    promo, receipt = await post.queue(
        post.request(kei, "promo:kei"), post.request(kei, "receipt:kei", category="transactional")
    )
    await post.worker.drain()
    assert [m.rcpt_tos for m in post.sink.messages()] == [["kei@example.org"]]  # the receipt
    waiting = await post.message(promo)
    assert waiting.status == "queued"
    assert waiting.send_after == NOON + timedelta(hours=11)
    assert await post.history(promo) == ["deferred"]
    post.clock.advance(timedelta(hours=10, minutes=59))
    await post.worker.drain()
    assert len(post.sink.messages()) == 1
    post.clock.advance(timedelta(minutes=1))
    await post.worker.drain()
    assert len(post.sink.messages()) == 2
    assert (await post.message(promo)).status == "delivered"
    assert (await post.message(receipt)).status == "delivered"


async def test_the_last_slot_of_a_cap_goes_to_the_higher_priority(post: Post) -> None:
    dee = await post.profile("dee", email="dee@example.org")
    await post.add(
        FrequencyCap(
            workspace_id=post.tenant.id,
            channel="email",
            max_messages=2,
            period_seconds=86_400,
            created_at=post.clock.now(),
        )
    )
    [first] = await post.queue(post.request(dee, "one:dee"))
    await post.worker.drain()
    # Two compete for the one slot left: the higher priority wins, whichever came first.
    low, high, receipt = await post.queue(
        post.request(dee, "low:dee", priority=1),
        post.request(dee, "high:dee", priority=5),
        post.request(dee, "receipt:dee", category="transactional"),
    )
    await post.worker.drain()
    assert (await post.message(first)).status == "delivered"
    assert (await post.message(high)).status == "delivered"
    assert (await post.message(receipt)).status == "delivered"  # caps are for marketing
    refused = await post.message(low)
    assert refused.status == "refused"
    assert refused.reason is not None and refused.reason.startswith("frequency_cap:")
    assert ":email:2/86400s" in refused.reason
    # A day later the cap has room again.
    post.clock.advance(timedelta(days=1, seconds=1))
    [later] = await post.queue(post.request(dee, "later:dee"))
    await post.worker.drain()
    assert (await post.message(later)).status == "delivered"


async def test_a_cap_holds_when_two_batches_are_decided_at_the_same_moment(
    post: Post, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch A decides before B's messages exist; B decides (A's still queued, of lower
    priority) and sends; A then records: its re-check under the profile's lock refuses it."""
    people = [await post.profile(name, email=f"{name}@example.org") for name in ("ann", "bo")]
    await post.add(
        FrequencyCap(
            workspace_id=post.tenant.id,
            channel=None,
            max_messages=1,
            period_seconds=3_600,
            created_at=post.clock.now(),
        )
    )
    first = await post.queue(*(post.request(p, f"a:{p}", priority=10) for p in people))
    decide = policy.cap_refusals
    second: list[uuid.UUID] = []

    async def b_decides_meanwhile(session: AsyncSession, **kwargs: Any) -> dict[uuid.UUID, str]:
        refused = await decide(session, **kwargs)
        if not second:  # A's first decision: B is queued and sent before A records it
            second.extend(
                await post.queue(*(post.request(p, f"b:{p}", priority=50) for p in people))
            )
            await post.worker.drain()
        return refused

    monkeypatch.setattr(policy, "cap_refusals", b_decides_meanwhile)
    await post.worker.drain()
    statuses = {m: (await post.message(m)).status for m in first + second}
    assert [statuses[m] for m in second] == ["delivered", "delivered"]
    assert [statuses[m] for m in first] == ["refused", "refused"]
    assert len(post.sink.messages()) == 2  # one each: the cap held
    refused = await post.message(first[0])
    assert refused.reason is not None and refused.reason.startswith("frequency_cap:")


async def test_a_second_cap_decision_about_a_profile_waits_for_the_first_to_end(
    post: Post,
) -> None:
    dee = await post.profile("dee", email="dee@example.org")
    await post.add(
        FrequencyCap(
            workspace_id=post.tenant.id,
            channel=None,
            max_messages=1,
            period_seconds=3_600,
            created_at=post.clock.now(),
        )
    )
    [queued] = await post.queue(post.request(dee, "one:dee"))
    message = await post.message(queued)

    async def decide(session: AsyncSession) -> dict[uuid.UUID, str]:
        return await policy.cap_refusals(
            session,
            workspace_id=post.tenant.id,
            messages=[message],
            now=post.clock.now(),
            lock_profiles=True,
        )

    async def decide_alone() -> dict[uuid.UUID, str]:
        async with post.database.write_session() as session:
            decided = await decide(session)
            await session.commit()
            return decided

    async with post.database.write_session() as session:
        assert await decide(session) == {}
        second = asyncio.create_task(decide_alone())
        await asyncio.sleep(0.3)
        assert not second.done()  # the profile is locked until this transaction ends
        await session.commit()
    assert await asyncio.wait_for(second, timeout=5) == {}


async def test_a_hard_bounce_suppresses_the_address_and_a_busy_server_is_retried(
    post: Post,
) -> None:
    gone = await post.profile("gone", email="bounce-gone@example.org")
    busy = await post.profile("busy", email="busy-now@example.org")
    bounced, retried = await post.queue(
        post.request(gone, "promo:gone"), post.request(busy, "promo:busy")
    )
    await post.worker.drain()
    first = await post.message(bounced)
    assert first.status == "bounced" and "550" in (first.reason or "")
    [event] = await post.events("Email Bounced")
    assert event["user_id"] == "gone"
    listed = await post.client.get("/api/v1/suppressions", headers=post.tenant.admin)
    assert [(s["address"], s["reason"]) for s in listed.json()["items"]] == [
        ("bounce-gone@example.org", "hard_bounce")
    ]
    waiting = await post.message(retried)
    assert waiting.status == "queued" and waiting.attempts == 1
    assert await post.history(retried) == ["retrying"]
    # Retried with backoff until the last attempt, then failed: never silently dropped.
    for _ in range(delivery.MAX_ATTEMPTS):
        post.clock.advance(timedelta(hours=2))
        await post.worker.drain()
    gave_up = await post.message(retried)
    assert gave_up.status == "failed" and gave_up.attempts == delivery.MAX_ATTEMPTS
    assert "451" in (gave_up.reason or "")
    assert post.sink.messages() == []


async def test_the_send_api_queues_once_per_key_and_shows_the_history(post: Post) -> None:
    eve = await post.profile("eve", email="eve@example.org", first_name="Eve")
    body = {"template_id": post.template_id, "user_id": "eve", "idempotency_key": "order-42"}
    sent = await post.client.post("/api/v1/messages", json=body, headers=post.tenant.admin)
    assert sent.status_code == 202, sent.text
    again = await post.client.post("/api/v1/messages", json=body, headers=post.tenant.admin)
    assert again.json()["id"] == sent.json()["id"]
    await post.worker.drain()
    assert len(post.sink.messages()) == 1
    read = await post.client.get(f"/api/v1/messages/{sent.json()['id']}", headers=post.tenant.admin)
    assert read.json()["status"] == "delivered"
    assert [h["kind"] for h in read.json()["history"]] == ["delivered"]
    listed = await post.client.get(
        "/api/v1/messages", params={"profile_id": str(eve)}, headers=post.tenant.admin
    )
    assert [m["id"] for m in listed.json()["items"]] == [sent.json()["id"]]


async def test_bad_sends_are_refused_naming_the_field_and_nothing_is_queued(post: Post) -> None:
    await post.profile("fay", email="fay@example.org")
    bad: list[tuple[dict[str, Any], str]] = [
        ({"template_id": post.template_id}, "body"),
        (
            {"template_id": post.template_id, "user_id": "fay", "profile_id": str(uuid.uuid4())},
            "body",
        ),
        ({"template_id": post.template_id, "user_id": "nobody"}, "user_id"),
        ({"template_id": post.template_id, "profile_id": str(uuid.uuid4())}, "profile_id"),
        ({"template_id": 999_999, "user_id": "fay"}, "template_id"),
        (
            {
                "template_id": post.template_id,
                "user_id": "fay",
                "send_after": "2030-01-01T00:00:00",
            },
            "send_after",
        ),
        ({"template_id": post.template_id, "user_id": "fay", "priority": 1000}, "priority"),
    ]
    for body, field in bad:
        response = await post.client.post("/api/v1/messages", json=body, headers=post.tenant.admin)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        if field != "body":
            assert field in [e["field"] for e in response.json()["errors"]], response.json()
    archived = await post.client.delete(
        f"/api/v1/templates/{post.template_id}", headers=post.tenant.admin
    )
    assert archived.status_code == 204
    body = {"template_id": post.template_id, "user_id": "fay"}
    response = await post.client.post("/api/v1/messages", json=body, headers=post.tenant.admin)
    assert response.status_code == 422 and "archived" in response.text
    listed = await post.client.get("/api/v1/messages", headers=post.tenant.admin)
    assert listed.json()["items"] == []


ARABIC_INDIC_0900 = "\u0660\u0669:\u0660\u0660"  # digits, but not ASCII ones: read as 09:00 before


async def test_quiet_hours_and_caps_are_set_through_the_api(post: Post) -> None:
    url = "/api/v1/messaging/policy"
    for body, field in (
        ({"quiet_hours_start": "25:00", "quiet_hours_end": "08:00"}, "quiet_hours_start"),
        ({"quiet_hours_start": ARABIC_INDIC_0900, "quiet_hours_end": "08:00"}, "quiet_hours_start"),
        ({"quiet_hours_start": "21:00", "quiet_hours_end": " 8:00"}, "quiet_hours_end"),
        ({"quiet_hours_start": "21:00"}, "body"),
        ({"default_timezone": "Mars/Olympus"}, "default_timezone"),
        ({"quiet_channels": ["fax"]}, "quiet_channels.0"),
    ):
        response = await post.client.put(url, json=body, headers=post.tenant.admin)
        assert response.status_code == 422, (body, response.text)
        if field != "body":
            assert field in [e["field"] for e in response.json()["errors"]], response.json()
    assert (await post.client.get(url, headers=post.tenant.admin)).json()[
        "quiet_hours_start"
    ] is None
    good = {"quiet_hours_start": "21:00", "quiet_hours_end": "08:00", "quiet_channels": ["email"]}
    assert (await post.client.put(url, json=good, headers=post.tenant.admin)).status_code == 200
    read = (await post.client.get(url, headers=post.tenant.admin)).json()
    assert (read["quiet_hours_end"], read["quiet_channels"]) == ("08:00", ["email"])
    caps = "/api/v1/frequency-caps"
    bad = await post.client.post(
        caps, json={"max_messages": 0, "period_seconds": 60}, headers=post.tenant.admin
    )
    assert bad.status_code == 422
    made = await post.client.post(
        caps, json={"max_messages": 2, "period_seconds": 3600}, headers=post.tenant.admin
    )
    assert made.status_code == 201 and made.json()["channel"] is None
    gone = await post.client.delete(f"{caps}/{made.json()['id']}", headers=post.tenant.admin)
    assert gone.status_code == 204
    assert (await post.client.get(caps, headers=post.tenant.admin)).json() == []


async def test_bounce_and_complaint_mails_move_their_messages_once(post: Post) -> None:
    from tests.messaging.test_bounces import COMPLAINT, HARD_BOUNCE

    ann = await post.profile("ann", email="ann@example.org")
    ben = await post.profile("ben", email="ben@example.org")
    bounced_id, complained_id = await post.queue(
        post.request(ann, "promo:ann"), post.request(ben, "promo:ben")
    )
    await post.worker.drain()
    bounced, complained = [await post.message(i) for i in (bounced_id, complained_id)]
    channels = await post.client.get("/api/v1/channels", headers=post.tenant.admin)
    url = f"/api/v1/channels/{channels.json()['items'][0]['id']}/bounces"

    def about(mail: bytes, message: Message) -> bytes:
        assert message.provider_id is not None
        return mail.replace(b"<msg-0001@news.example.com>", message.provider_id.encode())

    for _ in range(2):  # reported twice: recorded once
        answer = await post.client.post(
            url, content=about(HARD_BOUNCE, bounced), headers=post.tenant.admin
        )
        assert answer.status_code == 200, answer.text
    assert (await post.message(bounced_id)).status == "bounced"
    assert await post.history(bounced_id) == ["delivered", "bounced"]
    assert len(await post.events("Email Bounced")) == 1
    answer = await post.client.post(
        url, content=about(COMPLAINT, complained), headers=post.tenant.admin
    )
    assert answer.json() == {"status": "complained"}
    [spam] = await post.events("Email Marked as Spam")
    assert spam["user_id"] == "ben"
    listed = await post.client.get("/api/v1/suppressions", headers=post.tenant.admin)
    assert sorted((s["address"], s["reason"]) for s in listed.json()["items"]) == [
        ("ann@example.org", "hard_bounce"),
        ("ben@example.org", "complaint"),
    ]
    consent = await post.client.get(f"/api/v1/profiles/{ben}/consent", headers=post.tenant.admin)
    assert any(c["state"] == "opted_out" and c["channel"] == "email" for c in consent.json())
    # Mail that is no report, or about no message of ours, changes nothing.
    for junk in (b"hello", HARD_BOUNCE):
        answer = await post.client.post(url, content=junk, headers=post.tenant.admin)
        assert answer.json() == {"status": None}
    empty = await post.client.post(url, content=b"", headers=post.tenant.admin)
    assert empty.status_code == 400


async def test_twilio_status_callbacks_are_verified_and_applied(
    app: FastAPI, post: Post, http_receiver: Any, settings: Settings
) -> None:
    from clarion.messaging.channels.sms import twilio_signature
    from tests.messaging.conftest import Reply

    path = "/2010-04-01/Accounts/AC1/Messages.json"
    http_receiver.reply(
        "POST", path, Reply(201, json={"sid": "SM1"}), Reply(201, json={"sid": "SM2"})
    )
    sms = {
        "name": "Texts",
        "kind": "sms",
        "settings": {
            "base_url": http_receiver.url,
            "account_sid": "AC1",
            "from_number": "+15550000000",
        },
        "secrets": {"auth_token": "token-1"},
    }
    channel = (
        await post.client.post("/api/v1/channels", json=sms, headers=post.tenant.admin)
    ).json()
    template = {
        "name": "Text",
        "channel": "sms",
        "content": {"body": "Hi {{ profile.traits.first_name }}"},
    }
    made = (
        await post.client.post("/api/v1/templates", json=template, headers=post.tenant.admin)
    ).json()
    async with post.database.read_session() as session:
        _, version = await templates.current_version(
            session, workspace_id=post.tenant.id, template_id=made["id"]
        )
    cat = await post.profile("cat", phone="+15551112222", first_name="Cat")
    dan = await post.profile("dan", phone="+15553334444", first_name="Dan")
    ids = await post.queue(
        *(
            MessageRequest(
                profile_id=p,
                template_id=made["id"],
                template_version_id=version.id,
                channel="sms",
                idempotency_key=f"sms:{p}",
                origin="api",
            )
            for p in (cat, dan)
        )
    )
    await post.worker.drain()
    assert sorted(r.form()["Body"] for r in http_receiver.requests) == ["Hi Cat", "Hi Dan"]
    sent = [await post.message(i) for i in ids]
    assert [m.status for m in sent] == ["sent", "sent"]
    # Sent concurrently: which got which provider id depends on who asked first.
    ids = [m.id for m in sorted(sent, key=lambda m: m.provider_id or "")]
    first_user = "cat" if sent[0].provider_id == "SM1" else "dan"
    hook = f"/hooks/twilio/{channel['id']}"
    url = settings.public_url.rstrip("/") + hook

    async def callback(params: dict[str, str], token: str = "token-1") -> httpx.Response:
        signature = twilio_signature(url, params, token)
        return await post.client.post(hook, data=params, headers={"X-Twilio-Signature": signature})

    delivered = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    assert (await callback(delivered, token="wrong")).status_code == 403
    unsigned = await post.client.post(hook, data=delivered)
    assert unsigned.status_code == 403
    assert (await post.message(ids[0])).status == "sent"
    assert (await callback(delivered)).status_code == 204
    assert (await post.message(ids[0])).status == "delivered"
    failed = {"MessageSid": "SM2", "MessageStatus": "undelivered", "ErrorCode": "21211"}
    assert (await callback(failed)).status_code == 204
    gone = await post.message(ids[1])
    assert gone.status == "bounced" and "21211" in (gone.reason or "")
    assert [e["user_id"] for e in await post.events("SMS Delivered")] == [first_user]
    listed = await post.client.get("/api/v1/suppressions", headers=post.tenant.admin)
    assert [(s["channel"], s["reason"]) for s in listed.json()["items"]] == [("sms", "hard_bounce")]


async def test_a_double_opt_in_mails_its_confirmation_link_which_confirms(
    post: Post, settings: Settings
) -> None:
    gil = await post.profile("gil", email="gil@example.org", first_name="Gil")
    topic = await post.client.post(
        "/api/v1/topics",
        json={"name": "Weekly digest", "channel": "email", "double_opt_in": True},
        headers=post.tenant.admin,
    )
    assert topic.status_code == 201, topic.text
    url = f"/api/v1/profiles/{gil}/consent/opt-in"
    started = await post.client.post(
        url, json={"topic_id": topic.json()["id"]}, headers=post.tenant.admin
    )
    assert started.status_code == 201, started.text
    assert started.json()["message_id"] is not None
    await post.worker.drain()
    [mail] = post.sink.messages()
    assert mail.rcpt_tos == ["gil@example.org"]
    assert mail.message["Subject"] == "Please confirm: Weekly digest"
    assert "List-Unsubscribe" not in mail.message  # transactional
    html = next(p for p in mail.message.walk() if p.get_content_type() == "text/html").get_content()
    link = started.json()["confirmation_url"]
    assert link in html.replace("&amp;", "&")  # untracked: the link itself
    path = link.removeprefix(settings.public_url.rstrip("/"))  # the app signs under its own
    confirmed = await post.client.post(path)
    assert confirmed.status_code == 200, confirmed.text
    says = await post.client.get(f"/api/v1/profiles/{gil}/consent", headers=post.tenant.admin)
    assert [(c["topic_id"], c["state"]) for c in says.json()] == [(topic.json()["id"], "opted_in")]
    # Confirmed already: asking again sends nothing more.
    again = await post.client.post(
        url, json={"topic_id": topic.json()["id"]}, headers=post.tenant.admin
    )
    assert again.json()["message_id"] is None
    await post.worker.drain()
    assert len(post.sink.messages()) == 1


async def test_view_in_browser_shows_the_message_as_sent(post: Post) -> None:
    content = {
        "subject": "News",
        "html": (
            "<p>Hello {{ profile.traits.first_name }}</p>"
            '<a href="{{ links.view_in_browser_url }}">View</a>'
        ),
    }
    made = await post.client.post(
        "/api/v1/templates", json={"name": "News", "channel": "email", "content": content},
        headers=post.tenant.admin,
    )  # fmt: skip
    async with post.database.read_session() as session:
        _, version = await templates.current_version(
            session, workspace_id=post.tenant.id, template_id=made.json()["id"]
        )
    hal = await post.profile("hal", email="hal@example.org", first_name="Hal")
    [message_id] = await post.queue(
        MessageRequest(
            profile_id=hal, template_id=made.json()["id"], template_version_id=version.id,
            channel="email", idempotency_key="news:hal", origin="api",
        )
    )  # fmt: skip
    await post.worker.drain()
    [mail] = post.sink.messages()
    html = next(p for p in mail.message.walk() if p.get_content_type() == "text/html").get_content()
    view = html.split(f"{PUBLIC}/v/")[1].split('"')[0]
    shown = await post.client.get(f"/v/{view}")
    assert shown.status_code == 200 and "Hello Hal" in shown.text
    # The sale template has no such link: nothing of its messages is kept.
    ada = await post.profile("ada", email="ada@example.org")
    [sale] = await post.queue(post.request(ada, "sale:ada"))
    await post.worker.drain()
    assert (await post.message(sale)).content is None
    assert (await post.message(message_id)).content is not None


async def test_a_webhook_message_is_signed_and_posted_to_its_channels_url(
    post: Post, http_receiver: Any
) -> None:
    from clarion.messaging.channels.webhook import verify_webhook
    from tests.messaging.conftest import Reply

    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    http_receiver.reply("POST", "/hooks/crm", Reply(500), Reply(204))
    hook = {
        "name": "CRM",
        "kind": "webhook",
        "settings": {"url": f"{http_receiver.url}/hooks/crm"},
        "secrets": {"secret": secret},
    }
    created = await post.client.post("/api/v1/channels", json=hook, headers=post.tenant.admin)
    assert created.status_code == 201, created.text
    body = {"body": {"user": "{{ profile.user_id }}", "orders": "{{ profile.computed.orders }}"}}
    made = await post.client.post(
        "/api/v1/templates",
        json={"name": "CRM sync", "channel": "webhook", "content": body},
        headers=post.tenant.admin,
    )
    assert made.status_code == 201, made.text
    async with post.database.read_session() as session:
        _, version = await templates.current_version(
            session, workspace_id=post.tenant.id, template_id=made.json()["id"]
        )
    ivy = await post.profile("ivy", email="ivy@example.org")
    [message_id] = await post.queue(
        MessageRequest(
            profile_id=ivy, template_id=made.json()["id"], template_version_id=version.id,
            channel="webhook", idempotency_key="crm:ivy", origin="api",
        )
    )  # fmt: skip
    await post.worker.drain()  # the receiver answers 500: retried later
    assert (await post.message(message_id)).status == "queued"
    post.clock.advance(timedelta(minutes=1))
    await post.worker.drain()
    assert (await post.message(message_id)).status == "delivered"
    first, second = http_receiver.requests
    assert first.json() == second.json() == {"user": "ivy", "orders": 0}
    # Both attempts carry the message's id: the receiver can drop a repeat.
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == "crm:ivy"
    # Signed at the wall clock's time (the channel's own), per Standard Webhooks.
    assert verify_webhook(secret, second.headers, second.body, now=datetime.now(UTC))
    assert not verify_webhook(secret, second.headers, second.body + b" ", now=datetime.now(UTC))


async def test_an_inbox_message_lands_in_the_customers_inbox(post: Post) -> None:
    from tests.messaging.test_inbox import inbox_headers

    content = {"title": "Hi {{ profile.traits.first_name }}", "body": "<p>Your order shipped</p>"}
    made = await post.client.post(
        "/api/v1/templates",
        json={
            "name": "Shipped",
            "channel": "inbox",
            "category": "transactional",
            "content": content,
        },
        headers=post.tenant.admin,
    )
    assert made.status_code == 201, made.text
    async with post.database.read_session() as session:
        _, version = await templates.current_version(
            session, workspace_id=post.tenant.id, template_id=made.json()["id"]
        )
    jo = await post.profile("jo", first_name="Jo")  # no email: the inbox needs none
    [message_id] = await post.queue(
        MessageRequest(
            profile_id=jo, template_id=made.json()["id"], template_version_id=version.id,
            channel="inbox", idempotency_key="shipped:jo", origin="api",
            category="transactional",
        )
    )  # fmt: skip
    await post.worker.drain()
    assert (await post.message(message_id)).status == "delivered"
    headers = await inbox_headers(post.client, post.tenant, "jo")
    listed = await post.client.get("/inbox/v1/messages", headers=headers)
    assert listed.status_code == 200, listed.text
    [item] = listed.json()["items"]
    assert (item["id"], item["title"]) == (str(message_id), "Hi Jo")
    assert [e["user_id"] for e in await post.events("In-App Message Delivered")] == ["jo"]


async def test_one_click_unsubscribe_from_an_email_ends_its_message_and_stops_the_next(
    post: Post,
) -> None:
    kim = await post.profile("kim", email="kim@example.org")
    [first] = await post.queue(post.request(kim, "promo-1:kim"))
    await post.worker.drain()
    [mail] = post.sink.messages()
    link = mail.message["List-Unsubscribe"].strip("<>")
    path = link.removeprefix(PUBLIC)
    gone = await post.client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert gone.status_code == 200 and "location" not in gone.headers
    message = await post.message(first)
    assert message.status == "unsubscribed"
    assert await post.history(first) == ["delivered", "unsubscribed"]
    [event] = await post.events("Unsubscribed")
    assert event["user_id"] == "kim"
    [second] = await post.queue(post.request(kim, "promo-2:kim"))
    await post.worker.drain()
    refused = await post.message(second)
    assert (refused.status, refused.reason) == ("refused", "opted_out:email")
    assert len(post.sink.messages()) == 1


async def test_a_push_goes_to_fcm_and_an_unregistered_token_is_suppressed(
    post: Post, http_receiver: Any
) -> None:
    from tests.messaging.conftest import Reply
    from tests.messaging.test_push_channel import (
        FCM_ERROR,
        PROJECT,
        SEND,
        TOKEN_PATH,
        fcm_error,
        service_account,
        token_reply,
    )

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    http_receiver.reply("POST", TOKEN_PATH, token_reply("ya29.push"))
    http_receiver.reply(
        "POST",
        SEND,
        Reply(200, json={"name": f"projects/{PROJECT}/messages/1"}),
        fcm_error(404, "NOT_FOUND", "gone", {"@type": FCM_ERROR, "errorCode": "UNREGISTERED"}),
    )
    push = {
        "name": "App",
        "kind": "push",
        "settings": {"base_url": http_receiver.url},
        "secrets": {"service_account": service_account(http_receiver, pem)},
    }
    created = await post.client.post("/api/v1/channels", json=push, headers=post.tenant.admin)
    assert created.status_code == 201, created.text
    content = {"title": "Back in stock", "body": "Hi {{ profile.traits.first_name }}"}
    made = await post.client.post(
        "/api/v1/templates",
        json={"name": "Restock", "channel": "push", "content": content},
        headers=post.tenant.admin,
    )
    assert made.status_code == 201, made.text
    async with post.database.read_session() as session:
        _, version = await templates.current_version(
            session, workspace_id=post.tenant.id, template_id=made.json()["id"]
        )
    kit = await post.profile("kit", push_token="token-kit", first_name="Kit")
    [delivered] = await post.queue(
        MessageRequest(
            profile_id=kit, template_id=made.json()["id"], template_version_id=version.id,
            channel="push", idempotency_key="restock:kit", origin="api",
        )
    )  # fmt: skip
    await post.worker.drain()
    [request] = [r for r in http_receiver.requests if r.path == SEND]
    assert request.headers["authorization"] == "Bearer ya29.push"
    assert request.json()["message"] == {
        "token": "token-kit",
        "notification": {"title": "Back in stock", "body": "Hi Kit"},
    }
    message = await post.message(delivered)
    assert (message.status, message.provider_id) == ("sent", f"projects/{PROJECT}/messages/1")
    assert [e["user_id"] for e in await post.events("Push Notification Sent")] == ["kit"]

    # The app was uninstalled: FCM says the token is gone, and it is never tried again.
    [gone] = await post.queue(
        MessageRequest(
            profile_id=kit, template_id=made.json()["id"], template_version_id=version.id,
            channel="push", idempotency_key="restock:kit:2", origin="api",
        )
    )  # fmt: skip
    await post.worker.drain()
    assert (await post.message(gone)).status == "bounced"
    listed = await post.client.get("/api/v1/suppressions", headers=post.tenant.admin)
    assert [(s["channel"], s["address"], s["reason"]) for s in listed.json()["items"]] == [
        ("push", "token-kit", "hard_bounce")
    ]
    [again] = await post.queue(
        MessageRequest(
            profile_id=kit, template_id=made.json()["id"], template_version_id=version.id,
            channel="push", idempotency_key="restock:kit:3", origin="api",
        )
    )  # fmt: skip
    await post.worker.drain()
    refused = await post.message(again)
    assert refused.status == "refused"
    assert len([r for r in http_receiver.requests if r.path == SEND]) == 2


async def test_delivery_feedback_is_applied_with_the_delivery(post: Post) -> None:
    """`Email Delivered` is on the customer's timeline and in the segments that count it
    when the delivery run commits: no processing job per batch of feedback."""
    created = await post.client.post(
        "/api/v1/segments",
        json={
            "name": "Mailed",
            "rule": {"type": "event", "event": "Email Delivered", "operator": "gte", "count": 1},
        },
        headers=post.tenant.admin,
    )
    assert created.status_code == 201, created.text
    ada = await post.profile("ada", email="ada@example.org")  # runs the segment's baseline
    [message_id] = await post.queue(post.request(ada, "feedback:ada"))
    claimed = await post.worker._maintain_and_claim()  # one run: the delivery
    assert [job.kind for job in claimed] == [delivery.DELIVER]
    await post.worker._execute(claimed[0])

    assert (await post.message(message_id)).status == "delivered"
    async with post.database.read_session() as session:
        queued = await session.scalar(
            select(func.count()).select_from(Job).where(Job.workspace_id == post.tenant.id)
        )
        timeline = (
            await session.scalars(
                select(Event.name)
                .join(ProfileEvent, ProfileEvent.event_id == Event.id)
                .where(ProfileEvent.profile_id == ada)
                .order_by(Event.id)
            )
        ).all()
    # The identify, the feedback, and entering "Mailed" that the feedback caused.
    assert timeline == [None, "Email Delivered", "Segment Entered"]
    members = await post.client.get(
        f"/api/v1/segments/{created.json()['id']}/members", headers=post.tenant.admin
    )
    assert [m["profile_id"] for m in members.json()["items"]] == [str(ada)]
    assert queued == 0  # nor a processing job for the feedback


async def test_a_batch_finds_its_messages_by_key(post: Post) -> None:
    """On PostgreSQL a delivery batch reads its messages by primary key, never through a
    workspace index (which the planner chose with no statistics: every message of the
    workspace, three times a batch)."""
    if post.database.is_sqlite:
        return  # SQLite plans from the statistics each process samples (core/database.py)
    ada = await post.profile("ada", email="ada@example.org")
    ids = await post.queue(post.request(ada, "key:1"), post.request(ada, "key:2"))

    async def read() -> None:
        async with post.database.read_session() as session:
            await delivery._pending(session, post.tenant.id, ids, lock=True)

    plan = await plan_of(post.database, read, "FROM messages")
    assert "ix_messages_workspace" not in plan, plan
