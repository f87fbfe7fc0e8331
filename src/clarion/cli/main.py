"""The `clarion` command line: serve, worker, migrate, demo, workspaces and keys, jobs,
segments, imports and exports; messaging, campaigns, journeys and profiles commands live
beside it (`messaging.py`, `campaigns.py`, `journeys.py`, `profiles.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import IO, Annotated

import typer
import uvicorn

from clarion.cli import campaigns as campaigns_cli
from clarion.cli import journeys as journeys_cli
from clarion.cli import messaging as messaging_cli
from clarion.cli import profiles as profiles_cli
from clarion.cli.common import (
    WorkspaceOption,
    configure_logging,
    log,
    open_database,
    ready_database,
    run_work,
    workspace_session,
)
from clarion.core import heap, migrations
from clarion.core.clock import SystemClock
from clarion.core.errors import InvalidInput
from clarion.core.jobs import service as jobs
from clarion.core.jobs.models import Job
from clarion.core.jobs.service import JobState
from clarion.core.jobs.worker import Worker
from clarion.core.settings import get_settings
from clarion.demo import behaviour as demo_behaviour
from clarion.demo import load as demo_load
from clarion.ingest import orders
from clarion.pipeline import Pipeline
from clarion.profiles import exports, imports
from clarion.segments import recompute
from clarion.segments import service as segments
from clarion.segments.catalog import Catalog
from clarion.startup import prepare_database
from clarion.workspaces import service as workspaces
from clarion.workspaces.schemas import KeyScope

app = typer.Typer(help="Clarion: self-hosted personalized marketing.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
workspaces_app = typer.Typer(help="Create and list workspaces.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(workspaces_app, name="workspaces")
jobs_app = typer.Typer(help="See, retry and discard durable jobs.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
segments_app = typer.Typer(help="List and recompute segments.", no_args_is_help=True)
app.add_typer(segments_app, name="segments")
import_app = typer.Typer(help="Import data from files.", no_args_is_help=True)
app.add_typer(import_app, name="import")
export_app = typer.Typer(help="Export data to files.", no_args_is_help=True)
app.add_typer(export_app, name="export")
app.add_typer(messaging_cli.channels_app, name="channels")
app.add_typer(messaging_cli.templates_app, name="templates")
app.add_typer(campaigns_cli.campaigns_app, name="campaigns")
app.add_typer(journeys_cli.journeys_app, name="journeys")
app.add_typer(messaging_cli.suppressions_app, name="suppressions")
app.add_typer(messaging_cli.consent_app, name="consent")
app.add_typer(profiles_cli.profiles_app, name="profiles")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Also run a worker for durable jobs.")
    ] = True,
) -> None:
    """Serve the API and run durable jobs (migrating an empty database first)."""
    # The API (FastAPI, every router and schema) is imported by the one command serving it:
    # workers and the other commands start without it.
    from clarion.app import create_app

    settings = get_settings()
    configure_logging(settings)
    uvicorn.run(
        create_app(settings, run_worker=worker),
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level,
        loop="uvloop",
        http="httptools",
        access_log=False,
    )


@app.command("worker")
def run_worker(
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, help="Jobs run at once (default CLARION_WORKER_CONCURRENCY)."),
    ] = None,
    only: Annotated[
        str, typer.Option(help="Run only these job kinds (comma-separated: messages.deliver).")
    ] = "",
    skip: Annotated[str, typer.Option(help="Run every job kind but these (comma-separated).")] = "",
) -> None:
    """Run durable jobs only, no API, until stopped (any number may run on PostgreSQL);
    with --only / --skip, dedicated to some kinds of jobs."""
    settings = get_settings()
    configure_logging(settings)

    def kinds(listed: str) -> list[str]:
        return [name.strip() for name in listed.split(",") if name.strip()]

    async def work() -> None:
        async with ready_database(settings) as database:
            pipeline = Pipeline(database, settings, SystemClock())
            try:
                registry = pipeline.registry().select(kinds(only), kinds(skip))
            except ValueError as error:
                await pipeline.close()
                raise InvalidInput(str(error)) from error
            worker = Worker(
                database,
                registry,
                clock=SystemClock(),
                concurrency=concurrency or settings.worker_concurrency,
            )
            _stop_on_signals()
            heap.settle()
            log.info("worker %s running", worker.owner)
            statistics = asyncio.create_task(database.keep_statistics_fresh())
            try:
                with contextlib.suppress(asyncio.CancelledError):
                    await worker.run()  # hands its running jobs back when stopped
            finally:
                statistics.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await statistics
                await pipeline.close()
            log.info("worker %s stopped", worker.owner)

    run_work(work)


def _stop_on_signals() -> None:
    """SIGTERM and SIGINT cancel the running command's main task, so it stops cleanly."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for stop in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(stop, task.cancel)


