"""The in-app inbox: messages delivered into a customer's inbox, read by the customer's own
app, with who may read them.

Identity verification, as Intercom's and Novu's: the customer's backend computes
`user_hash = hex(HMAC-SHA256(key=inbox_secret, msg=user_id))` and hands it to its app, which
sends it with the user id and the workspace's public `inbox_key`. Both are derived from the
app's secret key and the workspace's `inbox_secret_version` (V), so no secret is stored:

    inbox_secret = hex(HMAC-SHA256(secret_key, "inbox:<workspace id>" + S))    (64 hex digits)
    inbox_key    = "ibx_<workspace id>_" + hex(HMAC-SHA256(secret_key, "inbox-key:<id>" + S))[:16]

where S is empty for version 0 and ":v<V>" after. The key is not secret (it ships in web
pages); its tag only stops anyone from naming a workspace they were not given. While the
app's secret key is rotated, the pairs derived from the previous keys are accepted too, so
customers' apps keep working until they take the new pair. An admin
rotates a workspace's pair (`rotate_inbox_credentials`): the old one stops working at once
in the process that rotated and within `VERSION_TTL_S` in the others (each keeps the
versions it read that long); a live stream opened with the old pair ends at its next
heartbeat, and its reconnection is refused.

A user id names its canonical profile (and the profiles merged into it); a message is the
customer's when it is an inbox message of one of those, delivered. Anything else reads as
NotFound, and an unknown user id has an empty inbox: nothing tells whether a user exists.
Marking a message read counts as its first open (`engagement.mark_opened`).

`deliver_to_inbox` tells live streams (`inbox_live`) once the caller's transaction commits;
`deliver_test` puts a channel's test message there the same way, outside the pipeline.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, text, update
from sqlalchemy import event as orm_event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from clarion.core.database import MAX_ROW_ID, Database
from clarion.core.errors import NotFound, Unauthorized
from clarion.core.pagination import decode_time_uuid_cursor, encode_cursor
from clarion.core.settings import SecretKeys
from clarion.messaging import engagement
from clarion.messaging.feedback import Outcome
from clarion.messaging.feedback import record as record_outcomes
from clarion.messaging.inbox_live import BROKER, CHANNEL, Notice
from clarion.messaging.models import Message
from clarion.profiles import queries as profiles
from clarion.profiles.identity import USER_ID
from clarion.workspaces.models import Workspace

INBOX = "inbox"
MAX_USER_ID = 255
AUTH_SCHEME = "ClarionInbox"
_KEY_SHAPE = re.compile(r"ibx_([1-9][0-9]{0,18})_([0-9a-f]{16})")
_PENDING = "clarion_inbox_pending"
VERSION_TTL_S = 5.0  # how long a process trusts the credentials version it read
_MAX_VERSIONS = 10_000


@dataclass(frozen=True, slots=True)
class InboxCredentials:
    """What a workspace's backend needs: the public key its app sends, and the secret it
    signs user ids with."""

    inbox_key: str
    inbox_secret: str


@dataclass(frozen=True, slots=True)
class InboxUser:
    """An authenticated end customer: a user id in a workspace, proven with the workspace's
    inbox credentials of `version`."""

    workspace_id: int
    user_id: str
    version: int = 0


def _digest(key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


def inbox_credentials(secret_key: str, *, workspace_id: int, version: int) -> InboxCredentials:
    """The workspace's inbox key and secret of `version`, derived from the app's secret key."""
    suffix = f":v{version}" if version else ""
    tag = _digest(secret_key, f"inbox-key:{workspace_id}{suffix}")[:16]
    return InboxCredentials(
        inbox_key=f"ibx_{workspace_id}_{tag}",
        inbox_secret=_digest(secret_key, f"inbox:{workspace_id}{suffix}"),
    )


def key_workspace(inbox_key: str | None) -> int | None:
    """The workspace an inbox key names, if it has the shape of one."""
    match = _KEY_SHAPE.fullmatch(inbox_key or "")
    if match is None or int(match.group(1)) > MAX_ROW_ID:
        return None
    return int(match.group(1))


async def credentials_version(session: AsyncSession, workspace_id: int) -> int:
    """The workspace's current inbox credentials version (0 for no such workspace)."""
    found = await session.scalar(
        select(Workspace.inbox_secret_version).where(Workspace.id == workspace_id)
    )
    return found or 0


