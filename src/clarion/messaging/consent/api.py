"""Routes: subscription topics, consent and suppressions (`/api/v1/...`), and the public
pages end customers reach from their messages (unsubscribe, preferences, confirmation)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from clarion.core.database import MAX_ROW_ID
from clarion.core.deps import AppClock, ReadSession, RowId, WriteSession
from clarion.core.routing import StrictJSONRoute
from clarion.messaging import messages
from clarion.messaging.channels.base import ChannelKind
from clarion.messaging.consent import imports, service, suppressions, topics
from clarion.messaging.consent.public_api import AppLinks, get_links, public
from clarion.messaging.consent.schemas import (
    ConsentImportRead,
    ConsentRead,
    ConsentSet,
    ImportProblem,
    SuppressionCreate,
    SuppressionPage,
    SuppressionRead,
    SuppressionReason,
    TopicCreate,
    TopicPage,
    TopicRead,
    TopicUpdate,
)
from clarion.messaging.models import SubscriptionTopic
from clarion.workspaces.auth import ManagementCaller

__all__ = ["get_links", "public", "router"]

router = APIRouter(prefix="/api/v1", tags=["consent"], route_class=StrictJSONRoute)
Cursor = Annotated[str | None, Query(max_length=512)]


# Topics


@router.get("/topics", response_model=TopicPage)
async def list_topics(
    caller: ManagementCaller,
    session: ReadSession,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> TopicPage:
    """The workspace's subscription topics, oldest first."""
    items, next_cursor = await topics.list_topics(
        session, workspace_id=caller.workspace_id, limit=limit, cursor=cursor
    )
    return TopicPage(
        items=[TopicRead.model_validate(item) for item in items], next_cursor=next_cursor
    )


@router.post("/topics", response_model=TopicRead, status_code=status.HTTP_201_CREATED)
async def create_topic(
    body: TopicCreate, caller: ManagementCaller, session: WriteSession, clock: AppClock
) -> SubscriptionTopic:
    """A new topic; 409 when its name is taken, 422 naming `double_opt_in` off email."""
    topic = await topics.create_topic(
        session,
        workspace_id=caller.workspace_id,
        name=body.name,
        description=body.description,
        channel=body.channel,
        default_state=body.default_state,
        double_opt_in=body.double_opt_in,
        now=clock.now(),
    )
    await session.commit()
    return topic


@router.get("/topics/{topic_id}", response_model=TopicRead)
async def read_topic(
    topic_id: RowId, caller: ManagementCaller, session: ReadSession
) -> SubscriptionTopic:
    """One topic."""
    return await topics.get_topic_or_raise(
        session, workspace_id=caller.workspace_id, topic_id=topic_id
    )


@router.patch("/topics/{topic_id}", response_model=TopicRead)
async def update_topic(
    topic_id: RowId, body: TopicUpdate, caller: ManagementCaller, session: WriteSession
) -> SubscriptionTopic:
    """Change a topic's name, description, default state or double opt-in; 422 naming the
    field for double opt-in off email or a double opt-in topic starting opted_in, 409 when
    the name is taken."""
    topic = await topics.update_topic(
        session,
        workspace_id=caller.workspace_id,
        topic_id=topic_id,
        name=body.name,
        description=body.description,
        default_state=body.default_state,
        double_opt_in=body.double_opt_in,
    )
    await session.commit()
    return topic


@router.delete("/topics/{topic_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_topic(
    topic_id: RowId, caller: ManagementCaller, session: WriteSession
) -> Response:
    """Delete a topic and every say on it; 409 naming the templates that use it."""
    await topics.delete_topic(session, workspace_id=caller.workspace_id, topic_id=topic_id)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# Consent


@router.get("/profiles/{profile_id}/consent", response_model=list[ConsentRead])
async def list_consent(
    profile_id: uuid.UUID, caller: ManagementCaller, session: ReadSession
) -> list[ConsentRead]:
    """The profile's say on every channel and topic it spoke about."""
    says = await service.consents_of(
        session, workspace_id=caller.workspace_id, profile_id=profile_id
    )
    return [ConsentRead.model_validate(say) for say in says]


