"""Who may enter a journey: the guards on events and the entry rules, shared by the runtime
(`runtime.py`, which enters) and the dry run (`simulate.py`, which says why it would not);
and what entering starts from: a published journey with its plan (`Live`) and a profile to
enter under a key (`Entry`), made from events (`matching.py`) and date passes (`dates.py`).

- **Forgery**: events named as Clarion's own (`OWN_EVENT_NAMES`) count for journeys only
  from Clarion (`forged`).
- **History**: an event received more than `ENTRY_MAX_AGE` after it happened, or loaded in
  bulk (`BULK_LIBRARIES`), enters nobody (`history_reason`).
- **Entry rules** (`Allowance`, read by `allowance`): `once` per entry key,
  `once_per_period`, `every_time`, one live run per entry key, at most `max_active` live
  runs per profile.
- **Participation caps** (`caps_left`, or `caps_left_at` for many moments in one
  statement): at most `max_entries` runs ever, at most `max_entries_per_day` new runs a
  UTC day.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.journeys.compiler import Plan
from clarion.journeys.graph import EntryRules
from clarion.journeys.models import LIVE_RUN_STATES, Journey, JourneyRun
from clarion.messaging.consent.consents import SUBSCRIBED, UNSUBSCRIBED
from clarion.messaging.engagement import CLICK_EVENTS, OPEN_EVENTS
from clarion.messaging.feedback import EVENT_NAMES as FEEDBACK_EVENTS
from clarion.segments.membership import SEGMENT_ENTERED, SEGMENT_EXITED

SEGMENT_EVENTS = {"segment_entered": SEGMENT_ENTERED, "segment_exited": SEGMENT_EXITED}
# The names of the events Clarion emits itself: each says something only Clarion knows (a
# membership, a message's fate, a consent). Journeys take them only from Clarion (its
# internal source); anyone holding the public write key could send them too.
OWN_EVENT_NAMES = frozenset(
    {
        *SEGMENT_EVENTS.values(),
        *FEEDBACK_EVENTS.values(),
        *OPEN_EVENTS.values(),
        *CLICK_EVENTS.values(),
        SUBSCRIBED,  # a consent changed
        UNSUBSCRIBED,
    }
)
# Events that happened more than this before they were received (their timestamp against
# `receivedAt`) enter no journey: a backfill, an import or a replay is history, not
# something to react to now. (Measured at receipt, so a backlog of processing refuses
# nothing.) They still end runs, move waits and count as goals when they happened after
# the run's trigger.
ENTRY_MAX_AGE = timedelta(hours=24)
# `context.library.name` of Clarion's bulk loaders (`clarion import orders`, the demo shop):
# what they load is history, whatever its timestamps; it enters no journey.
BULK_LIBRARIES = frozenset({"clarion-import-orders", "clarion-demo"})
# A run as the entry rules read it: its profile, its entry key, whether it is live, when it
# entered.
SeenRun = tuple[uuid.UUID, str, bool, datetime]


@dataclass(frozen=True, slots=True)
class Live:
    """A published journey (live, or paused: its runs still exit, move on events and
    convert, but nobody enters), with the plan of its live version."""

    journey: Journey
    plan: Plan


@dataclass(frozen=True, slots=True)
class Entry:
    """A profile to enter, keyed (None: the event lacked the key, nothing enters), with the
    run's context; a run that first waits at its trigger until `wake_at` (a date trigger's
    local moment) starts `waiting`."""

    profile_id: uuid.UUID
    key: str | None
    context: dict[str, Any] = field(default_factory=dict)
    wake_at: datetime | None = None


def forged(name: str | None, *, from_clarion: bool) -> bool:
    """Whether the event is named as one of Clarion's own but was sent by anyone else: no
    journey sees it (no trigger, exit, wait or goal)."""
    return name in OWN_EVENT_NAMES and not from_clarion


def history_reason(
    *, happened: datetime, received: datetime, context: Mapping[str, Any]
) -> str | None:
    """Why the event is history, not news, so that it enters nobody (None when it is news):
    received more than ENTRY_MAX_AGE after it happened, or sent by one of Clarion's bulk
    loaders (an import, the demo shop)."""
    if received - happened > ENTRY_MAX_AGE:
        hours = ENTRY_MAX_AGE // timedelta(hours=1)
        return f"received more than {hours} hours after it happened (history)"
    library = context.get("library")
    if isinstance(library, dict) and library.get("name") in BULK_LIBRARIES:
        return f"loaded in bulk by {library['name']} (history)"
    return None


class Allowance:
    """The entry rules over a batch of entries, given the profiles' runs so far."""

    def __init__(self, rules: EntryRules, now: datetime) -> None:
        self.rules, self.now = rules, now
        self.since = now - timedelta(days=rules.period_days or 0)
        self.keys: set[tuple[uuid.UUID, str]] = set()  # every run's, for `once`
        self.recent: set[uuid.UUID] = set()  # profiles entered within the period
        self.live_keys: set[tuple[uuid.UUID, str]] = set()
        self.active: Counter[uuid.UUID] = Counter()

    def seen(self, profile_id: uuid.UUID, key: str, live: bool, entered_at: datetime) -> None:
        """A run the profile had."""
        self.keys.add((profile_id, key))
        if entered_at > self.since:
            self.recent.add(profile_id)
        if live:
            self.live_keys.add((profile_id, key))
            self.active[profile_id] += 1

    def refusal(self, profile_id: uuid.UUID, key: str) -> str | None:
        """Why the entry rules keep the profile from entering under `key` now (None: it
        may)."""
        rules, keyed = self.rules, f" for entry key {key!r}" if key else ""
        if rules.frequency == "once" and (profile_id, key) in self.keys:
            return f"entry rule once: the profile already had a run{keyed}"
        if rules.frequency == "once_per_period" and profile_id in self.recent:
            return (
                f"entry rule once_per_period: the profile entered within the last "
                f"{rules.period_days} days"
            )
        if (profile_id, key) in self.live_keys:
            return f"the profile already has a live run{keyed} (one at a time per key)"
        if self.active[profile_id] >= rules.max_active:
            return f"the profile already has {rules.max_active} live runs (max_active)"
        return None

    def take(self, profile_id: uuid.UUID, key: str) -> bool:
        """Whether the profile may enter under `key` now (counted as a run if so)."""
        if self.refusal(profile_id, key) is not None:
            return False
        self.seen(profile_id, key, True, self.now)
        return True


