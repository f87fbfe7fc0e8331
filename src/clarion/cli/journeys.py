"""`clarion journeys`: journeys as code, their runs and alerts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer
import yaml
from pydantic import ValidationError

from clarion.cli.common import WorkspaceOption, ready_database, run_work, workspace_session
from clarion.core.clock import SystemClock
from clarion.core.errors import NotFound
from clarion.core.settings import get_settings
from clarion.journeys import alerts as journey_alerts
from clarion.journeys import monitoring
from clarion.journeys import service as journeys
from clarion.journeys.schemas import JourneyCreate
from clarion.messaging.schemas import field_errors
from clarion.workspaces import service as workspaces

journeys_app = typer.Typer(
    help="Journeys as code (list, apply a JSON or YAML file, export), runs and alerts.",
    no_args_is_help=True,
)


@journeys_app.command("list")
def list_journeys(
    state: Annotated[str | None, typer.Option(help="Only journeys in this state.")] = None,
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """List a workspace's journeys: id, state, live version, name."""
    settings = get_settings()

    async def work() -> list[str]:
        async with workspace_session(settings, workspace) as (session, found):
            page, _ = await journeys.list_journeys(
                session, workspace_id=found.id, state=state, limit=10_000, cursor=None
            )
            return [f"{j.id}\t{j.state}\tv{j.live_version or '-'}\t{j.name}" for j in page]

    for line in run_work(work):
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
        async with ready_database(get_settings()) as database, database.write_session() as session:
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

    typer.echo(run_work(work))


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
        async with workspace_session(settings, workspace) as (session, found):
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

    typer.echo(run_work(work))


def _run_command(name: str, skip: bool) -> None:
    def command(
        journey_id: Annotated[int, typer.Argument(help="Id of the journey.")],
        run_id: Annotated[int, typer.Argument(help="Id of the failed run.")],
        workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
    ) -> None:
        async def work() -> str:
            now = SystemClock().now()
            async with (
                ready_database(get_settings()) as database,
                database.write_session() as session,
            ):
                found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
                run = await monitoring.retry_or_skip_run(
                    session, workspace_id=found.id, journey_id=journey_id, run_id=run_id,
                    skip=skip, now=now,
                )  # fmt: skip
                await session.commit()
                return f"run {run.id} {run.state} at {run.node}"

        typer.echo(run_work(work))

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
        async with workspace_session(settings, workspace) as (session, found):
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

    for line in run_work(work):
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
        async with workspace_session(settings, workspace) as (session, found):
            page, _ = await monitoring.list_runs(
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

    for line in run_work(work):
        typer.echo(line)
