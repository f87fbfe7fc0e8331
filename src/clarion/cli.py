"""The `clarion` command line: serve, migrate, workspaces and keys, jobs, segments, imports
and exports, messaging channels and templates, campaigns."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Annotated, Literal, TypeVar

import typer
import uvicorn
import uvloop
import yaml
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.app import SchemaBehind, create_app, prepare_database
from clarion.campaigns import lifecycle as campaign_lifecycle
from clarion.campaigns import results as campaign_results
from clarion.campaigns import service as campaigns
from clarion.campaigns.models import Campaign
from clarion.campaigns.schemas import CampaignRead, SendRequest
from clarion.core import migrations
from clarion.core.clock import SystemClock
from clarion.core.crypto import Vault
from clarion.core.database import Database
from clarion.core.errors import ClarionError, FieldError, InvalidInput, NotFound
from clarion.core.jobs import service as jobs
from clarion.core.jobs.models import Job
from clarion.core.jobs.service import JobState
from clarion.core.jobs.worker import Worker
from clarion.core.settings import Settings, get_settings
from clarion.demo import behaviour as demo_behaviour
from clarion.demo import load as demo_load
from clarion.ingest import orders
from clarion.journeys import alerts as journey_alerts
from clarion.journeys import service as journeys
from clarion.journeys.schemas import JourneyCreate
from clarion.messaging import channel_config
from clarion.messaging import templates as message_templates
from clarion.messaging.consent import service as consent_service
from clarion.messaging.consent import suppressions as consent_suppressions
from clarion.messaging.schemas import (
    ChannelRead,
    TemplateCreate,
    TemplateRead,
    UnprocessableInput,
    field_errors,
)
from clarion.pipeline import Pipeline
from clarion.profiles import exports, imports
from clarion.profiles import queries as profile_queries
from clarion.segments import recompute
from clarion.segments import service as segments
from clarion.segments.catalog import Catalog
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
channels_app = typer.Typer(help="List and show messaging channels.", no_args_is_help=True)
app.add_typer(channels_app, name="channels")
templates_app = typer.Typer(
    help="List, show, validate and apply message templates.", no_args_is_help=True
)
app.add_typer(templates_app, name="templates")
campaigns_app = typer.Typer(
    help="List, show, send, pause, resume and cancel campaigns.", no_args_is_help=True
)
app.add_typer(campaigns_app, name="campaigns")
journeys_app = typer.Typer(
    help="Journeys as code: list, apply a JSON file (and publish), export.", no_args_is_help=True
)
app.add_typer(journeys_app, name="journeys")
suppressions_app = typer.Typer(
    help="List, add and remove suppressed addresses.", no_args_is_help=True
)
app.add_typer(suppressions_app, name="suppressions")
consent_app = typer.Typer(help="Show and set a profile's consent.", no_args_is_help=True)
app.add_typer(consent_app, name="consent")
log = logging.getLogger("clarion")

T = TypeVar("T")
WorkspaceOption = Annotated[
    str, typer.Option("--workspace", "-w", help="Slug of the workspace to act in.")
]


def _run(work: Callable[[], Awaitable[T]]) -> T:
    """Run async work (on uvloop); Clarion errors end the command with their message and
    exit code 1."""
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(work())  # type: ignore[arg-type]
    except (ClarionError, SchemaBehind) as exc:
        typer.echo(f"error: {exc}", err=True)
        for problem in getattr(exc, "errors", []):
            typer.echo(f"  {problem.field}: {problem.message}", err=True)
        raise typer.Exit(1) from exc


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Alembic narrates every connection at INFO; its migrations are logged by Clarion itself.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.root.level))


@asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[Database]:
    database = Database(
        settings.database_url,
        pool_size=settings.database_pool_size,
        sqlite_synchronous=settings.sqlite_synchronous,
    )
    try:
        yield database
    finally:
        await database.dispose()


@asynccontextmanager
async def _ready_database(settings: Settings) -> AsyncIterator[Database]:
    """The database, migrated if empty and holding the default workspace."""
    async with _database(settings) as database:
        await prepare_database(database, settings, SystemClock())
        yield database


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Also run a worker for durable jobs.")
    ] = True,
) -> None:
    """Serve the API and run durable jobs (migrating an empty database first)."""
    settings = get_settings()
    _configure_logging(settings)
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
    _configure_logging(settings)

    def kinds(listed: str) -> list[str]:
        return [name.strip() for name in listed.split(",") if name.strip()]

    async def work() -> None:
        async with _ready_database(settings) as database:
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
            log.info("worker %s running", worker.owner)
            try:
                with contextlib.suppress(asyncio.CancelledError):
                    await worker.run()  # hands its running jobs back when stopped
            finally:
                await pipeline.close()
            log.info("worker %s stopped", worker.owner)

    _run(work)


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
    _configure_logging(settings)

    async def work() -> str | None:
        async with _database(settings) as database:
            await migrations.upgrade(database)
            await prepare_database(database, settings, SystemClock())
            return await migrations.current_revision(database)

    typer.echo(f"database at revision {_run(work)}")


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
        async with _ready_database(settings) as database:
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

    typer.echo(_run(work))


@workspaces_app.command("create")
def create_workspace(
    slug: Annotated[str, typer.Argument(help="Short unique name, used by --workspace.")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
) -> None:
    """Create a workspace."""
    settings = get_settings()

    async def work() -> int:
        async with _ready_database(settings) as database, database.write_session() as session:
            workspace = await workspaces.create_workspace(
                session, slug=slug, name=name or slug, now=SystemClock().now()
            )
            await session.commit()
            return workspace.id

    typer.echo(f"workspace {slug} created (id {_run(work)})")


@workspaces_app.command("list")
def list_workspaces() -> None:
    """List workspaces."""
    settings = get_settings()

    async def work() -> list[str]:
        async with _ready_database(settings) as database, database.read_session() as session:
            found = await workspaces.list_workspaces(session)
            return [f"{w.id}\t{w.slug}\t{w.name}" for w in found]

    for line in _run(work):
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
        async with _ready_database(settings) as database, database.write_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
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

    key_id, secret = _run(work)
    typer.echo(
        f"key {key_id} ({scope.value}) created; store the secret now, it is not shown again:"
    )
    typer.echo(secret)


@keys_app.command("list")
def list_keys(workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG) -> None:
    """List a workspace's keys (never their secrets)."""
    settings = get_settings()

    async def work() -> list[str]:
        async with _ready_database(settings) as database, database.read_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            rows = []
            for key in await workspaces.list_keys(session, workspace_id=found.id):
                state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
                rows.append(f"{key.id}\t{key.scope}\t{key.key_prefix}…\t{state}\t{key.name}")
            return rows

    for line in _run(work):
        typer.echo(line)


