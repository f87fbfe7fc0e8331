"""Management routes for the caller's workspace, its sources and its keys."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from clarion.core.deps import AppClock, ReadSession, WriteSession
from clarion.core.routing import StrictJSONRoute
from clarion.workspaces import service
from clarion.workspaces.auth import ManagementCaller, WriteKeys
from clarion.workspaces.schemas import (
    KeyCreate,
    KeyCreated,
    KeyPage,
    KeyRead,
    KeyScope,
    SourceCreate,
    SourceCreated,
    SourcePage,
    SourceRead,
    WorkspaceRead,
)

router = APIRouter(prefix="/api/v1", tags=["workspace"], route_class=StrictJSONRoute)


@router.get("/workspace", response_model=WorkspaceRead)
async def read_workspace(caller: ManagementCaller, session: ReadSession) -> WorkspaceRead:
    """The workspace the key belongs to."""
    workspace = await service.get_workspace(session, workspace_id=caller.workspace_id)
    return WorkspaceRead.model_validate(workspace)


@router.get("/sources", response_model=SourcePage)
async def list_sources(caller: ManagementCaller, session: ReadSession) -> SourcePage:
    """The workspace's sources."""
    sources = await service.list_sources(session, workspace_id=caller.workspace_id)
    return SourcePage(items=[SourceRead.model_validate(source) for source in sources])


@router.post("/sources", response_model=SourceCreated, status_code=status.HTTP_201_CREATED)
async def create_source(
    body: SourceCreate, caller: ManagementCaller, session: WriteSession, clock: AppClock
) -> SourceCreated:
    """A new source with its first write key; the key's secret is in this answer only."""
    now = clock.now()
    source = await service.create_source(
        session, workspace_id=caller.workspace_id, name=body.name, now=now
    )
    key, secret = await service.create_key(
        session,
        workspace_id=caller.workspace_id,
        scope=KeyScope.WRITE,
        name=f"{body.name} write key",
        source_id=source.id,
        now=now,
    )
    await session.commit()
    write_key = KeyCreated.model_validate(
        {**KeyRead.model_validate(key).model_dump(), "key": secret}
    )
    return SourceCreated(**SourceRead.model_validate(source).model_dump(), write_key=write_key)


@router.get("/sources/{source_id}", response_model=SourceRead)
async def read_source(
    source_id: uuid.UUID, caller: ManagementCaller, session: ReadSession
) -> SourceRead:
    """One source of the workspace."""
    source = await service.get_source_or_raise(
        session, workspace_id=caller.workspace_id, source_id=source_id
    )
    return SourceRead.model_validate(source)


@router.get("/keys", response_model=KeyPage)
async def list_keys(caller: ManagementCaller, session: ReadSession) -> KeyPage:
    """The workspace's keys, without their secrets."""
    keys = await service.list_keys(session, workspace_id=caller.workspace_id)
    return KeyPage(items=[KeyRead.model_validate(key) for key in keys])


@router.post("/keys", response_model=KeyCreated, status_code=status.HTTP_201_CREATED)
async def create_key(
    body: KeyCreate, caller: ManagementCaller, session: WriteSession, clock: AppClock
) -> KeyCreated:
    """A new key; its secret is in this answer only."""
    key, secret = await service.create_key(
        session,
        workspace_id=caller.workspace_id,
        scope=body.scope,
        name=body.name,
        source_id=body.source_id,
        now=clock.now(),
    )
    await session.commit()
    return KeyCreated.model_validate({**KeyRead.model_validate(key).model_dump(), "key": secret})


@router.get("/keys/{key_id}", response_model=KeyRead)
async def read_key(key_id: uuid.UUID, caller: ManagementCaller, session: ReadSession) -> KeyRead:
    """One key of the workspace, without its secret."""
    key = await service.get_key_or_raise(session, workspace_id=caller.workspace_id, key_id=key_id)
    return KeyRead.model_validate(key)


@router.delete("/keys/{key_id}", response_model=KeyRead)
async def revoke_key(
    key_id: uuid.UUID,
    caller: ManagementCaller,
    session: WriteSession,
    clock: AppClock,
    write_keys: WriteKeys,
) -> KeyRead:
    """Revoke the key: it stops working at once and is kept, marked revoked."""
    key = await service.revoke_key(
        session, workspace_id=caller.workspace_id, key_id=key_id, now=clock.now()
    )
    await session.commit()
    write_keys.clear()
    return KeyRead.model_validate(key)
