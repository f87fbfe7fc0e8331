"""How many SMS segments a body takes, so delivery can log (and later cap) the cost.

A body that fits the GSM 03.38 alphabet travels as GSM-7: 160 septets in one message, 153
per segment once concatenated; the extension table (`^ { } [ ] ~ | \\ €` and form feed)
takes two septets, an escape and the character, never split across segments. Any other
character sends the whole body as UCS-2: 70 UTF-16 code units alone, 67 per segment, an
emoji's surrogate pair never split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")
Encoding = Literal["GSM-7", "UCS-2"]


@dataclass(frozen=True, slots=True)
class SmsSegments:
    """A body's encoding, its length in that encoding's units (septets or UTF-16 code
    units) and the number of segments it is sent as (an empty body counts one)."""

    encoding: Encoding
    units: int
    segments: int


def sms_segments(body: str) -> SmsSegments:
    """Count the segments `body` is sent as."""
    if all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in body):
        costs = [2 if char in GSM7_EXTENSION else 1 for char in body]
        return SmsSegments("GSM-7", sum(costs), _segments(costs, single=160, part=153))
    costs = [2 if ord(char) > 0xFFFF else 1 for char in body]
    return SmsSegments("UCS-2", sum(costs), _segments(costs, single=70, part=67))


def _segments(costs: list[int], *, single: int, part: int) -> int:
    if sum(costs) <= single:
        return 1
    segments, used = 1, 0
    for cost in costs:
        if used + cost > part:  # an escape pair or surrogate pair moves whole
            segments, used = segments + 1, 0
        used += cost
    return segments
