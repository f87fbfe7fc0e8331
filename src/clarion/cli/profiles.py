"""`clarion profiles`: erasing a person from the command line, as `DELETE
/api/v1/profiles/{id}` does."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer

from clarion.cli.common import WorkspaceOption, run_work, workspace_session
from clarion.core.clock import SystemClock
from clarion.core.settings import get_settings
from clarion.erasers import PROFILE_ERASERS
from clarion.messaging.consent import suppressions
from clarion.profiles import erasure
from clarion.workspaces import service as workspaces

profiles_app = typer.Typer(help="Erase profiles (GDPR, CCPA).", no_args_is_help=True)


@profiles_app.command("erase")
def erase_profile(
    profile_id: Annotated[
        uuid.UUID, typer.Argument(help="The profile (a merged-away id: the one it joined).")
    ],
    suppress: Annotated[
        bool,
        typer.Option(
            "--suppress",
            help="Also put the person's emails and phones on the suppression list first.",
        ),
    ] = False,
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Erase a person and everything known about them, in one transaction; print what went.
    An unknown profile exits with 1."""
    settings = get_settings()

    async def work() -> erasure.Erasure:
        async with workspace_session(settings, workspace, write=True) as (session, found):
            keep_out = erasure.KeepOut(suppressions.suppress, SystemClock().now())
            erased = await erasure.delete_profile(
                session,
                workspace_id=found.id,
                profile_id=profile_id,
                erasers=PROFILE_ERASERS,
                keep_out=keep_out if suppress else None,
            )
            await session.commit()
            return erased

    erased = run_work(work)
    typer.echo(f"erased profile {erased.profile_id} with {len(erased.merged_ids)} merged into it")
    for kind, count in sorted(erased.removed.items()):
        typer.echo(f"{kind}\t{count}")
    if suppress:
        typer.echo(f"addresses suppressed\t{erased.suppressed}")