@app.command()
def migrate() -> None:
    """Bring the database schema up to date and apply the bootstrap keys."""
    settings = get_settings()
    configure_logging(settings)

    async def work() -> str | None:
        async with open_database(settings) as database:
            await migrations.upgrade(database)
            await prepare_database(database, settings, SystemClock())
            return await migrations.current_revision(database)

    typer.echo(f"database at revision {run_work(work)}")


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="Same seed, same shop; another seed, another.")] = 1,
    end: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="Day after the demo year. [default: today UTC]"),
    ] = None,
    customers: Annotated[
        int, typer.Option(min=1, help="Customers to sign up.")
    ] = demo_behaviour.DEFAULT_CUSTOMERS,
    if_empty: Annotated[
        bool, typer.Option("--if-empty", help="Load only into a workspace without events.")
    ] = False,
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Load a year of a demo gift shop (customers, products, orders) through ingestion."""
    settings = get_settings()
    clock = SystemClock()
    plan = demo_behaviour.DemoPlan(
        seed=seed, end=end.date() if end else clock.now().date(), customers=customers
    )

    async def work() -> str:
        async with ready_database(settings) as database:
            if if_empty and await demo_load.workspace_has_events(
                database, workspace_slug=workspace
            ):
                return f"demo skipped: workspace {workspace!r} already holds events"
            summary = await demo_load.load_demo(
                database, plan, workspace_slug=workspace, clock=clock
            )
            async with database.write_session() as session:
                found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
                ready = await segments.create_ready_made(
                    session, workspace_id=found.id, now=clock.now()
                )
                for segment in ready:  # computed by the worker once the events are processed
                    await recompute.schedule(session, segment=segment, now=clock.now())
                await session.commit()
            return f"{summary.line()}; {len(ready)} ready-made segments created"

    typer.echo(run_work(work))


@workspaces_app.command("create")
def create_workspace(
    slug: Annotated[str, typer.Argument(help="Short unique name, used by --workspace.")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
) -> None:
    """Create a workspace."""
    settings = get_settings()

    async def work() -> int:
        async with ready_database(settings) as database, database.write_session() as session:
            workspace = await workspaces.create_workspace(
                session, slug=slug, name=name or slug, now=SystemClock().now()
            )
            await session.commit()
            return workspace.id

    typer.echo(f"workspace {slug} created (id {run_work(work)})")


@workspaces_app.command("list")
def list_workspaces() -> None:
    """List workspaces."""
    settings = get_settings()

    async def work() -> list[str]:
        async with ready_database(settings) as database, database.read_session() as session:
            found = await workspaces.list_workspaces(session)
            return [f"{w.id}\t{w.slug}\t{w.name}" for w in found]

    for line in run_work(work):
        typer.echo(line)


@keys_app.command("create")
def create_key(
    scope: Annotated[KeyScope, typer.Option(help="write, admin or read-only.")] = KeyScope.ADMIN,
    name: Annotated[str | None, typer.Option(help="What the key is for.")] = None,
    source: Annotated[
        str | None, typer.Option(help="Source of a write key; created when missing.")
    ] = None,
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Create a key and print its secret, which is never shown again."""
    settings = get_settings()
    if scope is KeyScope.WRITE and not source:
        raise typer.BadParameter("a write key needs --source", param_hint="--source")

    async def work() -> tuple[uuid.UUID, str]:
        now = SystemClock().now()
        async with workspace_session(settings, workspace, write=True) as (session, found):
            source_id = None
            if source:
                existing = await workspaces.get_source_by_name(
                    session, workspace_id=found.id, name=source
                )
                existing = existing or await workspaces.create_source(
                    session, workspace_id=found.id, name=source, now=now
                )
                source_id = existing.id
            key, secret = await workspaces.create_key(
                session,
                workspace_id=found.id,
                scope=scope,
                name=name or f"{scope.value} key",
                source_id=source_id,
                now=now,
            )
            await session.commit()
            return key.id, secret

    key_id, secret = run_work(work)
    typer.echo(
        f"key {key_id} ({scope.value}) created; store the secret now, it is not shown again:"
    )
    typer.echo(secret)


