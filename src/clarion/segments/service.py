"""Segments: defining them (validated, with warnings), reading them and their members.

Membership itself, batch and real-time, is in `membership.py`.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.database import Database, hold_rows
from clarion.core.errors import Conflict, FieldError, InvalidInput, NotFound
from clarion.core.pagination import decode_id_cursor, decode_uuid_cursor, encode_cursor, id_page
from clarion.core.spreadsheets import guarded_cell
from clarion.profiles import queries as profiles
from clarion.segments import rules as rule_nodes
from clarion.segments.models import Segment, SegmentChange, SegmentMember, SegmentSize
from clarion.segments.parsing import RuleError, parse_rule
from clarion.segments.rules import Rule
from clarion.segments.templates import TEMPLATES

# Unknown names are looked for among this many of the newest events / profiles: enough to
# catch a typo, bounded so that saving a segment never scans a whole log.
RECENT_EVENTS = 100_000
RECENT_PROFILES = 10_000
EXPORT_PAGE = 1_000
_REFERENCE_EDITS = 0x53454752  # advisory lock space: one lock per workspace (PostgreSQL)


@dataclass(frozen=True, slots=True)
class CheckedRule:
    """A valid rule, its canonical JSON, and warnings about names not seen yet."""

    rule: Rule
    document: dict[str, Any]
    warnings: list[FieldError]


def _nodes(document: Any, path: str = "rule") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every condition object of a canonical rule document with its path."""
    if not isinstance(document, dict):
        return
    yield path, document
    for i, child in enumerate(document.get("conditions") or []):
        yield from _nodes(child, f"{path}.conditions.{i}")
    for key in ("condition", "where"):
        if isinstance(document.get(key), dict):
            yield from _nodes(document[key], f"{path}.{key}")


async def check_rule(
    session: AsyncSession,
    *,
    workspace_id: int,
    raw: Any,
    segment_id: int | None = None,
    hold: bool = False,
) -> CheckedRule:
    """The rule `raw` describes, checked against the workspace: referenced segments exist
    and form no cycle (InvalidInput naming the node); names not seen yet are warnings. With
    `hold` (a rule about to be saved), the referenced segments are held first
    (`hold_segments`): a delete of one either waits and then sees this segment naming it,
    or goes first and the check finds it gone. Saving an existing segment's references
    also waits for any other such save in the workspace to end, so two edits that each
    close half of a cycle (A naming B while B is made to name A) never both pass."""
    try:
        rule = parse_rule(raw)
    except RuleError as error:
        raise InvalidInput("The rule is not valid.", errors=error.errors) from error
    document = rule_nodes.to_json(rule)
    errors: list[FieldError] = []
    references = [(path, node) for path, node in _nodes(document) if node["type"] == "segment"]
    if hold and references and segment_id is not None:
        await _one_reference_edit_at_a_time(session, workspace_id)
    if hold:
        await hold_segments(
            session,
            workspace_id=workspace_id,
            segment_ids=[node["segment_id"] for _, node in references],
        )
    rules = await _rules_by_id(session, workspace_id) if references else {}
    for path, node in references:
        referenced = node["segment_id"]
        if referenced == segment_id:
            errors.append(FieldError(f"{path}.segment_id", "a segment cannot contain itself"))
            continue
        chain = _reference_chain(rules, referenced, segment_id)
        if chain is None:
            errors.append(FieldError(f"{path}.segment_id", f"no segment {referenced} here"))
        elif chain:
            cycle = " -> ".join(str(i) for i in [segment_id, *chain])
            errors.append(FieldError(f"{path}.segment_id", f"would make a cycle: {cycle}"))
    if errors:
        raise InvalidInput("The rule is not valid.", errors=errors)
    warnings = await _unseen_names(session, workspace_id, document)
    return CheckedRule(rule, document, warnings)