@keys_app.command("revoke")
def revoke_key(
    key_id: Annotated[uuid.UUID, typer.Argument(help="Id of the key, from `clarion keys list`.")],
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Revoke a key: it stops working at once."""
    settings = get_settings()

    async def work() -> None:
        async with _ready_database(settings) as database, database.write_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            await workspaces.revoke_key(
                session, workspace_id=found.id, key_id=key_id, now=SystemClock().now()
            )
            await session.commit()

    _run(work)
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
        async with _ready_database(settings) as database, database.read_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            page, _ = await jobs.list_jobs(
                session, workspace_id=found.id, state=state, kind=kind, limit=limit
            )
            return [_job_line(job) for job in page]

    for line in _run(work):
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
        async with _ready_database(settings) as database, database.read_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            page, _ = await segments.list_segments(
                session, workspace_id=found.id, limit=10_000, cursor=None
            )
            return [
                f"{s.id}\t{s.name}\t{s.member_count} members\t"
                f"{f'{s.recomputed_at:%Y-%m-%d %H:%M:%S}' if s.recomputed_at else 'never computed'}"
                for s in page
            ]

    for line in _run(work):
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
        async with _ready_database(settings) as database, database.write_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
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

    for result in _run(work):
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
        async with _ready_database(settings) as database, database.write_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            await jobs.retry_job(
                session, workspace_id=found.id, job_id=job_id, now=SystemClock().now()
            )
            await session.commit()

    _run(work)
    typer.echo(f"job {job_id} will run again")


@jobs_app.command("discard")
def discard_job(
    job_id: Annotated[int, typer.Argument(help="Id of the dead (or waiting) job.")],
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Discard a dead job for good."""
    settings = get_settings()

    async def work() -> None:
        async with _ready_database(settings) as database, database.write_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            await jobs.discard_job(session, workspace_id=found.id, job_id=job_id)
            await session.commit()

    _run(work)
    typer.echo(f"job {job_id} discarded")


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
        async with _ready_database(settings) as database:
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
        result = _run(lambda: work(handle))
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
        async with _ready_database(settings) as database:
            return await orders.import_orders(
                database, text, workspace_slug=workspace, clock=SystemClock()
            )

    with orders.open_orders(file) as text:
        result = _run(lambda: work(text))
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
        async with _ready_database(settings) as database:
            async with database.read_session() as session:
                found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            pieces = exports.stream_profiles(database, workspace_id=found.id, format=format)
            async for piece in pieces:
                if out is None:
                    typer.echo(piece, nl=False)
                else:
                    await asyncio.to_thread(out.write, piece)

    if output is None:
        _run(lambda: work(None))
        return
    with output.open("w", encoding="utf-8", newline="") as out:
        _run(lambda: work(out))


@channels_app.command("list")
def list_channels(workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG) -> None:
    """List a workspace's channels: id, kind, name, whether it is its kind's default."""
    settings = get_settings()

    async def work() -> list[str]:
        async with _ready_database(settings) as database, database.read_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            page, _ = await channel_config.list_channels(
                session, workspace_id=found.id, limit=10_000, cursor=None
            )
            return [
                f"{c.id}\t{c.kind}\t{c.name}\t{'default' if c.is_default else '-'}" for c in page
            ]

    for line in _run(work):
        typer.echo(line)


@channels_app.command("show")
def show_channel(
    channel_id: Annotated[int, typer.Argument(help="Id of the channel.")],
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Print a channel as JSON, as the API shows it: secrets only by fingerprint."""
    settings = get_settings()

    async def work() -> str:
        async with _ready_database(settings) as database, database.read_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            row = await channel_config.get_channel_or_raise(
                session, workspace_id=found.id, channel_id=channel_id
            )
            vault = Vault(settings.resolved_secret_key())
            fingerprints = channel_config.secret_fingerprints(row, vault)
            return ChannelRead.from_row(row, fingerprints).model_dump_json(indent=2)

    typer.echo(_run(work))


@templates_app.command("list")
def list_templates(
    archived: Annotated[bool, typer.Option("--archived", help="Archived ones too.")] = False,
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """List a workspace's templates: id, channel, name, current version, category."""
    settings = get_settings()

    async def work() -> list[str]:
        async with _ready_database(settings) as database, database.read_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            page, _ = await message_templates.list_templates(
                session, workspace_id=found.id, include_archived=archived, limit=10_000, cursor=None
            )
            return [
                f"{t.id}\t{t.channel}\t{t.name}\tv{t.current_version}\t{t.category}"
                + ("\tarchived" if t.archived_at else "")
                for t in page
            ]

    for line in _run(work):
        typer.echo(line)


@templates_app.command("show")
def show_template(
    template_id: Annotated[int, typer.Argument(help="Id of the template.")],
    version: Annotated[int | None, typer.Option(min=1, help="[default: current]")] = None,
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Print a template and the content of one of its versions as JSON."""
    settings = get_settings()

    async def work() -> str:
        async with _ready_database(settings) as database, database.read_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            template = await message_templates.get_template_or_raise(
                session, workspace_id=found.id, template_id=template_id
            )
            chosen = await message_templates.get_version(
                session,
                workspace_id=found.id,
                template_id=template_id,
                version=version or template.current_version,
            )
            shown = TemplateRead.model_validate(template).model_dump(mode="json")
            shown |= {"version": chosen.version, "content": chosen.content}
            return json.dumps(shown, indent=2, ensure_ascii=False)

    typer.echo(_run(work))


def _template_file(path: Path) -> TemplateCreate:
    """The template a JSON file describes (name, channel, category, topic_id, content), its
    content checked; exits 1 listing every problem."""
    try:
        template = TemplateCreate.model_validate_json(path.read_bytes())
        message_templates.check_content(template.channel, template.content)
    except ValidationError as exc:
        problems = field_errors(exc)
    except UnprocessableInput as exc:
        problems = exc.errors
    else:
        return template
    typer.echo(f"{path}: not a valid template", err=True)
    for problem in problems:
        typer.echo(f"{problem.field}: {problem.message}", err=True)
    raise typer.Exit(1)


@templates_app.command("validate")
def validate_template(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Template JSON.")],
) -> None:
    """Check a template file (name, channel, category, topic_id, content) without saving it."""
    template = _template_file(file)
    typer.echo(f"{file}: a valid {template.channel} template")


@templates_app.command("apply")
def apply_template(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Template JSON.")],
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Create the file's template, or update the one of the same name (new content makes a
    new version)."""
    settings = get_settings()
    template = _template_file(file)

    async def work() -> str:
        now = SystemClock().now()
        async with _ready_database(settings) as database, database.write_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            existing = await message_templates.get_template_by_name(
                session, workspace_id=found.id, name=template.name
            )
            if existing is None:
                created, version = await message_templates.create_template(
                    session, workspace_id=found.id, name=template.name, channel=template.channel,
                    category=template.category, topic_id=template.topic_id,
                    content=template.content, now=now,
                )  # fmt: skip
                outcome = f"template {created.id} created (version {version.version})"
            elif existing.channel != template.channel:
                raise UnprocessableInput(
                    f"Template {template.name!r} is a {existing.channel} template.",
                    errors=[FieldError("channel", "cannot change")],
                )
            else:
                before = existing.current_version
                updated, version = await message_templates.update_template(
                    session, workspace_id=found.id, template_id=existing.id, now=now,
                    category=template.category, topic_id=template.topic_id,
                    content=template.content,
                )  # fmt: skip
                changed = "updated" if version.version != before else "unchanged"
                outcome = f"template {updated.id} {changed} (version {version.version})"
            await session.commit()
            return outcome

    typer.echo(_run(work))


async def _campaign_change(
    workspace: str, change: Callable[[AsyncSession, int], Awaitable[Campaign]]
) -> str:
    """Apply `change` to a campaign of the workspace and commit; the campaign's new state."""
    async with _ready_database(get_settings()) as database, database.write_session() as session:
        found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
        campaign = await change(session, found.id)
        await session.commit()
        return f"campaign {campaign.id} {campaign.state}"


@campaigns_app.command("list")
def list_campaigns(
    state: Annotated[str | None, typer.Option(help="Only campaigns in this state.")] = None,
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """List a workspace's campaigns, newest first: id, state, name, audience, when."""
    settings = get_settings()

    async def work() -> list[str]:
        async with _ready_database(settings) as database, database.read_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            page, _ = await campaigns.list_campaigns(
                session, workspace_id=found.id, state=state, limit=10_000, cursor=None
            )
            return [
                f"{c.id}\t{c.state}\t{c.name}\t{c.audience_size} recipients\t"
                + (f"{c.send_mode} {c.launch_at:%Y-%m-%d %H:%M:%S}" if c.launch_at else "-")
                for c in page
            ]

    for line in _run(work):
        typer.echo(line)


@campaigns_app.command("show")
def show_campaign(
    campaign_id: Annotated[int, typer.Argument(help="Id of the campaign.")],
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Print a campaign and its results as JSON, as the API shows them."""
    settings = get_settings()

    async def work() -> str:
        async with _ready_database(settings) as database, database.read_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            campaign = await campaigns.get_campaign_or_raise(
                session, workspace_id=found.id, campaign_id=campaign_id
            )
            shown = {
                "campaign": CampaignRead.from_row(campaign).model_dump(mode="json"),
                "results": (
                    await campaign_results.campaign_results(session, campaign=campaign)
                ).model_dump(mode="json"),
            }
            return json.dumps(shown, indent=2, ensure_ascii=False)

    typer.echo(_run(work))


@campaigns_app.command("send")
def send_campaign(
    campaign_id: Annotated[int, typer.Argument(help="Id of the draft or scheduled campaign.")],
    at: Annotated[
        str | None, typer.Option(help="Send at this instant (ISO 8601 with its offset).")
    ] = None,
    local_date: Annotated[
        str | None, typer.Option(help="Send on this day (YYYY-MM-DD) in local time.")
    ] = None,
    local_time: Annotated[
        str | None, typer.Option(help="...at this wall time (HH:MM) in each recipient's zone.")
    ] = None,
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Send a campaign now, at a time (--at), or in local time (--local-date, --local-time)."""
    when = "local" if local_date or local_time else "at" if at else "now"
    raw = {"when": when, "at": at, "local_date": local_date, "local_time": local_time}
    try:
        request = SendRequest.model_validate({k: v for k, v in raw.items() if v is not None})
    except ValidationError as exc:
        for problem in field_errors(exc):
            typer.echo(f"{problem.field}: {problem.message}", err=True)
        raise typer.Exit(1) from exc

    async def change(session: AsyncSession, workspace_id: int) -> Campaign:
        return await campaign_lifecycle.send_campaign(
            session, workspace_id=workspace_id, campaign_id=campaign_id, request=request,
            now=SystemClock().now(),
        )  # fmt: skip

    typer.echo(_run(lambda: _campaign_change(workspace, change)))


def _lifecycle_command(name: str, verb: str) -> None:
    async def act(workspace: str, campaign_id: int) -> str:
        action = getattr(campaign_lifecycle, f"{name}_campaign")

        async def change(session: AsyncSession, workspace_id: int) -> Campaign:
            campaign: Campaign = await action(
                session, workspace_id=workspace_id, campaign_id=campaign_id,
                now=SystemClock().now(),
            )  # fmt: skip
            return campaign

        return await _campaign_change(workspace, change)

    def command(
        campaign_id: Annotated[int, typer.Argument(help="Id of the campaign.")],
        workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
    ) -> None:
        typer.echo(_run(lambda: act(workspace, campaign_id)))

    command.__doc__ = verb
    campaigns_app.command(name)(command)


_lifecycle_command("pause", "Stop asking for a sending campaign's messages.")
_lifecycle_command("resume", "Go on with a paused campaign (pending recipients go later).")
_lifecycle_command("cancel", "Cancel a campaign: skip who is pending, refuse what is queued.")


@suppressions_app.command("list")
def list_suppressions(
    channel: Annotated[str | None, typer.Option(help="Only this channel's.")] = None,
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """List suppressed addresses, newest first: id, channel, address, reason, since."""
    settings = get_settings()

    async def work() -> list[str]:
        async with _ready_database(settings) as database, database.read_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            items, _ = await consent_suppressions.list_suppressions(
                session, workspace_id=found.id, channel=channel, limit=100_000, cursor=None
            )
            return [
                f"{s.id}\t{s.channel}\t{s.address}\t{s.reason}\t{s.created_at:%Y-%m-%d %H:%M}"
                for s in items
            ]

    for line in _run(work):
        typer.echo(line)


@suppressions_app.command("add")
def add_suppression(
    channel: Annotated[str, typer.Argument(help="email, sms, push, inbox or webhook.")],
    address: Annotated[str, typer.Argument(help="The address nothing may be sent to.")],
    detail: Annotated[str, typer.Option(help="Why, for the record.")] = "",
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Suppress an address (reason: manual); nothing is sent to it, transactional included."""
    settings = get_settings()

    async def work() -> bool:
        async with _ready_database(settings) as database, database.write_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            added = await consent_suppressions.suppress(
                session,
                workspace_id=found.id,
                channel=channel,
                address=address,
                reason="manual",
                detail=detail,
                now=SystemClock().now(),
            )
            await session.commit()
            return added

    typer.echo("suppressed" if _run(work) else "already suppressed")


@suppressions_app.command("remove")
def remove_suppression(
    channel: Annotated[str, typer.Argument(help="The address's channel.")],
    address: Annotated[str, typer.Argument(help="The address to send to again.")],
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Take an address off the suppression list."""
    settings = get_settings()

    async def work() -> bool:
        async with _ready_database(settings) as database, database.write_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            removed = await consent_suppressions.unsuppress(
                session, workspace_id=found.id, channel=channel, address=address
            )
            await session.commit()
            return removed

    typer.echo("removed" if _run(work) else "not suppressed")


async def _profile_of_user(session: AsyncSession, workspace_id: int, user_id: str) -> uuid.UUID:
    profile = await profile_queries.get_by_identity(
        session, workspace_id=workspace_id, kind="user_id", value=user_id
    )
    if profile is None:
        raise InvalidInput(
            f"No profile has user id {user_id!r}.", errors=[FieldError("user_id", "unknown")]
        )
    return profile.id


@consent_app.command("show")
def show_consent(
    user_id: Annotated[str, typer.Argument(help="The profile's user id.")],
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """A profile's say per scope: channel, topic, state, source, when."""
    settings = get_settings()

    async def work() -> list[str]:
        async with _ready_database(settings) as database, database.read_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            profile_id = await _profile_of_user(session, found.id, user_id)
            says = await consent_service.consents_of(
                session, workspace_id=found.id, profile_id=profile_id
            )
            return [
                f"{c.channel}\t{c.topic_id or '-'}\t{c.state}\t{c.source}\t"
                f"{c.updated_at:%Y-%m-%d %H:%M}"
                for c in says
            ]

    for line in _run(work):
        typer.echo(line)


@consent_app.command("set")
def set_consent(
    user_id: Annotated[str, typer.Argument(help="The profile's user id.")],
    state: Annotated[str, typer.Argument(help="opted_in or opted_out.")],
    channel: Annotated[str, typer.Option(help="The channel.")] = "email",
    topic: Annotated[int | None, typer.Option(help="A topic id (else the whole channel).")] = None,
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Set a profile's say on a channel's marketing or on one topic (source: api)."""
    settings = get_settings()

    async def work() -> str:
        async with _ready_database(settings) as database, database.write_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            profile_id = await _profile_of_user(session, found.id, user_id)
            say = await consent_service.set_consent(
                session,
                workspace_id=found.id,
                profile_id=profile_id,
                channel=channel,
                topic_id=topic,
                state=state,
                source="api",
                now=SystemClock().now(),
            )
            await session.commit()
            return f"{say.channel}\t{say.topic_id or '-'}\t{say.state}"

    typer.echo(_run(work))


# Journeys as code


@journeys_app.command("list")
def list_journeys(
    state: Annotated[str | None, typer.Option(help="Only journeys in this state.")] = None,
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """List a workspace's journeys: id, state, live version, name."""
    settings = get_settings()

    async def work() -> list[str]:
        async with _ready_database(settings) as database, database.read_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            page, _ = await journeys.list_journeys(
                session, workspace_id=found.id, state=state, limit=10_000, cursor=None
            )
            return [f"{j.id}\t{j.state}\tv{j.live_version or '-'}\t{j.name}" for j in page]

    for line in _run(work):
        typer.echo(line)


@journeys_app.command("apply")
def apply_journey(
    file: Annotated[
        Path, typer.Argument(help="JSON or YAML (.yaml, .yml) file: name, description, graph.")
    ],
    publish: Annotated[bool, typer.Option(help="Also publish it as the next version.")] = False,
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Create or update the journey of the file's name from the file (as `export` writes
    it), and publish it with --publish; every fault of an unpublishable graph is listed."""
    try:
        raw = file.read_bytes()
        if file.suffix.lower() in (".yaml", ".yml"):
            body = JourneyCreate.model_validate(yaml.safe_load(raw))
        else:
            body = JourneyCreate.model_validate_json(raw)
    except OSError as exc:
        typer.echo(f"error: cannot read {file}: {exc.strerror}", err=True)
        raise typer.Exit(1) from exc
    except yaml.YAMLError as exc:
        typer.echo(f"error: {file} is not YAML: {exc}", err=True)
        raise typer.Exit(1) from exc
    except ValidationError as exc:
        for problem in field_errors(exc):
            typer.echo(f"{problem.field}: {problem.message}", err=True)
        raise typer.Exit(1) from exc

    async def work() -> str:
        now = SystemClock().now()
        async with _ready_database(get_settings()) as database, database.write_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            journey = await journeys.get_journey_by_name(
                session, workspace_id=found.id, name=body.name
            )
            if journey is None:
                journey = await journeys.create_journey(
                    session, workspace_id=found.id, name=body.name,
                    description=body.description, graph=body.graph, now=now,
                )  # fmt: skip
                done = f"journey {journey.id} created"
            else:
                journey = await journeys.update_journey(
                    session, workspace_id=found.id, journey_id=journey.id,
                    description=body.description, graph=body.graph, now=now,
                )  # fmt: skip
                done = f"journey {journey.id} updated"
            if publish:
                version = await journeys.publish_journey(
                    session, workspace_id=found.id, journey_id=journey.id, now=now
                )
                done += f", version {version.number} published"
            await session.commit()
            return done

    typer.echo(_run(work))


@journeys_app.command("export")
def export_journey(
    journey_id: Annotated[int, typer.Argument(help="Id of the journey.")],
    version: Annotated[
        int | None, typer.Option(help="This published version instead of the draft.")
    ] = None,
    output: Annotated[
        Literal["json", "yaml"], typer.Option("--format", help="JSON or YAML.")
    ] = "json",
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Print the journey as JSON or YAML (name, description, graph) for `apply`: its
    draft, or a published version."""
    settings = get_settings()

    async def work() -> str:
        async with _ready_database(settings) as database, database.read_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            journey = await journeys.get_journey_or_raise(
                session, workspace_id=found.id, journey_id=journey_id
            )
            graph = journey.draft
            if version is not None:
                published = {
                    v.number: v
                    for v in await journeys.list_versions(
                        session, workspace_id=found.id, journey_id=journey_id
                    )
                }
                if version not in published:
                    raise NotFound(f"Journey {journey_id} has no version {version}.")
                graph = published[version].graph
            shown = {"name": journey.name, "description": journey.description, "graph": graph}
            if output == "yaml":
                return yaml.safe_dump(shown, sort_keys=False, allow_unicode=True).rstrip()
            return json.dumps(shown, indent=2, ensure_ascii=False)

    typer.echo(_run(work))


def _run_command(name: str, skip: bool) -> None:
    def command(
        journey_id: Annotated[int, typer.Argument(help="Id of the journey.")],
        run_id: Annotated[int, typer.Argument(help="Id of the failed run.")],
        workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
    ) -> None:
        async def work() -> str:
            now = SystemClock().now()
            async with (
                _ready_database(get_settings()) as database,
                database.write_session() as session,
            ):
                found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
                run = await journeys.retry_or_skip_run(
                    session, workspace_id=found.id, journey_id=journey_id, run_id=run_id,
                    skip=skip, now=now,
                )  # fmt: skip
                await session.commit()
                return f"run {run.id} {run.state} at {run.node}"

        typer.echo(_run(work))

    command.__doc__ = (
        "Move a failed run past the action that failed."
        if skip
        else "Take a failed run up again at the action that failed."
    )
    journeys_app.command(name)(command)


_run_command("retry", skip=False)
_run_command("skip", skip=True)


@journeys_app.command("alerts")
def list_journey_alerts(
    state: Annotated[str | None, typer.Option(help="Only alerts in this state (open...).")] = None,
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """List the workspace's journey alerts, newest first: id, state, journey, kind, node,
    opened, figures."""
    settings = get_settings()

    async def work() -> list[str]:
        async with _ready_database(settings) as database, database.read_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            rows = await journey_alerts.list_alerts(
                session, workspace_id=found.id, state=state, limit=10_000
            )
            return [
                "\t".join(
                    (
                        str(alert.id),
                        alert.state,
                        f"{journey.id}:{journey.name}",
                        alert.kind,
                        alert.node or "-",
                        alert.opened_at.isoformat(),
                        json.dumps(alert.detail, sort_keys=True),
                    )
                )
                for alert, journey in rows
            ]

    for line in _run(work):
        typer.echo(line)


@journeys_app.command("runs")
def list_journey_runs(
    journey_id: Annotated[int, typer.Argument(help="Id of the journey.")],
    state: Annotated[str | None, typer.Option(help="Only runs in this state (failed...).")] = None,
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """List a journey's runs, newest first: id, state, node, entry key, profile, reason."""
    settings = get_settings()

    async def work() -> list[str]:
        async with _ready_database(settings) as database, database.read_session() as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
            page, _ = await journeys.list_runs(
                session, workspace_id=found.id, journey_id=journey_id, state=state,
                limit=10_000, cursor=None,
            )  # fmt: skip
            return [
                "\t".join(
                    (
                        str(r.id),
                        r.state,
                        r.node,
                        r.entry_key or "-",
                        str(r.profile_id),
                        r.reason or "",
                    )
                )
                for r in page
            ]

    for line in _run(work):
        typer.echo(line)