@keys_app.command("list")
def list_keys(workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG) -> None:
    """List a workspace's keys (never their secrets)."""
    settings = get_settings()

    async def work() -> list[str]:
        async with workspace_session(settings, workspace) as (session, found):
            rows = []
            for key in await workspaces.list_keys(session, workspace_id=found.id):
                state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
                rows.append(f"{key.id}\t{key.scope}\t{key.key_prefix}…\t{state}\t{key.name}")
            return rows

    for line in run_work(work):
        typer.echo(line)


@keys_app.command("revoke")
def revoke_key(
    key_id: Annotated[uuid.UUID, typer.Argument(help="Id of the key, from `clarion keys list`.")],
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Revoke a key: it stops working at once."""
    settings = get_settings()

    async def work() -> None:
        async with workspace_session(settings, workspace, write=True) as (session, found):
            await workspaces.revoke_key(
                session, workspace_id=found.id, key_id=key_id, now=SystemClock().now()
            )
            await session.commit()

    run_work(work)
    typer.echo(f"key {key_id} revoked")


@jobs_app.command("list")
def list_jobs(
    state: Annotated[JobState | None, typer.Option(help="ready, running or dead.")] = None,
    kind: Annotated[str | None, typer.Option(help="Only jobs of this kind.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """List a workspace's jobs, newest first (`--state dead` for those that gave up)."""
    settings = get_settings()

    async def work() -> list[str]:
        async with workspace_session(settings, workspace) as (session, found):
            page, _ = await jobs.list_jobs(
                session, workspace_id=found.id, state=state, kind=kind, limit=limit
            )
            return [_job_line(job) for job in page]

    for line in run_work(work):
        typer.echo(line)


def _job_line(job: Job) -> str:
    error = (job.last_error or "").partition("\n")[0]
    return (
        f"{job.id}\t{job.kind}\t{job.state}\tattempts {job.attempts}/{job.max_attempts}"
        f"\t{job.run_at:%Y-%m-%d %H:%M:%S}\t{error}"
    )


@segments_app.command("list")
def list_segments(workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG) -> None:
    """List a workspace's segments: id, name, members, last recompute."""
    settings = get_settings()

    async def work() -> list[str]:
        async with workspace_session(settings, workspace) as (session, found):
            page, _ = await segments.list_segments(
                session, workspace_id=found.id, limit=10_000, cursor=None
            )
            return [
                f"{s.id}\t{s.name}\t{s.member_count} members\t"
                f"{f'{s.recomputed_at:%Y-%m-%d %H:%M:%S}' if s.recomputed_at else 'never computed'}"
                for s in page
            ]

    for line in run_work(work):
        typer.echo(line)


@segments_app.command("recompute")
def recompute_segments(
    segment_id: Annotated[
        int | None, typer.Argument(help="One segment; all when left out.")
    ] = None,
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Recompute one segment, or every segment of the workspace, over all its profiles now."""
    settings = get_settings()
    clock = SystemClock()

    async def work() -> list[recompute.Recomputed]:
        async with workspace_session(settings, workspace, write=True) as (session, found):
            catalog = Catalog()
            if segment_id is None:
                done = await recompute.recompute_workspace(
                    session, workspace_id=found.id, catalog=catalog, now=clock.now()
                )
            else:
                segment = await segments.get_segment_or_raise(
                    session, workspace_id=found.id, segment_id=segment_id
                )
                one = await recompute.recompute_one(
                    session,
                    workspace_id=found.id,
                    segment=segment,
                    catalog=catalog,
                    now=clock.now(),
                )
                done = [one]
            await session.commit()
            return done

    for result in run_work(work):
        typer.echo(
            f"segment {result.segment_id}: {result.size:,} members"
            f" ({result.entered:,} entered, {result.exited:,} exited)"
        )


@jobs_app.command("retry")
def retry_job(
    job_id: Annotated[int, typer.Argument(help="Id of the dead (or waiting) job.")],
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Run a dead job again with fresh attempts."""
    settings = get_settings()

    async def work() -> None:
        async with workspace_session(settings, workspace, write=True) as (session, found):
            await jobs.retry_job(
                session, workspace_id=found.id, job_id=job_id, now=SystemClock().now()
            )
            await session.commit()

    run_work(work)
    typer.echo(f"job {job_id} will run again")


@jobs_app.command("discard")
def discard_job(
    job_id: Annotated[int, typer.Argument(help="Id of the dead (or waiting) job.")],
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Discard a dead job for good."""
    settings = get_settings()

    async def work() -> None:
        async with workspace_session(settings, workspace, write=True) as (session, found):
            await jobs.discard_job(session, workspace_id=found.id, job_id=job_id)
            await session.commit()

    run_work(work)


async def _file_chunks(handle: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(handle.read, 256 * 1024):
        yield chunk


@import_app.command("profiles")
def import_profiles(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help="CSV file, plain or gzip (.csv.gz)."),
    ],
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Create or update a profile per CSV row; bad rows are reported by line, the rest kept."""
    settings = get_settings()

    async def work(handle: IO[bytes]) -> imports.ImportResult:
        async with ready_database(settings) as database:
            async with database.read_session() as session:
                found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            return await imports.import_csv(
                database,
                workspace_id=found.id,
                body=_file_chunks(handle),
                clock=SystemClock(),
                max_bytes=None,
            )

    with file.open("rb") as handle:
        result = run_work(lambda: work(handle))
    typer.echo(
        f"rows {result.rows}, created {result.created}, updated {result.updated},"
        f" rejected {result.rejected}"
    )
    for error in result.errors:
        typer.echo(f"line {error.line}: {error.field}: {error.message}")
    if result.rejected > len(result.errors):
        typer.echo(f"... and {result.rejected - len(result.errors)} more rejected rows")


@import_app.command("orders")
def import_orders(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help="Order-line CSV (UCI Online Retail), plain or gzip."
        ),
    ],
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Load orders and refunds as Segment events through ingestion; bad lines are reported."""
    settings = get_settings()

    async def work(text: IO[str]) -> orders.OrdersResult:
        async with ready_database(settings) as database:
            return await orders.import_orders(
                database, text, workspace_slug=workspace, clock=SystemClock()
            )

    with orders.open_orders(file) as text:
        result = run_work(lambda: work(text))
    typer.echo(result.line())
    for error in result.errors:
        typer.echo(f"line {error.line}: {error.field}: {error.message}")
    if result.problems > len(result.errors):
        typer.echo(f"... and {result.problems - len(result.errors)} more problems")


@export_app.command("profiles")
def export_profiles(
    format: Annotated[
        exports.ExportFormat, typer.Option("--format", "-f", help="csv or jsonl.")
    ] = exports.ExportFormat.CSV,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write. [default: stdout]")
    ] = None,
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Write every canonical profile (identities, traits, computed traits) as CSV or JSONL."""
    settings = get_settings()

    async def work(out: IO[str] | None) -> None:
        async with ready_database(settings) as database:
            async with database.read_session() as session:
                found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            pieces = exports.stream_profiles(database, workspace_id=found.id, format=format)
            async for piece in pieces:
                if out is None:
                    typer.echo(piece, nl=False)
                else:
                    await asyncio.to_thread(out.write, piece)

    if output is None:
        run_work(lambda: work(None))
        return
    with output.open("w", encoding="utf-8", newline="") as out:
        run_work(lambda: work(out))
