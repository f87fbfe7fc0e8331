"""Who a campaign's audience is: checked when it is saved, previewed, required to be
sendable, and read page by page when the campaign launches.

A segment's audience is its members as the segments service lists them, taken when the
campaign launches: a member who entered after the launch began (`entered_at` later) is
left out, so the snapshot is the segment at that moment however long it takes to read. A
list's audience is the canonical profiles its user ids and profile ids resolve to at launch;
the unresolvable ones are left out.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Text,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, array
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.campaigns.models import Campaign
from clarion.core.errors import Conflict, FieldError, NotFound
from clarion.messaging.schemas import UnprocessableInput
from clarion.profiles import queries as profiles
from clarion.profiles.identity import USER_ID
from clarion.segments import service as segments

SEGMENT = "segment"
LIST = "list"


async def check(session: AsyncSession, *, workspace_id: int, audience: dict[str, Any]) -> None:
    """UnprocessableInput naming `audience.segment_id` when the segment is not the
    workspace's; a list is checked by its schema."""
    if audience["type"] != SEGMENT:
        return
    try:
        await segments.get_segment_or_raise(
            session, workspace_id=workspace_id, segment_id=audience["segment_id"]
        )
    except NotFound as error:
        raise UnprocessableInput(
            "The audience names no segment of this workspace.",
            errors=[FieldError("audience.segment_id", f"no segment {audience['segment_id']} here")],
        ) from error


async def require_sendable(
    session: AsyncSession, *, workspace_id: int, audience: dict[str, Any]
) -> int:
    """How many profiles the audience holds now; Conflict naming `audience.segment_id` when
    its segment was deleted, or `audience` when it holds nobody."""
    if audience["type"] == SEGMENT:
        try:
            segment = await segments.get_segment_or_raise(
                session, workspace_id=workspace_id, segment_id=audience["segment_id"]
            )
        except NotFound as error:
            raise Conflict(
                f"Segment {audience['segment_id']} no longer exists; choose another audience.",
                errors=[FieldError("audience.segment_id", "the segment was deleted")],
            ) from error
        count = segment.member_count
    else:
        count = len(await resolve_list(session, workspace_id=workspace_id, audience=audience))
    if count == 0:
        raise Conflict(
            "The audience holds nobody now; there is no one to send to.",
            errors=[FieldError("audience", "is empty")],
        )
    return count


async def preview(
    session: AsyncSession, *, workspace_id: int, audience: dict[str, Any], sample: int
) -> tuple[int, list[tuple[uuid.UUID, str | None]]]:
    """How many profiles the audience holds now and up to `sample` of them with a user id;
    UnprocessableInput naming `audience.segment_id` for a segment not (or no longer) here."""
    await check(session, workspace_id=workspace_id, audience=audience)
    if audience["type"] == SEGMENT:
        segment = await segments.get_segment_or_raise(
            session, workspace_id=workspace_id, segment_id=audience["segment_id"]
        )
        members, _ = await segments.list_members(
            session,
            workspace_id=workspace_id,
            segment_id=segment.id,
            limit=max(sample, 1),
            cursor=None,
        )
        count, chosen = segment.member_count, [m.profile_id for m in members[:sample]]
    else:
        resolved = await resolve_list(session, workspace_id=workspace_id, audience=audience)
        count, chosen = len(resolved), resolved[:sample]
    senders = await profiles.sender_ids(session, workspace_id=workspace_id, profile_ids=chosen)
    return count, [(p, senders.get(p, (None, None))[0]) for p in chosen]


async def page(
    session: AsyncSession,
    *,
    workspace_id: int,
    audience: dict[str, Any],
    cursor: str | None,
    limit: int,
    entered_by: datetime,
) -> tuple[list[uuid.UUID], str | None]:
    """One page of the audience at launch (canonical profile ids) and the cursor of the
    next one, None after the last; NotFound when the segment was deleted."""
    if audience["type"] == SEGMENT:
        members, next_cursor = await segments.list_members(
            session,
            workspace_id=workspace_id,
            segment_id=audience["segment_id"],
            limit=limit,
            cursor=cursor,
        )
        return [m.profile_id for m in members if m.entered_at <= entered_by], next_cursor
    entries = _entries(audience)
    start = int(cursor or 0)
    chunk = entries[start : start + limit]
    found = await _resolve(session, workspace_id, chunk)
    end = start + len(chunk)
    return found, str(end) if end < len(entries) else None


