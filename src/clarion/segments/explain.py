"""Why a profile is (or is not) in a segment: the rule, node by node, with what held and the
values it saw, evaluated now the way real-time membership evaluates it."""

from __future__ import annotations

import copy
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.profiles import queries as profiles
from clarion.profiles.models import Profile
from clarion.segments import aggregates, predicate
from clarion.segments.catalog import SegmentIndex, rule_context
from clarion.segments.membership import facts_of
from clarion.segments.models import ProfileSegmentState, Segment, SegmentMember
from clarion.segments.parsing import parse_rule
from clarion.segments.rules import Rule


async def explain(
    session: AsyncSession,
    *,
    workspace_id: int,
    index: SegmentIndex,
    segment: Segment,
    profile_id: uuid.UUID,
    now: datetime,
) -> dict[str, Any]:
    """The explanation: the profile, whether the rule holds now, whether the profile is a
    member (as last decided), and the rule's tree with each node's answer and values."""
    profile = await profiles.get_profile_or_raise(
        session, workspace_id=workspace_id, profile_id=profile_id
    )
    rule = parse_rule(segment.rule)
    facts = await _facts(session, workspace_id, index, rule, profile, now)
    context = await rule_context(session, workspace_id=workspace_id, index=index, now=now)
    member = await session.get(SegmentMember, (segment.id, profile.id))
    return {
        "segment_id": segment.id,
        "profile_id": str(profile.id),
        "at": now.isoformat(),
        "holds": predicate.evaluate(rule, facts, context),
        "member": member is not None,
        "rule": predicate.explain(rule, facts, context),
    }


async def rule_holds(
    session: AsyncSession,
    *,
    workspace_id: int,
    index: SegmentIndex,
    rule: Rule,
    profile_id: uuid.UUID,
    now: datetime,
) -> bool:
    """Whether `rule` holds for the profile (its canonical profile) now, evaluated the way
    real-time membership evaluates it; NotFound for a profile the workspace lacks."""
    profile = await profiles.get_profile_or_raise(
        session, workspace_id=workspace_id, profile_id=profile_id
    )
    facts = await _facts(session, workspace_id, index, rule, profile, now)
    context = await rule_context(session, workspace_id=workspace_id, index=index, now=now)
    return predicate.evaluate(rule, facts, context)


async def _facts(
    session: AsyncSession,
    workspace_id: int,
    index: SegmentIndex,
    rule: Rule,
    profile: Profile,
    now: datetime,
) -> predicate.ProfileFacts:
    """What the rule reads of the profile: its kept real-time aggregates when they were kept
    for specs that include the rule's, else built from its timeline."""
    specs = aggregates.specs_for([rule])
    state = await session.get(ProfileSegmentState, profile.id)
    if (
        state is not None
        and state.specs_version == index.specs_version
        and set(specs) <= set(index.specs)
    ):
        document = copy.deepcopy(state.aggregates)  # pruning must not touch the stored row
        aggregates.prune(document, index.specs, now)
    else:  # not evaluated in real time yet, or for other conditions: read its timeline
        specs = aggregates.specs_for([rule, *(s.rule for s in index.segments.values())])
        timeline = await profiles.tracked_events(
            session, workspace_id=workspace_id, profile_ids=[profile.id]
        )
        document = aggregates.build(
            specs,
            [
                aggregates.TrackEvent(e.name, e.timestamp, e.properties)
                for e in timeline[profile.id]
            ],
            now,
        )
    return facts_of(profile, document)
