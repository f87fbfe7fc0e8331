"""The push channel against a loopback server playing Google's token endpoint and FCM."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from clarion.core.clock import FrozenClock
from clarion.messaging.channels.base import Outgoing, PermanentFailure, TemporaryFailure
from clarion.messaging.channels.push import FcmSettings, PushChannel
from tests.messaging.conftest import HttpReceiver, Reply
from tests.support import LOOPBACK, free_port

PROJECT = "clarion-test"
SEND = f"/v1/projects/{PROJECT}/messages:send"
TOKEN_PATH = "/oauth2/token"
CLIENT_EMAIL = "push@clarion-test.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def key_pair() -> tuple[str, RSAPublicKey]:
    """A service account key (PEM) and its public half."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return pem, private.public_key()


def service_account(receiver: HttpReceiver, private_key: str) -> dict[str, str]:
    """A service account JSON whose token_uri is the receiver."""
    return {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "kid-0001",
        "private_key": private_key,
        "client_email": CLIENT_EMAIL,
        "token_uri": f"{receiver.url}{TOKEN_PATH}",
    }


def token_reply(value: str, expires_in: int = 3599, delay: float = 0.0) -> Reply:
    """The token endpoint's answer, as Google gives it."""
    body = {"access_token": value, "expires_in": expires_in, "token_type": "Bearer"}
    return Reply(200, json=body, delay=delay)


def outgoing(**fields: Any) -> Outgoing:
    """A push with a title, a body and some data."""
    values: dict[str, Any] = {
        "message_id": "msg-1",
        "idempotency_key": "idem-1",
        "to": "device-token-abc",
        "subject": "Back in stock",
        "text": "Your sneakers are back 👟",
        "data": {"url": "/p/42", "order": 42, "items": [1, 2], "flag": True},
    }
    values.update(fields)
    return Outgoing(**values)


@pytest.fixture
def clock() -> FrozenClock:
    """Stands at the real present, so the JWT's iat/exp verify normally."""
    return FrozenClock(datetime.now(UTC))


@pytest.fixture
async def push(
    http_receiver: HttpReceiver, key_pair: tuple[str, RSAPublicKey], clock: FrozenClock
) -> AsyncIterator[PushChannel]:
    """A channel whose token endpoint and FCM are the receiver."""
    settings = FcmSettings(
        service_account=service_account(http_receiver, key_pair[0]),
        base_url=http_receiver.url,
        timeout=0.5,
    )
    channel = PushChannel(settings, clock=clock, policy=LOOPBACK)
    yield channel
    await channel.close()


def token_requests(receiver: HttpReceiver) -> list[dict[str, str]]:
    """The forms posted to the token endpoint."""
    return [r.form() for r in receiver.requests if r.path == TOKEN_PATH]


def fcm_requests(receiver: HttpReceiver) -> list[Any]:
    """The requests posted to FCM's send endpoint."""
    return [r for r in receiver.requests if r.path == SEND]


async def test_a_send_gets_a_token_by_jwt_grant_and_posts_the_v1_message(
    push: PushChannel,
    http_receiver: HttpReceiver,
    key_pair: tuple[str, RSAPublicKey],
    clock: FrozenClock,
) -> None:
    http_receiver.reply("POST", TOKEN_PATH, token_reply("ya29.first"))
    http_receiver.reply("POST", SEND, Reply(200, json={"name": f"projects/{PROJECT}/messages/1"}))
    sent = await push.send(outgoing())

    assert sent.provider_id == f"projects/{PROJECT}/messages/1"
    [grant] = token_requests(http_receiver)
    assert grant["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    token_uri = f"{http_receiver.url}{TOKEN_PATH}"
    claims = jwt.decode(grant["assertion"], key_pair[1], algorithms=["RS256"], audience=token_uri)
    assert claims["iss"] == CLIENT_EMAIL
    assert claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
    assert claims["iat"] == int(clock.now().timestamp())
    assert claims["exp"] - claims["iat"] == 3600
    header = jwt.get_unverified_header(grant["assertion"])
    assert header["alg"] == "RS256" and header["kid"] == "kid-0001"

    [request] = fcm_requests(http_receiver)
    assert request.headers["authorization"] == "Bearer ya29.first"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "message": {
            "token": "device-token-abc",
            "notification": {"title": "Back in stock", "body": "Your sneakers are back 👟"},
            "data": {"url": "/p/42", "order": "42", "items": "[1,2]", "flag": "true"},
        }
    }


