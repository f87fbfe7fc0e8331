"""When a campaign's recipients are due: pure functions of the schedule, the recipient's
time zone and the throttle.

Send in each recipient's local time (`local_date` at `local_time`, like Braze's "send in
users' local time zones"):

- the campaign must be sent (scheduled) at least `LOCAL_LEAD` (24 h) before that date and
  time in UTC; later, it is refused (409), since in the zones furthest ahead the moment
  would be gone or too close;
- it launches (snapshots its audience) at `local_launch_at`: the first moment any zone
  reaches that wall time (UTC+14, `EARLIEST_OFFSET` ahead of UTC);
- each recipient is due at that wall time in their zone (`timezone` trait, else the
  workspace's messaging policy default, else UTC); for one whose time has already passed
  when the campaign launches (a late worker), it is the same wall time the next day.

A throttle of N per minute spreads the recipients due at one moment 60/N seconds apart,
in the order the launch took them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

LOCAL_LEAD = timedelta(hours=24)
EARLIEST_OFFSET = timedelta(hours=14)  # UTC+14 (Kiribati, Line Islands): the first to a time


def parse_local_time(text: str) -> time:
    """A "HH:MM" wall time; ValueError when it is not one."""
    if len(text) != 5 or text[2] != ":" or not (text[:2] + text[3:]).isdigit():
        raise ValueError(f"{text!r} is not HH:MM")
    return time(int(text[:2]), int(text[3:]))


def local_deadline(day: date, at: time) -> datetime:
    """The last instant a send in local time at `day` `at` may be scheduled."""
    return datetime.combine(day, at, tzinfo=UTC) - LOCAL_LEAD


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


def local_send_at(day: date, at: time, where: ZoneInfo, *, now: datetime) -> datetime:
    """The UTC instant of `day` `at` on the wall clocks of `where`, or of the next day's
    when that has passed at `now`. A wall time in a DST gap maps past the gap."""
    moment = datetime.combine(day, at, tzinfo=where).astimezone(UTC)
    if moment < now:
        moment = datetime.combine(day + timedelta(days=1), at, tzinfo=where).astimezone(UTC)
    return moment


def throttle_offset(position: int, per_minute: int | None) -> timedelta:
    """How much later than its moment the `position`-th recipient (from 0) due at one
    moment goes under a throttle of `per_minute` (none: not at all)."""
    if not per_minute:
        return timedelta(0)
    return timedelta(seconds=position * 60 / per_minute)
