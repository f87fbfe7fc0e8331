"""Message templates: saving them (content checked with `rendering.validate`, nothing
stored when it fails), their versions, archiving, and previews.

Every change of content writes a new `TemplateVersion` and makes it current; versions are
never changed or deleted, so a message keeps pointing at exactly what it was rendered from.
A deleted template is archived: still readable, refused for new sends (`current_version`
raises Conflict) and for changes. A template that campaigns or journeys have yet to send
cannot be archived (`TemplateUsers`).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.database import hold_rows
from clarion.core.errors import Conflict, FieldError, NotFound
from clarion.core.pagination import decode_id_cursor, encode_cursor, id_page
from clarion.messaging.channels.base import ChannelKind
from clarion.messaging.context import render_context
from clarion.messaging.models import MessageTemplate, SubscriptionTopic, TemplateVersion
from clarion.messaging.rendering import (
    Content,
    EventContext,
    Links,
    Localized,
    ProfileContext,
    RenderContext,
    Rendered,
    RenderError,
    parse_content,
    render,
    validate,
)
from clarion.messaging.schemas import UnprocessableInput, field_errors

_UNSET: Any = object()
# Service links a preview shows where delivery would put the message's real ones.
PREVIEW_LINKS = Links(
    unsubscribe_url="#unsubscribe", preferences_url="#preferences", view_in_browser_url="#view"
)


def _content_field(field: str) -> str:
    """A rendering field path (`content.html`, `locales.fr.subject`) as the API names it,
    under `content`."""
    return field if field.startswith("content") else f"content.{field}"


def check_content(channel: ChannelKind, raw: Mapping[str, Any]) -> Content | Localized[Any]:
    """The channel's content read from `raw` and validated; UnprocessableInput listing every
    problem with its field (`content.html`) and, when known, its line."""
    try:
        content = parse_content(channel, raw)
    except ValidationError as error:
        errors = field_errors(error, "content")
        raise UnprocessableInput(f"The {channel} content is not valid.", errors=errors) from error
    problems = validate(channel, content)
    if problems:
        errors = [
            FieldError(
                _content_field(problem.field),
                f"line {problem.line}: {problem.message}" if problem.line else problem.message,
            )
            for problem in problems
        ]
        raise UnprocessableInput(f"The {channel} template is not valid.", errors=errors)
    return content


def stored_content(content: Content | Localized[Any]) -> dict[str, Any]:
    """The JSON a version stores for checked content (what `parse_content` reads back)."""
    return content.model_dump(mode="json")


async def _check_topic(
    session: AsyncSession, *, workspace_id: int, topic_id: int | None, channel: str
) -> None:
    if topic_id is None:
        return
    topic = await session.scalar(
        select(SubscriptionTopic).where(
            SubscriptionTopic.workspace_id == workspace_id, SubscriptionTopic.id == topic_id
        )
    )
    problem = None
    if topic is None:
        problem = f"no subscription topic {topic_id} here"
    elif topic.channel != channel:
        problem = f"topic {topic_id} is for {topic.channel}, not {channel}"
    if problem:
        raise UnprocessableInput(
            "The subscription topic does not fit.", errors=[FieldError("topic_id", problem)]
        )


async def create_template(
    session: AsyncSession,
    *,
    workspace_id: int,
    name: str,
    channel: ChannelKind,
    category: str,
    topic_id: int | None,
    content: Mapping[str, Any],
    now: datetime,
) -> tuple[MessageTemplate, TemplateVersion]:
    """A new template and its version 1; UnprocessableInput naming what is wrong (content,
    topic), Conflict when the name is taken. Flushes only."""
    checked = check_content(channel, content)
    await _check_topic(session, workspace_id=workspace_id, topic_id=topic_id, channel=channel)
    template = MessageTemplate(
        workspace_id=workspace_id,
        name=name,
        channel=channel,
        category=category,
        topic_id=topic_id,
        current_version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(template)
    await _flush_named(session, name)
    version = TemplateVersion(
        workspace_id=workspace_id,
        template_id=template.id,
        version=1,
        content=stored_content(checked),
        created_at=now,
    )
    session.add(version)
    await session.flush()
    return template, version


async def update_template(
    session: AsyncSession,
    *,
    workspace_id: int,
    template_id: int,
    now: datetime,
    name: str | None = None,
    category: str | None = None,
    topic_id: int | None = _UNSET,
    content: Mapping[str, Any] | None = None,
) -> tuple[MessageTemplate, TemplateVersion]:
    """The template with the given fields changed and its current version; content that
    differs from the current version's becomes a new version. Conflict for an archived
    template or a taken name. Flushes only."""
    template, current = await current_version(
        session, workspace_id=workspace_id, template_id=template_id
    )
    channel: ChannelKind = template.channel  # type: ignore[assignment]  # stored from ChannelKind
    new_content = None if content is None else stored_content(check_content(channel, content))
    if topic_id is not _UNSET:
        await _check_topic(session, workspace_id=workspace_id, topic_id=topic_id, channel=channel)
        template.topic_id = topic_id
    if name is not None:
        template.name = name
    if category is not None:
        template.category = category
    if new_content is not None and new_content != current.content:
        latest = await session.scalar(
            select(func.max(TemplateVersion.version)).where(
                TemplateVersion.template_id == template.id
            )
        )
        current = TemplateVersion(
            workspace_id=workspace_id,
            template_id=template.id,
            version=(latest or 0) + 1,
            content=new_content,
            created_at=now,
        )
        session.add(current)
        template.current_version = current.version
    template.updated_at = now
    await _flush_named(session, template.name)
    return template, current


async def _flush_named(session: AsyncSession, name: str) -> None:
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as error:
        raise Conflict(
            f"A template called {name!r} already exists (archived ones included).",
            errors=[FieldError("name", "is taken by another template")],
        ) from error


async def get_template_or_raise(
    session: AsyncSession, *, workspace_id: int, template_id: int, lock: bool = False
) -> MessageTemplate:
    """The workspace's template, archived or not (with `lock`, read anew and row-locked on
    PostgreSQL); NotFound otherwise."""
    query = select(MessageTemplate).where(
        MessageTemplate.workspace_id == workspace_id, MessageTemplate.id == template_id
    )
    if lock:
        query = query.execution_options(populate_existing=True)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
    template = await session.scalar(query)
    if template is None:
        raise NotFound(f"No template {template_id} in this workspace.")
    return template


async def get_template_by_name(
    session: AsyncSession, *, workspace_id: int, name: str
) -> MessageTemplate | None:
    """The workspace's template called `name`, archived or not, if any."""
    template: MessageTemplate | None = await session.scalar(
        select(MessageTemplate).where(
            MessageTemplate.workspace_id == workspace_id, MessageTemplate.name == name
        )
    )
    return template


