"""What the `clarion` commands share: running async work, the database, logging, the
workspace option."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, TypeVar

import typer
import uvloop
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.clock import SystemClock
from clarion.core.database import Database
from clarion.core.errors import ClarionError
from clarion.core.settings import Settings
from clarion.startup import SchemaBehind, prepare_database
from clarion.workspaces import service as workspaces
from clarion.workspaces.models import Workspace

log = logging.getLogger("clarion")

T = TypeVar("T")
WorkspaceOption = Annotated[
    str, typer.Option("--workspace", "-w", help="Slug of the workspace to act in.")
]


def run_work(work: Callable[[], Awaitable[T]]) -> T:
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


def configure_logging(settings: Settings) -> None:
    """Log at the configured level, with times and logger names."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Alembic narrates every connection at INFO; its migrations are logged by Clarion itself.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.root.level))


@asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[Database]:
    """The configured database as it is, disposed of afterwards."""
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
async def ready_database(settings: Settings) -> AsyncIterator[Database]:
    """The database, migrated if empty and holding the default workspace."""
    async with open_database(settings) as database:
        await prepare_database(database, settings, SystemClock())
        yield database


@asynccontextmanager
async def workspace_session(
    settings: Settings, slug: str, *, write: bool = False
) -> AsyncIterator[tuple[AsyncSession, Workspace]]:
    """A session on the ready database (a write session when `write`) and the workspace
    named by `slug`; an unknown slug ends the command with its error."""
    async with ready_database(settings) as database:
        opened = database.write_session() if write else database.read_session()
        async with opened as session:
            found = await workspaces.get_workspace_by_slug_or_raise(session, slug=slug)
            yield session, found
