"""Routes: the in-app inbox end customers' apps call (`/inbox/v1`), CORS for them, and the
admin route handing operators the workspace's inbox credentials (`/api/v1/inbox/credentials`).

Every inbox route needs the workspace's inbox key, the user id and its hash (see
`inbox.py`), as headers (`X-Clarion-Inbox-Key`, `X-Clarion-User-Id`, `X-Clarion-User-Hash`)
or as query parameters (`inbox_key`, `user_id`, `user_hash`) for the browser's EventSource,
which cannot send headers. They are called from customers' web pages on other origins:
`InboxCors` answers preflights and adds `Access-Control-Allow-Origin: *` to `/inbox/v1`
responses only (credentials travel in headers, never cookies, so no origin list is needed).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clarion.core.deps import AppClock, ReadSession, WriteSession, app_held, get_database
from clarion.core.errors import Forbidden
from clarion.core.routing import StrictJSONRoute
from clarion.messaging import inbox as service
from clarion.messaging import inbox_live
from clarion.messaging.inbox import InboxUser
from clarion.messaging.models import Message as MessageRow
from clarion.workspaces.auth import ManagementCaller
from clarion.workspaces.schemas import KeyScope

PREFIX = "/inbox/v1"
inbox = APIRouter(prefix=PREFIX, tags=["inbox"], route_class=StrictJSONRoute)
router = APIRouter(prefix="/api/v1", tags=["inbox"], route_class=StrictJSONRoute)
Cursor = Annotated[str | None, Query(max_length=512)]

CORS_HEADERS = {"Access-Control-Allow-Origin": "*"}
PREFLIGHT_HEADERS = {
    **CORS_HEADERS,
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": (
        "X-Clarion-Inbox-Key, X-Clarion-User-Id, X-Clarion-User-Hash, Content-Type, "
        "Cache-Control, Last-Event-ID"
    ),
    "Access-Control-Max-Age": "600",
}


class InboxCors:
    """ASGI middleware: CORS for `/inbox/v1` (preflights answered here, every response
    allowed to any origin); other paths pass untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and "access-control-request-method" in Headers(scope=scope):
            await Response(status_code=204, headers=PREFLIGHT_HEADERS)(scope, receive, send)
            return

        async def send_allowed(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(CORS_HEADERS)
            await send(message)

        await self.app(scope, receive, send_allowed)


class InboxMessageRead(BaseModel):
    """A message in a customer's inbox."""

    id: uuid.UUID
    title: str
    body: str = Field(description="HTML.")
    action_url: str | None
    data: dict[str, Any]
    delivered_at: datetime
    read_at: datetime | None
    archived_at: datetime | None


class InboxPage(BaseModel):
    """A page of the inbox, newest first, with the unread count of the whole inbox."""

    items: list[InboxMessageRead]
    next_cursor: str | None
    unread_count: int = Field(description="Unread messages that are not archived.")


class ReadAll(BaseModel):
    """What marking everything read changed."""

    updated: int


class InboxCredentialsRead(BaseModel):
    """What the workspace's backend needs to let its app read the inbox."""

    inbox_key: str = Field(description="Public: the app sends it as X-Clarion-Inbox-Key.")
    inbox_secret: str = Field(description="Secret: keep it on the backend.")
    user_hash: str = Field(
        default="hex(HMAC-SHA256(key=inbox_secret, message=user_id))",
        description="How the backend computes X-Clarion-User-Hash for a user id.",
    )


def _read(message: MessageRow) -> InboxMessageRead:
    content = message.content or {}
    assert message.delivered_at is not None
    return InboxMessageRead(
        id=message.id,
        title=str(content.get("title") or ""),
        body=str(content.get("body") or ""),
        action_url=content.get("action_url"),
        data=content.get("data") or {},
        delivered_at=message.delivered_at,
        read_at=message.read_at,
        archived_at=message.archived_at,
    )


def _credential(name: str, header: str) -> Any:
    return Header(alias=header, description=f"The {name}.")


async def inbox_user(
    request: Request,
    header_key: Annotated[str | None, _credential("inbox key", "X-Clarion-Inbox-Key")] = None,
    header_user: Annotated[str | None, _credential("user id", "X-Clarion-User-Id")] = None,
    header_hash: Annotated[str | None, _credential("user hash", "X-Clarion-User-Hash")] = None,
    inbox_key: Annotated[str | None, Query(description="Instead of the header.")] = None,
    user_id: Annotated[str | None, Query(description="Instead of the header.")] = None,
    user_hash: Annotated[str | None, Query(description="Instead of the header.")] = None,
) -> InboxUser:
    """The end customer the request's inbox credentials prove; 401 otherwise."""
    key = header_key or inbox_key
    workspace_id = service.key_workspace(key)
    version = 0
    if workspace_id is not None:
        version = await _versions(request).get(get_database(request), workspace_id)
    return service.authenticate(
        request.app.state.secret_keys,
        inbox_key=key,
        user_id=header_user or user_id,
        user_hash=header_hash or user_hash,
        version=version,
    )


def _versions(request: Request) -> service.CredentialVersions:
    """The app's cache of inbox credentials versions (one per app)."""
    return app_held(request, "inbox_versions", service.CredentialVersions)


InboxCaller = Annotated[InboxUser, Depends(inbox_user)]


@inbox.get("/messages", response_model=InboxPage)
async def list_messages(
    user: InboxCaller,
    session: ReadSession,
    archived: Annotated[
        bool, Query(description="true: the archived messages only; false: the others.")
    ] = False,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> InboxPage:
    """The customer's inbox, newest first, with its unread count."""
    items, next_cursor, unread = await service.list_messages(
        session, user=user, archived=archived, limit=limit, cursor=cursor
    )
    return InboxPage(
        items=[_read(item) for item in items], next_cursor=next_cursor, unread_count=unread
    )


@inbox.post("/messages/read-all", response_model=ReadAll)
async def read_all(user: InboxCaller, session: WriteSession, clock: AppClock) -> ReadAll:
    """Mark every unread message that is not archived read."""
    updated = await service.mark_all_read(session, user=user, now=clock.now())
    await session.commit()
    return ReadAll(updated=updated)


@inbox.post("/messages/{message_id}/read", response_model=InboxMessageRead)
async def read_message(
    message_id: uuid.UUID, user: InboxCaller, session: WriteSession, clock: AppClock
) -> InboxMessageRead:
    """Mark the message read (its first read counts as its open)."""
    message = await service.mark_read(session, user=user, message_id=message_id, now=clock.now())
    await session.commit()
    return _read(message)


@inbox.post("/messages/{message_id}/unread", response_model=InboxMessageRead)
async def unread_message(
    message_id: uuid.UUID, user: InboxCaller, session: WriteSession, clock: AppClock
) -> InboxMessageRead:
    """Mark the message unread."""
    message = await service.mark_unread(session, user=user, message_id=message_id, now=clock.now())
    await session.commit()
    return _read(message)


@inbox.post("/messages/{message_id}/archive", response_model=InboxMessageRead)
async def archive_message(
    message_id: uuid.UUID, user: InboxCaller, session: WriteSession, clock: AppClock
) -> InboxMessageRead:
    """Archive the message: it leaves the inbox for the archived list."""
    message = await service.archive(session, user=user, message_id=message_id, now=clock.now())
    await session.commit()
    return _read(message)


class _EventStream(StreamingResponse):
    """A streaming response that always closes its generator, so that its subscription
    ends with the response however the response ends."""

    def __init__(self, body: AsyncGenerator[bytes, None]) -> None:
        super().__init__(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._body.aclose()


@inbox.get(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events."}},
)
async def stream(user: InboxCaller, request: Request) -> StreamingResponse:
    """Server-Sent Events: `event: message` with each new message's JSON as it is
    delivered, a `: heartbeat` comment every 15 s of quiet. Re-read `/messages` on
    (re)connect: messages delivered while disconnected are not replayed. The stream ends
    at a heartbeat once the workspace's inbox credentials were rotated."""
    database = get_database(request)

    async def resolve() -> list[uuid.UUID]:
        async with database.read_session() as session:
            return await service.profile_ids(
                session, workspace_id=user.workspace_id, user_id=user.user_id
            )

    async def load(message_id: uuid.UUID) -> str | None:
        async with database.read_session() as session:
            message = await service.get_message(session, user=user, message_id=message_id)
            return None if message is None else _read(message).model_dump_json()

    dsn = None if database.is_sqlite else database.url.replace("+asyncpg", "", 1)
    versions = _versions(request)

    async def still_allowed() -> bool:
        return await versions.get(database, user.workspace_id) == user.version

    body = inbox_live.event_stream(
        broker=inbox_live.BROKER,
        workspace_id=user.workspace_id,
        resolve=resolve,
        load=load,
        dsn=dsn,
        still_allowed=still_allowed,
    )
    return _EventStream(body)


@router.get("/inbox/credentials", response_model=InboxCredentialsRead)
async def inbox_credentials(
    caller: ManagementCaller, session: ReadSession, request: Request
) -> InboxCredentialsRead:
    """The workspace's public inbox key and its inbox secret (admin keys only)."""
    _admin_only(caller)
    version = await service.credentials_version(session, caller.workspace_id)
    return _credentials_read(
        service.inbox_credentials(
            request.app.state.secret_keys.current,
            workspace_id=caller.workspace_id,
            version=version,
        )
    )


@router.post("/inbox/credentials/rotate", response_model=InboxCredentialsRead)
async def rotate_inbox_credentials(
    caller: ManagementCaller, session: WriteSession, request: Request
) -> InboxCredentialsRead:
    """New inbox credentials (admin keys only): the old key and secret stop working at
    once here and within seconds in every process, so update the backend and the app
    together."""
    _admin_only(caller)
    credentials = await service.rotate_inbox_credentials(
        session,
        workspace_id=caller.workspace_id,
        secret_key=request.app.state.secret_keys.current,
    )
    await session.commit()
    _versions(request).forget(caller.workspace_id)
    return _credentials_read(credentials)


def _admin_only(caller: ManagementCaller) -> None:
    if caller.scope is not KeyScope.ADMIN:
        raise Forbidden("Only an admin key may read or rotate the inbox secret.")


def _credentials_read(credentials: service.InboxCredentials) -> InboxCredentialsRead:
    return InboxCredentialsRead(
        inbox_key=credentials.inbox_key, inbox_secret=credentials.inbox_secret
    )
