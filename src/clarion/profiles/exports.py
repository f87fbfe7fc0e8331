"""Exporting a workspace's canonical profiles as CSV or JSON Lines, streamed.

Profiles are read in keyset pages (`PAGE_SIZE` at a time, oldest first) inside one read
transaction, a snapshot (REPEATABLE READ on PostgreSQL; SQLite's read transactions are
snapshots), so memory stays bounded and the file is consistent.

CSV: the identity columns `user_id`, `email`, `phone` first, then `clarion_*` columns (id,
dates, computed traits, every identity) that import ignores, then one column per trait key, in
key order. A first pass over the traits collects the keys and, per key, the narrowest type that
reads back the same (`transfer.trait_header`), so the file opens in a spreadsheet as plain
columns and imports into another workspace with the same traits. The file starts with a UTF-8
byte order mark, which spreadsheets need to read UTF-8 and import skips.

JSON Lines: one profile per line, shaped as `GET /api/v1/profiles/{id}` answers it.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.database import Database
from clarion.core.spreadsheets import guarded_cell
from clarion.profiles import computed as computed_traits
from clarion.profiles import queries, transfer
from clarion.profiles.identity import USER_ID
from clarion.profiles.models import Profile
from clarion.profiles.schemas import ProfileRead

PAGE_SIZE = 500
BOM = "\ufeff"
FIXED_COLUMNS = (
    "user_id",
    "email",
    "phone",
    "clarion_id",
    "clarion_created_at",
    "clarion_updated_at",
    "clarion_first_seen_at",
    "clarion_last_seen_at",
    "clarion_page_views",
    "clarion_screen_views",
    "clarion_orders",
    "clarion_last_order_at",
    "clarion_event_counts",
    "clarion_money",
    "clarion_identities",
)
# Traits that the identity columns carry.
_IN_IDENTITY_COLUMNS = frozenset({"email", "phone"})


class ExportFormat(StrEnum):
    """What an export is written as."""

    CSV = "csv"
    JSONL = "jsonl"


MEDIA_TYPES = {ExportFormat.CSV: "text/csv; charset=utf-8", ExportFormat.JSONL: "application/jsonl"}


async def stream_profiles(
    database: Database, *, workspace_id: int, format: ExportFormat, page_size: int = PAGE_SIZE
) -> AsyncIterator[str]:
    """The workspace's canonical profiles as `format`, piece by piece, from one snapshot."""
    async with database.read_session() as session:
        if database.dialect == "postgresql":
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        if format is ExportFormat.JSONL:
            async for piece in _jsonl(session, workspace_id, page_size):
                yield piece
        else:
            async for piece in _csv(session, workspace_id, page_size):
                yield piece


async def _pages(
    session: AsyncSession, workspace_id: int, page_size: int
) -> AsyncIterator[list[queries.ProfileView]]:
    cursor: str | None = None
    while True:
        profiles, cursor = await queries.list_profiles(
            session, workspace_id=workspace_id, limit=page_size, cursor=cursor
        )
        views = await queries.view_profiles(session, profiles)
        if views:
            yield views
        session.expunge_all()  # nothing of a page outlives it
        if cursor is None:
            return


async def _jsonl(session: AsyncSession, workspace_id: int, page_size: int) -> AsyncIterator[str]:
    async for views in _pages(session, workspace_id, page_size):
        yield "".join(ProfileRead.of(view).model_dump_json() + "\n" for view in views)


async def trait_columns(
    session: AsyncSession, *, workspace_id: int, page_size: int = PAGE_SIZE
) -> dict[str, str]:
    """Every trait key of the workspace's canonical profiles and the column type it needs."""
    kinds: dict[str, str] = {}
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        query = select(Profile.traits, Profile.created_at, Profile.id).where(
            Profile.workspace_id == workspace_id, Profile.canonical_id.is_(None)
        )
        if after is not None:
            query = query.where(
                or_(
                    Profile.created_at > after[0],
                    and_(Profile.created_at == after[0], Profile.id > after[1]),
                )
            )
        rows = (
            await session.execute(query.order_by(Profile.created_at, Profile.id).limit(page_size))
        ).all()
        for traits, _, _ in rows:
            for key, value in traits.items():
                if key not in _IN_IDENTITY_COLUMNS:
                    kinds[key] = transfer.widen(kinds.get(key), value)
        if len(rows) < page_size:
            return kinds
        after = (rows[-1][1], rows[-1][2])


async def _csv(session: AsyncSession, workspace_id: int, page_size: int) -> AsyncIterator[str]:
    kinds = await trait_columns(session, workspace_id=workspace_id, page_size=page_size)
    columns = []
    for key in sorted(kinds):
        header = transfer.trait_header(key, kinds[key])
        if header is not None:
            columns.append((key, kinds[key], header))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([*FIXED_COLUMNS, *(header for _, _, header in columns)])
    yield BOM + _drain(buffer)
    async for views in _pages(session, workspace_id, page_size):
        for view in views:
            traits = view.profile.traits
            cells = [
                "" if key not in traits else transfer.format_cell(traits[key], kind)
                for key, kind, _ in columns
            ]
            writer.writerow([guarded_cell(cell) for cell in (*_fixed_cells(view), *cells)])
        yield _drain(buffer)


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def _fixed_cells(view: queries.ProfileView) -> list[str]:
    profile, computed = view.profile, view.profile.computed
    user_ids = [i.value for i in view.identities if i.kind == USER_ID]
    return [
        user_ids[0] if user_ids else "",
        _text(profile.traits.get("email")),
        _text(profile.traits.get("phone")),
        str(profile.id),
        profile.created_at.isoformat(),
        profile.updated_at.isoformat(),
        _moment(profile.first_seen_at),
        _moment(profile.last_seen_at),
        str(computed.get("page_views", 0)),
        str(computed.get("screen_views", 0)),
        str(computed.get("orders", 0)),
        computed.get("last_order_at") or "",
        _json(computed.get("event_counts", {})),
        _json(computed_traits.money(computed)),
        _json([f"{i.kind}:{i.value}" for i in view.identities]),
    ]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _moment(value: datetime | None) -> str:
    return "" if value is None else value.isoformat()


def _json(value: Sequence[Any] | dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
