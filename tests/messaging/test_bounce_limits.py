"""The bounce route's body limit (`core.bodies.read_limited`): a mail over 1 MB is a 413
naming `body` with the route's own wording, whether its Content-Length says so (refused
before a byte is read) or it streams in without one (refused at the chunk past 1 MB)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from tests.conftest import Tenant, problem

TOO_LARGE = {
    "detail": "A bounce mail is at most 1 MB.",
    "errors": [{"field": "body", "message": "over 1 MB"}],
}
EMAIL_CHANNEL = {
    "name": "Mail",
    "kind": "email",
    "settings": {"host": "smtp.example.com", "from_address": "news@example.com"},
    "secrets": {"password": "app-password-0123456789"},
}


async def _bounces_url(client: httpx.AsyncClient, tenant: Tenant) -> str:
    created = await client.post("/api/v1/channels", json=EMAIL_CHANNEL, headers=tenant.admin)
    assert created.status_code == 201, created.text
    return f"/api/v1/channels/{created.json()['id']}/bounces"


def _wording(body: dict[str, Any]) -> dict[str, Any]:
    return {"detail": body["detail"], "errors": body["errors"]}


async def test_a_declared_length_over_1_mb_is_refused_unread(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    url = await _bounces_url(client, tenant)
    pulled: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        pulled.append(1)
        yield b"x" * 1_000_001

    headers = {**tenant.admin, "Content-Length": "1000001"}
    body = problem(await client.post(url, content=chunks(), headers=headers), 413, "body")
    assert _wording(body) == TOO_LARGE
    assert pulled == []


async def test_a_streamed_mail_over_1_mb_is_refused_at_the_chunk_past_it(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    url = await _bounces_url(client, tenant)
    pulled: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            pulled.append(1)
            yield b"x" * 400_001

    body = problem(await client.post(url, content=chunks(), headers=tenant.admin), 413, "body")
    assert _wording(body) == TOO_LARGE
    assert len(pulled) == 3