async def _one_reference_edit_at_a_time(session: AsyncSession, workspace_id: int) -> None:
    """Wait for the workspace's other saves of segment references to end (PostgreSQL; on
    SQLite writers already take turns): each then reads the references the other wrote."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:space, :workspace)"),
            {"space": _REFERENCE_EDITS, "workspace": workspace_id},
        )


def _reference_chain(
    rules: dict[int, dict[str, Any]], start: int, target: int | None
) -> list[int] | None:
    """None when `start` is not one of the workspace's segments (`rules`); else the path of
    references from `start` back to `target` (a cycle), or [] when there is none."""
    if start not in rules:
        return None
    if target is None:
        return []
    stack: list[tuple[int, list[int]]] = [(start, [start])]
    seen: set[int] = set()
    while stack:
        current, path = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        for _, node in _nodes(rules.get(current)):
            if node["type"] != "segment":
                continue
            referenced: int = node["segment_id"]
            if referenced == target:
                return [*path, target]
            stack.append((referenced, [*path, referenced]))
    return []


async def _rules_by_id(session: AsyncSession, workspace_id: int) -> dict[int, dict[str, Any]]:
    rows = await session.execute(
        select(Segment.id, Segment.rule).where(Segment.workspace_id == workspace_id)
    )
    return {row.id: row.rule for row in rows}


async def _unseen_names(
    session: AsyncSession, workspace_id: int, document: dict[str, Any]
) -> list[FieldError]:
    warnings: list[FieldError] = []
    newest = await session.scalar(
        text("SELECT max(id) FROM events WHERE workspace_id = :w"), {"w": workspace_id}
    )
    for path, node in _nodes(document):
        if node["type"] in ("event", "aggregate", "occurrence"):
            seen = await session.scalar(
                text(
                    "SELECT 1 FROM events WHERE workspace_id = :w AND id > :floor"
                    " AND type = 'track' AND name = :name LIMIT 1"
                ),
                {"w": workspace_id, "floor": (newest or 0) - RECENT_EVENTS, "name": node["event"]},
            )
            if seen is None:
                warnings.append(
                    FieldError(f"{path}.event", f"no recent event is called {node['event']!r}")
                )
        elif node["type"] == "trait":
            key = node["trait"].split(".", 1)[0]
            if not await _trait_seen(session, workspace_id, key):
                warnings.append(FieldError(f"{path}.trait", f"no recent profile has {key!r}"))
    return warnings


async def _trait_seen(session: AsyncSession, workspace_id: int, key: str) -> bool:
    if session.get_bind().dialect.name == "postgresql":
        has_key, value = "jsonb_exists(traits, :key)", key
    else:
        has_key, value = "json_type(traits, :key) IS NOT NULL", '$."' + key.replace('"', '""') + '"'
    found = await session.scalar(
        text(
            f"SELECT 1 FROM (SELECT traits FROM profiles WHERE workspace_id = :w"  # noqa: S608
            f" AND canonical_id IS NULL ORDER BY created_at DESC LIMIT :n) AS recent"
            f" WHERE {has_key} LIMIT 1"
        ),
        {"w": workspace_id, "n": RECENT_PROFILES, "key": value},
    )
    return found is not None


async def create_segment(
    session: AsyncSession,
    *,
    workspace_id: int,
    name: str,
    description: str,
    raw_rule: Any,
    now: datetime,
    template: str | None = None,
) -> tuple[Segment, list[FieldError]]:
    """A new segment and its rule's warnings; Conflict when the name is taken."""
    checked = await check_rule(session, workspace_id=workspace_id, raw=raw_rule, hold=True)
    segment = Segment(
        workspace_id=workspace_id,
        name=name,
        description=description,
        rule=checked.document,
        version=1,
        template=template,
        member_count=0,
        created_at=now,
        updated_at=now,
    )
    session.add(segment)
    await _flush_named(session, name)
    return segment, checked.warnings


async def _flush_named(session: AsyncSession, name: str) -> None:
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as error:
        raise Conflict(
            f"A segment called {name!r} already exists.",
            errors=[FieldError("name", "is taken by another segment")],
        ) from error


