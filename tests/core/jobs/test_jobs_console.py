"""The jobs console: listing, retrying and discarding jobs by hand, over the API and the CLI."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from typer.testing import CliRunner

from clarion.cli import app as cli
from clarion.core.clock import FrozenClock, SystemClock
from clarion.core.database import Database
from clarion.core.jobs.queue import NewJob
from clarion.core.jobs.worker import JobContext, PermanentFailure, Registry, Worker
from clarion.core.settings import get_settings
from clarion.startup import prepare_database
from clarion.workspaces import service as workspaces
from tests.conftest import Tenant, problem
from tests.core.jobs.conftest import add_jobs, jobs_of


def failing(kind: str, attempts: list[int]) -> Registry:
    registry = Registry()

    async def handler(context: JobContext) -> None:
        attempts.append(context.job.attempts)
        if len(attempts) == 1:
            raise PermanentFailure("the SMS provider rejected the credentials")

    registry.add(kind, handler)
    return registry


async def test_dead_job_listed_retried_and_run_again(
    client: httpx.AsyncClient, database: Database, clock: FrozenClock, tenant: Tenant, kind: str
) -> None:
    attempts: list[int] = []
    worker = Worker(database, failing(kind, attempts), clock=clock)
    await add_jobs(database, clock, NewJob(tenant.id, kind, {"message": 5}))
    await worker.drain()

    listed = await client.get("/api/v1/jobs", params={"state": "dead"}, headers=tenant.reader)
    assert listed.status_code == 200
    [dead] = listed.json()["items"]
    assert dead["kind"] == kind and dead["payload"] == {"message": 5}
    assert "rejected the credentials" in dead["last_error"]
    assert (await client.get(f"/api/v1/jobs/{dead['id']}", headers=tenant.reader)).json() == dead

    problem(await client.post(f"/api/v1/jobs/{dead['id']}/retry", headers=tenant.reader), 403)
    retried = await client.post(f"/api/v1/jobs/{dead['id']}/retry", headers=tenant.admin)
    assert retried.status_code == 200
    assert (retried.json()["state"], retried.json()["attempts"]) == ("ready", 0)
    clock.advance(timedelta(seconds=5))  # the API stamped the retry with the real clock
    await worker.drain()
    assert attempts == [1, 1]  # fresh attempts
    problem(await client.get(f"/api/v1/jobs/{dead['id']}", headers=tenant.admin), 404)


async def test_discard_and_the_states_that_refuse_it(
    client: httpx.AsyncClient, database: Database, clock: FrozenClock, tenant: Tenant, kind: str
) -> None:
    await add_jobs(database, clock, NewJob(tenant.id, kind), NewJob(tenant.id, kind))
    holder = Worker(database, failing(kind, []), clock=clock, concurrency=1)
    [claimed] = await holder._maintain_and_claim()  # one job is now running
    waiting = next(j for j in await jobs_of(database, kind) if j.id != claimed.id)

    problem(await client.delete(f"/api/v1/jobs/{claimed.id}", headers=tenant.admin), 409)
    problem(await client.post(f"/api/v1/jobs/{claimed.id}/retry", headers=tenant.admin), 409)
    assert (
        await client.delete(f"/api/v1/jobs/{waiting.id}", headers=tenant.admin)
    ).status_code == 204
    assert [j.id for j in await jobs_of(database, kind)] == [claimed.id]


async def test_bad_queries_are_refused(client: httpx.AsyncClient, tenant: Tenant) -> None:
    problem(
        await client.get("/api/v1/jobs", params={"state": "sleeping"}, headers=tenant.admin), 422
    )
    problem(
        await client.get("/api/v1/jobs", params={"cursor": "nope"}, headers=tenant.admin),
        400,
        "cursor",
    )
    problem(await client.get("/api/v1/jobs", params={"limit": 0}, headers=tenant.admin), 422)
    problem(await client.get("/api/v1/jobs"), 401)


async def test_paging_newest_first(
    client: httpx.AsyncClient, database: Database, clock: FrozenClock, tenant: Tenant, kind: str
) -> None:
    await add_jobs(database, clock, *(NewJob(tenant.id, kind, {"n": n}) for n in range(5)))
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": 2, "kind": kind, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/v1/jobs", params=params, headers=tenant.admin)).json()
        seen += [item["payload"]["n"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [4, 3, 2, 1, 0]


def test_cli_lists_retries_and_discards(fresh_database: Database, tmp_path: Path) -> None:
    get_settings.cache_clear()
    runner = CliRunner(
        env={"CLARION_DATABASE_URL": fresh_database.url, "CLARION_DATA_DIR": str(tmp_path)}
    )
    clock = FrozenClock(datetime.now(UTC))

    async def seed() -> None:
        database = Database(fresh_database.url)
        try:
            await prepare_database(database, get_settings(), SystemClock())
            async with database.read_session() as session:
                default = await workspaces.get_workspace_by_slug_or_raise(
                    session, slug=workspaces.DEFAULT_WORKSPACE_SLUG
                )
            await add_jobs(database, clock, NewJob(default.id, "cli.test"))
            await add_jobs(database, clock, NewJob(default.id, "cli.test"))
            await Worker(database, failing("cli.test", []), clock=clock, concurrency=1).drain()
        finally:
            await database.dispose()

    asyncio.run(seed())
    get_settings.cache_clear()  # seed read the settings outside the runner's environment
    try:
        listed = runner.invoke(cli, ["jobs", "list", "--state", "dead"])
        assert listed.exit_code == 0, listed.output
        [line] = listed.output.strip().splitlines()
        job_id = re.match(r"(\d+)\tcli\.test\tdead", line)
        assert job_id, line
        assert line.endswith("PermanentFailure: the SMS provider rejected the credentials")
        retried = runner.invoke(cli, ["jobs", "retry", job_id.group(1)])
        assert retried.exit_code == 0 and "will run again" in retried.output
        discarded = runner.invoke(cli, ["jobs", "discard", job_id.group(1)])
        assert discarded.exit_code == 0, discarded.output
        missing = runner.invoke(cli, ["jobs", "discard", job_id.group(1)])
        assert missing.exit_code == 1 and "does not exist" in missing.output
    finally:
        get_settings.cache_clear()