@router.put("/profiles/{profile_id}/consent", response_model=ConsentRead)
async def set_consent(
    profile_id: uuid.UUID,
    body: ConsentSet,
    caller: ManagementCaller,
    session: WriteSession,
    clock: AppClock,
) -> ConsentRead:
    """Set the profile's say on a channel (all its marketing) or one topic (source "api")."""
    say = await service.set_consent(
        session,
        workspace_id=caller.workspace_id,
        profile_id=profile_id,
        channel=body.channel,
        topic_id=body.topic_id,
        state=body.state,
        source="api",
        now=clock.now(),
    )
    read = ConsentRead.model_validate(say)
    await session.commit()
    return read


class OptInRequest(BaseModel):
    """A double opt-in to start."""

    model_config = ConfigDict(extra="forbid")

    topic_id: int = Field(ge=1, le=MAX_ROW_ID, strict=True)


class OptInRead(BaseModel):
    """A started double opt-in: the link the confirmation email carries."""

    topic_id: int
    confirmation_url: str
    message_id: uuid.UUID | None = Field(
        default=None, description="The confirmation email queued (none when already opted in)."
    )


@router.post(
    "/profiles/{profile_id}/consent/opt-in",
    response_model=OptInRead,
    status_code=status.HTTP_201_CREATED,
)
async def request_opt_in(
    profile_id: uuid.UUID,
    body: OptInRequest,
    caller: ManagementCaller,
    session: WriteSession,
    clock: AppClock,
    links: AppLinks,
) -> OptInRead:
    """Start a double opt-in: the profile is pending on the topic until it follows the
    confirmation URL, which an email (the "Subscription confirmation" template) carries
    to it; already opted in, it stays so and gets no email."""
    url, message = await messages.start_double_opt_in(
        session,
        workspace_id=caller.workspace_id,
        profile_id=profile_id,
        topic_id=body.topic_id,
        now=clock.now(),
        links=links,
    )
    message_id = None if message is None else message.id
    await session.commit()
    return OptInRead(topic_id=body.topic_id, confirmation_url=url, message_id=message_id)


@router.post("/consents/import", response_model=ConsentImportRead)
async def import_consents(
    items: Annotated[list[Any], Body(max_length=imports.MAX_ITEMS)],
    caller: ManagementCaller,
    session: WriteSession,
    clock: AppClock,
) -> ConsentImportRead:
    """Set many consents (source "import"): each valid item is applied, each invalid one
    reported by index and field."""
    result = await imports.import_consents(
        session, workspace_id=caller.workspace_id, items=items, now=clock.now()
    )
    await session.commit()
    return ConsentImportRead(
        applied=result.applied,
        errors=[
            ImportProblem(index=e.index or 0, field=e.field, message=e.message)
            for e in result.errors
        ],
    )


# Suppressions


@router.get("/suppressions", response_model=SuppressionPage)
async def list_suppressions(
    caller: ManagementCaller,
    session: ReadSession,
    channel: ChannelKind | None = None,
    reason: SuppressionReason | None = None,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> SuppressionPage:
    """The workspace's suppressed addresses (of one channel, of one reason), newest first."""
    items, next_cursor = await suppressions.list_suppressions(
        session,
        workspace_id=caller.workspace_id,
        channel=channel,
        reason=reason,
        limit=limit,
        cursor=cursor,
    )
    return SuppressionPage(
        items=[SuppressionRead.model_validate(item) for item in items], next_cursor=next_cursor
    )


@router.post("/suppressions", response_model=SuppressionRead, status_code=status.HTTP_201_CREATED)
async def create_suppression(
    body: SuppressionCreate,
    caller: ManagementCaller,
    session: WriteSession,
    clock: AppClock,
    response: Response,
) -> SuppressionRead:
    """Suppress an address on a channel: 201 when added, 200 when it already was."""
    added = await suppressions.suppress(
        session,
        workspace_id=caller.workspace_id,
        channel=body.channel,
        address=body.address,
        reason=body.reason,
        detail=body.detail,
        now=clock.now(),
    )
    row = await suppressions.get_suppression(
        session, workspace_id=caller.workspace_id, channel=body.channel, address=body.address
    )
    read = SuppressionRead.model_validate(row)
    await session.commit()
    if not added:
        response.status_code = status.HTTP_200_OK
    return read


@router.delete("/suppressions/{suppression_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_suppression(
    suppression_id: RowId, caller: ManagementCaller, session: WriteSession
) -> Response:
    """Take an address off the suppression list."""
    await suppressions.delete_suppression(
        session, workspace_id=caller.workspace_id, suppression_id=suppression_id
    )
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