async def get_segment_or_raise(
    session: AsyncSession, *, workspace_id: int, segment_id: int, lock: bool = False
) -> Segment:
    """The workspace's segment (with `lock`, row-locked on PostgreSQL); NotFound
    otherwise."""
    query = select(Segment).where(Segment.workspace_id == workspace_id, Segment.id == segment_id)
    if lock and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    segment = await session.scalar(query)
    if segment is None:
        raise NotFound(f"No segment {segment_id} in this workspace.")
    return segment


async def update_segment(
    session: AsyncSession,
    *,
    workspace_id: int,
    segment_id: int,
    name: str | None,
    description: str | None,
    raw_rule: Any,
    now: datetime,
) -> tuple[Segment, list[FieldError], list[Segment]]:
    """The segment with the given fields changed, the rule's warnings, and the segments to
    recompute as baselines: none, or after a new rule (which bumps its version) this one
    and every segment naming it."""
    segment = await get_segment_or_raise(session, workspace_id=workspace_id, segment_id=segment_id)
    warnings: list[FieldError] = []
    rebaselined: list[Segment] = []
    if raw_rule is not None:
        checked = await check_rule(
            session, workspace_id=workspace_id, raw=raw_rule, segment_id=segment_id, hold=True
        )
        if checked.document != segment.rule:
            segment.rule = checked.document
            segment.version += 1
            # The new rule's first computation is a baseline, and so is that of every
            # segment naming this one: their rules changed with it.
            rebaselined = [
                segment,
                *await dependent_segments(
                    session, workspace_id=workspace_id, segment_id=segment.id
                ),
            ]
            for changed in rebaselined:
                changed.recomputed_at = None
        warnings = checked.warnings
    if description is not None:
        segment.description = description
    if name is not None:
        segment.name = name
    segment.updated_at = now
    await _flush_named(session, segment.name)
    return segment, warnings, rebaselined


def _referrers(rules: dict[int, dict[str, Any]], segment_id: int) -> list[int]:
    """The segments whose rules name `segment_id` directly, by id."""
    return sorted(
        other_id
        for other_id, document in rules.items()
        if any(
            node.get("segment_id") == segment_id
            for _, node in _nodes(document)
            if node["type"] == "segment"
        )
    )


async def dependent_segments(
    session: AsyncSession, *, workspace_id: int, segment_id: int
) -> list[Segment]:
    """The segments whose rules name this one, directly or through others: a change to its
    rule changes theirs."""
    rules = await _rules_by_id(session, workspace_id)
    found: set[int] = set()
    pending = [segment_id]
    while pending:
        for other_id in _referrers(rules, pending.pop()):
            if other_id not in found:
                found.add(other_id)
                pending.append(other_id)
    if not found:
        return []
    query = select(Segment).where(Segment.workspace_id == workspace_id, Segment.id.in_(found))
    return list((await session.scalars(query.order_by(Segment.id))).all())


# What outside segmentation still needs a segment (live journeys, campaigns yet to take
# their audience), as the names a marketer knows them by: ["journey 3 (Welcome)"]. Domains
# downstream of segments provide these; `app.py` and the CLI pass them in.
SegmentUsers = Callable[[AsyncSession, int, int], Awaitable[list[str]]]