async def test_a_data_only_message_has_no_notification(
    push: PushChannel, http_receiver: HttpReceiver
) -> None:
    http_receiver.reply("POST", TOKEN_PATH, token_reply("ya29.first"))
    http_receiver.reply("POST", SEND, Reply(200, json={"name": "n"}))
    await push.send(outgoing(subject=None, text=None, data={"k": "v"}))

    assert fcm_requests(http_receiver)[0].json() == {
        "message": {"token": "device-token-abc", "data": {"k": "v"}}
    }


async def test_the_token_is_cached_until_shortly_before_it_expires(
    push: PushChannel, http_receiver: HttpReceiver, clock: FrozenClock
) -> None:
    http_receiver.reply("POST", TOKEN_PATH, token_reply("ya29.first"), token_reply("ya29.second"))
    http_receiver.reply("POST", SEND, Reply(200, json={"name": "n"}))
    for _ in range(3):
        await push.send(outgoing())
    clock.advance(timedelta(seconds=3599 - 180))
    await push.send(outgoing())
    assert len(token_requests(http_receiver)) == 1
    clock.advance(timedelta(seconds=90))  # inside the refresh margin
    await push.send(outgoing())

    assert len(token_requests(http_receiver)) == 2
    bearers = [r.headers["authorization"] for r in fcm_requests(http_receiver)]
    assert bearers == ["Bearer ya29.first"] * 4 + ["Bearer ya29.second"]


async def test_concurrent_sends_share_one_token_request(
    push: PushChannel, http_receiver: HttpReceiver
) -> None:
    http_receiver.reply("POST", TOKEN_PATH, token_reply("ya29.first", delay=0.2))
    http_receiver.reply("POST", SEND, Reply(200, json={"name": "n"}))
    await asyncio.gather(*(push.send(outgoing()) for _ in range(8)))

    assert len(token_requests(http_receiver)) == 1
    assert len(fcm_requests(http_receiver)) == 8


async def test_a_401_refreshes_the_token_and_retries_once(
    push: PushChannel, http_receiver: HttpReceiver
) -> None:
    http_receiver.reply("POST", TOKEN_PATH, token_reply("ya29.first"), token_reply("ya29.second"))
    unauthorized = Reply(401, json={"error": {"code": 401, "status": "UNAUTHENTICATED"}})
    http_receiver.reply("POST", SEND, unauthorized, Reply(200, json={"name": "n"}))
    sent = await push.send(outgoing())

    assert sent.provider_id == "n"
    bearers = [r.headers["authorization"] for r in fcm_requests(http_receiver)]
    assert bearers == ["Bearer ya29.first", "Bearer ya29.second"]


async def test_a_second_401_is_temporary_and_not_retried_again(
    push: PushChannel, http_receiver: HttpReceiver
) -> None:
    http_receiver.reply("POST", TOKEN_PATH, token_reply("ya29.first"), token_reply("ya29.second"))
    http_receiver.reply("POST", SEND, Reply(401, json={"error": {"status": "UNAUTHENTICATED"}}))
    with pytest.raises(TemporaryFailure, match="401"):
        await push.send(outgoing())

    assert len(fcm_requests(http_receiver)) == 2
    assert len(token_requests(http_receiver)) == 2


def fcm_error(status: int, rpc_status: str, message: str, *details: dict[str, Any]) -> Reply:
    """An error answer shaped like FCM v1's."""
    error = {"code": status, "message": message, "status": rpc_status, "details": list(details)}
    return Reply(status, json={"error": error})


FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