async def resolve_list(
    session: AsyncSession, *, workspace_id: int, audience: dict[str, Any]
) -> list[uuid.UUID]:
    """The distinct canonical profiles a list audience resolves to now, in list order."""
    return await _resolve(session, workspace_id, _entries(audience))


async def forget_profiles(
    session: AsyncSession, workspace_id: int, profile_ids: Sequence[uuid.UUID]
) -> dict[str, int]:
    """Take erased profiles (a profile's erasure: a canonical profile and those merged
    into it) out of every list audience naming them, by profile id or by one of their user
    ids, whatever the campaign's state: a scheduled one no longer sends to them, a sent one
    no longer names them; entries removed. Reads only the campaigns whose list names one of
    them. Flushes only."""
    if not profile_ids:
        return {}
    erased = {str(profile_id) for profile_id in profile_ids}
    user_ids = await profiles.identity_values(
        session, workspace_id=workspace_id, profile_ids=profile_ids, kind=USER_ID
    )
    postgres = session.get_bind().dialect.name == "postgresql"
    naming = [_names_any("profile_ids", erased, postgres=postgres)]
    if user_ids:
        naming.append(_names_any("user_ids", user_ids, postgres=postgres))
    removed = 0
    campaigns = await session.execute(
        select(Campaign.id, Campaign.audience)
        .where(
            Campaign.workspace_id == workspace_id,
            Campaign.audience["type"].as_string() == LIST,
            or_(*naming),
        )
        .order_by(Campaign.id)
    )
    for campaign_id, audience in campaigns.all():
        named = audience.get("profile_ids", [])
        users = audience.get("user_ids", [])
        kept = [p for p in named if str(uuid.UUID(str(p))) not in erased]
        kept_users = [u for u in users if u not in user_ids]
        gone = len(named) - len(kept) + len(users) - len(kept_users)
        if gone:
            removed += gone
            changed = {**audience, "profile_ids": kept, "user_ids": kept_users}
            await session.execute(
                update(Campaign).where(Campaign.id == campaign_id).values(audience=changed)
            )
    return {"campaign_list_entries": removed} if removed else {}


def _names_any(key: str, values: Collection[str], *, postgres: bool) -> ColumnElement[bool]:
    """Whether a campaign's audience lists one of `values` under `key`. Lists hold profile
    ids as the schema writes them (canonical, lower case), so text equality finds them."""
    wanted = sorted(values)
    if postgres:  # jsonb's `?|`: any of these strings is an element of the array
        members = Campaign.audience.op("->", return_type=JSONB)(literal(key, Text))
        listed: ColumnElement[bool] = members.has_any(cast(array(wanted), ARRAY(Text)))
        return listed
    element = func.json_each(Campaign.audience, f"$.{key}").table_valued("value")
    return exists().where(element.c.value.in_(wanted))


def _entries(audience: dict[str, Any]) -> list[tuple[str, str]]:
    return [("profile", str(p)) for p in audience.get("profile_ids", [])] + [
        ("user", str(u)) for u in audience.get("user_ids", [])
    ]


async def _resolve(
    session: AsyncSession, workspace_id: int, entries: Sequence[tuple[str, str]]
) -> list[uuid.UUID]:
    """The distinct canonical profiles the entries name, in order; unknown ones left out."""
    profile_ids = [uuid.UUID(value) for kind, value in entries if kind == "profile"]
    views = await profiles.views_by_id(session, workspace_id=workspace_id, profile_ids=profile_ids)
    found: dict[uuid.UUID, None] = {}
    for kind, value in entries:
        if kind == "profile":
            view = views.get(uuid.UUID(value))
            if view is not None:
                found[view.profile.id] = None
            continue
        owner = await profiles.get_by_identity(
            session, workspace_id=workspace_id, kind=USER_ID, value=value
        )
        if owner is not None:
            found[owner.id] = None
    return list(found)