async def delete_segment(
    session: AsyncSession,
    *,
    workspace_id: int,
    segment_id: int,
    users: Sequence[SegmentUsers] = (),
) -> None:
    """Delete the segment with its members and history; Conflict while another segment's
    rule refers to it or any of `users` still needs it."""
    # Locked first, on PostgreSQL: what is starting to use the segment holds it (see
    # `hold_segments`) until its transaction ends, so the checks below see that use, and
    # one starting after waits for this delete and then finds the segment gone.
    await get_segment_or_raise(session, workspace_id=workspace_id, segment_id=segment_id, lock=True)
    referrers = _referrers(await _rules_by_id(session, workspace_id), segment_id)
    if referrers:
        raise Conflict(f"Segments {', '.join(map(str, referrers))} refer to this segment.")
    needing = [name for find in users for name in await find(session, workspace_id, segment_id)]
    if needing:
        raise Conflict(f"This segment is in use by {', '.join(needing)}.")
    # Its members and history have no foreign key to cascade from it (migration 0020);
    # their writers hold the segment, so none is writing them now.
    for rows in (SegmentMember, SegmentChange):
        await session.execute(delete(rows).where(rows.segment_id == segment_id))
    await session.execute(
        delete(Segment).where(Segment.workspace_id == workspace_id, Segment.id == segment_id)
    )


async def hold_segments(
    session: AsyncSession, *, workspace_id: int, segment_ids: Iterable[int]
) -> None:
    """Hold the workspace's segments among `segment_ids` against their deletion until the
    transaction ends (`core.database.hold_rows`): what starts using one takes this before it
    checks it."""
    await hold_rows(session, Segment, workspace_id=workspace_id, ids=segment_ids)


async def list_segments(
    session: AsyncSession, *, workspace_id: int, limit: int, cursor: str | None
) -> tuple[Sequence[Segment], str | None]:
    """The workspace's segments by id, cursor-paged."""
    query = select(Segment).where(Segment.workspace_id == workspace_id).order_by(Segment.id)
    if cursor is not None:
        query = query.where(Segment.id > decode_id_cursor(cursor))
    items = (await session.scalars(query.limit(limit + 1))).all()
    more = len(items) > limit
    items = items[:limit]
    return items, encode_cursor(items[-1].id) if more else None


async def segment_ids(session: AsyncSession, *, workspace_id: int) -> frozenset[int]:
    """The ids of the workspace's segments (what rules elsewhere may name)."""
    rows = await session.scalars(select(Segment.id).where(Segment.workspace_id == workspace_id))
    return frozenset(rows.all())


async def list_members(
    session: AsyncSession, *, workspace_id: int, segment_id: int, limit: int, cursor: str | None
) -> tuple[list[SegmentMember], str | None]:
    """A segment's members by profile id, cursor-paged."""
    await get_segment_or_raise(session, workspace_id=workspace_id, segment_id=segment_id)
    query = (
        select(SegmentMember)
        .where(SegmentMember.workspace_id == workspace_id, SegmentMember.segment_id == segment_id)
        .order_by(SegmentMember.profile_id)
    )
    if cursor is not None:
        query = query.where(SegmentMember.profile_id > decode_uuid_cursor(cursor))
    items = list((await session.scalars(query.limit(limit + 1))).all())
    more = len(items) > limit
    items = items[:limit]
    return items, encode_cursor(items[-1].profile_id.hex) if more else None


async def list_changes(
    session: AsyncSession,
    *,
    workspace_id: int,
    segment_id: int | None = None,
    profile_ids: Sequence[uuid.UUID] | None = None,
    limit: int,
    cursor: str | None,
) -> tuple[Sequence[SegmentChange], str | None]:
    """Entries and exits, newest first, of one segment or of some profiles, cursor-paged."""
    query = select(SegmentChange).where(SegmentChange.workspace_id == workspace_id)
    if segment_id is not None:
        query = query.where(SegmentChange.segment_id == segment_id)
    if profile_ids is not None:
        query = query.where(SegmentChange.profile_id.in_(profile_ids))
    return await id_page(
        session, query, SegmentChange.id, limit=limit, cursor=cursor, newest_first=True
    )


async def list_sizes(
    session: AsyncSession, *, workspace_id: int, segment_id: int, limit: int
) -> Sequence[SegmentSize]:
    """The segment's size after each recompute, newest first."""
    await get_segment_or_raise(session, workspace_id=workspace_id, segment_id=segment_id)
    rows = await session.scalars(
        select(SegmentSize)
        .where(SegmentSize.segment_id == segment_id)
        .order_by(SegmentSize.at.desc(), SegmentSize.id.desc())
        .limit(limit)
    )
    return rows.all()


