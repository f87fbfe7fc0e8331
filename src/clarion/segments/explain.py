"""Why a profile is (or is not) in a segment: the rule, node by node, with what held and the
values it saw, evaluated now the way real-time membership evaluates it."""

from __future__ import annotations

import copy
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from clarion.profiles import queries as profiles
from clarion.segments import aggregates, predicate
from clarion.segments.catalog import SegmentIndex, rule_context
from clarion.segments.membership import facts_of
from clarion.segments.models import ProfileSegmentState, Segment, SegmentMember
from clarion.segments.parsing import parse_rule


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
    state = await session.get(ProfileSegmentState, profile.id)
    if state is not None and state.specs_version == index.specs_version:
        document = copy.deepcopy(state.aggregates)  # pruning must not touch the stored row
        aggregates.prune(document, index.specs, now)
    else:  # not evaluated in real time yet, or for other segments: read its timeline
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
    context = await rule_context(session, workspace_id=workspace_id, index=index, now=now)
    facts = facts_of(profile, document)
    member = await session.get(SegmentMember, (segment.id, profile.id))
    return {
        "segment_id": segment.id,
        "profile_id": str(profile.id),
        "at": now.isoformat(),
        "holds": predicate.evaluate(rule, facts, context),
        "member": member is not None,
        "rule": predicate.explain(rule, facts, context),
    }
