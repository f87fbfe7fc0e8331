"""Open pixel, tracked clicks and "view in browser": always a GIF, people told from machines,
the first open / click counted once (even concurrently), events in the event log with the
message's properties, and no open redirect."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from clarion.core.database import Database
from clarion.messaging import engagement
from clarion.messaging.engagement import Interaction, masked_ip
from clarion.messaging.models import Message, MessageEvent
from clarion.messaging.tracking import PIXEL_HEADERS, TRANSPARENT_GIF, LinkSigner
from clarion.profiles.service import upsert_profile
from tests.conftest import Tenant

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Safari/537.36"
)
LINKS = ["https://shop.example/sale?utm=1", "https://shop.example/account"]


async def person(database: Database, tenant: Tenant, user_id: str) -> uuid.UUID:
    """A new profile with this user id."""
    async with database.write_session() as session:
        profile = await upsert_profile(
            session, workspace_id=tenant.id, user_id=user_id, traits={}, now=datetime.now(UTC)
        )
        await session.commit()
        return profile.id


async def make_message(
    database: Database,
    tenant: Tenant,
    profile_id: uuid.UUID,
    *,
    channel: str = "email",
    status: str = "sent",
    links: Sequence[str] = LINKS,
    sent_ago: timedelta = timedelta(hours=1),
    content: dict[str, Any] | None = None,
) -> uuid.UUID:
    """A message as delivery leaves it once sent (`sent_ago`), with these tracked links."""
    now = datetime.now(UTC)
    message_id = uuid.uuid4()
    async with database.write_session() as session:
        session.add(
            Message(
                id=message_id,
                workspace_id=tenant.id,
                profile_id=profile_id,
                channel=channel,
                idempotency_key=f"test:{message_id}",
                origin="campaign",
                origin_id="spring-sale",
                status=status,
                links=list(links),
                content=content,
                send_after=now - sent_ago,
                created_at=now - sent_ago,
                updated_at=now - sent_ago,
                sent_at=now - sent_ago,
            )
        )
        await session.commit()
    return message_id


async def message_row(database: Database, message_id: uuid.UUID) -> Message:
    async with database.read_session() as session:
        message = await session.get(Message, message_id)
        assert message is not None
        return message


async def history(database: Database, message_id: uuid.UUID, kind: str) -> list[MessageEvent]:
    async with database.read_session() as session:
        rows = await session.scalars(
            select(MessageEvent)
            .where(MessageEvent.message_id == message_id, MessageEvent.kind == kind)
            .order_by(MessageEvent.id)
        )
        return list(rows)


async def events(client: httpx.AsyncClient, tenant: Tenant, name: str) -> list[dict[str, Any]]:
    """The workspace's events called `name`, from the event log's API."""
    response = await client.get("/api/v1/events", params={"name": name}, headers=tenant.admin)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


@dataclass
class Tracked:
    """A workspace with a profile and a sent email, and its signed links."""

    client: httpx.AsyncClient
    database: Database
    tenant: Tenant
    signer: LinkSigner
    user_id: str
    profile_id: uuid.UUID
    message_id: uuid.UUID

    def pixel(self, message_id: uuid.UUID | None = None) -> str:
        return f"/t/o/{self.signer.sign_open(message_id or self.message_id)}.gif"

    def link(self, index: int, message_id: uuid.UUID | None = None) -> str:
        return f"/t/c/{self.signer.sign_click(message_id or self.message_id, index)}"

    async def message(self) -> Message:
        return await message_row(self.database, self.message_id)


@pytest.fixture
async def tracked(
    app: FastAPI, client: httpx.AsyncClient, database: Database, tenant: Tenant
) -> Tracked:
    user_id = f"user-{uuid.uuid4().hex[:8]}"
    profile_id = await person(database, tenant, user_id)
    message_id = await make_message(database, tenant, profile_id)
    signer = LinkSigner(app.state.secret_keys.current)
    return Tracked(client, database, tenant, signer, user_id, profile_id, message_id)


def assert_pixel(response: httpx.Response) -> None:
    assert response.status_code == 200
    assert response.content == TRANSPARENT_GIF and len(response.content) == 43
    for name, value in PIXEL_HEADERS.items():
        assert response.headers[name] == value


def message_properties(message: Message) -> dict[str, Any]:
    return {
        "message_id": str(message.id),
        "channel": message.channel,
        "template_id": message.template_id,
        "template_version_id": message.template_version_id,
        "origin": "campaign",
        "origin_id": "spring-sale",
    }


async def test_the_pixel_is_always_the_gif(tracked: Tracked) -> None:
    valid = tracked.pixel()
    token = valid.removeprefix("/t/o/").removesuffix(".gif")
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    click_token = tracked.link(0).removeprefix("/t/c/")
    unknown = tracked.pixel(uuid.uuid4())
    for path in (
        valid,
        f"/t/o/{tampered}.gif",
        f"/t/o/{click_token}.gif",  # a token of another kind
        "/t/o/not-a-token.gif",
        f"/t/o/{'x' * 600}.gif",
        "/t/o/%00%ff.gif",
        "/t/o/a/b.gif",
        unknown,  # well signed, no such message
    ):
        assert_pixel(await tracked.client.get(path, headers={"User-Agent": CHROME}))
    head = await tracked.client.head(valid)
    assert head.status_code == 200 and head.headers["content-type"] == "image/gif"
    # Only the two fetches of the valid token were recorded (the GET, and the HEAD as a machine).
    opens = await history(tracked.database, tracked.message_id, "opened")
    assert [(o.machine, o.detail["reason"]) for o in opens] == [
        (False, None),
        (True, "head-request"),
    ]


async def test_a_human_open_marks_the_message_opened_once(tracked: Tracked) -> None:
    for _ in range(2):
        assert_pixel(await tracked.client.get(tracked.pixel(), headers={"User-Agent": CHROME}))
    message = await tracked.message()
    assert message.status == "opened"
    assert message.opened_at is not None and message.clicked_at is None
    opens = await history(tracked.database, tracked.message_id, "opened")
    assert len(opens) == 2 and not any(o.machine for o in opens)
    assert opens[0].at == message.opened_at  # the first open set it, the second did not
    assert opens[0].detail["user_agent"] == CHROME
    [event] = await events(tracked.client, tracked.tenant, "Email Opened")
    assert event["user_id"] == tracked.user_id
    assert event["message_id"] == f"clarion:message:{tracked.message_id}:opened"
    assert event["properties"] == message_properties(message)


async def test_apple_privacy_proxy_opens_are_machines(app: FastAPI, tracked: Tracked) -> None:
    transport = httpx.ASGITransport(app=app, client=("17.58.10.3", 51000))
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as apple:
        assert_pixel(await apple.get(tracked.pixel(), headers={"User-Agent": "Mozilla/5.0"}))
    [recorded] = await history(tracked.database, tracked.message_id, "opened")
    assert recorded.machine is True
    assert recorded.detail["reason"] == "apple-privacy-proxy"
    assert recorded.detail["proxied"] is True
    assert recorded.detail["ip"] == "17.58.10.0"  # the client's network, not its address
    message = await tracked.message()
    assert (message.status, message.opened_at) == ("sent", None)
    assert await events(tracked.client, tracked.tenant, "Email Opened") == []
    # The person opening it later is an open.
    await tracked.client.get(tracked.pixel(), headers={"User-Agent": CHROME})
    assert (await tracked.message()).status == "opened"
    assert len(await events(tracked.client, tracked.tenant, "Email Opened")) == 1


async def test_an_open_right_after_delivery_is_a_machine(tracked: Tracked) -> None:
    just_sent = await make_message(
        tracked.database, tracked.tenant, tracked.profile_id, sent_ago=timedelta(seconds=0)
    )
    await tracked.client.get(tracked.pixel(just_sent), headers={"User-Agent": CHROME})
    [recorded] = await history(tracked.database, just_sent, "opened")
    assert (recorded.machine, recorded.detail["reason"]) == (True, "open-too-soon")
    assert (await message_row(tracked.database, just_sent)).opened_at is None


async def test_concurrent_first_opens_emit_one_event(tracked: Tracked) -> None:
    responses = await asyncio.gather(
        *(tracked.client.get(tracked.pixel(), headers={"User-Agent": CHROME}) for _ in range(4))
    )
    for response in responses:
        assert_pixel(response)
    assert len(await history(tracked.database, tracked.message_id, "opened")) == 4
    assert len(await events(tracked.client, tracked.tenant, "Email Opened")) == 1
    assert (await tracked.message()).status == "opened"


async def test_a_click_redirects_only_to_the_stored_link(tracked: Tracked) -> None:
    client = tracked.client
    first = await client.get(tracked.link(0), params={"url": "https://evil.example/"})
    assert first.status_code == 302
    assert first.headers["location"] == LINKS[0]
    assert (await client.get(tracked.link(1))).headers["location"] == LINKS[1]
    token = tracked.link(0).removeprefix("/t/c/")
    open_token = tracked.pixel().removeprefix("/t/o/").removesuffix(".gif")
    for path in (
        tracked.link(2),  # signed, but the message has two links
        tracked.link(0, uuid.uuid4()),  # signed, no such message
        "/t/c/" + token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        f"/t/c/{open_token}",
        "/t/c/https%3A%2F%2Fevil.example",
    ):
        response = await client.get(path, params={"url": "https://evil.example/"})
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("text/html")
        assert "location" not in response.headers
        assert "evil.example" not in response.text
    assert len(await history(tracked.database, tracked.message_id, "clicked")) == 2


async def test_a_first_human_click_counts_once_and_as_an_open(tracked: Tracked) -> None:
    responses = await asyncio.gather(
        *(tracked.client.get(tracked.link(1), headers={"User-Agent": CHROME}) for _ in range(3))
    )
    assert [r.status_code for r in responses] == [302, 302, 302]
    message = await tracked.message()
    assert message.status == "clicked"
    assert message.clicked_at is not None and message.opened_at == message.clicked_at
    [clicked] = await events(tracked.client, tracked.tenant, "Email Link Clicked")
    assert clicked["user_id"] == tracked.user_id
    assert clicked["message_id"] == f"clarion:message:{tracked.message_id}:clicked:1"
    assert clicked["properties"] == {
        **message_properties(message),
        "link_url": LINKS[1],
        "link_index": 1,
    }
    [opened] = await events(tracked.client, tracked.tenant, "Email Opened")
    assert opened["properties"] == message_properties(message)
    recorded = await history(tracked.database, tracked.message_id, "clicked")
    assert [(c.detail["link_index"], c.detail["url"]) for c in recorded] == [(1, LINKS[1])] * 3


async def test_each_link_emits_its_first_click(tracked: Tracked) -> None:
    start = datetime.now(UTC)
    for link_index, after in ((0, 0), (1, 30), (0, 60), (1, 90)):
        seen = Interaction(CHROME, "203.0.113.9", "GET", start + timedelta(seconds=after))
        async with tracked.database.write_session() as session:
            url = await engagement.record_click(
                session, message_id=tracked.message_id, link_index=link_index, seen=seen
            )
            await session.commit()
        assert url == LINKS[link_index]
    clicked = await events(tracked.client, tracked.tenant, "Email Link Clicked")
    assert sorted(e["properties"]["link_index"] for e in clicked) == [0, 1]
    assert (await tracked.message()).clicked_at == start


async def test_link_scanners_are_machines(tracked: Tracked) -> None:
    head = await tracked.client.head(tracked.link(0), headers={"User-Agent": CHROME})
    assert head.status_code == 302 and head.headers["location"] == LINKS[0]
    scanner = {"User-Agent": "Mozilla/5.0 (compatible; BingPreview/1.0b)"}
    assert (await tracked.client.get(tracked.link(1), headers=scanner)).status_code == 302
    recorded = await history(tracked.database, tracked.message_id, "clicked")
    assert [(c.machine, c.detail["reason"]) for c in recorded] == [
        (True, "head-request"),
        (True, "scanner-user-agent"),
    ]
    message = await tracked.message()
    assert (message.status, message.clicked_at, message.opened_at) == ("sent", None, None)
    assert await events(tracked.client, tracked.tenant, "Email Link Clicked") == []


async def test_a_burst_of_clicks_on_every_link_is_a_scanner(tracked: Tracked) -> None:
    start = datetime.now(UTC)
    verdicts = []
    for link_index in (0, 1):
        seen = Interaction(CHROME, "198.51.100.7", "GET", start + timedelta(milliseconds=300))
        async with tracked.database.write_session() as session:
            await engagement.record_click(
                session, message_id=tracked.message_id, link_index=link_index, seen=seen
            )
            await session.commit()
    for recorded in await history(tracked.database, tracked.message_id, "clicked"):
        verdicts.append((recorded.machine, recorded.detail["reason"]))
    # The first click looked human when it came; the second completed the burst.
    assert verdicts == [(False, None), (True, "click-burst")]


@pytest.mark.parametrize(
    ("channel", "name"),
    [("sms", "SMS Link Clicked"), ("push", "Push Notification Tapped")],
)
async def test_clicks_on_other_channels_emit_their_event(
    tracked: Tracked, channel: str, name: str
) -> None:
    message_id = await make_message(
        tracked.database, tracked.tenant, tracked.profile_id, channel=channel
    )
    response = await tracked.client.get(tracked.link(0, message_id), headers={"User-Agent": CHROME})
    assert response.status_code == 302 and response.headers["location"] == LINKS[0]
    [event] = await events(tracked.client, tracked.tenant, name)
    assert event["properties"]["channel"] == channel
    assert event["properties"]["link_url"] == LINKS[0]
    assert (await message_row(tracked.database, message_id)).status == "clicked"
    assert await events(tracked.client, tracked.tenant, "Email Opened") == []


async def test_view_in_browser_shows_what_delivery_kept(tracked: Tracked) -> None:
    html = "<html><body><h1>Spring sale</h1><script>alert(1)</script></body></html>"
    kept = await make_message(
        tracked.database, tracked.tenant, tracked.profile_id, content={"html": html}
    )
    response = await tracked.client.get(f"/v/{tracked.signer.sign_view(kept)}")
    assert response.status_code == 200
    assert response.text == html
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert policy.startswith("sandbox ") and "allow-scripts" not in policy
    [viewed] = await history(tracked.database, kept, "viewed")
    assert viewed.machine is False
    for path in (
        f"/v/{tracked.signer.sign_view(tracked.message_id)}",  # nothing kept
        f"/v/{tracked.signer.sign_open(kept)}",  # another kind of token
        "/v/forged",
    ):
        missing = await tracked.client.get(path)
        assert missing.status_code == 404 and missing.headers["content-type"].startswith(
            "text/html"
        )
    assert await history(tracked.database, tracked.message_id, "viewed") == []


@pytest.mark.parametrize(
    ("seen", "kept"),
    [
        ("17.58.10.3", "17.58.10.0"),
        (" 203.0.113.77 ", "203.0.113.0"),
        ("2001:db8:abcd:12:1:2:3:4", "2001:db8:abcd::"),
        ("::ffff:192.0.2.9", "192.0.2.0"),
        ("not an address", None),
        ("", None),
        (None, None),
    ],
)
def test_only_the_client_network_is_kept(seen: str | None, kept: str | None) -> None:
    assert masked_ip(seen) == kept
