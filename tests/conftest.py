"""Test fixtures: every test runs on SQLite and on PostgreSQL, each in a workspace of its own.

Each backend gets one fresh database per test session, migrated once. Tests never share
a workspace, and every row is scoped by workspace, so no test sees another's data.
Under CI=true a PostgreSQL that cannot be reached fails the run instead of skipping it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner, Result

from clarion.app import create_app
from clarion.cli import app as cli_app
from clarion.core.clock import SystemClock
from clarion.core.database import Database
from clarion.core.settings import Settings, get_settings
from clarion.workspaces import service as workspaces
from clarion.workspaces.schemas import KeyScope
from tests.support import LOOPBACK_NETWORKS, LiveServer, start_live_server

# The tests' fake providers and webhook receivers listen on loopback, which outbound calls
# may not reach by default.
os.environ.setdefault("CLARION_OUTBOUND_ALLOWED_NETWORKS", LOOPBACK_NETWORKS)

POSTGRES_ADMIN_URL = os.environ.get(
    "CLARION_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BACKENDS = ["sqlite", "postgresql"]


def unreachable(service: str, reason: object) -> None:
    """Fail under CI, skip elsewhere: a service a test needs is not there."""
    message = f"{service} unreachable: {reason}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


async def _create_postgres_database() -> str:
    name = f"clarion_test_{uuid.uuid4().hex[:12]}"
    try:
        connection = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        unreachable("PostgreSQL", exc)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return name


async def _drop_postgres_database(name: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def postgres_url(database: str) -> str:
    """The URL of `database` on the test PostgreSQL server."""
    base, _, _ = POSTGRES_ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend this copy of the test runs on."""
    return str(request.param)


@pytest.fixture(scope="session")
async def database_url(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """A fresh, empty database of the backend, dropped after the session."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'clarion.db'}"
        return
    name = await _create_postgres_database()
    yield postgres_url(name)
    await _drop_postgres_database(name)


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings pointing at the session's database, with no bootstrap keys."""
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("var"),
        secret_key="test-secret-key-not-for-production",
        sqlite_synchronous="NORMAL",
    )


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The application with its lifespan started (schema migrated on first use)."""
    application = create_app(settings, run_worker=False)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
def database(app: FastAPI) -> Database:
    """The application's database."""
    database: Database = app.state.database
    return database


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the application in process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as http:
        yield http


@dataclass(frozen=True)
class Tenant:
    """A workspace made for one test, with a source and one key of each scope."""

    id: int
    slug: str
    source_id: uuid.UUID
    write_key: str
    admin_key: str
    read_only_key: str

    @property
    def admin(self) -> dict[str, str]:
        """Headers authenticating as this workspace's admin."""
        return {"Authorization": f"Bearer {self.admin_key}"}

    @property
    def reader(self) -> dict[str, str]:
        """Headers authenticating with this workspace's read-only key."""
        return {"Authorization": f"Bearer {self.read_only_key}"}

    @property
    def writer(self) -> httpx.BasicAuth:
        """Basic auth with this workspace's write key."""
        return httpx.BasicAuth(self.write_key, "")


async def make_tenant(database: Database) -> Tenant:
    """A new workspace with a source and a write, an admin and a read-only key."""
    now = SystemClock().now()
    slug = f"ws-{uuid.uuid4().hex[:10]}"
    async with database.write_session() as session:
        workspace = await workspaces.create_workspace(session, slug=slug, name=slug, now=now)
        source = await workspaces.create_source(
            session, workspace_id=workspace.id, name="Website", now=now
        )
        secrets: dict[KeyScope, str] = {}
        for scope in KeyScope:
            _, secrets[scope] = await workspaces.create_key(
                session,
                workspace_id=workspace.id,
                scope=scope,
                name=f"test {scope.value}",
                source_id=source.id if scope is KeyScope.WRITE else None,
                now=now,
            )
        await session.commit()
    return Tenant(
        id=workspace.id,
        slug=slug,
        source_id=source.id,
        write_key=secrets[KeyScope.WRITE],
        admin_key=secrets[KeyScope.ADMIN],
        read_only_key=secrets[KeyScope.READ_ONLY],
    )


@pytest.fixture
async def tenant(database: Database) -> Tenant:
    """A workspace of this test's own."""
    return await make_tenant(database)


@pytest.fixture
async def other_tenant(database: Database) -> Tenant:
    """A second workspace, to prove the first never sees its data."""
    return await make_tenant(database)


@pytest.fixture(scope="session")
def live_server(settings: Settings) -> Iterator[LiveServer]:
    """A real Clarion HTTP server on loopback, on the session's database."""
    with start_live_server(settings) as server:
        yield server


@pytest.fixture
async def fresh_database(backend: str, tmp_path: Path) -> AsyncIterator[Database]:
    """An empty, unmigrated database of the backend, for migration tests."""
    if backend == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'fresh.db'}")
        yield database
        await database.dispose()
        return
    name = await _create_postgres_database()
    database = Database(postgres_url(name))
    yield database
    await database.dispose()
    await _drop_postgres_database(name)


def problem(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    """Assert an RFC 9457 problem of `status`, naming `field` when given; its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:clarion:problem:")
    assert body["title"] and body["detail"]
    assert body["code"] and body["message"]  # what the Segment SDKs read
    if field is not None:
        fields = [error["field"] for error in body.get("errors", [])]
        assert field in fields, body
    return body


@pytest.fixture
def clarion(fresh_database: Database, tmp_path: Path) -> Iterator[CliRunner]:
    """Runs `clarion` commands on a fresh database of the backend."""
    get_settings.cache_clear()
    runner = CliRunner(
        env={"CLARION_DATABASE_URL": fresh_database.url, "CLARION_DATA_DIR": str(tmp_path)}
    )
    yield runner
    get_settings.cache_clear()


def run_cli(runner: CliRunner, *args: str, code: int = 0) -> Result:
    """Run one `clarion` command, asserting its exit code; its result."""
    get_settings.cache_clear()
    result = runner.invoke(cli_app, list(args))
    assert result.exit_code == code, result.output
    return result
