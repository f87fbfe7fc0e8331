"""A workspace's segments as evaluation needs them: parsed once per version, indexed by
what can change them, with the aggregate specs their event conditions need.

`Catalog.load` reads only (id, version) pairs when nothing changed, so the pipeline can ask
for it on every batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import orjson
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.segments import aggregates
from clarion.segments.models import RfmBoundaries, Segment
from clarion.segments.parsing import parse_rule
from clarion.segments.predicate import moves_with_time, time_conditions
from clarion.segments.rules import (
    TIMEZONE_TRAIT,
    All,
    Any_,
    AttributeTime,
    InSegment,
    Not,
    Rfm,
    RfmThresholds,
    Rule,
    RuleContext,
    TopPercent,
    event_names,
    segment_ids,
    to_json,
    trait_keys,
    walk,
)

# The event whose arrival changes the computed traits RFM reads (orders, revenue).
ORDER_COMPLETED = "Order Completed"


@dataclass(frozen=True, slots=True)
class LiveSegment:
    """A segment as evaluation sees it."""

    id: int
    name: str
    version: int
    rule: Rule


@dataclass
class SegmentIndex:
    """The workspace's segments and, for each, what can change its answer."""

    segments: dict[int, LiveSegment]
    by_event: dict[str, set[int]] = field(default_factory=dict)
    by_trait: dict[str, set[int]] = field(default_factory=dict)
    every_event: set[int] = field(default_factory=set)  # read first / last seen
    time_based: set[int] = field(default_factory=set)  # may change with time alone
    # For each of those, the conditions time alone changes (its references' too).
    time_conditions: dict[int, tuple[Rule, ...]] = field(default_factory=dict)
    dependents: dict[int, set[int]] = field(default_factory=dict)  # segment -> who names it
    specs: dict[str, aggregates.Spec] = field(default_factory=dict)
    specs_by_event: dict[str, dict[str, aggregates.Spec]] = field(default_factory=dict)
    specs_version: str = ""

    @classmethod
    def build(cls, segments: Iterable[LiveSegment]) -> SegmentIndex:
        """The index of these segments, equal conditions shared among them (`shared`)."""
        seen: dict[bytes, Rule] = {}
        index = cls(
            {
                segment.id: LiveSegment(
                    segment.id, segment.name, segment.version, shared(segment.rule, seen)
                )
                for segment in segments
            }
        )
        for segment in index.segments.values():
            resolved = index.expanded(segment.id)
            for name in event_names(resolved):
                index.by_event.setdefault(name, set()).add(segment.id)
            for key in trait_keys(resolved):
                index.by_trait.setdefault(key, set()).add(segment.id)
            nodes = list(walk(resolved))
            if any(isinstance(node, AttributeTime) for node in nodes):
                index.every_event.add(segment.id)
            if any(moves_with_time(node) for node in nodes):
                index.time_based.add(segment.id)
            if any(isinstance(node, Rfm | TopPercent) for node in nodes):
                index.by_event.setdefault(ORDER_COMPLETED, set()).add(segment.id)
            for referenced in segment_ids(segment.rule):
                index.dependents.setdefault(referenced, set()).add(segment.id)
        rules = {segment.id: segment.rule for segment in index.segments.values()}
        index.time_conditions = {
            segment_id: time_conditions(rules[segment_id], rules) for segment_id in index.time_based
        }
        index.specs = aggregates.specs_for(s.rule for s in index.segments.values())
        index.specs_by_event = aggregates.by_event(index.specs)
        fingerprint = orjson.dumps(sorted(index.specs), option=orjson.OPT_SORT_KEYS)
        index.specs_version = hashlib.sha256(fingerprint).hexdigest()[:32]
        return index

    def expanded(self, segment_id: int, depth: int = 0) -> Rule:
        """The segment's rule as one tree, references replaced by what they name (for the
        index only: names and keys of referenced rules change this one too)."""
        rule = self.segments[segment_id].rule
        referenced = [
            self.expanded(node.segment_id, depth + 1)
            for node in walk(rule)
            if isinstance(node, InSegment) and node.segment_id in self.segments and depth < 16
        ]
        return All((rule, *referenced)) if referenced else rule

    def affected(self, names: Iterable[str], keys: Iterable[str], *, events: bool) -> set[int]:
        """The segments whose answer the given events and trait changes can change, with
        every segment that names one of them."""
        found: set[int] = set(self.every_event) if events else set()
        for name in set(names):  # a profile's events repeat a few names
            found |= self.by_event.get(name, _NONE)
        for key in keys:
            found |= self.by_trait.get(key, _NONE)
        return self.with_dependents(found)

    def with_dependents(self, segment_ids_: set[int]) -> set[int]:
        """The segments and, transitively, every segment that names one of them."""
        found, stack = set(segment_ids_), list(segment_ids_)
        while stack:
            for dependent in self.dependents.get(stack.pop(), set()):
                if dependent not in found:
                    found.add(dependent)
                    stack.append(dependent)
        return found


