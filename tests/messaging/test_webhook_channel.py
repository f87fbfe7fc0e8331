"""The webhook channel against a real HTTP receiver on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from clarion.core.clock import FrozenClock
from clarion.messaging.channels.base import Outgoing, PermanentFailure, TemporaryFailure
from clarion.messaging.channels.webhook import (
    WebhookChannel,
    WebhookSettings,
    generate_secret,
    sign_webhook,
    verify_webhook,
)
from tests.messaging.conftest import HttpReceiver, Reply
from tests.support import LOOPBACK, free_port

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def outgoing(to: str, **fields: Any) -> Outgoing:
    """A webhook message for `to` with a small payload."""
    values: dict[str, Any] = {
        "message_id": "msg-1",
        "idempotency_key": "msg_2Kx7Yq9",
        "to": to,
        "data": {"event": "order.completed", "total": 42.5, "name": "Zoë"},
    }
    values.update(fields)
    return Outgoing(**values)


@pytest.fixture
async def channel() -> AsyncIterator[WebhookChannel]:
    """A channel with its own client and a frozen clock at NOW."""
    settings = WebhookSettings(secret=SECRET, timeout=0.5, headers={"X-Api-Key": "k-123"})
    made = WebhookChannel(settings, clock=FrozenClock(NOW), policy=LOOPBACK)
    yield made
    await made.close()


def test_signature_matches_the_standard_webhooks_test_vector() -> None:
    # The vector published with the Standard Webhooks reference libraries.
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign_webhook(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": expected,
    }
    at = datetime.fromtimestamp(1614265330, UTC)
    assert verify_webhook(SECRET, headers, body, now=at)


async def test_a_send_posts_the_payload_signed(
    channel: WebhookChannel, http_receiver: HttpReceiver
) -> None:
    http_receiver.reply("POST", "/hooks/orders", Reply(204))
    sent = await channel.send(outgoing(f"{http_receiver.url}/hooks/orders?src=clarion"))

    [request] = http_receiver.requests
    assert sent.provider_id == "msg_2Kx7Yq9"
    assert request.query == "src=clarion"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-api-key"] == "k-123"
    assert json.loads(request.body) == {"event": "order.completed", "total": 42.5, "name": "Zoë"}
    assert request.headers["webhook-id"] == "msg_2Kx7Yq9"
    assert request.headers["webhook-timestamp"] == str(int(NOW.timestamp()))
    # Recomputed by hand, not with sign_webhook: the spec's recipe, step by step.
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = f"msg_2Kx7Yq9.{int(NOW.timestamp())}.".encode() + request.body
    digest = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert request.headers["webhook-signature"] == f"v1,{digest}"
    assert verify_webhook(SECRET, request.headers, request.body, now=NOW)


async def test_a_message_cannot_override_the_signature_headers(
    channel: WebhookChannel, http_receiver: HttpReceiver
) -> None:
    http_receiver.reply("POST", "/h", Reply(200))
    forged = {"Webhook-Id": "evil", "webhook-signature": "v1,Zm9yZ2Vk", "X-Trace": "t-1"}
    await channel.send(outgoing(f"{http_receiver.url}/h", headers=forged))

    [request] = http_receiver.requests
    assert request.headers["webhook-id"] == "msg_2Kx7Yq9"
    assert request.headers["x-trace"] == "t-1"
    assert verify_webhook(SECRET, request.headers, request.body, now=NOW)


def signed_headers(body: bytes, *, at: datetime = NOW) -> dict[str, str]:
    """Headers signing `body` with SECRET at `at`."""
    timestamp = int(at.timestamp())
    return {
        "Webhook-Id": "msg_1",
        "Webhook-Timestamp": str(timestamp),
        "Webhook-Signature": sign_webhook(SECRET, "msg_1", timestamp, body),
    }


def test_verification_accepts_any_one_of_several_signatures() -> None:
    body = b'{"a":1}'
    headers = signed_headers(body)
    good = headers["Webhook-Signature"]
    headers["Webhook-Signature"] = f"v1,bm9wZQ== {good} v1a,c29tZXRoaW5n"
    assert verify_webhook(SECRET, headers, body, now=NOW)


@pytest.mark.parametrize(
    ("case", "now"),
    [
        ("tampered body", NOW),
        ("too old", NOW + timedelta(seconds=301)),
        ("from the future", NOW - timedelta(seconds=301)),
        ("other secret", NOW),
        ("no signature", NOW),
        ("bad timestamp", NOW),
        ("other id", NOW),
    ],
)
def test_verification_rejects(case: str, now: datetime) -> None:
    body = b'{"a":1}'
    headers = signed_headers(body)
    secret = SECRET
    if case == "tampered body":
        body = b'{"a":2}'
    elif case == "other secret":
        secret = generate_secret()
    elif case == "no signature":
        del headers["Webhook-Signature"]
    elif case == "bad timestamp":
        headers["Webhook-Timestamp"] = "soon"
    elif case == "other id":
        headers["Webhook-Id"] = "msg_2"
    assert not verify_webhook(secret, headers, body, now=now)
    # The same message checked within tolerance still passes, so the rejection is the case.
    assert verify_webhook(SECRET, signed_headers(b'{"a":1}'), b'{"a":1}', now=NOW)


def test_generated_secrets_are_fresh_and_usable() -> None:
    first, second = generate_secret(), generate_secret()
    assert first != second
    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32
    body = b"{}"
    timestamp = int(NOW.timestamp())
    headers = {
        "webhook-id": "m",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_webhook(first, "m", timestamp, body),
    }
    assert verify_webhook(first, headers, body, now=NOW)
    assert not verify_webhook(second, headers, body, now=NOW)


def test_settings_refuse_a_malformed_secret_and_hide_it() -> None:
    with pytest.raises(ValueError):
        WebhookSettings(secret="whsec_not base64!")
    text = repr(WebhookSettings(secret=SECRET, headers={"Authorization": "Bearer tok-9"}))
    assert "MfKQ9r8" not in text and "tok-9" not in text


RETRY_DATE = format_datetime(NOW + timedelta(seconds=90), usegmt=True)


@pytest.mark.parametrize(
    ("reply", "failure", "retry_after", "bounce"),
    [
        (Reply(408), TemporaryFailure, None, None),
        (Reply(429, headers={"Retry-After": "7"}), TemporaryFailure, 7.0, None),
        (Reply(500, body=b"boom"), TemporaryFailure, None, None),
        (Reply(503, headers={"Retry-After": RETRY_DATE}), TemporaryFailure, 90.0, None),
        (Reply(400, json={"error": "bad"}), PermanentFailure, None, None),
        (Reply(404), PermanentFailure, None, None),
        (Reply(410), PermanentFailure, None, "hard"),
        (
            Reply(301, headers={"Location": "https://elsewhere.example/"}),
            PermanentFailure,
            None,
            None,
        ),
    ],
)
async def test_answers_are_classified(
    channel: WebhookChannel,
    http_receiver: HttpReceiver,
    reply: Reply,
    failure: type[Exception],
    retry_after: float | None,
    bounce: str | None,
) -> None:
    http_receiver.reply("POST", "/h", reply)
    with pytest.raises(failure) as raised:
        await channel.send(outgoing(f"{http_receiver.url}/h"))
    assert str(reply.status) in str(raised.value) or reply.status == 301
    if isinstance(raised.value, TemporaryFailure):
        assert raised.value.retry_after == retry_after
    else:
        assert isinstance(raised.value, PermanentFailure)
        assert raised.value.bounce == bounce
    assert len(http_receiver.requests) == 1  # one attempt; retrying is delivery's job


async def test_a_slow_receiver_times_out_as_temporary(
    channel: WebhookChannel, http_receiver: HttpReceiver
) -> None:
    http_receiver.reply("POST", "/slow", Reply(200, delay=1.5))
    with pytest.raises(TemporaryFailure, match="timed out"):
        await channel.send(outgoing(f"{http_receiver.url}/slow"))


async def test_an_unreachable_receiver_is_temporary(channel: WebhookChannel) -> None:
    with pytest.raises(TemporaryFailure, match="unreachable"):
        await channel.send(outgoing(f"http://127.0.0.1:{free_port()}/h"))


@pytest.mark.parametrize("url", ["ftp://example.com/h", "not a url", "mailto:a@b.c"])
async def test_a_url_that_is_not_http_fails_permanently(channel: WebhookChannel, url: str) -> None:
    with pytest.raises(PermanentFailure):
        await channel.send(outgoing(url))


async def test_a_shared_client_is_left_open(http_receiver: HttpReceiver) -> None:
    http_receiver.reply("POST", "/h", Reply(200))
    async with httpx.AsyncClient() as client:
        webhook = WebhookChannel(WebhookSettings(secret=SECRET), client=client)
        await webhook.send(outgoing(f"{http_receiver.url}/h"))
        await webhook.close()
        assert not client.is_closed
        response = await client.post(f"{http_receiver.url}/h")
        assert response.status_code == 200


async def test_a_webhook_to_a_private_address_fails_for_good(
    http_receiver: HttpReceiver,
) -> None:
    channel = WebhookChannel(WebhookSettings(secret=SECRET), clock=FrozenClock(NOW))
    try:
        with pytest.raises(PermanentFailure, match=re.escape("127.0.0.1: not a public address")):
            await channel.send(outgoing(f"{http_receiver.url}/hooks/orders"))
    finally:
        await channel.close()
    assert http_receiver.requests == []