async def list_templates(
    session: AsyncSession,
    *,
    workspace_id: int,
    channel: ChannelKind | None = None,
    include_archived: bool = False,
    limit: int,
    cursor: str | None,
) -> tuple[Sequence[MessageTemplate], str | None]:
    """The workspace's templates by id (of one channel when given; archived ones only when
    asked), cursor-paged."""
    query = select(MessageTemplate).where(MessageTemplate.workspace_id == workspace_id)
    if channel is not None:
        query = query.where(MessageTemplate.channel == channel)
    if not include_archived:
        query = query.where(MessageTemplate.archived_at.is_(None))
    return await id_page(session, query, MessageTemplate.id, limit=limit, cursor=cursor)


async def live_template_channels(session: AsyncSession, *, workspace_id: int) -> dict[int, str]:
    """The channel of each of the workspace's templates not archived, by template id."""
    rows = await session.execute(
        select(MessageTemplate.id, MessageTemplate.channel).where(
            MessageTemplate.workspace_id == workspace_id, MessageTemplate.archived_at.is_(None)
        )
    )
    return {int(template_id): str(channel) for template_id, channel in rows}


async def hold_templates(
    session: AsyncSession, *, workspace_id: int, template_ids: Iterable[int]
) -> None:
    """Hold the workspace's templates among `template_ids` against their deletion until the
    transaction ends (`core.database.hold_rows`): what starts using one takes this before it
    checks it."""
    await hold_rows(session, MessageTemplate, workspace_id=workspace_id, ids=template_ids)


# What outside messaging has yet to send a template with (campaigns yet to launch, live
# journeys), as the names a marketer knows them by: ["campaign 3 (Spring sale)"]. Domains
# downstream of messaging provide these; `app.py` passes them in.
TemplateUsers = Callable[[AsyncSession, int, int], Awaitable[list[str]]]


async def archive_template(
    session: AsyncSession,
    *,
    workspace_id: int,
    template_id: int,
    now: datetime,
    users: Sequence[TemplateUsers] = (),
) -> MessageTemplate:
    """Archive the template (once; archiving again changes nothing): it stays readable with
    its versions and is refused for new sends; Conflict while any of `users` has yet to
    send it. Flushes only."""
    # Locked first, on PostgreSQL: what is starting to send the template holds it (see
    # `hold_templates`) until its transaction ends, so the check below sees that use, and
    # one starting after waits for this archive and then finds the template archived.
    template = await get_template_or_raise(
        session, workspace_id=workspace_id, template_id=template_id, lock=True
    )
    if template.archived_at is None:
        needing = [
            name for find in users for name in await find(session, workspace_id, template_id)
        ]
        if needing:
            raise Conflict(f"This template is in use by {', '.join(needing)}.")
        template.archived_at = now
        template.updated_at = now
        await session.flush()
    return template


