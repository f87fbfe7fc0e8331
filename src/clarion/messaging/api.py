"""Routes: messaging channels (`/api/v1/channels`): configure, read (never a secret), test;
and message templates (`/api/v1/templates`): save (validated), version, archive, preview."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status

from clarion.core.crypto import Vault
from clarion.core.deps import (
    AppClock,
    ReadSession,
    RowId,
    WriteSession,
    app_held,
    get_database,
)
from clarion.core.routing import StrictJSONRoute
from clarion.messaging import channel_config, channel_test_sends, templates
from clarion.messaging.channels.base import ChannelKind
from clarion.messaging.models import MessageTemplate, MessagingChannel, TemplateVersion
from clarion.messaging.rendering import EventContext, ProfileContext
from clarion.messaging.schemas import (
    ChannelCreate,
    ChannelPage,
    ChannelRead,
    ChannelSaved,
    ChannelTest,
    ChannelTestResult,
    ChannelUpdate,
    PreviewRead,
    PreviewRequest,
    SmsSegmentsRead,
    TemplateCheck,
    TemplateChecked,
    TemplateCreate,
    TemplateDetail,
    TemplatePage,
    TemplateRead,
    TemplateUpdate,
    VersionPage,
    VersionRead,
)
from clarion.workspaces.auth import ManagementCaller

router = APIRouter(prefix="/api/v1", tags=["messaging"], route_class=StrictJSONRoute)
Cursor = Annotated[str | None, Query(max_length=512)]
Limit = Annotated[int, Query(ge=1, le=500)]
VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1)]


def app_vault(request: Request) -> Vault:
    """The app's vault for channel credentials (one per app)."""
    return app_held(request, "messaging_vault", lambda: Vault(request.app.state.secret_keys))


def _channel_read(row: MessagingChannel, vault: Vault) -> ChannelRead:
    return ChannelRead.from_row(row, channel_config.secret_fingerprints(row, vault))


