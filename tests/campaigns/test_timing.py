"""Send times as pure functions: a recipient's day in local time whenever the launch runs,
and the bounds of a schedule (passed everywhere, more than a year ahead)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from clarion.campaigns import timing

DAY = date(2031, 3, 10)
NINE = time(9, 0)


def _local(where: str, day: date = DAY) -> datetime:
    return datetime.combine(day, NINE, tzinfo=ZoneInfo(where)).astimezone(UTC)


def test_every_zone_keeps_its_day_however_late_the_launch_runs() -> None:
    launch = timing.local_launch_at(DAY, NINE)
    assert launch == _local("Pacific/Kiritimati")  # UTC+14: the first to 09:00
    for where in ("Pacific/Kiritimati", "Asia/Tokyo", "UTC", "America/New_York", "Etc/GMT+12"):
        moment = timing.local_send_at(DAY, NINE, ZoneInfo(where), launch_at=launch)
        assert moment == _local(where) >= launch


def test_only_a_moment_before_the_launch_was_due_is_the_next_days() -> None:
    later_launch = _local("Asia/Tokyo") + timedelta(seconds=1)
    tokyo = timing.local_send_at(DAY, NINE, ZoneInfo("Asia/Tokyo"), launch_at=later_launch)
    assert tokyo == _local("Asia/Tokyo", DAY + timedelta(days=1))
    paris = timing.local_send_at(DAY, NINE, ZoneInfo("Europe/Paris"), launch_at=later_launch)
    assert paris == _local("Europe/Paris")


def test_a_schedule_is_bounded_by_the_last_zone_and_a_year() -> None:
    now = datetime(2031, 3, 10, 20, 59, tzinfo=UTC)  # 08:59 on the 10th in UTC-12
    assert not timing.passed_everywhere(DAY, NINE, now=now)
    assert timing.passed_everywhere(DAY, NINE, now=now + timedelta(minutes=2))
    assert timing.passed_everywhere(date.min, time(0, 0), now=now)
    assert not timing.passed_everywhere(date.max, time(23, 59), now=now)

    assert not timing.too_far_ahead(now + timing.MAX_AHEAD, now=now)
    assert timing.too_far_ahead(now + timing.MAX_AHEAD + timedelta(seconds=1), now=now)
    assert timing.too_far_ahead(timing.wall_time(date.max, time(23, 59)), now=now)
    far_east = datetime(9999, 12, 31, 23, 59, 59, tzinfo=ZoneInfo("Pacific/Kiritimati"))
    assert timing.too_far_ahead(far_east, now=now)  # past the calendar's end in UTC