async def current_version(
    session: AsyncSession, *, workspace_id: int, template_id: int
) -> tuple[MessageTemplate, TemplateVersion]:
    """The template and the version new messages use (one query); NotFound for a template
    the workspace does not have, Conflict (409) for an archived one."""
    found = (
        await session.execute(
            select(MessageTemplate, TemplateVersion)
            .outerjoin(
                TemplateVersion,
                (TemplateVersion.template_id == MessageTemplate.id)
                & (TemplateVersion.version == MessageTemplate.current_version),
            )
            .where(MessageTemplate.workspace_id == workspace_id, MessageTemplate.id == template_id)
        )
    ).first()
    if found is None:
        raise NotFound(f"No template {template_id} in this workspace.")
    template, version = found
    if template.archived_at is not None:
        raise Conflict(f"Template {template_id} is archived; it sends nothing new.")
    if version is None:
        raise NotFound(
            f"Template {template_id} has no version {template.current_version} in this workspace."
        )
    return template, version


async def get_version(
    session: AsyncSession, *, workspace_id: int, template_id: int, version: int
) -> TemplateVersion:
    """One version of the workspace's template (archived templates' included); NotFound
    otherwise."""
    found = await session.scalar(
        select(TemplateVersion).where(
            TemplateVersion.workspace_id == workspace_id,
            TemplateVersion.template_id == template_id,
            TemplateVersion.version == version,
        )
    )
    if found is None:
        raise NotFound(f"Template {template_id} has no version {version} in this workspace.")
    return found


async def list_versions(
    session: AsyncSession, *, workspace_id: int, template_id: int, limit: int, cursor: str | None
) -> tuple[Sequence[TemplateVersion], str | None]:
    """The template's versions, newest first, cursor-paged; NotFound for an unknown
    template."""
    await get_template_or_raise(session, workspace_id=workspace_id, template_id=template_id)
    query = select(TemplateVersion).where(
        TemplateVersion.workspace_id == workspace_id, TemplateVersion.template_id == template_id
    )
    if cursor is not None:
        query = query.where(TemplateVersion.version < decode_id_cursor(cursor))
    query = query.order_by(TemplateVersion.version.desc()).limit(limit + 1)
    items = (await session.scalars(query)).all()
    more = len(items) > limit
    items = items[:limit]
    return items, encode_cursor(items[-1].version) if more else None


async def preview(
    session: AsyncSession,
    *,
    workspace_id: int,
    template_id: int,
    now: datetime,
    profile_id: uuid.UUID | None = None,
    profile: ProfileContext | None = None,
    event: EventContext | None = None,
    journey: Mapping[str, Any] | None = None,
    locale: str | None = None,
    version: int | None = None,
) -> tuple[TemplateVersion, Rendered]:
    """The template's version (current by default, archived templates included) rendered
    for a real profile of the workspace (`profile_id`) or a described one (`profile`);
    UnprocessableInput naming the field when it does not render (a missing value...)."""
    if (profile_id is None) == (profile is None):
        raise UnprocessableInput(
            "Preview for a profile_id or a described profile.",
            errors=[FieldError("profile_id", "give exactly one of it and profile")],
        )
    template = await get_template_or_raise(
        session, workspace_id=workspace_id, template_id=template_id
    )
    chosen = await get_version(
        session,
        workspace_id=workspace_id,
        template_id=template_id,
        version=version or template.current_version,
    )
    message_id = f"preview-{uuid.uuid4().hex}"
    if profile_id is not None:
        try:
            context = await render_context(
                session, workspace_id=workspace_id, profile_id=profile_id, message_id=message_id,
                now=now, event=event, journey=journey, links=PREVIEW_LINKS,
            )  # fmt: skip
        except NotFound as error:
            raise NotFound(
                error.detail, errors=[FieldError("profile_id", "no such profile here")]
            ) from error
    else:
        assert profile is not None
        context = RenderContext(
            profile=profile, message_id=message_id, now=now, event=event, journey=journey,
            links=PREVIEW_LINKS,
        )  # fmt: skip
    channel: ChannelKind = template.channel  # type: ignore[assignment]
    try:
        rendered = render(channel, parse_content(channel, chosen.content), context, locale=locale)
    except RenderError as error:
        where = f"line {error.line}: " if error.line else ""
        field = _content_field(error.field)
        raise UnprocessableInput(
            f"The template does not render: {error.detail}",
            errors=[FieldError(field, where + error.message)],
        ) from error
    return chosen, rendered
