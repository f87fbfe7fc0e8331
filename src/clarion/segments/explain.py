"""Why a profile is (or is not) in a segment: the rule, node by node, with what held and the
values it saw, evaluated now the way real-time membership evaluates it."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.database import unindexed
from clarion.profiles import queries as profiles
from clarion.profiles.models import Profile
from clarion.segments import aggregates, predicate
from clarion.segments.catalog import SegmentIndex, rule_context
from clarion.segments.membership import facts_of
from clarion.segments.models import ProfileSegmentState, Segment, SegmentMember
from clarion.segments.parsing import parse_rule
from clarion.segments.rules import InSegment, Rule, walk


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


async def rule_holds_for(
    session: AsyncSession,
    *,
    workspace_id: int,
    index: SegmentIndex,
    rule: Rule,
    profile_ids: Sequence[uuid.UUID],
    now: datetime,
) -> dict[uuid.UUID, bool]:
    """For each of `profile_ids` (by its canonical profile), whether `rule` holds now, as
    `rule_holds` answers it, in a few queries for them all; ids of no profile of the
    workspace are left out."""
    asked = (
        await session.scalars(
            select(Profile).where(
                unindexed(Profile.workspace_id) == workspace_id, Profile.id.in_(set(profile_ids))
            )
        )
    ).all()
    canonical_of = {profile.id: profile.canonical_id or profile.id for profile in asked}
    loaded = [profile for profile in asked if profile.canonical_id is None]
    merged = set(canonical_of.values()) - {profile.id for profile in loaded}
    if merged:  # merged-away profiles answer for the profile they went into
        loaded += (await session.scalars(select(Profile).where(Profile.id.in_(merged)))).all()
    documents = await _documents(session, workspace_id, index, rule, loaded, now)
    context = await rule_context(session, workspace_id=workspace_id, index=index, now=now)
    answers = {
        profile.id: predicate.evaluate(rule, facts_of(profile, documents[profile.id]), context)
        for profile in loaded
    }
    return {
        asked: answers[canonical]
        for asked, canonical in canonical_of.items()
        if canonical in answers
    }


async def _facts(
    session: AsyncSession,
    workspace_id: int,
    index: SegmentIndex,
    rule: Rule,
    profile: Profile,
    now: datetime,
) -> predicate.ProfileFacts:
    """What the rule reads of the profile."""
    documents = await _documents(session, workspace_id, index, rule, [profile], now)
    return facts_of(profile, documents[profile.id])


async def _documents(
    session: AsyncSession,
    workspace_id: int,
    index: SegmentIndex,
    rule: Rule,
    loaded: Sequence[Profile],
    now: datetime,
) -> dict[uuid.UUID, dict[str, Any]]:
    """The aggregates the rule reads of each profile: its kept real-time aggregates when
    they were kept for specs that include the rule's, else built from its timeline."""
    specs = aggregates.specs_for([rule])
    if not specs and not any(isinstance(node, InSegment) for node in walk(rule)):
        return {profile.id: {} for profile in loaded}  # traits only: no aggregate is read
    usable = set(specs) <= set(index.specs)
    states = (
        await session.scalars(
            select(ProfileSegmentState).where(
                ProfileSegmentState.profile_id.in_([profile.id for profile in loaded])
            )
        )
    ).all()
    documents: dict[uuid.UUID, dict[str, Any]] = {}
    for state in states:
        if usable and state.specs_version == index.specs_version:
            document = copy.deepcopy(state.aggregates)  # pruning must not touch the stored row
            aggregates.prune(document, index.specs, now)
            documents[state.profile_id] = document
    unkept = [profile.id for profile in loaded if profile.id not in documents]
    if unkept:  # not evaluated in real time yet, or for other conditions: read the timelines
        every = aggregates.specs_for([rule, *(s.rule for s in index.segments.values())])
        timelines = await profiles.tracked_events(
            session, workspace_id=workspace_id, profile_ids=unkept
        )
        for profile_id in unkept:
            documents[profile_id] = aggregates.build(
                every,
                [
                    aggregates.TrackEvent(e.name, e.timestamp, e.properties)
                    for e in timelines[profile_id]
                ],
                now,
            )
    return documents