async def profile_memberships(
    session: AsyncSession, *, workspace_id: int, profile_id: uuid.UUID
) -> list[tuple[int, str, datetime]]:
    """(segment id, name, entered at) of every segment the profile (or the profile it was
    merged into) is in now."""
    profile = await profiles.get_profile_or_raise(
        session, workspace_id=workspace_id, profile_id=profile_id
    )
    rows = await session.execute(
        select(Segment.id, Segment.name, SegmentMember.entered_at)
        .join(SegmentMember, SegmentMember.segment_id == Segment.id)
        .where(SegmentMember.workspace_id == workspace_id)
        .where(SegmentMember.profile_id == profile.id)
        .order_by(Segment.id)
    )
    return [(row[0], row[1], row[2]) for row in rows]


async def stream_members(
    database: Database, *, workspace_id: int, segment_id: int
) -> AsyncIterator[str]:
    """Every member as CSV text (profile_id, user_id, anonymous_id, entered_at), in pieces,
    read page by page in its own session."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["profile_id", "user_id", "anonymous_id", "entered_at"])
    yield buffer.getvalue()
    after: uuid.UUID | None = None
    async with database.read_session() as session:
        while True:
            query = (
                select(SegmentMember.profile_id, SegmentMember.entered_at)
                .where(SegmentMember.workspace_id == workspace_id)
                .where(SegmentMember.segment_id == segment_id)
                .order_by(SegmentMember.profile_id)
                .limit(EXPORT_PAGE)
            )
            if after is not None:
                query = query.where(SegmentMember.profile_id > after)
            page = (await session.execute(query)).all()
            if not page:
                return
            senders = await profiles.sender_ids(
                session, workspace_id=workspace_id, profile_ids=[row[0] for row in page]
            )
            buffer.seek(0)
            buffer.truncate()
            for profile_id, entered_at in page:
                user_id, anonymous_id = senders.get(profile_id, (None, None))
                writer.writerow(
                    [
                        profile_id,
                        guarded_cell(user_id or ""),
                        guarded_cell(anonymous_id or ""),
                        entered_at.isoformat(),
                    ]
                )
            yield buffer.getvalue()
            after = page[-1][0]


async def create_from_template(
    session: AsyncSession, *, workspace_id: int, key: str, now: datetime
) -> tuple[Segment, list[FieldError]]:
    """The ready-made segment `key` in the workspace; NotFound for an unknown key, Conflict
    when it was created before."""
    template = TEMPLATES.get(key)
    if template is None:
        raise NotFound(f"No ready-made segment {key!r}; see GET /api/v1/segments/templates.")
    existing = await session.scalar(
        select(Segment.id).where(Segment.workspace_id == workspace_id, Segment.template == key)
    )
    if existing is not None:
        raise Conflict(f"The ready-made segment {key!r} is segment {existing} already.")
    return await create_segment(
        session,
        workspace_id=workspace_id,
        name=template.name,
        description=template.description,
        raw_rule=template.rule,
        now=now,
        template=key,
    )


async def create_ready_made(
    session: AsyncSession, *, workspace_id: int, now: datetime
) -> list[Segment]:
    """Every ready-made segment the workspace does not have yet, created now."""
    existing = set(
        (
            await session.scalars(
                select(Segment.template).where(
                    Segment.workspace_id == workspace_id, Segment.template.is_not(None)
                )
            )
        ).all()
    )
    names = set(
        (
            await session.scalars(select(Segment.name).where(Segment.workspace_id == workspace_id))
        ).all()
    )
    created = []
    for key, template in TEMPLATES.items():
        if key in existing or template.name in names:
            continue
        segment, _ = await create_from_template(
            session, workspace_id=workspace_id, key=key, now=now
        )
        created.append(segment)
    return created
