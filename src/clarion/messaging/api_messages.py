"""Routes: messages (`/api/v1/messages`: send one, list, read with history) and the
workspace's sending rules (`/api/v1/messaging/policy`, `/api/v1/frequency-caps`)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from clarion.core.deps import AppClock, ReadSession, RowId, WriteSession
from clarion.core.routing import StrictJSONRoute
from clarion.messaging import messages
from clarion.messaging.message_schemas import (
    CapCreate,
    CapRead,
    MessageDetail,
    MessagePage,
    MessageRead,
    MessageSend,
    MessageStatus,
    PolicyRead,
    PolicyWrite,
)
from clarion.workspaces.auth import ManagementCaller

router = APIRouter(prefix="/api/v1", tags=["messages"], route_class=StrictJSONRoute)


@router.post("/messages", response_model=MessageRead, status_code=status.HTTP_202_ACCEPTED)
async def send_message(
    body: MessageSend, caller: ManagementCaller, session: WriteSession, clock: AppClock
) -> MessageRead:
    """Queue one message to a profile with a template; the workers deliver it. The same
    `idempotency_key` answers with the message it already made."""
    message = await messages.send_message(
        session,
        workspace_id=caller.workspace_id,
        request=messages.SendRequest(
            template_id=body.template_id,
            profile_id=body.profile_id,
            user_id=body.user_id,
            channel_id=body.channel_id,
            idempotency_key=body.idempotency_key,
            priority=body.priority,
            send_after=body.send_after,
            address=body.address,
            context={"event": body.event} if body.event else {},
        ),
        now=clock.now(),
    )
    answer = MessageRead.of(message)
    await session.commit()
    return answer


@router.get("/messages", response_model=MessagePage)
async def list_messages(
    caller: ManagementCaller,
    session: ReadSession,
    profile_id: uuid.UUID | None = None,
    status_: Annotated[MessageStatus | None, Query(alias="status")] = None,
    origin: Annotated[str | None, Query(max_length=16)] = None,
    origin_id: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> MessagePage:
    """The workspace's messages, newest first, by profile, status or origin."""
    page, following = await messages.list_messages(
        session,
        workspace_id=caller.workspace_id,
        profile_id=profile_id,
        status=status_,
        origin=origin,
        origin_id=origin_id,
        cursor=cursor,
        limit=limit,
    )
    return MessagePage(items=[MessageRead.of(m) for m in page], next_cursor=following)


@router.get("/messages/{message_id}", response_model=MessageDetail)
async def read_message(
    message_id: uuid.UUID, caller: ManagementCaller, session: ReadSession
) -> MessageDetail:
    """One message with everything that happened to it."""
    message, events = await messages.get_message_or_raise(
        session, workspace_id=caller.workspace_id, message_id=message_id
    )
    return MessageDetail.with_history(message, events)


@router.get("/messaging/policy", response_model=PolicyRead)
async def read_policy(caller: ManagementCaller, session: ReadSession) -> PolicyRead:
    """The workspace's quiet hours."""
    return PolicyRead.of(await messages.get_policy(session, workspace_id=caller.workspace_id))


@router.put("/messaging/policy", response_model=PolicyRead)
async def write_policy(
    body: PolicyWrite, caller: ManagementCaller, session: WriteSession, clock: AppClock
) -> PolicyRead:
    """Set the workspace's quiet hours."""
    found = await messages.set_policy(
        session,
        workspace_id=caller.workspace_id,
        quiet_hours_start=body.quiet_hours_start,
        quiet_hours_end=body.quiet_hours_end,
        quiet_channels=body.quiet_channels,
        default_timezone=body.default_timezone,
        now=clock.now(),
    )
    answer = PolicyRead.of(found)
    await session.commit()
    return answer


@router.get("/frequency-caps", response_model=list[CapRead])
async def list_caps(caller: ManagementCaller, session: ReadSession) -> list[CapRead]:
    """The workspace's frequency caps."""
    return [
        CapRead.of(c) for c in await messages.list_caps(session, workspace_id=caller.workspace_id)
    ]


@router.post("/frequency-caps", response_model=CapRead, status_code=status.HTTP_201_CREATED)
async def create_cap(
    body: CapCreate, caller: ManagementCaller, session: WriteSession, clock: AppClock
) -> CapRead:
    """Add a frequency cap."""
    cap = await messages.create_cap(
        session,
        workspace_id=caller.workspace_id,
        channel=body.channel,
        max_messages=body.max_messages,
        period_seconds=body.period_seconds,
        now=clock.now(),
    )
    answer = CapRead.of(cap)
    await session.commit()
    return answer


@router.delete("/frequency-caps/{cap_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_cap(cap_id: RowId, caller: ManagementCaller, session: WriteSession) -> None:
    """Remove a frequency cap."""
    await messages.delete_cap(session, workspace_id=caller.workspace_id, cap_id=cap_id)
    await session.commit()
