"""The in-app inbox: credentials and identity verification, delivery, listing and paging,
read / unread / archive / read-all, CORS on `/inbox/v1` only, and live delivery over
Server-Sent Events to a real streaming client (ending on disconnect and server shutdown)."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from clarion.app import create_app
from clarion.core.database import Database
from clarion.core.errors import NotFound, Unauthorized
from clarion.core.settings import SecretKeys, Settings
from clarion.messaging import inbox_live
from clarion.messaging.inbox import (
    CredentialVersions,
    InboxUser,
    authenticate,
    deliver_to_inbox,
    inbox_credentials,
    rotate_inbox_credentials,
    sign_user_id,
)
from clarion.messaging.inbox_live import BROKER, InboxBroker, event_stream
from clarion.messaging.models import Message, MessageEvent
from tests.conftest import Tenant, problem
from tests.messaging.test_engagement import events, make_message, message_row, person
from tests.support import LiveServer, free_port


async def inbox_headers(
    client: httpx.AsyncClient, tenant: Tenant, user_id: str, *, key_of: Tenant | None = None
) -> dict[str, str]:
    """The headers an app sends for `user_id`, hashed under `tenant`'s inbox secret, with
    the inbox key of `key_of` (default: the same workspace)."""
    secret = (await credentials(client, tenant))["inbox_secret"]
    key = (await credentials(client, key_of or tenant))["inbox_key"]
    return {
        "X-Clarion-Inbox-Key": key,
        "X-Clarion-User-Id": user_id,
        "X-Clarion-User-Hash": sign_user_id(secret, user_id),
    }


async def credentials(client: httpx.AsyncClient, tenant: Tenant) -> dict[str, str]:
    response = await client.get("/api/v1/inbox/credentials", headers=tenant.admin)
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    return body


async def deliver(
    database: Database,
    tenant: Tenant,
    profile_id: uuid.UUID,
    title: str,
    *,
    at: datetime | None = None,
    commit: bool = True,
) -> uuid.UUID:
    """A queued inbox message for the profile, delivered by `deliver_to_inbox` at `at`."""
    message_id = await make_message(
        database, tenant, profile_id, channel="inbox", status="queued", links=[]
    )
    async with database.write_session() as session:
        message = await session.get(Message, message_id)
        assert message is not None
        content = {
            "title": title,
            "body": f"<p>{title}</p>",
            "action_url": "https://shop.example/x",
            "data": {"k": "v"},
        }
        await deliver_to_inbox(
            session, message=message, content=content, now=at or datetime.now(UTC)
        )
        if commit:
            await session.commit()
        else:
            await session.rollback()
    return message_id


@dataclass
class Inbox:
    """A customer with a profile in a workspace, and their app's view of the inbox."""

    client: httpx.AsyncClient
    database: Database
    tenant: Tenant
    user_id: str
    profile_id: uuid.UUID
    headers: dict[str, str]

    async def get(self, **params: Any) -> dict[str, Any]:
        response = await self.client.get("/inbox/v1/messages", params=params, headers=self.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def titles(self, **params: Any) -> list[str]:
        return [item["title"] for item in (await self.get(**params))["items"]]

    async def post(self, path: str) -> httpx.Response:
        return await self.client.post(f"/inbox/v1/messages/{path}", headers=self.headers)


@pytest.fixture
async def customer(client: httpx.AsyncClient, database: Database, tenant: Tenant) -> Inbox:
    user_id = f"user-{uuid.uuid4().hex[:8]}"
    profile_id = await person(database, tenant, user_id)
    headers = await inbox_headers(client, tenant, user_id)
    return Inbox(client, database, tenant, user_id, profile_id, headers)


async def test_credentials_are_per_workspace_and_for_admins(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    mine, theirs = await credentials(client, tenant), await credentials(client, other_tenant)
    assert mine["inbox_key"].startswith(f"ibx_{tenant.id}_")
    assert len(mine["inbox_secret"]) == 64
    assert mine["inbox_secret"] != theirs["inbox_secret"]
    assert mine == await credentials(client, tenant)  # derived, stable
    problem(await client.get("/api/v1/inbox/credentials", headers=tenant.reader), 403)
    problem(await client.get("/api/v1/inbox/credentials"), 401)


async def test_an_admin_rotates_the_credentials_and_the_old_ones_stop_working(
    customer: Inbox, client: httpx.AsyncClient, other_tenant: Tenant
) -> None:
    await deliver(customer.database, customer.tenant, customer.profile_id, "Hello")
    before = await credentials(client, customer.tenant)
    theirs = await credentials(client, other_tenant)
    assert await customer.titles() == ["Hello"]  # the version is now held by this process

    url = "/api/v1/inbox/credentials/rotate"
    problem(await client.post(url, headers=customer.tenant.reader), 403)
    problem(await client.post(url), 401)
    rotated = await client.post(url, headers=customer.tenant.admin)
    assert rotated.status_code == 200, rotated.text
    after = rotated.json()
    assert after["inbox_key"].startswith(f"ibx_{customer.tenant.id}_")
    assert after["inbox_key"] != before["inbox_key"]
    assert after["inbox_secret"] != before["inbox_secret"]
    assert await credentials(client, customer.tenant) == after
    assert await credentials(client, other_tenant) == theirs  # other workspaces keep theirs

    old = await client.get("/inbox/v1/messages", headers=customer.headers)
    problem(old, 401)
    half = {**customer.headers, "X-Clarion-Inbox-Key": after["inbox_key"]}  # old secret
    problem(await client.get("/inbox/v1/messages", headers=half), 401)
    customer.headers = await inbox_headers(client, customer.tenant, customer.user_id)
    assert await customer.titles() == ["Hello"]


async def test_other_processes_see_a_rotation_within_the_versions_ttl(
    database: Database, tenant: Tenant, settings: Settings
) -> None:
    now = [100.0]
    versions = CredentialVersions(ttl=5.0, monotonic=lambda: now[0])
    assert await versions.get(database, tenant.id) == 0
    async with database.write_session() as session:
        rotated = await rotate_inbox_credentials(
            session, workspace_id=tenant.id, secret_key=settings.resolved_secret_key()
        )
        await session.commit()
    assert rotated == inbox_credentials(
        settings.resolved_secret_key(), workspace_id=tenant.id, version=1
    )
    assert await versions.get(database, tenant.id) == 0  # held for its ttl
    now[0] += 5.1
    assert await versions.get(database, tenant.id) == 1
    async with database.write_session() as session:
        with pytest.raises(NotFound):
            await rotate_inbox_credentials(session, workspace_id=999_999_999, secret_key="k")


async def test_identity_verification(
    customer: Inbox, client: httpx.AsyncClient, other_tenant: Tenant
) -> None:
    await deliver(customer.database, customer.tenant, customer.profile_id, "Hello")
    assert await customer.titles() == ["Hello"]
    by_query = {
        "inbox_key": customer.headers["X-Clarion-Inbox-Key"],
        "user_id": customer.user_id,
        "user_hash": customer.headers["X-Clarion-User-Hash"],
    }
    response = await client.get("/inbox/v1/messages", params=by_query)
    assert [item["title"] for item in response.json()["items"]] == ["Hello"]
    wrong_hash = {**customer.headers, "X-Clarion-User-Hash": "0" * 64}
    someone_else = {**customer.headers, "X-Clarion-User-Id": "another-user"}
    other_key = await inbox_headers(client, customer.tenant, customer.user_id, key_of=other_tenant)
    forged_key = {
        **customer.headers,
        "X-Clarion-Inbox-Key": f"ibx_{customer.tenant.id}_" + "0" * 16,
    }
    missing = {k: v for k, v in customer.headers.items() if k != "X-Clarion-User-Hash"}
    details = set()
    for headers in (wrong_hash, someone_else, other_key, forged_key, missing, {}):
        body = problem(await client.get("/inbox/v1/messages", headers=headers), 401)
        details.add(body["detail"])
    assert (
        len(details) == 2
    )  # "send them" / "not valid": never which part, nor whether the user exists
    # A valid hash of a user id with no profile: an empty inbox, not an error.
    stranger = await inbox_headers(client, customer.tenant, "nobody-yet")
    empty = await client.get("/inbox/v1/messages", headers=stranger)
    assert empty.json() == {"items": [], "next_cursor": None, "unread_count": 0}


async def test_delivery_records_and_emits(customer: Inbox) -> None:
    message_id = await deliver(customer.database, customer.tenant, customer.profile_id, "Hi")
    message = await message_row(customer.database, message_id)
    assert message.status == "delivered" and message.delivered_at is not None
    assert message.content == {
        "title": "Hi",
        "body": "<p>Hi</p>",
        "action_url": "https://shop.example/x",
        "data": {"k": "v"},
    }
    async with customer.database.read_session() as session:
        kinds = (
            await session.scalars(
                select(MessageEvent.kind).where(MessageEvent.message_id == message_id)
            )
        ).all()
    assert kinds == ["delivered"]
    [event] = await events(customer.client, customer.tenant, "In-App Message Delivered")
    assert event["properties"]["message_id"] == str(message_id)
    # Delivered again (a retried job): nothing changes.
    async with customer.database.write_session() as session:
        again = await session.get(Message, message_id)
        assert again is not None
        later = datetime.now(UTC) + timedelta(hours=1)
        await deliver_to_inbox(session, message=again, content={"title": "X"}, now=later)
        await session.commit()
    assert (await message_row(customer.database, message_id)).content == message.content


async def test_a_channel_test_send_lands_in_the_inbox_and_nowhere_else(customer: Inbox) -> None:
    """The app shows it (listed, read like any message), as a transactional message of
    origin `test` with no history and no event."""
    created = await customer.client.post(
        "/api/v1/channels", json={"name": "App", "kind": "inbox"}, headers=customer.tenant.admin
    )
    assert created.status_code == 201, created.text
    sent = await customer.client.post(
        f"/api/v1/channels/{created.json()['id']}/test",
        json={"to": customer.user_id, "subject": "Does it show?", "text": "Line <1>\nLine 2"},
        headers=customer.tenant.admin,
    )
    assert sent.status_code == 200, sent.text
    [item] = (await customer.get())["items"]
    assert item["id"] == sent.json()["provider_id"]
    assert item["title"] == "Does it show?"
    assert item["body"] == "Line &lt;1&gt;<br>Line 2"
    message = await message_row(customer.database, uuid.UUID(item["id"]))
    assert (message.origin, message.category, message.status) == (
        "test", "transactional", "delivered",
    )  # fmt: skip
    assert message.channel_id == created.json()["id"]
    async with customer.database.read_session() as session:
        history = await session.scalars(
            select(MessageEvent.kind).where(MessageEvent.message_id == message.id)
        )
        assert history.all() == []
    assert await events(customer.client, customer.tenant, "In-App Message Delivered") == []
    assert (await customer.post(f"{item['id']}/read")).status_code == 200
    listed = await customer.client.get(
        "/api/v1/messages", params={"origin": "test"}, headers=customer.tenant.admin
    )
    assert listed.status_code == 200, listed.text
    assert [m["id"] for m in listed.json()["items"]] == [item["id"]]


async def test_listing_paging_and_states(customer: Inbox, database: Database) -> None:
    start = datetime.now(UTC) - timedelta(minutes=10)
    ids = {}
    for minute, title in enumerate(["first", "second", "third"]):
        ids[title] = await deliver(
            database,
            customer.tenant,
            customer.profile_id,
            title,
            at=start + timedelta(minutes=minute),
        )
    # Not in this inbox: an email to the same profile, an inbox message to someone else.
    await make_message(database, customer.tenant, customer.profile_id)
    someone = await person(database, customer.tenant, f"other-{uuid.uuid4().hex[:6]}")
    theirs = await deliver(database, customer.tenant, someone, "not yours")

    page = await customer.get(limit=2)
    assert [item["title"] for item in page["items"]] == ["third", "second"]
    assert page["unread_count"] == 3
    assert page["items"][0]["body"] == "<p>third</p>" and page["items"][0]["data"] == {"k": "v"}
    rest = await customer.get(limit=2, cursor=page["next_cursor"])
    assert [item["title"] for item in rest["items"]] == ["first"] and rest["next_cursor"] is None
    problem(
        await customer.client.get(
            "/inbox/v1/messages", params={"cursor": "bad"}, headers=customer.headers
        ),
        400,
        "cursor",
    )

    read = await customer.post(f"{ids['second']}/read")
    assert read.status_code == 200 and read.json()["read_at"] is not None
    assert (await customer.post(f"{ids['second']}/read")).json()["read_at"] == read.json()[
        "read_at"
    ]
    assert (await customer.get())["unread_count"] == 2
    [opened] = await events(customer.client, customer.tenant, "In-App Message Opened")
    assert opened["properties"]["message_id"] == str(ids["second"])
    assert (await message_row(database, ids["second"])).status == "opened"

    unread = await customer.post(f"{ids['second']}/unread")
    assert unread.json()["read_at"] is None
    assert (await customer.get())["unread_count"] == 3

    archived = await customer.post(f"{ids['first']}/archive")
    assert archived.json()["archived_at"] is not None
    assert await customer.titles() == ["third", "second"]
    assert await customer.titles(archived="true") == ["first"]
    assert (await customer.get())["unread_count"] == 2

    all_read = await customer.post("read-all")
    assert all_read.json() == {"updated": 2}
    assert (await customer.get())["unread_count"] == 0
    assert (await message_row(database, ids["first"])).read_at is None  # archived: left alone
    assert len(await events(customer.client, customer.tenant, "In-App Message Opened")) == 1

    for missing in (theirs, uuid.uuid4()):
        for action in ("read", "unread", "archive"):
            problem(await customer.post(f"{missing}/{action}"), 404)
    assert (await message_row(database, theirs)).read_at is None
    problem(await customer.post("not-a-uuid/read"), 422)


async def test_cors_on_the_inbox_only(customer: Inbox, client: httpx.AsyncClient) -> None:
    preflight = {
        "Origin": "https://app.customer.example",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-clarion-user-hash",
    }
    answer = await client.options("/inbox/v1/messages", headers=preflight)
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == "*"
    assert "X-Clarion-User-Hash" in answer.headers["access-control-allow-headers"]
    origin = {"Origin": "https://app.customer.example"}
    ok = await client.get("/inbox/v1/messages", headers={**customer.headers, **origin})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "*"
    refused = await client.get("/inbox/v1/messages", headers=origin)
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "*"
    # Everything else is as it was: no CORS headers, no preflight answers.
    other = await client.get("/api/v1/workspace", headers={**customer.tenant.admin, **origin})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
    assert (await client.options("/api/v1/workspace", headers=preflight)).status_code == 405
    assert "access-control-allow-origin" not in (await client.get("/healthz")).headers


# Live delivery


@asynccontextmanager
async def sse(url: str, headers: dict[str, str]) -> AsyncIterator[AsyncIterator[str]]:
    """A streaming connection to the inbox stream, as its lines, once it is live."""
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(20.0)) as http,
        http.stream("GET", f"{url}/inbox/v1/stream", headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        async with asyncio.timeout(10):
            async for line in lines:
                if line == ": connected":
                    break
        yield lines


async def next_message(lines: AsyncIterator[str]) -> dict[str, Any]:
    """The next `event: message`'s data."""
    async with asyncio.timeout(10):
        event = None
        async for line in lines:
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "message":
                data: dict[str, Any] = json.loads(line.removeprefix("data: "))
                return data
    raise AssertionError("the stream ended")


async def wait_until(condition: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_streaming_client_receives_new_messages(
    customer: Inbox, live_server: LiveServer, database: Database
) -> None:
    someone = await person(database, customer.tenant, f"other-{uuid.uuid4().hex[:6]}")
    async with sse(live_server.url, customer.headers) as lines:
        await deliver(database, customer.tenant, someone, "not yours")
        await deliver(database, customer.tenant, customer.profile_id, "rolled back", commit=False)
        message_id = await deliver(database, customer.tenant, customer.profile_id, "Live!")
        received = await next_message(lines)
        assert received["id"] == str(message_id)
        assert (received["title"], received["body"]) == ("Live!", "<p>Live!</p>")
        assert received["read_at"] is None and received["delivered_at"]
        second = await deliver(database, customer.tenant, customer.profile_id, "Again")
        assert (await next_message(lines))["id"] == str(second)
    # The client went away: the server-side stream ends and lets go of its subscription.
    await wait_until(lambda: BROKER.stream_count() == 0)


async def test_the_stream_needs_credentials(customer: Inbox, live_server: LiveServer) -> None:
    async with httpx.AsyncClient() as http:
        wrong = {**customer.headers, "X-Clarion-User-Hash": "f" * 64}
        response = await http.get(f"{live_server.url}/inbox/v1/stream", headers=wrong)
    problem(response, 401)


async def test_heartbeats_while_quiet() -> None:
    broker = InboxBroker(stopping=lambda: False)

    async def resolve() -> list[uuid.UUID]:
        return []

    async def load(message_id: uuid.UUID) -> str | None:
        return None

    stream = event_stream(
        broker=broker, workspace_id=1, resolve=resolve, load=load, dsn=None, heartbeat=0.05
    )
    chunks = [await anext(stream) for _ in range(3)]
    assert chunks[0].startswith(b"retry: ") and chunks[1:] == [b": heartbeat\n\n"] * 2
    assert broker.stream_count() == 1
    await stream.aclose()
    assert broker.stream_count() == 0


async def test_a_stream_ends_at_a_heartbeat_once_its_credentials_were_rotated() -> None:
    broker = InboxBroker(stopping=lambda: False)
    rotated = False

    async def resolve() -> list[uuid.UUID]:
        return []

    async def load(message_id: uuid.UUID) -> str | None:
        return None

    async def still_allowed() -> bool:
        return not rotated

    stream = event_stream(
        broker=broker,
        workspace_id=1,
        resolve=resolve,
        load=load,
        dsn=None,
        heartbeat=0.05,
        still_allowed=still_allowed,
    )
    assert (await anext(stream)).startswith(b"retry: ")
    assert await anext(stream) == b": heartbeat\n\n"
    rotated = True
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert broker.stream_count() == 0


def test_a_proven_customer_carries_the_credentials_version(settings: Settings) -> None:
    keys = settings.secret_keys()
    second = inbox_credentials(keys.current, workspace_id=7, version=2)
    user = authenticate(
        keys,
        inbox_key=second.inbox_key,
        user_id="ann",
        user_hash=sign_user_id(second.inbox_secret, "ann"),
        version=2,
    )
    assert (user.workspace_id, user.user_id, user.version) == (7, "ann", 2)
    with pytest.raises(Unauthorized):  # the same pair checked against another version
        authenticate(
            keys,
            inbox_key=second.inbox_key,
            user_id="ann",
            user_hash=sign_user_id(second.inbox_secret, "ann"),
            version=1,
        )


async def test_streams_end_when_the_server_shuts_down(
    settings: Settings, customer: Inbox, backend: str
) -> None:
    # As `clarion serve` runs it: uvicorn.run installs the server's exit handler for SIGTERM.
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set from the main thread")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, run_worker=False), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    await wait_until(lambda: server.started)
    previous = signal.signal(signal.SIGTERM, server.handle_exit)
    try:
        async with sse(f"http://127.0.0.1:{port}", customer.headers) as lines:
            server.handle_exit(signal.SIGTERM, None)
            async with asyncio.timeout(10):
                rest = [line async for line in lines]  # the server ends the response
        assert all(not line.startswith("event:") for line in rest)
        await asyncio.to_thread(thread.join, 10)
        assert not thread.is_alive()
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.should_exit = True
    assert inbox_live.server_stopping() is False


def test_while_the_secret_key_is_rotated_pairs_of_the_previous_keys_still_prove() -> None:
    old, new = "the-old-secret-key-0123456789", "the-new-secret-key-0123456789"
    before = inbox_credentials(old, workspace_id=7, version=0)

    def prove(keys: SecretKeys) -> InboxUser:
        return authenticate(
            keys,
            inbox_key=before.inbox_key,
            user_id="ann",
            user_hash=sign_user_id(before.inbox_secret, "ann"),
            version=0,
        )

    user = prove(SecretKeys(new, ("another-previous-key-0123", old)))
    assert (user.workspace_id, user.user_id) == (7, "ann")
    assert inbox_credentials(new, workspace_id=7, version=0) != before
    with pytest.raises(Unauthorized):  # the old key dropped: its pairs prove nothing
        prove(SecretKeys(new))
