"""Messaging channels over the API: bad input names its field and saves nothing, secrets
never come back and are stored sealed, updates keep them, one default per kind, test sends
through the real adapters (an SMTP sink subprocess, a loopback Twilio), the adapter pool,
and `clarion channels list|show`."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from sqlalchemy import select
from typer.testing import CliRunner

from clarion.core.clock import SystemClock
from clarion.core.crypto import Vault
from clarion.core.database import Database
from clarion.core.outbound import PUBLIC_ONLY
from clarion.core.settings import Settings
from clarion.messaging import channel_config
from clarion.messaging.channels.base import Outgoing, PermanentFailure
from clarion.messaging.channels.webhook import WebhookChannel
from clarion.messaging.models import MessagingChannel
from clarion.pipeline import messaging_delivery
from clarion.profiles.service import upsert_profile
from clarion.workspaces import service as workspaces
from tests.conftest import Tenant, problem, run_cli
from tests.messaging.conftest import HttpReceiver, Reply, SmtpSink
from tests.messaging.test_bounces import HARD_BOUNCE

PASSWORD = "smtp-password-7f3e9a"
AUTH_TOKEN = "twilio-token-0123456789abcdef"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _pem(key: Any) -> str:
    return str(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
    )


@pytest.fixture(scope="module")
def rsa_pem() -> str:
    return _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def email_body(name: str = "Mail", **settings: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "email",
        "settings": {"host": "smtp.example.com", "from_address": "news@example.com", **settings},
        "secrets": {"password": PASSWORD},
    }


def sms_body(name: str = "Texts", **settings: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "sms",
        "settings": {"account_sid": "AC123", "from_number": "+15550001111", **settings},
        "secrets": {"auth_token": AUTH_TOKEN},
    }


def push_body(pem: str) -> dict[str, Any]:
    account = {
        "type": "service_account",
        "project_id": "shop-app",
        "private_key": pem,
        "client_email": "push@shop-app.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    return {"name": "Push", "kind": "push", "secrets": {"service_account": json.dumps(account)}}


async def create(client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any]) -> Any:
    response = await client.post("/api/v1/channels", json=body, headers=tenant.admin)
    assert response.status_code == 201, response.text
    return response.json()


async def stored(database: Database, tenant: Tenant) -> list[MessagingChannel]:
    async with database.read_session() as session:
        rows = await session.scalars(
            select(MessagingChannel)
            .where(MessagingChannel.workspace_id == tenant.id)
            .order_by(MessagingChannel.id)
        )
        return list(rows.all())


def vault(settings: Settings) -> Vault:
    return Vault(settings.resolved_secret_key())


async def test_bad_channels_are_refused_naming_the_field_and_nothing_is_saved(
    client: httpx.AsyncClient, tenant: Tenant, database: Database, rsa_pem: str
) -> None:
    ec_pem = _pem(ec.generate_private_key(ec.SECP256R1()))
    account = json.loads(push_body(rsa_pem)["secrets"]["service_account"])
    cases: list[tuple[dict[str, Any], str]] = [
        ({**email_body(), "kind": "fax"}, "kind"),
        ({**email_body(), "name": ""}, "name"),
        ({**email_body(), "name": "   "}, "name"),
        ({**email_body(), "name": "\t\n"}, "name"),
        ({**email_body(), "rate_per_second": 0}, "rate_per_second"),
        ({**email_body(), "settings": {"from_address": "a@example.com"}}, "settings.host"),
        (email_body(from_address="not an address"), "settings.from_address"),
        (email_body(hots="typo.example.com"), "settings.hots"),
        (email_body(port=70000), "settings.port"),
        (email_body(port=True), "settings.port"),
        (email_body(timeout="30"), "settings.timeout"),
        ({**email_body(), "rate_per_second": True}, "rate_per_second"),
        (email_body(security="ssl"), "settings.security"),
        (email_body(from_name="Shop\r\nBcc: all@example.com"), "settings.from_name"),
        (email_body(dkim_domain="example.com", dkim_selector="s1"), "secrets.dkim_private_key"),
        (
            {**email_body(), "secrets": {"dkim_private_key": "-----BEGIN nonsense"}},
            "secrets.dkim_private_key",
        ),
        ({**email_body(), "secrets": {"dkim_private_key": ec_pem}}, "secrets.dkim_private_key"),
        (email_body(username="clarion") | {"secrets": {}}, "secrets.password"),
        (sms_body(base_url="ftp://api.twilio.com"), "settings.base_url"),
        (sms_body(base_url="api.twilio.com"), "settings.base_url"),
        (sms_body(status_callback_url="javascript:alert(1)"), "settings.status_callback_url"),
        (sms_body(messaging_service_sid="MG1"), "settings.from_number"),
        ({**sms_body(), "secrets": {}}, "secrets.auth_token"),
        (push_body(rsa_pem) | {"settings": {"base_url": "file:///etc"}}, "settings.base_url"),
        (push_body(rsa_pem) | {"secrets": {}}, "secrets.service_account"),
        (
            push_body(rsa_pem)
            | {"secrets": {"service_account": {**account, "token_uri": "gopher://x"}}},
            "secrets.service_account",
        ),
        (
            push_body(rsa_pem) | {"secrets": {"service_account": {**account, "client_email": ""}}},
            "secrets.service_account",
        ),
        (
            push_body(rsa_pem) | {"secrets": {"service_account": "{not json"}},
            "secrets.service_account",
        ),
        ({"name": "W", "kind": "webhook", "secrets": {"secret": "plain"}}, "secrets.secret"),
        (
            {"name": "W", "kind": "webhook", "settings": {"headers": {"Webhook-Signature": "x"}}},
            "settings.headers",
        ),
        ({"name": "I", "kind": "inbox", "secrets": {"password": "x"}}, "secrets.password"),
        ({"name": "I", "kind": "inbox", "settings": {"host": "x"}}, "settings.host"),
    ]
    for body, field in cases:
        response = await client.post("/api/v1/channels", json=body, headers=tenant.admin)
        problem(response, 422, field)
    listed = await client.get("/api/v1/channels", headers=tenant.admin)
    assert listed.json()["items"] == []
    assert await stored(database, tenant) == []


async def test_bad_changes_are_refused_and_change_nothing(
    client: httpx.AsyncClient, tenant: Tenant, database: Database
) -> None:
    sms = await create(client, tenant, sms_body())
    await create(client, tenant, email_body())
    url = f"/api/v1/channels/{sms['id']}"
    [before, _] = await stored(database, tenant)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"settings": {"base_url": "ftp://api.twilio.com"}}, 422, "settings.base_url"),
        ({"settings": {"from_number": None}}, 422, "settings.from_number"),
        ({"secrets": {"auth_token": None}}, 422, "secrets.auth_token"),
        ({"kind": "email"}, 422, "kind"),
        ({"rate_per_second": -1}, 422, "rate_per_second"),
        ({"name": "Mail"}, 409, "name"),
        ({"name": "   "}, 422, "name"),
    ]
    for body, status, field in cases:
        problem(await client.patch(url, json=body, headers=tenant.admin), status, field)
    [after, _] = await stored(database, tenant)
    assert (after.name, after.settings, after.credentials, after.updated_at) == (
        before.name,
        before.settings,
        before.credentials,
        before.updated_at,
    )
    for method in ("GET", "PATCH", "DELETE"):
        missing = await client.request(
            method, "/api/v1/channels/999999", json={} if method == "PATCH" else None,
            headers=tenant.admin,
        )  # fmt: skip
        problem(missing, 404)
    problem(await client.get("/api/v1/channels/0", headers=tenant.admin), 422, "channel_id")
    body = {"to": "+15550002222"}
    problem(await client.post("/api/v1/channels/999999/test", json=body, headers=tenant.admin), 404)
    problem(await client.get("/api/v1/channels?cursor=nope", headers=tenant.admin), 400, "cursor")
    problem(await client.post("/api/v1/channels", json=sms_body(), headers=tenant.reader), 403)


async def test_secrets_are_never_returned_and_are_stored_sealed(
    client: httpx.AsyncClient, tenant: Tenant, database: Database, settings: Settings, rsa_pem: str
) -> None:
    dkim = email_body(dkim_domain="example.com", dkim_selector="s1")
    dkim["secrets"]["dkim_private_key"] = rsa_pem
    webhook = {"name": "Hooks", "kind": "webhook", "secrets": {"secret": WEBHOOK_SECRET}}
    answers = [
        await client.post("/api/v1/channels", json=body, headers=tenant.admin)
        for body in (dkim, sms_body(), push_body(rsa_pem), webhook)
    ]
    ids = [answer.json()["id"] for answer in answers]
    answers.append(await client.get("/api/v1/channels", headers=tenant.admin))
    answers += [await client.get(f"/api/v1/channels/{i}", headers=tenant.admin) for i in ids]
    patched = await client.patch(
        f"/api/v1/channels/{ids[0]}", json={"settings": {"port": 2525}}, headers=tenant.admin
    )
    answers.append(patched)
    key_lines = [line for line in rsa_pem.splitlines() if "-----" not in line]
    secrets = [PASSWORD, AUTH_TOKEN, WEBHOOK_SECRET, WEBHOOK_SECRET[6:], *key_lines]
    for answer in answers:
        assert answer.is_success, answer.text
        for secret in secrets:
            assert secret not in answer.text

    email, sms, push, hook = (await client.get("/api/v1/channels", headers=tenant.admin)).json()[
        "items"
    ]
    assert email["credentials_set"] and email["credentials_readable"]
    assert email["secrets"]["password"] == {"set": True, "fingerprint": None}
    assert email["secrets"]["dkim_private_key"]["fingerprint"].startswith("sha256:")
    assert sms["secrets"] == {"auth_token": {"set": True, "fingerprint": "…" + AUTH_TOKEN[-4:]}}
    assert (
        "push@shop-app.iam.gserviceaccount.com" in push["secrets"]["service_account"]["fingerprint"]
    )
    assert hook["secrets"]["secret"]["fingerprint"] == "…" + WEBHOOK_SECRET[-4:]
    assert email["settings"]["port"] == 2525 and "password" not in email["settings"]

    rows = await stored(database, tenant)
    opened = [vault(settings).open(row.credentials or "") for row in rows]
    assert opened[0] == {"password": PASSWORD, "dkim_private_key": rsa_pem}
    assert opened[1] == {"auth_token": AUTH_TOKEN}
    assert opened[3] == {"secret": WEBHOOK_SECRET}
    for row in rows:
        column = (row.credentials or "") + json.dumps(row.settings)
        for secret in secrets:
            assert secret not in column


async def test_updates_keep_secrets_left_out(
    client: httpx.AsyncClient, tenant: Tenant, database: Database, settings: Settings
) -> None:
    channel = await create(client, tenant, email_body(username="clarion"))
    url = f"/api/v1/channels/{channel['id']}"
    changed = await client.patch(
        url, json={"name": "Mail 2", "settings": {"port": 465, "security": "tls"}},
        headers=tenant.admin,
    )  # fmt: skip
    assert changed.status_code == 200, changed.text
    assert (changed.json()["name"], changed.json()["settings"]["port"]) == ("Mail 2", 465)
    assert changed.json()["settings"]["username"] == "clarion"  # merged, not replaced
    [row] = await stored(database, tenant)
    assert vault(settings).open(row.credentials or "") == {"password": PASSWORD}
    adapter = channel_config.build_channel(row, vault(settings), PUBLIC_ONLY)
    assert adapter.settings.password == PASSWORD  # type: ignore[attr-defined]

    rotated = await client.patch(
        url, json={"secrets": {"password": "new-one"}}, headers=tenant.admin
    )
    assert rotated.status_code == 200
    [row] = await stored(database, tenant)
    assert vault(settings).open(row.credentials or "") == {"password": "new-one"}

    unset = {"settings": {"username": None}, "secrets": {"password": None}}
    assert (await client.patch(url, json=unset, headers=tenant.admin)).status_code == 200
    [row] = await stored(database, tenant)
    assert row.credentials is None and row.settings["username"] is None
    read = (await client.get(url, headers=tenant.admin)).json()
    assert (read["credentials_set"], read["secrets"]) == (False, {})

    limited = await client.patch(url, json={"rate_per_second": 12.5}, headers=tenant.admin)
    assert limited.json()["rate_per_second"] == 12.5
    kept = await client.patch(url, json={"name": "Mail 3"}, headers=tenant.admin)
    assert kept.json()["rate_per_second"] == 12.5
    lifted = await client.patch(url, json={"rate_per_second": None}, headers=tenant.admin)
    assert lifted.json()["rate_per_second"] is None


async def test_a_generated_webhook_secret_is_shown_once_and_never_again(
    client: httpx.AsyncClient, tenant: Tenant, database: Database, settings: Settings
) -> None:
    channel = await create(client, tenant, {"name": "Hooks", "kind": "webhook"})
    [row] = await stored(database, tenant)
    secret = vault(settings).open(row.credentials or "")["secret"]
    assert secret.startswith("whsec_") and len(secret) > 30
    # The answer that made it shows it, as an API key's does: receivers need it to verify.
    assert channel["generated_secret"] == secret
    assert channel["secrets"]["secret"]["fingerprint"] == "…" + secret[-4:]
    adapter = channel_config.build_channel(row, vault(settings), PUBLIC_ONLY)
    assert isinstance(adapter, WebhookChannel) and adapter.settings.secret == secret
    await adapter.close()
    # Never again: reads, lists and changes that keep it show its fingerprint only.
    url = f"/api/v1/channels/{channel['id']}"
    later = [
        await client.get(url, headers=tenant.admin),
        await client.get("/api/v1/channels", headers=tenant.admin),
        await client.patch(url, json={"settings": {"timeout": 3}}, headers=tenant.admin),
        await client.patch(url, json={"name": "Hooks 2"}, headers=tenant.admin),
    ]
    for answer in later:
        assert answer.is_success, answer.text
        assert secret not in answer.text and secret[6:] not in answer.text
    for answer in (later[0].json(), later[1].json()["items"][0], later[2].json()):
        assert "generated_secret" not in answer  # reads and other changes never carry it
    # A change that generates nothing answers exactly what a read shows.
    assert (await client.get(url, headers=tenant.admin)).json() == later[3].json()
    # A secret given is the caller's own: never echoed.
    given = await create(
        client, tenant, {"name": "Given", "kind": "webhook", "secrets": {"secret": WEBHOOK_SECRET}}
    )
    assert "generated_secret" not in given and WEBHOOK_SECRET[6:] not in json.dumps(given)
    # Removing the secret generates a new one, shown once by that change.
    rotated = await client.patch(url, json={"secrets": {"secret": None}}, headers=tenant.admin)
    assert rotated.status_code == 200, rotated.text
    [row, _] = await stored(database, tenant)
    fresh = vault(settings).open(row.credentials or "")["secret"]
    assert fresh != secret and rotated.json()["generated_secret"] == fresh
    again = await client.get(url, headers=tenant.admin)
    assert fresh not in again.text


async def test_one_default_channel_per_kind(
    client: httpx.AsyncClient, tenant: Tenant, database: Database
) -> None:
    first = await create(client, tenant, email_body("First"))
    second = await create(client, tenant, email_body("Second"))
    texts = await create(client, tenant, sms_body())
    assert (first["is_default"], second["is_default"], texts["is_default"]) == (True, False, True)

    async def defaults() -> dict[str, bool]:
        return {row.name: row.is_default for row in await stored(database, tenant)}

    url = f"/api/v1/channels/{second['id']}"
    assert (await client.patch(url, json={"is_default": True}, headers=tenant.admin)).is_success
    assert await defaults() == {"First": False, "Second": True, "Texts": True}
    third = await create(client, tenant, {**email_body("Third"), "is_default": True})
    assert third["is_default"]
    assert await defaults() == {"First": False, "Second": False, "Third": True, "Texts": True}
    async with database.read_session() as session:
        found = await channel_config.default_channel(session, workspace_id=tenant.id, kind="email")
        assert found is not None and found.name == "Third"
        none = await channel_config.default_channel(session, workspace_id=tenant.id, kind="push")
        assert none is None
    assert (await client.patch(url, json={"is_default": False}, headers=tenant.admin)).is_success
    assert await defaults() == {"First": False, "Second": False, "Third": True, "Texts": True}
    listed = await client.get("/api/v1/channels", params={"kind": "sms"}, headers=tenant.admin)
    assert [c["name"] for c in listed.json()["items"]] == ["Texts"]
    # The default goes once another channel of its kind is the default (see
    # `test_deleting_a_channel.py`), or when it is the only one of its kind.
    url = f"/api/v1/channels/{first['id']}"
    assert (await client.patch(url, json={"is_default": True}, headers=tenant.admin)).is_success
    deleted = await client.delete(f"/api/v1/channels/{third['id']}", headers=tenant.admin)
    assert deleted.status_code == 204
    assert await defaults() == {"First": True, "Second": False, "Texts": True}
    deleted = await client.delete(f"/api/v1/channels/{texts['id']}", headers=tenant.admin)
    assert deleted.status_code == 204
    assert await defaults() == {"First": True, "Second": False}


async def test_paging(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for name in ("A", "B", "C"):
        await create(client, tenant, email_body(name))
    page = await client.get("/api/v1/channels", params={"limit": 2}, headers=tenant.admin)
    assert [c["name"] for c in page.json()["items"]] == ["A", "B"]
    cursor = page.json()["next_cursor"]
    rest = await client.get(
        "/api/v1/channels", params={"limit": 2, "cursor": cursor}, headers=tenant.admin
    )
    assert ([c["name"] for c in rest.json()["items"]], rest.json()["next_cursor"]) == (["C"], None)


async def test_a_test_send_goes_through_the_real_smtp_server(
    client: httpx.AsyncClient, tenant: Tenant, smtp_sink_with_auth: SmtpSink
) -> None:
    sink = smtp_sink_with_auth
    body = email_body(
        host="127.0.0.1", port=sink.port, security="none", helo_hostname="localhost",
        timeout=5, from_name="The Shop",
    )  # fmt: skip
    body["secrets"] = {}
    channel = await create(client, tenant, body)
    url = f"/api/v1/channels/{channel['id']}/test"
    refused = await client.post(url, json={"to": "ann@example.org"}, headers=tenant.admin)
    assert "SMTP 530" in problem(refused, 502)["detail"]  # the sink wants AUTH
    assert sink.messages() == []

    login = {"settings": {"username": "clarion"}, "secrets": {"password": "s3cret"}}
    changed = await client.patch(
        f"/api/v1/channels/{channel['id']}", json=login, headers=tenant.admin
    )
    assert changed.status_code == 200, changed.text
    sent = await client.post(
        url, json={"to": "ann@example.org", "text": "Hello from the test"}, headers=tenant.admin
    )
    assert sent.status_code == 200, sent.text
    [mail] = sink.messages()
    assert mail.rcpt_tos == ["ann@example.org"] and mail.auth == "clarion"
    assert mail.mail_from == "news@example.com"
    assert mail.message["Subject"] == "Clarion test message"
    assert mail.message["From"] == "The Shop <news@example.com>"
    assert "Hello from the test" in mail.message.get_content()
    assert sent.json() == {"channel_id": channel["id"], "provider_id": mail.message["Message-ID"]}

    bounced = await client.post(url, json={"to": "bounce@example.org"}, headers=tenant.admin)
    assert "550 to RCPT: 5.1.1 No such user here" in problem(bounced, 502)["detail"]
    problem(await client.post(url, json={"to": "not an address"}, headers=tenant.admin), 422, "to")
    sink.stop()
    gone = await client.post(url, json={"to": "ann@example.org"}, headers=tenant.admin)
    assert "cannot connect" in problem(gone, 502)["detail"]
    assert len(sink.messages()) == 1


async def test_a_test_send_reports_the_providers_reason(
    client: httpx.AsyncClient, tenant: Tenant, http_receiver: HttpReceiver
) -> None:
    channel = await create(client, tenant, sms_body(base_url=http_receiver.url))
    path = "/2010-04-01/Accounts/AC123/Messages.json"
    refusal = {"code": 21211, "message": "The 'To' number +15550002222 is not valid."}
    http_receiver.reply("POST", path, Reply(400, json=refusal), Reply(201, json={"sid": "SM1"}))
    url = f"/api/v1/channels/{channel['id']}/test"
    refused = await client.post(url, json={"to": "+15550002222"}, headers=tenant.admin)
    assert "is not valid" in problem(refused, 502)["detail"]
    sent = await client.post(url, json={"to": "+15550002222"}, headers=tenant.admin)
    assert sent.json()["provider_id"] == "SM1"
    [first, _] = http_receiver.requests
    assert first.form()["Body"] == "This is a test message from Clarion."
    assert first.headers["authorization"].startswith("Basic ")
    problem(await client.post(url, json={"to": "0612345678"}, headers=tenant.admin), 422, "to")


async def test_a_test_send_checks_its_address_as_a_single_send_does(
    client: httpx.AsyncClient, tenant: Tenant, http_receiver: HttpReceiver, rsa_pem: str
) -> None:
    """The addresses a single send refuses (`addresses.sendable_address`), refused with its
    reason under `to`; a good one sent as a single send would send it (a phone as + and
    its digits). The older check let a quoted or display-named email, a formatted phone
    (refused), a token with spaces and a URL with a header in it through."""
    texts = await create(client, tenant, sms_body(base_url=http_receiver.url))
    kinds = {
        "email": await create(client, tenant, email_body()),
        "sms": texts,
        "push": await create(client, tenant, push_body(rsa_pem)),
        "webhook": await create(client, tenant, {"name": "Hooks", "kind": "webhook"}),
    }
    bad: list[tuple[str, str, str]] = [
        ("email", '"bob smith"@example.org', "not a valid email address"),
        ("email", "Bob <bob@example.org>", "not an email address (one address, nothing else)"),
        ("email", "josé@example.org", "has non-ASCII characters"),
        ("sms", "0612345678", "not a phone number in international form"),
        ("sms", "+1 555 CALL NOW", "not a phone number (+ and 6 to 20 digits)"),
        ("push", "a token with spaces", "not a device token (printable ASCII, no spaces)"),
        ("webhook", "https://hooks.example.com/\r\nX-Injected: 1", "not a URL"),
        ("webhook", "ftp://hooks.example.com/x", "not an http:// or https:// URL"),
    ]
    for kind, to, reason in bad:
        url = f"/api/v1/channels/{kinds[kind]['id']}/test"
        body = problem(await client.post(url, json={"to": to}, headers=tenant.admin), 422, "to")
        assert body["errors"][0]["message"].startswith(reason), (to, body)
        assert body["detail"].startswith(f"Not an address for a {kind} channel: {reason}")
    assert http_receiver.requests == []

    path = "/2010-04-01/Accounts/AC123/Messages.json"
    http_receiver.reply("POST", path, Reply(201, json={"sid": "SM1"}))
    url = f"/api/v1/channels/{texts['id']}/test"
    sent = await client.post(url, json={"to": " +1 (555) 000-2222 "}, headers=tenant.admin)
    assert sent.status_code == 200, sent.text
    [request] = http_receiver.requests
    assert request.form()["To"] == "+15550002222"
    # An in-app channel's test goes to a profile's inbox: `to` names one (see below).
    inbox = await create(client, tenant, {"name": "App", "kind": "inbox"})
    url = f"/api/v1/channels/{inbox['id']}/test"
    problem(await client.post(url, json={"to": "anyone"}, headers=tenant.admin), 422, "to")


async def test_an_inbox_test_send_names_a_profile_of_the_workspace(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, database: Database
) -> None:
    """By its id or its user id, as a single send names its recipient; anything else (an
    unknown id, another workspace's profile) is refused naming `to`. It took any `to`."""

    async def person(owner: Tenant, user_id: str) -> str:
        async with database.write_session() as session:
            made = await upsert_profile(
                session, workspace_id=owner.id, user_id=user_id, email=None, phone=None,
                traits={}, now=SystemClock().now(),
            )  # fmt: skip
            await session.commit()
            return str(made.id)

    ann = await person(tenant, "ann")
    theirs = await person(other_tenant, "bob")
    inbox = await create(client, tenant, {"name": "App", "kind": "inbox"})
    url = f"/api/v1/channels/{inbox['id']}/test"
    for to in (ann, "ann"):
        sent = await client.post(url, json={"to": to}, headers=tenant.admin)
        assert sent.status_code == 200, sent.text
        assert sent.json()["channel_id"] == inbox["id"]
        assert uuid.UUID(sent.json()["provider_id"])  # the message in the inbox
    for to in ("anyone", "bob", theirs, str(uuid.uuid4()), f" {ann}"):
        refused = await client.post(url, json={"to": to}, headers=tenant.admin)
        body = problem(refused, 422, "to")
        assert body["errors"] == [
            {"field": "to", "message": "no profile of this workspace has this id or user id"}
        ], to


async def test_a_bounce_mail_for_a_channel_that_is_not_email_is_a_422_naming_it(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """A bounce handed to another kind's channel is a well-formed request naming the wrong
    channel: 422 naming `channel_id`, as messaging's other refusals (it was a 400). An
    empty body stays a 400 naming `body` (one over 1 MB is a 413); a mail that is no report
    moves nothing."""
    for body in (sms_body(), {"name": "App", "kind": "inbox"}):
        channel = await create(client, tenant, body)
        url = f"/api/v1/channels/{channel['id']}/bounces"
        refused = await client.post(url, content=b"a bounce", headers=tenant.admin)
        problem_body = problem(refused, 422, "channel_id")
        assert problem_body["errors"] == [
            {
                "field": "channel_id",
                "message": f"channel {channel['id']} sends {body['kind']} messages, not email",
            }
        ]
    mail = await create(client, tenant, email_body())
    url = f"/api/v1/channels/{mail['id']}/bounces"
    problem(await client.post(url, content=b"", headers=tenant.admin), 400, "body")
    unread = await client.post(url, content=b"\xff\xfe not a mail", headers=tenant.admin)
    assert (unread.status_code, unread.json()) == (200, {"status": None})
    nul_id = HARD_BOUNCE.replace(b"<msg-0001@", b"<msg-\x00@")  # a 500 on PostgreSQL before
    unknown = await client.post(url, content=nul_id, headers=tenant.admin)
    assert (unknown.status_code, unknown.json()) == (200, {"status": None})
    whole = await client.post(url, content=b"x" * 1_000_000, headers=tenant.admin)
    assert whole.status_code == 200, whole.text  # at the limit

    async def chunks() -> AsyncIterator[bytes]:  # streamed: read no further than the limit
        for _ in range(3):
            yield b"x" * 400_001

    problem(await client.post(url, content=chunks(), headers=tenant.admin), 413, "body")


async def test_the_openapi_document_says_what_an_inbox_test_send_is_to(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/api/openapi.json")).json()
    described = " ".join(document["components"]["schemas"]["ChannelTest"]["description"].split())
    assert "for an inbox channel, a profile of the workspace by its profile id or its user id" in (
        described
    )


async def test_the_pool_reuses_an_adapter_until_its_channel_changes(
    database: Database, tenant: Tenant, settings: Settings
) -> None:
    clock = SystemClock()
    async with database.write_session() as session:
        row = await channel_config.create_channel(
            session, workspace_id=tenant.id, vault=vault(settings), name="Hooks", kind="webhook",
            settings={}, secrets={}, rate_per_second=None, is_default=None, now=clock.now(),
        )  # fmt: skip
        await session.commit()
    pool = channel_config.ChannelPool(vault(settings), PUBLIC_ONLY)
    first = await pool.get(row)
    assert await pool.get(row) is first
    assert isinstance(first, WebhookChannel)
    async with database.write_session() as session:
        row = await channel_config.update_channel(
            session, workspace_id=tenant.id, channel_id=row.id, vault=vault(settings),
            now=clock.now(), settings={"timeout": 3},
        )  # fmt: skip
        await session.commit()
    second = await pool.get(row)
    assert second is not first and isinstance(second, WebhookChannel)
    assert second.settings.timeout == 3 and second.settings.secret == first.settings.secret
    assert first._client.is_closed and not second._client.is_closed
    together = await asyncio.gather(*(pool.get(row) for _ in range(5)))
    assert all(adapter is second for adapter in together)
    await pool.close()
    assert second._client.is_closed


async def _create_in(url: str, body: dict[str, Any]) -> int:
    database = Database(url)
    try:
        async with database.write_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(
                session, slug=workspaces.DEFAULT_WORKSPACE_SLUG
            )
            row = await channel_config.create_channel(
                session, workspace_id=found.id, vault=Vault("cli-secret-key-for-tests"),
                rate_per_second=None, is_default=None, now=SystemClock().now(), **body,
            )  # fmt: skip
            await session.commit()
            return row.id
    finally:
        await database.dispose()


def test_cli_lists_and_shows_channels_without_secrets(
    clarion: CliRunner, fresh_database: Database
) -> None:
    clarion.env["CLARION_SECRET_KEY"] = "cli-secret-key-for-tests"
    run_cli(clarion, "migrate")
    body = sms_body()
    channel_id = asyncio.run(_create_in(fresh_database.url, body))
    listed = run_cli(clarion, "channels", "list").output
    assert f"{channel_id}\tsms\tTexts\tdefault" in listed
    shown = run_cli(clarion, "channels", "show", str(channel_id)).output
    assert '"account_sid": "AC123"' in shown and "…" + AUTH_TOKEN[-4:] in shown
    assert AUTH_TOKEN not in listed + shown
    assert "No channel 999" in run_cli(clarion, "channels", "show", "999", code=1).output


async def test_outbound_calls_follow_the_deployments_policy(
    app: FastAPI,
    client: httpx.AsyncClient,
    tenant: Tenant,
    database: Database,
    settings: Settings,
    http_receiver: HttpReceiver,
) -> None:
    channel = await create(client, tenant, {"name": "Hooks", "kind": "webhook"})
    http_receiver.reply("POST", "/hooks", Reply(200), Reply(200))
    url = f"/api/v1/channels/{channel['id']}/test"
    body = {"to": f"{http_receiver.url}/hooks"}
    strict = settings.model_copy(update={"outbound_allowed_networks": ""})  # as deployed

    app.state.settings = strict
    try:
        refused = await client.post(url, json=body, headers=tenant.admin)
    finally:
        app.state.settings = settings  # the suite's, which allow loopback
    assert "127.0.0.1: not a public address" in problem(refused, 502)["detail"]
    assert (await client.post(url, json=body, headers=tenant.admin)).status_code == 200
    assert len(http_receiver.requests) == 1

    [row] = await stored(database, tenant)
    outgoing = Outgoing(
        message_id="m-1", idempotency_key="m-1", to=body["to"], subject=None, html=None,
        text=None, data={"hello": "world"},
    )  # fmt: skip
    for deployed, allowed in ((strict, False), (settings, True)):
        delivery = messaging_delivery(database, deployed, SystemClock())
        adapter = await delivery.composer.channels.get(row)
        try:
            if allowed:
                await adapter.send(outgoing)
            else:
                with pytest.raises(PermanentFailure, match="not a public address"):
                    await adapter.send(outgoing)
        finally:
            await delivery.close()
    assert len(http_receiver.requests) == 2
