"""Date triggers' passes (`journeys.dates`, run by `Runtime.run_dates`): when a profile's
date fires (`date_moment`: its anniversary when yearly, shifted by the offset, at the
trigger's local time in the profile's zone), the window a pass covers (`dates_since`, at
most `DATES_LATE` back), one pass of a journey at a time (`one_date_pass_at_a_time`), and
no profile entered twice for one date (`not_entered_before`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.journeys.entry import Entry, Live, SeenRun, runs_so_far
from clarion.journeys.graph import DateTrigger
from clarion.segments.predicate import next_anniversary, profile_zone

# A date pass run late (a worker down at its tick) still enters the moments since its tick,
# at once, up to this far back; further back they are missed (a birthday days late is not
# a birthday message).
DATES_LATE = timedelta(days=1)
_DATE_PASS_LOCKS = 0x4A444154  # advisory lock space of date passes, one lock per journey


def dates_since(payload: dict[str, Any], now: datetime) -> datetime:
    """Where a date pass's window starts: its scheduled tick (a recurring pass), at most
    `DATES_LATE` before `now`; `now` for the pass run when the journey is published."""
    try:
        tick = datetime.fromisoformat(str(payload["scheduled_for"]))
    except (KeyError, ValueError):
        return now
    if tick.tzinfo is None:
        return now
    return min(now, max(tick, now - DATES_LATE))


async def one_date_pass_at_a_time(session: AsyncSession, journey_id: int) -> None:
    """Wait for any other date pass of the journey to commit (PostgreSQL; SQLite has one
    writer): two passes at once would each find no run under a key and both enter it,
    once the first's run had finished (the live runs' unique index no longer holds it)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:space, :journey)"),
            {"space": _DATE_PASS_LOCKS, "journey": journey_id},
        )


async def not_entered_before(
    session: AsyncSession, live: Live, entries: list[Entry]
) -> tuple[list[Entry], list[SeenRun]]:
    """The entries of profiles with no run of the journey under their key yet, in any
    state: the windows of two passes may overlap (a late pass, the one at publishing), and
    a finished run is no longer held off by the live runs' unique index. With them, every
    run of their profiles, for the runtime's entry rules (`_enter`) (one read serves both)."""
    if not entries:
        return [], []
    so_far = await runs_so_far(
        session, journey_id=live.journey.id, rules=live.plan.graph.entry,
        profile_ids={entry.profile_id for entry in entries}, every_state=True,
    )  # fmt: skip
    taken = {(profile_id, key) for profile_id, key, _, _ in so_far}
    return [entry for entry in entries if (entry.profile_id, entry.key) not in taken], so_far


def date_moment(
    trigger: DateTrigger,
    value: Any,
    zone_name: Any,
    now: datetime,
    *,
    since: datetime | None = None,
) -> datetime | None:
    """When a date trigger fires for a profile with this date and time zone, if that is
    from `since` (default `now`) to a day from `now` (None otherwise, or for a value that
    is no date)."""
    since = now if since is None else since
    text = str(value)[:10]
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return None
    zone = profile_zone({"timezone": zone_name} if isinstance(zone_name, str) else {})
    at = time.fromisoformat(trigger.local_time)
    # The dates whose shifted day is within two days of now, either way (zones span a day).
    low = (now - timedelta(days=2 + trigger.offset_days)).date()
    high = (now + timedelta(days=2 - trigger.offset_days)).date()
    candidates = []
    if trigger.yearly:
        found = next_anniversary(text, low)
        while found is not None and found <= high:
            candidates.append(found)
            found = next_anniversary(text, found + timedelta(days=1))
    else:
        candidates.append(day)
    for base in candidates:
        moment = datetime.combine(
            base + timedelta(days=trigger.offset_days), at, tzinfo=zone
        ).astimezone(UTC)
        if since <= moment < now + timedelta(days=1):
            return moment
    return None