async def rotate_inbox_credentials(
    session: AsyncSession, *, workspace_id: int, secret_key: str
) -> InboxCredentials:
    """New inbox credentials for the workspace, the old ones refused from now on. Flushes,
    never commits."""
    version = await session.scalar(
        update(Workspace)
        .where(Workspace.id == workspace_id)
        .values(inbox_secret_version=Workspace.inbox_secret_version + 1)
        .returning(Workspace.inbox_secret_version)
    )
    if version is None:
        raise NotFound(f"Workspace {workspace_id} not found.")
    return inbox_credentials(secret_key, workspace_id=workspace_id, version=version)


class CredentialVersions:
    """Each workspace's current inbox credentials version, as read in the last
    `VERSION_TTL_S` seconds, so verifying a customer's app costs no query per request."""

    def __init__(
        self, *, ttl: float = VERSION_TTL_S, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._monotonic = monotonic
        self._versions: dict[int, tuple[float, int]] = {}

    async def get(self, database: Database, workspace_id: int) -> int:
        """The workspace's version, read again once the one held is `ttl` old."""
        held = self._versions.get(workspace_id)
        if held is not None and held[0] > self._monotonic():
            return held[1]
        async with database.read_session() as session:
            version = await credentials_version(session, workspace_id)
        if len(self._versions) >= _MAX_VERSIONS:
            self._versions.clear()
        self._versions[workspace_id] = (self._monotonic() + self._ttl, version)
        return version

    def forget(self, workspace_id: int) -> None:
        """Read the workspace's version again next time (after rotating it here)."""
        self._versions.pop(workspace_id, None)


def sign_user_id(inbox_secret: str, user_id: str) -> str:
    """The `user_hash` a backend gives its app for `user_id`: hex HMAC-SHA256 of the user id
    under the workspace's inbox secret."""
    return _digest(inbox_secret, user_id)


def authenticate(
    keys: SecretKeys,
    *,
    inbox_key: str | None,
    user_id: str | None,
    user_hash: str | None,
    version: int,
) -> InboxUser:
    """The customer these credentials prove, checked against the key's workspace's
    credentials of `version` (derived from the current secret key or a previous one);
    Unauthorized, the same whatever is wrong, when they prove none (comparisons take
    constant time, and every key is tried)."""
    if not inbox_key or not user_id or not user_hash:
        raise Unauthorized(
            "Send the inbox key, the user id and its hash "
            "(X-Clarion-Inbox-Key, X-Clarion-User-Id, X-Clarion-User-Hash).",
            scheme=AUTH_SCHEME,
        )
    named = key_workspace(inbox_key)
    workspace_id = named or 0
    proven = False
    for secret_key in (keys.current, *keys.previous):
        expected = inbox_credentials(secret_key, workspace_id=workspace_id, version=version)
        key_ok = hmac.compare_digest(inbox_key.encode(), expected.inbox_key.encode())
        hash_ok = hmac.compare_digest(
            user_hash.strip().lower().encode(),
            sign_user_id(expected.inbox_secret, user_id).encode(),
        )
        proven |= key_ok and hash_ok
    valid = named is not None and len(user_id) <= MAX_USER_ID
    if not (valid and proven):
        raise Unauthorized("The inbox key or the user hash is not valid.", scheme=AUTH_SCHEME)
    return InboxUser(workspace_id, user_id, version)


# Delivery


async def deliver_to_inbox(
    session: AsyncSession, *, message: Message, content: dict[str, Any], now: datetime
) -> None:
    """Put the rendered message (`title`, `body` HTML, `action_url`, `data`) in its
    profile's inbox: delivered now, recorded and emitted as every delivery is
    (`feedback.record`); live streams hear of it once the caller commits. A message
    already delivered is left as it is. Flushes only."""
    if message.channel != INBOX:
        raise ValueError(f"message {message.id} is a {message.channel} message")
    applied = await record_outcomes(
        session,
        workspace_id=message.workspace_id,
        outcomes=[Outcome(message, "delivered")],
        now=now,
    )
    if not applied:
        return
    message.content = {
        "title": str(content.get("title") or ""),
        "body": str(content.get("body") or ""),
        "action_url": content.get("action_url") or None,
        "data": dict(content.get("data") or {}),
    }
    await session.flush()
    await _announce(session, message)


async def deliver_test(
    session: AsyncSession,
    *,
    workspace_id: int,
    channel_id: int,
    profile_id: uuid.UUID,
    title: str,
    text_body: str,
    now: datetime,
) -> uuid.UUID:
    """Put a channel's test message in the profile's inbox, delivered now, and return its
    id: a transactional message of origin `test`, so it takes no frequency-cap slot and
    belongs to no campaign or journey; no history and no event (a test is nobody's
    engagement). Live streams hear of it once the caller commits. Flushes only."""
    message_id = uuid.uuid4()
    message = Message(
        id=message_id,
        workspace_id=workspace_id,
        profile_id=profile_id,
        channel=INBOX,
        channel_id=channel_id,
        idempotency_key=f"test:{message_id}",
        origin="test",
        category="transactional",
        status="delivered",
        attempts=1,
        context={},
        links=[],
        content={
            "title": title,
            "body": html.escape(text_body).replace("\n", "<br>"),
            "action_url": None,
            "data": {"type": "clarion.test"},
        },
        send_after=now,
        created_at=now,
        updated_at=now,
        sent_at=now,
        delivered_at=now,
    )
    session.add(message)
    await session.flush()
    await _announce(session, message)
    return message_id


async def _announce(session: AsyncSession, message: Message) -> None:
    """Tell live streams of the message once the transaction commits."""
    notice = Notice(message.workspace_id, message.profile_id, message.id)
    if session.get_bind().dialect.name == "postgresql":
        # PostgreSQL delivers it at commit, to every listening process, or not at all.
        await session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": CHANNEL, "payload": notice.encode()},
        )
    else:
        _publish_on_commit(session, notice)


