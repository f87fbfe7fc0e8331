"""Reading the event log back: filters, time ranges and cursor paging."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Tenant, problem


async def send(client: httpx.AsyncClient, tenant: Tenant, messages: list[dict[str, Any]]) -> None:
    """Store messages through the tracking API."""
    response = await client.post("/v1/batch", json={"batch": messages}, auth=tenant.writer)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(messages)


def at(minute: int) -> str:
    """An ISO timestamp `minute` minutes into 2026-03-01."""
    return f"2026-03-01T00:{minute:02d}:00Z"


async def listed(client: httpx.AsyncClient, tenant: Tenant, **query: Any) -> list[str]:
    """The message ids of the events the API lists for `query`."""
    response = await client.get("/api/v1/events", params=query, headers=tenant.admin)
    assert response.status_code == 200, response.text
    return [event["message_id"] for event in response.json()["items"]]


async def test_filters_narrow_the_log(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await send(
        client,
        tenant,
        [
            {
                "type": "track",
                "userId": "u1",
                "event": "Product Viewed",
                "messageId": "view-u1",
                "timestamp": at(1),
            },
            {
                "type": "track",
                "userId": "u2",
                "event": "Product Viewed",
                "messageId": "view-u2",
                "timestamp": at(2),
            },
            {
                "type": "track",
                "anonymousId": "a1",
                "event": "Order Completed",
                "messageId": "order-a1",
                "timestamp": at(3),
            },
            {
                "type": "identify",
                "userId": "u1",
                "anonymousId": "a1",
                "messageId": "identify-u1",
                "timestamp": at(4),
            },
            {
                "type": "page",
                "anonymousId": "a1",
                "name": "Home",
                "messageId": "page-a1",
                "timestamp": at(5),
            },
        ],
    )

    assert await listed(client, tenant) == [
        "page-a1",
        "identify-u1",
        "order-a1",
        "view-u2",
        "view-u1",
    ]
    assert await listed(client, tenant, type="track") == ["order-a1", "view-u2", "view-u1"]
    assert await listed(client, tenant, name="Product Viewed") == ["view-u2", "view-u1"]
    assert await listed(client, tenant, user_id="u1") == ["identify-u1", "view-u1"]
    assert await listed(client, tenant, anonymous_id="a1") == ["page-a1", "identify-u1", "order-a1"]
    assert await listed(client, tenant, since=at(2), until=at(4)) == ["order-a1", "view-u2"]
    assert await listed(client, tenant, type="track", anonymous_id="a1") == ["order-a1"]
    assert await listed(client, tenant, since="2026-03-01T01:00:00+01:00", until=at(2)) == [
        "view-u1"
    ]


async def test_cursor_pages_through_everything_once(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    # Several events share a timestamp, so paging must break ties by id.
    messages = [
        {
            "type": "track",
            "userId": "u1",
            "event": "Tick",
            "messageId": f"m{i:02d}",
            "timestamp": at(i // 3),
        }
        for i in range(25)
    ]
    await send(client, tenant, messages)

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 4}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/api/v1/events", params=params, headers=tenant.admin)).json()
        seen += [event["message_id"] for event in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert pages == 7
    assert sorted(seen) == sorted(m["messageId"] for m in messages)
    assert len(seen) == len(set(seen))


async def test_one_event_by_id(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await send(
        client, tenant, [{"type": "track", "userId": "u1", "event": "One", "messageId": "one"}]
    )
    [event] = (await client.get("/api/v1/events", headers=tenant.admin)).json()["items"]

    response = await client.get(f"/api/v1/events/{event['id']}", headers=tenant.reader)

    assert response.status_code == 200
    assert response.json() == event


async def test_unknown_event_is_404(client: httpx.AsyncClient, tenant: Tenant) -> None:
    problem(await client.get("/api/v1/events/999999999", headers=tenant.admin), 404)


async def test_bad_query_values_are_named(client: httpx.AsyncClient, tenant: Tenant) -> None:
    cases = [
        ({"cursor": "not-a-cursor"}, 400, "cursor"),
        ({"cursor": "WyJub3QgYSB0aW1lIiwxXQ"}, 400, "cursor"),  # ["not a time",1]
        ({"since": "last week"}, 422, "since"),
        ({"type": "teleport"}, 422, "type"),
        ({"limit": 0}, 422, "limit"),
        ({"limit": 5000}, 422, "limit"),
    ]
    for query, status, field in cases:
        problem(
            await client.get("/api/v1/events", params=query, headers=tenant.admin), status, field
        )


async def test_reading_events_needs_a_management_key(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    problem(await client.get("/api/v1/events"), 401)
    problem(await client.get("/api/v1/events", headers={"Authorization": "Bearer wrong"}), 401)
    problem(
        await client.get("/api/v1/events", headers={"Authorization": f"Bearer {tenant.write_key}"}),
        401,
    )
    problem(await client.get("/api/v1/events", auth=(tenant.admin_key, "")), 401)