async def allowance(
    session: AsyncSession,
    *,
    journey_id: int,
    rules: EntryRules,
    profile_ids: Collection[uuid.UUID],
    now: datetime,
    so_far: Sequence[SeenRun] | None = None,
) -> Allowance:
    """The entry rules for entries of these profiles now, given their runs of the journey
    (`so_far`, a superset of `runs_so_far`'s for them, when the caller read them already)."""
    if so_far is None:
        so_far = await runs_so_far(
            session, journey_id=journey_id, rules=rules, profile_ids=profile_ids
        )
    allowed = Allowance(rules, now)
    for run in so_far:
        allowed.seen(*run)
    return allowed


async def runs_so_far(
    session: AsyncSession,
    *,
    journey_id: int,
    rules: EntryRules,
    profile_ids: Collection[uuid.UUID],
    every_state: bool = False,
) -> list[SeenRun]:
    """The profiles' runs of the journey the entry rules read (every one, or only the live
    ones under `every_time` unless `every_state`: `Allowance` ignores the others there), as
    what `Allowance.seen` takes."""
    query = select(
        JourneyRun.profile_id, JourneyRun.entry_key, JourneyRun.state, JourneyRun.entered_at
    ).where(JourneyRun.journey_id == journey_id, JourneyRun.profile_id.in_(set(profile_ids)))
    if rules.frequency == "every_time" and not every_state:
        query = query.where(JourneyRun.state.in_(LIVE_RUN_STATES))
    return [
        (profile_id, key, state in LIVE_RUN_STATES, entered_at)
        for profile_id, key, state, entered_at in await session.execute(query)
    ]


async def caps_left(
    session: AsyncSession, *, journey_id: int, rules: EntryRules, now: datetime
) -> dict[str, int]:
    """How many more runs each of the journey's participation caps lets in now, by cap
    (`max_entries`, `max_entries_per_day`; none when the journey sets no cap). Locking,
    where entries must count each other, is the caller's."""
    left = await caps_left_at(session, journey_id=journey_id, rules=rules, moments=[now])
    return left[now]


async def caps_left_at(
    session: AsyncSession, *, journey_id: int, rules: EntryRules, moments: Collection[datetime]
) -> dict[datetime, dict[str, int]]:
    """`caps_left` at each of the moments, counted in one statement (none when the journey
    sets no cap or no moment is given)."""
    if not moments or (rules.max_entries is None and rules.max_entries_per_day is None):
        return {moment: {} for moment in moments}
    per_day = rules.max_entries_per_day is not None
    midnights = {moment: _utc_midnight(moment) for moment in moments} if per_day else {}
    days = sorted(set(midnights.values()))
    # Each day's runs only: a dry run's event on an earlier day is not held off by later ones.
    # (At the runtime's `now`, no run has entered later anyway.)
    counted = [
        func.count(case((JourneyRun.entered_at.between(day, day + _DAY - _TICK), 1)))
        for day in days
    ]
    if rules.max_entries is not None:
        counted.insert(0, func.count())
    query = select(*counted).select_from(JourneyRun).where(JourneyRun.journey_id == journey_id)
    if rules.max_entries is None:  # per day only: runs before the earliest day count for none
        query = query.where(JourneyRun.entered_at >= days[0])
    counts = list((await session.execute(query)).one())
    ever = counts.pop(0) if rules.max_entries is not None else 0
    today = dict(zip(days, counts, strict=True))
    left: dict[datetime, dict[str, int]] = {}
    for moment in moments:
        caps: dict[str, int] = {}
        if rules.max_entries is not None:
            caps["max_entries"] = rules.max_entries - ever
        if rules.max_entries_per_day is not None:
            caps["max_entries_per_day"] = rules.max_entries_per_day - today[midnights[moment]]
        left[moment] = caps
    return left


_DAY = timedelta(days=1)
_TICK = timedelta(microseconds=1)  # the last instant of a day is midnight less this


def _utc_midnight(moment: datetime) -> datetime:
    """The start of the UTC day the moment falls in."""
    return datetime.combine(moment.astimezone(UTC).date(), time(), tzinfo=UTC)
