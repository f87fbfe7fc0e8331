"""The write-key cache: entries expire, and revocation through the API takes effect at once."""

from __future__ import annotations

import uuid

import httpx

from clarion.workspaces.cache import WriteKeyCache
from tests.conftest import Tenant, problem


def test_entries_expire_after_the_ttl() -> None:
    now = [100.0]
    cache = WriteKeyCache(ttl=5, monotonic=lambda: now[0])
    source = uuid.uuid4()
    cache.put("secret", workspace_id=7, source_id=source)

    assert cache.get("secret") == (7, source)
    assert cache.get("other") is None
    now[0] += 5.1
    assert cache.get("secret") is None


async def test_a_cached_write_key_stops_working_when_revoked(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    sent = await client.post("/v1/identify", json={"userId": "u1"}, auth=tenant.writer)
    assert sent.status_code == 200  # the key is now cached
    keys = (await client.get("/api/v1/keys", headers=tenant.admin)).json()["items"]
    [write_key] = [k for k in keys if k["scope"] == "write"]
    await client.delete(f"/api/v1/keys/{write_key['id']}", headers=tenant.admin)

    problem(await client.post("/v1/identify", json={"userId": "u1"}, auth=tenant.writer), 401)
