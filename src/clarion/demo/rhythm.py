"""When the demo shop's customers shop: a seasonal and weekly calendar and evening peaks.

Days are weighted by month (a November/December peak with Black Friday, a summer dip) and
by weekday (weekends busiest); hours by a weekday and a weekend profile peaking in the
evening. Both are read in the customer's own time zone.
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

WINDOW_DAYS = 365
# January .. December.
MONTH_WEIGHTS = (0.9, 0.8, 0.85, 0.85, 0.85, 0.7, 0.6, 0.65, 0.9, 1.0, 1.45, 1.9)
# Monday .. Sunday.
WEEKDAY_WEIGHTS = (0.85, 0.85, 0.9, 0.9, 1.0, 1.5, 1.45)
# Local hours 0 .. 23: a lunch bump and an evening peak; weekends start later, stay busy.
WEEKDAY_HOURS = (2, 1, 1, 1, 1, 1, 2, 4, 6, 7, 7, 8, 10, 8, 7, 7, 8, 9, 11, 15, 17, 15, 10, 5)
WEEKEND_HOURS = (3, 2, 1, 1, 1, 1, 1, 2, 4, 7, 10, 11, 11, 11, 10, 10, 10, 10, 11, 14, 15, 12, 8, 5)
_HOURS = tuple(range(24))


def day_weight(day: date) -> float:
    """How busy the shop is on `day`, relative to an ordinary weekday."""
    weight = MONTH_WEIGHTS[day.month - 1] * WEEKDAY_WEIGHTS[day.weekday()]
    if day.month == 12:
        if 23 <= day.day <= 26:  # Christmas itself is quiet; the rush is over
            weight *= 0.45
        elif day.day > 26:
            weight *= 0.7
    elif _is_black_friday_weekend(day):
        weight *= 1.8
    return weight


def _is_black_friday_weekend(day: date) -> bool:
    """Black Friday (the day after the fourth Thursday of November) to Cyber Monday."""
    if day.month not in (11, 12):
        return False
    first = date(day.year, 11, 1)
    thanksgiving = first + timedelta(days=(3 - first.weekday()) % 7 + 21)
    return thanksgiving + timedelta(days=1) <= day <= thanksgiving + timedelta(days=4)


@dataclass(frozen=True)
class Calendar:
    """The demo year: the `WINDOW_DAYS` local days before `end`, and their weights."""

    end: date
    days: tuple[date, ...] = field(init=False)
    _cumulative: tuple[float, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        days = tuple(self.end - timedelta(days=n) for n in range(WINDOW_DAYS, 0, -1))
        object.__setattr__(self, "days", days)
        weights = (day_weight(day) for day in days)
        object.__setattr__(self, "_cumulative", tuple(itertools.accumulate(weights)))

    @property
    def end_utc(self) -> datetime:
        """Midnight UTC starting the end date: every demo event happens before it."""
        return datetime.combine(self.end, time(), UTC)

    def pick_days(self, rng: random.Random, *, first: int, last: int, count: int) -> list[int]:
        """`count` day indexes in [first, last], busier days likelier, in order."""
        low = self._cumulative[first - 1] if first > 0 else 0.0
        span = self._cumulative[last] - low
        picks = (
            bisect.bisect_right(self._cumulative, low + rng.random() * span, first, last)
            for _ in range(count)
        )
        return sorted(picks)

    def moment(self, rng: random.Random, day: int, zone: ZoneInfo) -> datetime:
        """A UTC instant on local day `day` in `zone`, evenings (and weekend days) likelier."""
        local_day = self.days[day]
        profile = WEEKEND_HOURS if local_day.weekday() >= 5 else WEEKDAY_HOURS
        hour = rng.choices(_HOURS, weights=profile)[0]
        local = datetime.combine(local_day, time(hour, rng.randrange(60), rng.randrange(60)))
        return local.replace(tzinfo=zone).astimezone(UTC)

    def season(self, day: int) -> float:
        """How much likelier a visit ends in an order on `day` (gift season above 1)."""
        month = self.days[day].month
        return {11: 1.3, 12: 1.5, 6: 0.85, 7: 0.8, 8: 0.85}.get(month, 1.0)

    def index_of(self, moment: datetime) -> int:
        """The index of the UTC day holding `moment`, clamped to the window."""
        offset = (moment.date() - self.days[0]).days
        return min(max(offset, 0), WINDOW_DAYS - 1)