@pytest.mark.parametrize(
    ("reply", "bounce"),
    [
        (
            fcm_error(
                404,
                "NOT_FOUND",
                "Requested entity was not found.",
                {"@type": FCM_ERROR, "errorCode": "UNREGISTERED"},
            ),
            "hard",
        ),
        (
            fcm_error(
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                {"@type": FCM_ERROR, "errorCode": "INVALID_ARGUMENT"},
                {
                    "@type": BAD_REQUEST,
                    "fieldViolations": [
                        {"field": "message.token", "description": "Invalid registration token"}
                    ],
                },
            ),
            "hard",
        ),
        (
            fcm_error(
                400,
                "INVALID_ARGUMENT",
                "Invalid data payload key: from",
                {
                    "@type": BAD_REQUEST,
                    "fieldViolations": [
                        {"field": "message.data[0].key", "description": "reserved"}
                    ],
                },
            ),
            None,
        ),
        (
            fcm_error(
                403,
                "PERMISSION_DENIED",
                "SenderId mismatch",
                {"@type": FCM_ERROR, "errorCode": "SENDER_ID_MISMATCH"},
            ),
            "hard",
        ),
        (fcm_error(404, "NOT_FOUND", "Requested entity was not found."), None),
    ],
)
async def test_client_errors_are_permanent_and_dead_tokens_bounce(
    push: PushChannel, http_receiver: HttpReceiver, reply: Reply, bounce: str | None
) -> None:
    http_receiver.reply("POST", TOKEN_PATH, token_reply("ya29.first"))
    http_receiver.reply("POST", SEND, reply)
    with pytest.raises(PermanentFailure) as failure:
        await push.send(outgoing())
    assert failure.value.bounce == bounce
    assert str(reply.status) in failure.value.reason


@pytest.mark.parametrize(
    ("reply", "wait"),
    [
        (
            Reply(
                429, json={"error": {"status": "RESOURCE_EXHAUSTED"}}, headers={"Retry-After": "10"}
            ),
            10.0,
        ),
        (Reply(500, json={"error": {"status": "INTERNAL"}}), None),
        (Reply(503, body=b"unavailable", headers={"Retry-After": "3"}), 3.0),
    ],
)
async def test_quota_and_server_errors_are_temporary(
    push: PushChannel, http_receiver: HttpReceiver, reply: Reply, wait: float | None
) -> None:
    http_receiver.reply("POST", TOKEN_PATH, token_reply("ya29.first"))
    http_receiver.reply("POST", SEND, reply)
    with pytest.raises(TemporaryFailure) as failure:
        await push.send(outgoing())
    assert failure.value.retry_after == wait
    assert len(fcm_requests(http_receiver)) == 1


async def test_a_refused_grant_is_temporary_and_sends_nothing(
    push: PushChannel, http_receiver: HttpReceiver
) -> None:
    refusal = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
    http_receiver.reply("POST", TOKEN_PATH, Reply(400, json=refusal))
    with pytest.raises(TemporaryFailure, match="Invalid JWT Signature"):
        await push.send(outgoing())
    assert fcm_requests(http_receiver) == []


async def test_time_outs_and_an_unreachable_fcm_are_temporary(
    push: PushChannel, http_receiver: HttpReceiver, key_pair: tuple[str, RSAPublicKey]
) -> None:
    http_receiver.reply("POST", TOKEN_PATH, token_reply("ya29.first"))
    http_receiver.reply("POST", SEND, Reply(200, json={"name": "n"}, delay=1.5))
    with pytest.raises(TemporaryFailure, match="timed out"):
        await push.send(outgoing())

    settings = FcmSettings(
        service_account=service_account(http_receiver, key_pair[0]),
        base_url=f"http://127.0.0.1:{free_port()}",
    )
    down = PushChannel(settings, policy=LOOPBACK)
    try:
        with pytest.raises(TemporaryFailure, match="unreachable"):
            await down.send(outgoing())
    finally:
        await down.close()


def test_settings_check_the_account_and_hide_the_key(
    http_receiver: HttpReceiver, key_pair: tuple[str, RSAPublicKey]
) -> None:
    account = service_account(http_receiver, key_pair[0])
    text = repr(FcmSettings(service_account=account))
    assert "PRIVATE KEY" not in text and "kid-0001" not in text
    assert PROJECT in text
    with pytest.raises(ValueError, match="token_uri"):
        FcmSettings(service_account={**account, "token_uri": ""})


async def test_a_shared_client_is_left_open(
    http_receiver: HttpReceiver, key_pair: tuple[str, RSAPublicKey]
) -> None:
    http_receiver.reply("POST", TOKEN_PATH, token_reply("ya29.first"))
    http_receiver.reply("POST", SEND, Reply(200, json={"name": "n"}))
    settings = FcmSettings(
        service_account=service_account(http_receiver, key_pair[0]), base_url=http_receiver.url
    )
    async with httpx.AsyncClient() as client:
        channel = PushChannel(settings, client=client)
        await channel.send(outgoing())
        await channel.close()
        assert not client.is_closed