@router.get("/channels", response_model=ChannelPage)
async def list_channels(
    caller: ManagementCaller,
    session: ReadSession,
    request: Request,
    kind: ChannelKind | None = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> ChannelPage:
    """The workspace's channels (of one kind when given), oldest first."""
    items, next_cursor = await channel_config.list_channels(
        session, workspace_id=caller.workspace_id, kind=kind, limit=limit, cursor=cursor
    )
    vault = app_vault(request)
    return ChannelPage(items=[_channel_read(i, vault) for i in items], next_cursor=next_cursor)


def _channel_saved(row: MessagingChannel, vault: Vault, generated: dict[str, str]) -> ChannelSaved:
    """The answer of a save: every field of a read set, and `generated_secret` only when one
    was generated; the routes leave unset fields out, so that the answer is the read's."""
    fields = _channel_read(row, vault).model_dump()
    if "secret" in generated:
        fields["generated_secret"] = generated["secret"]
    return ChannelSaved.model_validate(fields)


@router.post(
    "/channels",
    response_model=ChannelSaved,
    response_model_exclude_unset=True,
    status_code=status.HTTP_201_CREATED,
)
async def create_channel(
    body: ChannelCreate,
    caller: ManagementCaller,
    session: WriteSession,
    clock: AppClock,
    request: Request,
) -> ChannelSaved:
    """A new channel; its secrets are stored encrypted and never returned, but for a
    webhook secret generated because none was given, shown here once. 422 naming each
    setting at fault, 409 when the name is taken."""
    vault = app_vault(request)
    generated: dict[str, str] = {}
    row = await channel_config.create_channel(
        session,
        workspace_id=caller.workspace_id,
        vault=vault,
        name=body.name,
        kind=body.kind,
        settings=body.settings,
        secrets=body.secrets,
        rate_per_second=body.rate_per_second,
        is_default=body.is_default,
        now=clock.now(),
        generated=generated,
    )
    await session.commit()
    return _channel_saved(row, vault, generated)


@router.get("/channels/{channel_id}", response_model=ChannelRead)
async def read_channel(
    channel_id: RowId, caller: ManagementCaller, session: ReadSession, request: Request
) -> ChannelRead:
    """One channel, its secrets shown only as fingerprints."""
    row = await channel_config.get_channel_or_raise(
        session, workspace_id=caller.workspace_id, channel_id=channel_id
    )
    return _channel_read(row, app_vault(request))


@router.patch(
    "/channels/{channel_id}", response_model=ChannelSaved, response_model_exclude_unset=True
)
async def update_channel(
    channel_id: RowId,
    body: ChannelUpdate,
    caller: ManagementCaller,
    session: WriteSession,
    clock: AppClock,
    request: Request,
) -> ChannelSaved:
    """Change a channel: settings are merged, secrets left out are kept; a webhook secret
    removed is generated anew and shown here once."""
    vault = app_vault(request)
    changes = {}
    if "rate_per_second" in body.model_fields_set:
        changes["rate_per_second"] = body.rate_per_second
    generated: dict[str, str] = {}
    row = await channel_config.update_channel(
        session,
        workspace_id=caller.workspace_id,
        channel_id=channel_id,
        vault=vault,
        now=clock.now(),
        name=body.name,
        settings=body.settings,
        secrets=body.secrets,
        is_default=body.is_default,
        generated=generated,
        **changes,
    )
    await session.commit()
    return _channel_saved(row, vault, generated)


@router.delete("/channels/{channel_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_channel(
    channel_id: RowId,
    caller: ManagementCaller,
    session: WriteSession,
    clock: AppClock,
    request: Request,
) -> Response:
    """Delete the channel; 409 naming them while a scheduled, sending or paused campaign or
    a live or paused journey names it, and 409 naming the others while it is its kind's
    default and other channels of the kind are left (make one of them the default first).
    Messages sent through it keep their history; those still queued to go through it fail
    ("channel 3 was deleted"), as do those it was sending should they be retried."""
    await channel_config.delete_channel(
        session,
        workspace_id=caller.workspace_id,
        channel_id=channel_id,
        now=clock.now(),
        users=request.app.state.channel_users,
    )
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/channels/{channel_id}/test", response_model=ChannelTestResult)
async def test_channel(
    channel_id: RowId,
    body: ChannelTest,
    caller: ManagementCaller,
    session: ReadSession,
    clock: AppClock,
    request: Request,
) -> ChannelTestResult:
    """Send a test message through the provider now: to an address of the channel's kind,
    or for an inbox channel a profile's id or user id (else 422 naming `to`), whose inbox
    then holds it; 502 with the provider's reason when it does not take it."""
    row = await channel_config.get_channel_or_raise(
        session, workspace_id=caller.workspace_id, channel_id=channel_id
    )
    to = await channel_test_sends.recipient_for_test(
        session, workspace_id=caller.workspace_id, kind=row.kind, to=body.to
    )
    await session.close()  # no connection held while the provider answers
    if row.kind == "inbox":  # no provider: the message goes into the profile's inbox
        async with get_database(request).write_session() as writing:
            sent = await channel_test_sends.deliver_inbox_test(
                writing, row, profile_id=to, subject=body.subject, text=body.text, now=clock.now()
            )
            await writing.commit()
        return ChannelTestResult(channel_id=row.id, provider_id=sent.provider_id)
    sent = await channel_test_sends.send_test(
        row,
        app_vault(request),
        request.app.state.settings.outbound_policy(),
        to=to,
        subject=body.subject,
        text=body.text,
    )
    return ChannelTestResult(channel_id=row.id, provider_id=sent.provider_id)


# --- Templates --------------------------------------------------------------------------------


def _detail(template: MessageTemplate, version: TemplateVersion) -> TemplateDetail:
    return TemplateDetail.model_validate(
        {**TemplateRead.model_validate(template).model_dump(), "content": version.content}
    )


@router.get("/templates", response_model=TemplatePage)
async def list_templates(
    caller: ManagementCaller,
    session: ReadSession,
    channel: ChannelKind | None = None,
    archived: bool = False,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> TemplatePage:
    """The workspace's templates, oldest first; archived ones too with `archived=true`."""
    items, next_cursor = await templates.list_templates(
        session,
        workspace_id=caller.workspace_id,
        channel=channel,
        include_archived=archived,
        limit=limit,
        cursor=cursor,
    )
    return TemplatePage(
        items=[TemplateRead.model_validate(item) for item in items], next_cursor=next_cursor
    )


@router.post("/templates", response_model=TemplateDetail, status_code=status.HTTP_201_CREATED)
async def create_template(
    body: TemplateCreate, caller: ManagementCaller, session: WriteSession, clock: AppClock
) -> TemplateDetail:
    """A new template (version 1); 422 listing every problem of its content."""
    template, version = await templates.create_template(
        session,
        workspace_id=caller.workspace_id,
        name=body.name,
        channel=body.channel,
        category=body.category,
        topic_id=body.topic_id,
        content=body.content,
        now=clock.now(),
    )
    await session.commit()
    return _detail(template, version)


@router.post("/templates/validate", response_model=TemplateChecked)
async def validate_template(body: TemplateCheck, caller: ManagementCaller) -> TemplateChecked:
    """The content as it would be stored, saving nothing; 422 listing every problem."""
    checked = templates.check_content(body.channel, body.content)
    return TemplateChecked(channel=body.channel, content=templates.stored_content(checked))


@router.get("/templates/{template_id}", response_model=TemplateDetail)
async def read_template(
    template_id: RowId, caller: ManagementCaller, session: ReadSession
) -> TemplateDetail:
    """One template (archived ones too) with its current content."""
    template = await templates.get_template_or_raise(
        session, workspace_id=caller.workspace_id, template_id=template_id
    )
    version = await templates.get_version(
        session,
        workspace_id=caller.workspace_id,
        template_id=template_id,
        version=template.current_version,
    )
    return _detail(template, version)


@router.patch("/templates/{template_id}", response_model=TemplateDetail)
async def update_template(
    template_id: RowId,
    body: TemplateUpdate,
    caller: ManagementCaller,
    session: WriteSession,
    clock: AppClock,
) -> TemplateDetail:
    """Change a template; new content becomes a new current version. 409 when archived."""
    changes = {}
    if "topic_id" in body.model_fields_set:
        changes["topic_id"] = body.topic_id
    template, version = await templates.update_template(
        session,
        workspace_id=caller.workspace_id,
        template_id=template_id,
        now=clock.now(),
        name=body.name,
        category=body.category,
        content=body.content,
        **changes,
    )
    await session.commit()
    return _detail(template, version)


@router.delete("/templates/{template_id}", status_code=status.HTTP_204_NO_CONTENT)
async def archive_template(
    template_id: RowId,
    caller: ManagementCaller,
    session: WriteSession,
    clock: AppClock,
    request: Request,
) -> Response:
    """Archive the template: kept with its versions, refused for new sends; 409 naming them
    while a scheduled, sending or paused campaign has yet to launch with it or a live or
    paused journey sends it."""
    await templates.archive_template(
        session,
        workspace_id=caller.workspace_id,
        template_id=template_id,
        now=clock.now(),
        users=request.app.state.template_users,
    )
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/templates/{template_id}/versions", response_model=VersionPage)
async def list_versions(
    template_id: RowId,
    caller: ManagementCaller,
    session: ReadSession,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> VersionPage:
    """The template's versions, newest first."""
    items, next_cursor = await templates.list_versions(
        session,
        workspace_id=caller.workspace_id,
        template_id=template_id,
        limit=limit,
        cursor=cursor,
    )
    return VersionPage(
        items=[VersionRead.model_validate(item) for item in items], next_cursor=next_cursor
    )


@router.get("/templates/{template_id}/versions/{version}", response_model=VersionRead)
async def read_version(
    template_id: RowId,
    version: VersionNumber,
    caller: ManagementCaller,
    session: ReadSession,
) -> TemplateVersion:
    """One version of the template."""
    return await templates.get_version(
        session, workspace_id=caller.workspace_id, template_id=template_id, version=version
    )


@router.post("/templates/{template_id}/preview", response_model=PreviewRead)
async def preview_template(
    template_id: RowId,
    body: PreviewRequest,
    caller: ManagementCaller,
    session: ReadSession,
    clock: AppClock,
) -> PreviewRead:
    """The template rendered for a real profile (`profile_id`) or a described one
    (`profile`); 422 naming the field that does not render."""
    described = None
    if body.profile is not None:
        p = body.profile
        described = ProfileContext(
            id=p.id, user_id=p.user_id, email=p.email, phone=p.phone,
            traits=p.traits, computed=p.computed,
        )  # fmt: skip
    event = None if body.event is None else EventContext(body.event.name, body.event.properties)
    version, rendered = await templates.preview(
        session,
        workspace_id=caller.workspace_id,
        template_id=template_id,
        now=clock.now(),
        profile_id=body.profile_id,
        profile=described,
        event=event,
        journey=body.journey,
        locale=body.locale,
        version=body.version,
    )
    sms = rendered.sms
    return PreviewRead(
        template_id=template_id,
        version=version.version,
        channel=rendered.channel,
        locale=rendered.locale,
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        action_url=rendered.action_url,
        data=rendered.data,
        sms=None
        if sms is None
        else SmsSegmentsRead(encoding=sms.encoding, units=sms.units, segments=sms.segments),
    )