def _publish_on_commit(session: AsyncSession, notice: Notice) -> None:
    info = session.sync_session.info
    pending: list[Notice] | None = info.get(_PENDING)
    if pending is None:
        pending = info[_PENDING] = []
        orm_event.listen(session.sync_session, "after_commit", _after_commit, once=True)
        orm_event.listen(session.sync_session, "after_rollback", _after_rollback, once=True)
    pending.append(notice)


def _after_commit(session: Session) -> None:
    for notice in session.info.pop(_PENDING, None) or ():
        BROKER.publish(notice)


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


# Reading and changing a customer's inbox


async def profile_ids(session: AsyncSession, *, workspace_id: int, user_id: str) -> list[uuid.UUID]:
    """The profiles whose inbox messages are the user's: its canonical profile and those
    merged into it; none when no profile has the user id."""
    profile = await profiles.get_by_identity(
        session, workspace_id=workspace_id, kind=USER_ID, value=user_id
    )
    if profile is None:
        return []
    return await profiles.tree_ids(session, profile_id=profile.id)


def _theirs(workspace_id: int, owners: Sequence[uuid.UUID]) -> list[ColumnElement[bool]]:
    return [
        Message.workspace_id == workspace_id,
        Message.profile_id.in_(owners),
        Message.channel == INBOX,
        Message.delivered_at.is_not(None),
    ]


