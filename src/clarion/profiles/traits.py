"""Traits: latest-by-event-timestamp wins per key, and the history of every change.

`trait_times` maps each key to the ISO timestamp of the event that set it. An update older than
the stored one for its key is ignored (an out-of-order identify never overwrites newer data);
an equal timestamp wins, so the later arrival counts. On a merge, the absorbed profile's value
wins only where its timestamp is strictly newer: ties go to the survivor.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

SOURCES = ("identify", "import", "api")


@dataclass(slots=True)
class Change:
    """A trait change to record in the history."""

    profile_id: uuid.UUID
    key: str
    old: Any
    new: Any
    event_id: int | None
    timestamp: datetime
    source: str


def set_traits(
    traits: dict[str, Any],
    times: dict[str, str],
    incoming: dict[str, Any],
    *,
    timestamp: datetime,
) -> list[tuple[str, Any, Any]]:
    """Apply `incoming` key by key (in place); the (key, old, new) of each value that changed.

    A null value is stored as null: Segment's identify merges, it never deletes.
    """
    moment = timestamp.isoformat()
    changed = []
    for key, value in incoming.items():
        if key in times and times[key] > moment:
            continue
        times[key] = moment
        if key in traits and traits[key] == value:
            continue
        changed.append((key, traits.get(key), value))
        traits[key] = value
    return changed


def merge_traits(
    traits: dict[str, Any],
    times: dict[str, str],
    other: dict[str, Any],
    other_times: dict[str, str],
) -> None:
    """Merge another profile's traits into these (in place); strictly newer keys win."""
    for key, value in other.items():
        theirs = other_times.get(key, "")
        if key in traits and times.get(key, "") >= theirs:
            continue
        traits[key] = value
        times[key] = theirs


@dataclass(frozen=True, slots=True)
class Recorded:
    """A value set once, as a fold needs it: from an identify event or a stored history row."""

    key: str
    value: Any
    timestamp: datetime
    preferred: bool  # belongs to the profile that wins ties
    arrival: tuple[datetime, int]  # when it was applied, then its id: later wins a tie


def fold(rows: Iterable[Recorded]) -> tuple[dict[str, Any], dict[str, str]]:
    """Traits and their times rebuilt from every value set: per key the latest timestamp, then
    the preferred profile's, then the latest arrival (as `set_traits` and `merge_traits`)."""
    best: dict[str, Recorded] = {}
    for row in rows:
        current = best.get(row.key)
        rank = (row.timestamp, row.preferred, row.arrival)
        if current is None or rank > (current.timestamp, current.preferred, current.arrival):
            best[row.key] = row
    traits = {key: row.value for key, row in best.items()}
    times = {key: row.timestamp.isoformat() for key, row in best.items()}
    return traits, times
