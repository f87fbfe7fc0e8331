"""The application: health, OpenAPI and interactive docs."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from clarion.app import create_app
from clarion.core.clock import SystemClock
from clarion.core.database import Database
from clarion.core.problems import MEDIA_TYPE
from clarion.core.settings import Settings
from clarion.ingest.writer import EventWriter
from clarion.workspaces import service as workspaces
from clarion.workspaces.schemas import KeyScope
from tests.conftest import Tenant


async def test_healthz_is_ok_once_serving(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_healthz_answers_head_as_uptime_checkers_send_it(client: httpx.AsyncClient) -> None:
    response = await client.head("/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"


async def test_healthz_is_503_before_start_up(settings: Settings) -> None:
    app = create_app(settings)  # lifespan not started: not accepting work
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as client:
        response = await client.get("/healthz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"


async def test_openapi_documents_the_tracking_bodies(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    document = (await client.get("/api/openapi.json")).json()

    batch = document["paths"]["/v1/batch"]["post"]
    ref = batch["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/Batch"
    schemas = document["components"]["schemas"]
    assert "TrackMessage" in schemas
    assert "userId" in schemas["TrackMessage"]["properties"]
    for kind in ("identify", "track", "page", "screen", "group", "alias"):
        assert f"/v1/{kind}" in document["paths"]
    assert "/api/v1/events" in document["paths"]
    assert document["components"]["securitySchemes"]["writeKey"]["scheme"] == "basic"
    # Every $ref resolves inside the document.
    for name in _refs(document):
        assert name in schemas, name


async def test_interactive_docs_are_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/docs")
    assert response.status_code == 200
    assert "/api/openapi.json" in response.text


def _refs(node: object) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.add(value.rsplit("/", 1)[-1])
            else:
                found |= _refs(value)
    elif isinstance(node, list):
        for item in node:
            found |= _refs(item)
    return found


async def test_healthz_is_503_when_the_database_fails(settings: Settings, tmp_path: Path) -> None:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        healthy = app.state.database
        # A database file inside a missing folder cannot be opened.
        app.state.database = Database(f"sqlite:///{tmp_path / 'gone'}/x.db", pool_size=1)
        (tmp_path / "gone").rmdir()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as client:
            response = await client.get("/healthz")
        await app.state.database.dispose()
        app.state.database = healthy
    assert response.status_code == 503
    assert "database unreachable" in response.json()["detail"]


async def test_a_fault_while_storing_is_a_500_problem_and_no_success(
    settings: Settings, tmp_path: Path
) -> None:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with app.state.database.write_session() as session:
            workspace = await workspaces.create_workspace(
                session, slug=f"fault-{tmp_path.name}", name="fault", now=SystemClock().now()
            )
            source = await workspaces.create_source(
                session, workspace_id=workspace.id, name="web", now=SystemClock().now()
            )
            _, write_key = await workspaces.create_key(
                session,
                workspace_id=workspace.id,
                scope=KeyScope.WRITE,
                name="w",
                source_id=source.id,
                now=SystemClock().now(),
            )
            await session.commit()
        healthy = app.state.event_writer
        broken = Database(f"sqlite:///{tmp_path / 'gone'}/x.db")
        (tmp_path / "gone").rmdir()
        app.state.event_writer = EventWriter(broken)  # every store fails
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as client:
            response = await client.post(
                "/v1/track", json={"userId": "u", "event": "E"}, auth=(write_key, "")
            )
        await app.state.event_writer.close()
        await broken.dispose()
        app.state.event_writer = healthy
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "internal-error" and body["message"]
    assert "success" not in body


async def test_openapi_documents_errors_as_problems(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    document = (await client.get("/api/openapi.json")).json()
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            documented = [s for s in ("422", "4XX") if s in responses]
            if "public" not in operation.get("tags", []):  # pages answer HTML
                assert "4XX" in documented, (path, method)
            for status in documented:
                content = responses[status]["content"]
                assert content == {MEDIA_TYPE: {"schema": problem_ref}}, (path, method)
    # What the API answers has the documented members.
    required = set(schemas["Problem"]["required"])
    bad = await client.post("/api/v1/segments", json={"name": ""}, headers=tenant.admin)
    missing = await client.get("/api/v1/segments/999999", headers=tenant.admin)
    for response in (bad, missing):
        assert response.headers["content-type"] == MEDIA_TYPE
        body = response.json()
        assert required <= set(body) <= set(schemas["Problem"]["properties"])
    for error in bad.json()["errors"]:
        assert set(error) <= set(schemas["ProblemField"]["properties"])


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("OPTIONS", "/u/some-token", "GET, POST"),  # the unsubscribe page and one-click
        ("DELETE", "/p/some-token", "GET, POST"),
        ("PUT", "/api/v1/topics", "GET, POST"),
        ("POST", "/healthz", "GET, HEAD"),
    ],
)
async def test_a_method_not_allowed_names_every_method_the_path_serves(
    client: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    response = await client.request(method, path)
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "method-not-allowed"
    assert response.headers["allow"] == allowed
