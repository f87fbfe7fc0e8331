"""`clarion channels|templates|suppressions|consent`: messaging from the command line."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.cli.common import WorkspaceOption, run_work, workspace_session
from clarion.core.clock import SystemClock
from clarion.core.crypto import Vault
from clarion.core.errors import FieldError, InvalidInput
from clarion.core.settings import get_settings
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
from clarion.profiles import queries as profile_queries
from clarion.workspaces import service as workspaces

channels_app = typer.Typer(help="List and show messaging channels.", no_args_is_help=True)
templates_app = typer.Typer(
    help="List, show, validate and apply message templates.", no_args_is_help=True
)
suppressions_app = typer.Typer(
    help="List, add and remove suppressed addresses.", no_args_is_help=True
)
consent_app = typer.Typer(help="Show and set a profile's consent.", no_args_is_help=True)


@channels_app.command("list")
def list_channels(workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG) -> None:
    """List a workspace's channels: id, kind, name, whether it is its kind's default."""
    settings = get_settings()

    async def work() -> list[str]:
        async with workspace_session(settings, workspace) as (session, found):
            page, _ = await channel_config.list_channels(
                session, workspace_id=found.id, limit=10_000, cursor=None
            )
            return [
                f"{c.id}\t{c.kind}\t{c.name}\t{'default' if c.is_default else '-'}" for c in page
            ]

    for line in run_work(work):
        typer.echo(line)


@channels_app.command("show")
def show_channel(
    channel_id: Annotated[int, typer.Argument(help="Id of the channel.")],
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Print a channel as JSON, as the API shows it: secrets only by fingerprint."""
    settings = get_settings()

    async def work() -> str:
        async with workspace_session(settings, workspace) as (session, found):
            row = await channel_config.get_channel_or_raise(
                session, workspace_id=found.id, channel_id=channel_id
            )
            vault = Vault(settings.secret_keys())
            fingerprints = channel_config.secret_fingerprints(row, vault)
            return ChannelRead.from_row(row, fingerprints).model_dump_json(indent=2)

    typer.echo(run_work(work))


@templates_app.command("list")
def list_templates(
    archived: Annotated[bool, typer.Option("--archived", help="Archived ones too.")] = False,
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """List a workspace's templates: id, channel, name, current version, category."""
    settings = get_settings()

    async def work() -> list[str]:
        async with workspace_session(settings, workspace) as (session, found):
            page, _ = await message_templates.list_templates(
                session, workspace_id=found.id, include_archived=archived, limit=10_000, cursor=None
            )
            return [
                f"{t.id}\t{t.channel}\t{t.name}\tv{t.current_version}\t{t.category}"
                + ("\tarchived" if t.archived_at else "")
                for t in page
            ]

    for line in run_work(work):
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
        async with workspace_session(settings, workspace) as (session, found):
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

    typer.echo(run_work(work))


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
        async with workspace_session(settings, workspace, write=True) as (session, found):
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

    typer.echo(run_work(work))


_REASONS = ", ".join(consent_suppressions.REASONS)


def _check_reason(reason: str | None) -> None:
    if reason is not None and reason not in consent_suppressions.REASONS:
        raise typer.BadParameter(f"{reason!r} is not one of {_REASONS}", param_hint="--reason")


@suppressions_app.command("list")
def list_suppressions(
    channel: Annotated[str | None, typer.Option(help="Only this channel's.")] = None,
    reason: Annotated[str | None, typer.Option(help=f"Only this reason's: {_REASONS}.")] = None,
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """List suppressed addresses, newest first: id, channel, address, reason, since."""
    _check_reason(reason)
    settings = get_settings()

    async def work() -> list[str]:
        async with workspace_session(settings, workspace) as (session, found):
            items, _ = await consent_suppressions.list_suppressions(
                session,
                workspace_id=found.id,
                channel=channel,
                reason=reason,
                limit=100_000,
                cursor=None,
            )
            return [
                f"{s.id}\t{s.channel}\t{s.address}\t{s.reason}\t{s.created_at:%Y-%m-%d %H:%M}"
                for s in items
            ]

    for line in run_work(work):
        typer.echo(line)


@suppressions_app.command("add")
def add_suppression(
    channel: Annotated[str, typer.Argument(help="email, sms, push, inbox or webhook.")],
    address: Annotated[str, typer.Argument(help="The address nothing may be sent to.")],
    detail: Annotated[str, typer.Option(help="Why, for the record.")] = "",
    reason: Annotated[str, typer.Option(help=f"One of {_REASONS}.")] = "manual",
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Suppress an address (reason: manual unless told); nothing is sent to it,
    transactional included."""
    _check_reason(reason)
    settings = get_settings()

    async def work() -> bool:
        async with workspace_session(settings, workspace, write=True) as (session, found):
            added = await consent_suppressions.suppress(
                session,
                workspace_id=found.id,
                channel=channel,
                address=address,
                reason=reason,
                detail=detail,
                now=SystemClock().now(),
            )
            await session.commit()
            return added

    typer.echo("suppressed" if run_work(work) else "already suppressed")


@suppressions_app.command("remove")
def remove_suppression(
    channel: Annotated[str, typer.Argument(help="The address's channel.")],
    address: Annotated[str, typer.Argument(help="The address to send to again.")],
    workspace: WorkspaceOption = workspaces.DEFAULT_WORKSPACE_SLUG,
) -> None:
    """Take an address off the suppression list."""
    settings = get_settings()

    async def work() -> bool:
        async with workspace_session(settings, workspace, write=True) as (session, found):
            removed = await consent_suppressions.unsuppress(
                session, workspace_id=found.id, channel=channel, address=address
            )
            await session.commit()
            return removed

    typer.echo("removed" if run_work(work) else "not suppressed")


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
        async with workspace_session(settings, workspace) as (session, found):
            profile_id = await _profile_of_user(session, found.id, user_id)
            says = await consent_service.consents_of(
                session, workspace_id=found.id, profile_id=profile_id
            )
            return [
                f"{c.channel}\t{c.topic_id or '-'}\t{c.state}\t{c.source}\t"
                f"{c.updated_at:%Y-%m-%d %H:%M}"
                for c in says
            ]

    for line in run_work(work):
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
        async with workspace_session(settings, workspace, write=True) as (session, found):
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

    typer.echo(run_work(work))


# Journeys as code
