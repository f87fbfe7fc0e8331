"""When a campaign's recipients are due: pure functions of the schedule, the recipient's
time zone and the throttle.

A campaign is scheduled at most `MAX_AHEAD` (365 days) ahead: further is far more often a
mistyped year than a plan, and the bound keeps every time computed from a schedule (in
UTC, in any zone, a day later) inside the calendar.

Send in each recipient's local time (`local_date` at `local_time`, like Braze's "send in
users' local time zones"):

- the campaign must be sent (scheduled) at least `LOCAL_LEAD` (24 h) before that date and
  time in UTC; later, it is refused (409), since in the zones furthest ahead the moment
  would be gone or too close;
- it launches (snapshots its audience) at `local_launch_at`: the first moment any zone
  reaches that wall time (UTC+14, `EARLIEST_OFFSET` ahead of UTC);
- each recipient is due at that wall time in their zone (`timezone` trait, else the
  workspace's messaging policy default, else UTC), on that day: every zone reaches it at
  or after `local_launch_at`, so however late the launch runs (a worker's poll delay, a
  busy or stopped worker, a long audience read in several jobs), nobody is moved to the
  next day; a recipient whose moment has passed by then is asked for at once, late, as a
  late send at a time is. Only a moment before the launch was due would be the next
  day's, and no zone today has one.

A throttle of N per minute spreads the recipients due at one moment 60/N seconds apart,
in the order the launch took them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_AHEAD = timedelta(days=365)  # the furthest ahead a campaign may be scheduled
LOCAL_LEAD = timedelta(hours=24)
EARLIEST_OFFSET = timedelta(hours=14)  # UTC+14 (Kiribati, Line Islands): the first to a time
LATEST_OFFSET = timedelta(hours=12)  # UTC-12 (Baker Island): the last to a time


def wall_time(day: date, at: time) -> datetime:
    """`day` `at` read as UTC: the reference a send in local time is checked against."""
    return datetime.combine(day, at, tzinfo=UTC)


def local_deadline(day: date, at: time) -> datetime:
    """The last instant a send in local time at `day` `at` may be scheduled (OverflowError
    for the calendar's first day)."""
    return wall_time(day, at) - LOCAL_LEAD


def passed_everywhere(day: date, at: time, *, now: datetime) -> bool:
    """Whether `day` `at` has passed at `now` in every zone, the last (UTC-12) included."""
    return wall_time(day, at) < now - LATEST_OFFSET


def too_far_ahead(moment: datetime, *, now: datetime) -> bool:
    """Whether `moment` is more than `MAX_AHEAD` after `now` (any date, in any zone)."""
    return moment - now > MAX_AHEAD


def local_launch_at(day: date, at: time) -> datetime:
    """When a send in local time at `day` `at` launches: the first zone's moment."""
    return datetime.combine(day, at, tzinfo=UTC) - EARLIEST_OFFSET


def zone(name: object, fallback: str = "UTC") -> ZoneInfo:
    """The time zone `name` names, else `fallback`'s, else UTC."""
    for candidate in (name, fallback):
        if isinstance(candidate, str) and candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def local_send_at(day: date, at: time, where: ZoneInfo, *, launch_at: datetime) -> datetime:
    """The UTC instant of `day` `at` on the wall clocks of `where` (a wall time in a DST gap
    maps past the gap); the next day's should it come before the launch was due,
    `launch_at` (it never does: no zone is ahead of UTC+14). However late the launch runs,
    a moment after `launch_at` stays on its day, to be sent at once if it has passed."""
    moment = datetime.combine(day, at, tzinfo=where).astimezone(UTC)
    if moment < launch_at:
        moment = datetime.combine(day + timedelta(days=1), at, tzinfo=where).astimezone(UTC)
    return moment


def throttle_offset(position: int, per_minute: int | None) -> timedelta:
    """How much later than its moment the `position`-th recipient (from 0) due at one
    moment goes under a throttle of `per_minute` (none: not at all)."""
    if not per_minute:
        return timedelta(0)
    return timedelta(seconds=position * 60 / per_minute)
