"""The SMS channel against a loopback server playing Twilio's Messages API."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from clarion.core.clock import FrozenClock
from clarion.messaging.channels.base import Outgoing, PermanentFailure, TemporaryFailure
from clarion.messaging.channels.sms import (
    SmsChannel,
    TwilioSettings,
    parse_status_callback,
    twilio_signature,
    verify_twilio_signature,
)
from tests.messaging.conftest import HttpReceiver, Reply
from tests.support import LOOPBACK, free_port

SID = "AC0123456789abcdef0123456789abcdef"
TOKEN = "auth-token-0123456789"
MESSAGES = f"/2010-04-01/Accounts/{SID}/Messages.json"
CALLBACK = "https://clarion.example/callbacks/twilio/status"

# Twilio's documented example (its SDKs' tests): auth token 12345, this URL and params.
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
DOC_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def outgoing(**fields: Any) -> Outgoing:
    """An SMS to +15558675310."""
    values: dict[str, Any] = {
        "message_id": "msg-1",
        "idempotency_key": "idem-sms-1",
        "to": "+15558675310",
        "text": "Your order shipped: 20% off next time 🎉",
    }
    values.update(fields)
    return Outgoing(**values)


def settings_for(receiver: HttpReceiver, **overrides: Any) -> TwilioSettings:
    """Settings pointing at the receiver, sending from +15005550006."""
    values: dict[str, Any] = {
        "base_url": receiver.url,
        "account_sid": SID,
        "auth_token": TOKEN,
        "from_number": "+15005550006",
        "status_callback_url": CALLBACK,
        "timeout": 0.5,
    }
    values.update(overrides)
    return TwilioSettings(**values)


@pytest.fixture
async def sms(http_receiver: HttpReceiver) -> AsyncIterator[SmsChannel]:
    """A channel talking to the receiver."""
    channel = SmsChannel(
        settings_for(http_receiver),
        clock=FrozenClock(datetime(2026, 5, 1, tzinfo=UTC)),
        policy=LOOPBACK,
    )
    yield channel
    await channel.close()


async def test_a_send_speaks_the_messages_api(sms: SmsChannel, http_receiver: HttpReceiver) -> None:
    http_receiver.reply("POST", MESSAGES, Reply(201, json={"sid": "SM42", "status": "queued"}))
    sent = await sms.send(outgoing())

    assert sent.provider_id == "SM42"
    [request] = http_receiver.requests
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.form() == {
        "To": "+15558675310",
        "From": "+15005550006",
        "Body": "Your order shipped: 20% off next time 🎉",
        "StatusCallback": CALLBACK,
    }
    scheme, _, credentials = request.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(credentials).decode() == f"{SID}:{TOKEN}"
    assert request.headers["i-twilio-idempotency-token"] == "idem-sms-1"


async def test_a_messaging_service_replaces_the_from_number(http_receiver: HttpReceiver) -> None:
    http_receiver.reply("POST", MESSAGES, Reply(201, json={"sid": "SM43"}))
    settings = settings_for(
        http_receiver,
        from_number=None,
        messaging_service_sid="MG0123",
        status_callback_url=None,
    )
    channel = SmsChannel(settings, policy=LOOPBACK)
    try:
        await channel.send(outgoing())
    finally:
        await channel.close()

    form = http_receiver.requests[0].form()
    assert form["MessagingServiceSid"] == "MG0123"
    assert "From" not in form and "StatusCallback" not in form


def test_settings_want_one_sender_and_hide_the_token() -> None:
    with pytest.raises(ValueError):
        TwilioSettings(account_sid=SID, auth_token=TOKEN)
    with pytest.raises(ValueError):
        TwilioSettings(
            account_sid=SID, auth_token=TOKEN, from_number="+1", messaging_service_sid="MG1"
        )
    text = repr(TwilioSettings(account_sid=SID, auth_token=TOKEN, from_number="+15005550006"))
    assert TOKEN not in text and SID in text


def twilio_error(status: int, code: int, **headers: str) -> Reply:
    """An error answer shaped like Twilio's."""
    body = {
        "code": code,
        "message": f"error {code}",
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return Reply(status, json=body, headers=headers)


@pytest.mark.parametrize(
    ("reply", "bounce"),
    [
        (twilio_error(400, 21211), "hard"),
        (twilio_error(400, 21614), "hard"),
        (twilio_error(400, 21610), "complaint"),
        (twilio_error(400, 21408), None),
        (twilio_error(404, 20404), None),
    ],
)
async def test_client_errors_are_permanent_with_the_twilio_code(
    sms: SmsChannel, http_receiver: HttpReceiver, reply: Reply, bounce: str | None
) -> None:
    http_receiver.reply("POST", MESSAGES, reply)
    with pytest.raises(PermanentFailure) as failure:
        await sms.send(outgoing())
    assert failure.value.bounce == bounce
    assert str(reply.json["code"]) in failure.value.reason


@pytest.mark.parametrize(
    ("reply", "wait"),
    [
        (twilio_error(429, 20429, **{"Retry-After": "30"}), 30.0),
        (twilio_error(500, 20500), None),
        (Reply(503, body=b"<html>unavailable</html>", headers={"Retry-After": "5"}), 5.0),
        (twilio_error(401, 20003), None),
    ],
)
async def test_rate_limits_server_errors_and_bad_credentials_are_temporary(
    sms: SmsChannel, http_receiver: HttpReceiver, reply: Reply, wait: float | None
) -> None:
    http_receiver.reply("POST", MESSAGES, reply)
    with pytest.raises(TemporaryFailure) as failure:
        await sms.send(outgoing())
    assert failure.value.retry_after == wait
    assert str(reply.status) in failure.value.reason


async def test_time_outs_and_refused_connections_are_temporary(
    sms: SmsChannel, http_receiver: HttpReceiver
) -> None:
    http_receiver.reply("POST", MESSAGES, Reply(201, json={"sid": "SM1"}, delay=1.5))
    with pytest.raises(TemporaryFailure, match="timed out"):
        await sms.send(outgoing())
    down = SmsChannel(
        settings_for(http_receiver, base_url=f"http://127.0.0.1:{free_port()}"), policy=LOOPBACK
    )
    try:
        with pytest.raises(TemporaryFailure, match="unreachable"):
            await down.send(outgoing())
    finally:
        await down.close()


async def test_an_empty_body_is_refused_before_any_request(
    sms: SmsChannel, http_receiver: HttpReceiver
) -> None:
    with pytest.raises(PermanentFailure):
        await sms.send(outgoing(text=""))
    assert http_receiver.requests == []


def test_the_signature_matches_twilios_documented_example() -> None:
    assert twilio_signature(DOC_URL, DOC_PARAMS, "12345") == DOC_SIGNATURE
    assert verify_twilio_signature(DOC_URL, DOC_PARAMS, DOC_SIGNATURE, "12345")
    # Twilio's SDKs' second vector: a name posted several times, values sorted, deduplicated.
    repeated = [
        ("Sid", "CA123"),
        ("SidAccount", "AC123"),
        ("Digits", "5678"),
        ("Digits", "1234"),
        ("Digits", "1234"),
    ]
    assert verify_twilio_signature(DOC_URL, repeated, "IK+Dwps556ElfBT0I3Rgjkr1wJU=", "12345")


@pytest.mark.parametrize(
    ("url", "params", "token"),
    [
        (DOC_URL, {**DOC_PARAMS, "Digits": "9999"}, "12345"),
        (DOC_URL + "&baz=3", DOC_PARAMS, "12345"),
        (DOC_URL, {**DOC_PARAMS, "Extra": "1"}, "12345"),
        (DOC_URL, DOC_PARAMS, "54321"),
        ("https://mycompany.com:8443/myapp.php?foo=1&bar=2", DOC_PARAMS, "12345"),
    ],
)
def test_a_changed_request_fails_the_signature(
    url: str, params: dict[str, str], token: str
) -> None:
    assert not verify_twilio_signature(url, params, DOC_SIGNATURE, token)


def test_the_default_port_may_be_present_or_not() -> None:
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    signed_with_port = twilio_signature(with_port, DOC_PARAMS, "12345")
    assert verify_twilio_signature(DOC_URL, DOC_PARAMS, signed_with_port, "12345")
    assert verify_twilio_signature(with_port, DOC_PARAMS, DOC_SIGNATURE, "12345")


async def test_a_signed_status_callback_round_trips_over_http(http_receiver: HttpReceiver) -> None:
    url = f"{http_receiver.url}/callbacks/twilio/status"
    http_receiver.reply("POST", "/callbacks/twilio/status", Reply(204))
    params = {
        "AccountSid": SID,
        "MessageSid": "SM42",
        "MessageStatus": "undelivered",
        "ErrorCode": "30006",
        "To": "+15558675310",
        "From": "+15005550006",
        "ApiVersion": "2010-04-01",
    }
    async with httpx.AsyncClient() as client:
        await client.post(
            url, data=params, headers={"X-Twilio-Signature": twilio_signature(url, params, TOKEN)}
        )

    [request] = http_receiver.requests
    fields = parse_qsl(request.body.decode(), keep_blank_values=True)
    signature = request.headers["x-twilio-signature"]
    assert verify_twilio_signature(url, fields, signature, TOKEN)
    assert not verify_twilio_signature(url, fields, signature, "another-token")
    status = parse_status_callback(dict(fields))
    assert (status.message_sid, status.status, status.error_code) == ("SM42", "undelivered", 30006)
    assert status.to == "+15558675310"
    assert status.final and status.bounce == "hard"


@pytest.mark.parametrize(
    ("params", "final", "bounce"),
    [
        ({"MessageSid": "SM1", "MessageStatus": "queued"}, False, None),
        ({"MessageSid": "SM1", "MessageStatus": "sent", "ErrorCode": ""}, False, None),
        ({"MessageSid": "SM1", "MessageStatus": "delivered"}, True, None),
        ({"MessageSid": "SM1", "MessageStatus": "failed", "ErrorCode": "21610"}, True, "complaint"),
        ({"MessageSid": "SM1", "MessageStatus": "undelivered", "ErrorCode": "30003"}, True, None),
        ({"SmsSid": "SM1", "SmsStatus": "failed", "ErrorCode": "21211"}, True, "hard"),
    ],
)
def test_status_callbacks_are_parsed(
    params: dict[str, str], final: bool, bounce: str | None
) -> None:
    status = parse_status_callback(params)
    assert status.message_sid == "SM1"
    assert status.final is final
    assert status.bounce == bounce


@pytest.mark.parametrize(
    "params",
    [
        {"MessageStatus": "delivered"},
        {"MessageSid": "SM1", "MessageStatus": "teleported"},
        {"MessageSid": "SM1", "MessageStatus": "failed", "ErrorCode": "E42"},
    ],
)
def test_a_callback_that_is_not_a_status_is_refused(params: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        parse_status_callback(params)
