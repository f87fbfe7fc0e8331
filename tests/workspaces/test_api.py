"""Management API for sources and keys: scopes, secrets shown once, revocation."""

from __future__ import annotations

import httpx

from tests.conftest import Tenant, problem


async def test_workspace_is_the_keys_own(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.get("/api/v1/workspace", headers=tenant.reader)

    assert response.status_code == 200
    assert response.json()["id"] == tenant.id
    assert response.json()["slug"] == tenant.slug


async def test_source_creation_returns_a_working_write_key_once(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await client.post("/api/v1/sources", json={"name": "iOS app"}, headers=tenant.admin)

    assert response.status_code == 201, response.text
    created = response.json()
    secret = created["write_key"]["key"]
    assert created["write_key"]["scope"] == "write"
    assert created["write_key"]["source_id"] == created["id"]
    sent = await client.post("/v1/screen", json={"userId": "u1", "name": "Home"}, auth=(secret, ""))
    assert sent.status_code == 200
    listed = (await client.get("/api/v1/keys", headers=tenant.admin)).json()["items"]
    assert secret not in str(listed)
    assert any(k["key_prefix"] == secret[:8] for k in listed)
    [event] = (await client.get("/api/v1/events", headers=tenant.admin)).json()["items"]
    assert event["source_id"] == created["id"]
    sources = (await client.get("/api/v1/sources", headers=tenant.admin)).json()["items"]
    assert {s["name"] for s in sources} == {"Website", "iOS app"}
    one = await client.get(f"/api/v1/sources/{created['id']}", headers=tenant.reader)
    assert one.json()["name"] == "iOS app"


async def test_duplicate_source_name_is_409(client: httpx.AsyncClient, tenant: Tenant) -> None:
    problem(
        await client.post("/api/v1/sources", json={"name": "Website"}, headers=tenant.admin),
        409,
        "name",
    )


async def test_keys_are_created_listed_read_and_revoked(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    created = await client.post(
        "/api/v1/keys", json={"scope": "admin", "name": "CI"}, headers=tenant.admin
    )
    assert created.status_code == 201, created.text
    key = created.json()
    new_admin = {"Authorization": f"Bearer {key['key']}"}
    assert (await client.get("/api/v1/keys", headers=new_admin)).status_code == 200

    read = await client.get(f"/api/v1/keys/{key['id']}", headers=tenant.admin)
    assert read.json()["name"] == "CI"
    assert "key" not in read.json()

    revoked = await client.delete(f"/api/v1/keys/{key['id']}", headers=tenant.admin)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    body = problem(await client.get("/api/v1/keys", headers=new_admin), 401)
    assert "revoked" in body["detail"]
    again = await client.delete(f"/api/v1/keys/{key['id']}", headers=tenant.admin)
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]


async def test_write_key_for_a_source(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = {"scope": "write", "name": "second", "source_id": str(tenant.source_id)}
    created = await client.post("/api/v1/keys", json=body, headers=tenant.admin)

    assert created.status_code == 201, created.text
    sent = await client.post(
        "/v1/identify", json={"userId": "u9"}, auth=(created.json()["key"], "")
    )
    assert sent.status_code == 200


async def test_bad_key_requests_name_the_field(client: httpx.AsyncClient, tenant: Tenant) -> None:
    cases = [
        ({"scope": "root", "name": "x"}, 422, "scope"),
        ({"scope": "admin"}, 422, "name"),
        ({"scope": "admin", "name": ""}, 422, "name"),
        ({"scope": "admin", "name": "x", "extra": 1}, 422, "extra"),
        ({"scope": "write", "name": "x"}, 400, "source_id"),
        ({"scope": "admin", "name": "x", "source_id": str(tenant.source_id)}, 400, "source_id"),
        ({"scope": "write", "name": "x", "source_id": "not-a-uuid"}, 422, "source_id"),
    ]
    for body, status, field in cases:
        problem(await client.post("/api/v1/keys", json=body, headers=tenant.admin), status, field)
    keys = (await client.get("/api/v1/keys", headers=tenant.admin)).json()["items"]
    assert len(keys) == 3  # nothing was created


async def test_malformed_json_is_a_problem(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post(
        "/api/v1/keys",
        content=b'{"scope": ',
        headers={**tenant.admin, "Content-Type": "application/json"},
    )
    problem(response, 422)


async def test_read_only_key_reads_but_cannot_change(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    assert (await client.get("/api/v1/keys", headers=tenant.reader)).status_code == 200
    assert (await client.get("/api/v1/sources", headers=tenant.reader)).status_code == 200

    problem(
        await client.post(
            "/api/v1/keys", json={"scope": "admin", "name": "x"}, headers=tenant.reader
        ),
        403,
    )
    problem(await client.post("/api/v1/sources", json={"name": "x"}, headers=tenant.reader), 403)
    keys = (await client.get("/api/v1/keys", headers=tenant.reader)).json()["items"]
    problem(await client.delete(f"/api/v1/keys/{keys[0]['id']}", headers=tenant.reader), 403)
    assert len((await client.get("/api/v1/keys", headers=tenant.admin)).json()["items"]) == 3
    assert all(k["revoked_at"] is None for k in keys)


async def test_missing_or_wrong_admin_key(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = problem(await client.get("/api/v1/keys"), 401)
    assert "Bearer" in response["detail"]
    problem(await client.get("/api/v1/keys", headers={"Authorization": "Bearer cla_wrong"}), 401)
    problem(await client.get("/api/v1/keys", headers={"Authorization": "Token abc"}), 401)
    problem(
        await client.get("/api/v1/keys", headers={"Authorization": f"Bearer {tenant.write_key}"}),
        401,
    )
    problem(await client.post("/api/v1/sources", json={"name": "x"}), 401)


async def test_unknown_ids_are_404(client: httpx.AsyncClient, tenant: Tenant) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    problem(await client.get(f"/api/v1/keys/{missing}", headers=tenant.admin), 404)
    problem(await client.delete(f"/api/v1/keys/{missing}", headers=tenant.admin), 404)
    problem(await client.get(f"/api/v1/sources/{missing}", headers=tenant.admin), 404)
    problem(await client.get("/api/v1/keys/not-a-uuid", headers=tenant.admin), 422, "key_id")
    problem(await client.get("/api/v1/nowhere", headers=tenant.admin), 404)
