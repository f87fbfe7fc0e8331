"""`clarion campaigns`: list, show, send, pause, resume and cancel."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated

import typer
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.campaigns import lifecycle as campaign_lifecycle
from clarion.campaigns import results as campaign_results
from clarion.campaigns import service as campaigns
from clarion.campaigns.models import Campaign
from clarion.campaigns.schemas import CampaignRead, SendRequest, State
from clarion.cli.common import WorkspaceOption, ready_database, run_work, workspace_session
from clarion.core.clock import SystemClock
from clarion.core.database import MAX_ROW_ID
from clarion.core.settings import get_settings
from clarion.messaging.schemas import field_errors
from clarion.workspaces import service as workspaces

campaigns_app = typer.Typer(
    help="List, show, send, pause, resume and cancel campaigns.", no_args_is_help=True
)


async def _campaign_change(
    workspace: str, change: Callable[[AsyncSession, int], Awaitable[Campaign]]
) -> str:
    """Apply `change` to a campaign of the workspace and commit; the campaign's new state."""
    async with ready_database(get_settings()) as database, database.write_session() as session:
        found = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace)
        campaign = await change(session, found.id)
        await session.commit()
        return f"campaign {campaign.id} {campaign.state}"


@campaigns_app.command("list")
def list_campaigns(
    state: Annotated[State | None, typer.Option(help="Only campaigns in this state.")] = None,
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """List a workspace's campaigns, newest first: id, state, name, audience, when."""
    settings = get_settings()

    async def work() -> list[str]:
        async with workspace_session(settings, workspace) as (session, found):
            page, _ = await campaigns.list_campaigns(
                session, workspace_id=found.id, state=state, limit=10_000, cursor=None
            )
            return [
                f"{c.id}\t{c.state}\t{c.name}\t{c.audience_size} recipients\t"
                + (f"{c.send_mode} {c.launch_at:%Y-%m-%d %H:%M:%S}" if c.launch_at else "-")
                for c in page
            ]

    for line in run_work(work):
        typer.echo(line)


@campaigns_app.command("show")
def show_campaign(
    campaign_id: Annotated[int, typer.Argument(min=1, max=MAX_ROW_ID, help="Id of the campaign.")],
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Print a campaign and its results as JSON, as the API shows them."""
    settings = get_settings()

    async def work() -> str:
        async with workspace_session(settings, workspace) as (session, found):
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

    typer.echo(run_work(work))


@campaigns_app.command("send")
def send_campaign(
    campaign_id: Annotated[
        int,
        typer.Argument(min=1, max=MAX_ROW_ID, help="Id of the draft or scheduled campaign."),
    ],
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
    if at and (local_date or local_time):
        raise typer.BadParameter(
            "send at a time or in local time, not both: drop --at, or --local-date and"
            " --local-time",
            param_hint="'--at'",
        )
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

    typer.echo(run_work(lambda: _campaign_change(workspace, change)))


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
        campaign_id: Annotated[
            int, typer.Argument(min=1, max=MAX_ROW_ID, help="Id of the campaign.")
        ],
        workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
    ) -> None:
        typer.echo(run_work(lambda: act(workspace, campaign_id)))

    command.__doc__ = verb
    campaigns_app.command(name)(command)


_lifecycle_command("pause", "Stop asking for a sending campaign's messages.")
_lifecycle_command("resume", "Go on with a paused campaign (pending recipients go later).")
_lifecycle_command("cancel", "Cancel a campaign: skip who is pending, refuse what is queued.")