async def list_messages(
    session: AsyncSession,
    *,
    user: InboxUser,
    archived: bool = False,
    limit: int,
    cursor: str | None = None,
) -> tuple[list[Message], str | None, int]:
    """A page of the user's inbox, newest delivery first (only archived messages with
    `archived`, else only the others), the next cursor, and how many unarchived messages
    are unread."""
    owners = await profile_ids(session, workspace_id=user.workspace_id, user_id=user.user_id)
    if not owners:
        if cursor is not None:
            decode_time_uuid_cursor(cursor)  # a bad cursor is a 400 whoever asks
        return [], None, 0
    query = select(Message).where(
        *_theirs(user.workspace_id, owners),
        Message.archived_at.is_not(None) if archived else Message.archived_at.is_(None),
    )
    if cursor is not None:
        delivered, after = decode_time_uuid_cursor(cursor)
        query = query.where(
            or_(
                Message.delivered_at < delivered,
                and_(Message.delivered_at == delivered, Message.id < after),
            )
        )
    query = query.order_by(Message.delivered_at.desc(), Message.id.desc()).limit(limit + 1)
    rows = list((await session.scalars(query)).all())
    unread = await session.scalar(
        select(func.count()).where(
            *_theirs(user.workspace_id, owners),
            Message.read_at.is_(None),
            Message.archived_at.is_(None),
        )
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        assert last.delivered_at is not None
        next_cursor = encode_cursor(last.delivered_at.isoformat(), str(last.id))
    return rows, next_cursor, unread or 0


async def get_message(
    session: AsyncSession, *, user: InboxUser, message_id: uuid.UUID
) -> Message | None:
    """The user's inbox message `message_id`, or None when it is not theirs."""
    owners = await profile_ids(session, workspace_id=user.workspace_id, user_id=user.user_id)
    if not owners:
        return None
    message: Message | None = await session.scalar(
        select(Message).where(*_theirs(user.workspace_id, owners), Message.id == message_id)
    )
    return message


async def _message_or_raise(
    session: AsyncSession, user: InboxUser, message_id: uuid.UUID
) -> Message:
    message = await get_message(session, user=user, message_id=message_id)
    if message is None:
        raise NotFound(f"No message {message_id} in this inbox.")
    return message


async def mark_read(
    session: AsyncSession, *, user: InboxUser, message_id: uuid.UUID, now: datetime
) -> Message:
    """The message, marked read now (kept as it was if already read); the first read is
    its open. NotFound when it is not the user's. Flushes only."""
    message = await _message_or_raise(session, user, message_id)
    await engagement.mark_opened(session, message=message, now=now)
    await _set(session, message, {"read_at": now}, only_if_null="read_at", now=now)
    return message


async def mark_unread(
    session: AsyncSession, *, user: InboxUser, message_id: uuid.UUID, now: datetime
) -> Message:
    """The message, marked unread (its open stays counted). NotFound when it is not the
    user's. Flushes only."""
    message = await _message_or_raise(session, user, message_id)
    await _set(session, message, {"read_at": None}, now=now)
    return message


async def archive(
    session: AsyncSession, *, user: InboxUser, message_id: uuid.UUID, now: datetime
) -> Message:
    """The message, archived now (kept as it was if already archived). NotFound when it
    is not the user's. Flushes only."""
    message = await _message_or_raise(session, user, message_id)
    await _set(session, message, {"archived_at": now}, only_if_null="archived_at", now=now)
    return message


async def mark_all_read(session: AsyncSession, *, user: InboxUser, now: datetime) -> int:
    """Mark every unread, unarchived message of the user read; how many changed. Not an
    open of each: nobody read them one by one. Flushes only."""
    owners = await profile_ids(session, workspace_id=user.workspace_id, user_id=user.user_id)
    if not owners:
        return 0
    result = await session.execute(
        update(Message)
        .where(
            *_theirs(user.workspace_id, owners),
            Message.read_at.is_(None),
            Message.archived_at.is_(None),
        )
        .values(read_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def _set(
    session: AsyncSession,
    message: Message,
    values: dict[str, datetime | None],
    *,
    now: datetime,
    only_if_null: str | None = None,
) -> None:
    """Apply `values` in one UPDATE (when `only_if_null` is still null), then reload the
    message so that it shows what the database holds."""
    condition = [Message.id == message.id]
    if only_if_null is not None:
        condition.append(getattr(Message, only_if_null).is_(None))
    await session.execute(
        update(Message)
        .where(*condition)
        .values(**values, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.refresh(message)
