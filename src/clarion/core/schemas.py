"""Input shapes every domain's API shares."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, StringConstraints

# What marketers call a segment, campaign, journey, template, channel or topic: trimmed,
# never blank.
DisplayName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


def in_utc(value: datetime) -> datetime:
    """`value` in UTC (a naive one taken as UTC); ValueError when that leaves the calendar
    (year 1 with a positive offset, year 9999 with a negative one)."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range once in UTC (years 1 to 9999)") from None


# An instant as clients write it, held in UTC: an offset, or none for UTC.
Instant = Annotated[datetime, AfterValidator(in_utc)]
# An instant that must carry its offset (Z or +hh:mm), held in UTC.
AwareInstant = Annotated[AwareDatetime, AfterValidator(in_utc)]
