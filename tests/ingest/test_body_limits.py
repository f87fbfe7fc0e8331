"""The tracking API's body limits (`core.bodies.read_limited`): a single call over 32 KB or
a batch over 500 KB is a 413 naming `body` with the size in its wording, whether its
Content-Length says so (refused before a byte is read) or it streams in without one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import Tenant, problem


def _too_large(kb: int) -> dict[str, object]:
    return {
        "detail": f"The body is larger than {kb} KB.",
        "errors": [{"field": "body", "message": f"larger than {kb} KB"}],
    }


@pytest.mark.parametrize(("path", "kb"), [("/v1/track", 32), ("/v1/batch", 500)])
async def test_a_declared_length_past_the_limit_is_refused_unread(
    client: httpx.AsyncClient, tenant: Tenant, path: str, kb: int
) -> None:
    pulled: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        pulled.append(1)
        yield b" " * (kb * 1024 + 1)

    headers = {"Content-Length": str(kb * 1024 + 1)}
    response = await client.post(path, content=chunks(), headers=headers, auth=tenant.writer)
    body = problem(response, 413, "body")
    assert {"detail": body["detail"], "errors": body["errors"]} == _too_large(kb)
    assert pulled == []


@pytest.mark.parametrize(("path", "kb"), [("/v1/track", 32), ("/v1/batch", 500)])
async def test_a_streamed_body_past_the_limit_is_refused(
    client: httpx.AsyncClient, tenant: Tenant, path: str, kb: int
) -> None:
    pulled: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            pulled.append(1)
            yield b" " * (kb * 1024 // 2)

    response = await client.post(path, content=chunks(), auth=tenant.writer)
    body = problem(response, 413, "body")
    assert {"detail": body["detail"], "errors": body["errors"]} == _too_large(kb)
    assert len(pulled) == 3