_NONE: frozenset[int] = frozenset()


def shared(rule: Rule, seen: dict[bytes, Rule]) -> Rule:
    """`rule` with every node equal to one in `seen` (by its canonical JSON, where `true`
    and 1 differ) replaced by that one, and its new nodes added. An evaluation keeps each
    condition's answer and flips by the node's identity, so a condition that several
    segments share is then evaluated once per profile."""
    if isinstance(rule, All):
        rule = All(tuple(shared(condition, seen) for condition in rule.conditions))
    elif isinstance(rule, Any_):
        rule = Any_(tuple(shared(condition, seen) for condition in rule.conditions))
    elif isinstance(rule, Not):
        rule = Not(shared(rule.condition, seen))
    return seen.setdefault(orjson.dumps(to_json(rule), option=orjson.OPT_SORT_KEYS), rule)


class Catalog:
    """Per workspace, the segment index, rebuilt only when a segment changed."""

    def __init__(self) -> None:
        self._parsed: dict[tuple[int, int], LiveSegment] = {}
        self._indexes: dict[int, tuple[tuple[tuple[int, int], ...], SegmentIndex]] = {}

    async def load(self, session: AsyncSession, workspace_id: int) -> SegmentIndex:
        """The workspace's segment index as of this transaction."""
        versions = tuple(
            (row.id, row.version)
            for row in await session.execute(
                select(Segment.id, Segment.version)
                .where(Segment.workspace_id == workspace_id)
                .order_by(Segment.id)
            )
        )
        cached = self._indexes.get(workspace_id)
        if cached is not None and cached[0] == versions:
            return cached[1]
        missing = [pair for pair in versions if pair not in self._parsed]
        if missing:
            rows = await session.execute(
                select(Segment.id, Segment.version, Segment.name, Segment.rule).where(
                    Segment.workspace_id == workspace_id,
                    Segment.id.in_([segment_id for segment_id, _ in missing]),
                )
            )
            for row in rows:
                self._parsed[(row.id, row.version)] = LiveSegment(
                    row.id, row.name, row.version, parse_rule(row.rule)
                )
        index = SegmentIndex.build(self._parsed[pair] for pair in versions if pair in self._parsed)
        self._indexes[workspace_id] = (versions, index)
        return index


async def rule_context(
    session: AsyncSession,
    *,
    workspace_id: int,
    index: SegmentIndex,
    now: datetime,
    with_time_zones: bool = False,
) -> RuleContext:
    """What rules refer to beyond one profile: other segments, the RFM boundaries and (for
    SQL, which must name every zone) the time zones the workspace's profiles are in."""
    boundaries = await session.get(RfmBoundaries, workspace_id)
    rfm = None
    if boundaries is not None:
        rfm = RfmThresholds(
            currency=boundaries.currency,
            recency=tuple(datetime.fromisoformat(moment) for moment in boundaries.recency),
            frequency=tuple(boundaries.frequency),
            monetary=tuple(boundaries.monetary),
            monetary_percentiles=tuple(boundaries.monetary_percentiles),
        )
    zones: frozenset[str] = frozenset()
    if with_time_zones:
        zones = await time_zones(session, workspace_id=workspace_id)
    return RuleContext(
        now=now,
        segments={segment.id: segment.rule for segment in index.segments.values()},
        rfm=rfm,
        time_zones=zones,
    )


async def time_zones(session: AsyncSession, *, workspace_id: int) -> frozenset[str]:
    """Every text value of the profiles' time zone trait in the workspace."""
    if session.get_bind().dialect.name == "postgresql":
        value = f"traits ->> '{TIMEZONE_TRAIT}'"
    else:
        value = f"json_extract(traits, '$.{TIMEZONE_TRAIT}')"
    rows = await session.scalars(
        text(
            f"SELECT DISTINCT {value} FROM profiles WHERE workspace_id = :w"  # noqa: S608
            " AND canonical_id IS NULL"
        ),
        {"w": workspace_id},
    )
    return frozenset(zone for zone in rows if isinstance(zone, str))
