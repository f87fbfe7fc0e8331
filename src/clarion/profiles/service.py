"""Profiles: applying events to profiles (the pipeline's entry point), reading them, upserts.

`apply_events` is batch-first: it resolves every identity of a batch in a few queries, folds
the batch into each profile in memory and writes each profile once. It flushes and never
commits: the caller's transaction also completes its job, and a rollback leaves no trace, so
running the same events again is safe (events already on a timeline are skipped).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import flag_modified

from clarion.core.database import hold_rows
from clarion.core.errors import Conflict, FieldError, InvalidInput
from clarion.core.jobs.queue import NewJob, enqueue
from clarion.ingest.internal import is_activity
from clarion.ingest.records import EventRecord
from clarion.profiles import batch
from clarion.profiles import computed as computed_traits
from clarion.profiles import traits as trait_rules
from clarion.profiles.identity import Graph, Key, ProfileRow, identity_keys
from clarion.profiles.models import Account, Profile
from clarion.profiles.traits import Change


@dataclass
class _Outcome:
    """What a batch adds besides the profiles themselves."""

    timeline: list[batch.TimelineRow] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    links: set[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=set)
    new_accounts: list[Account] = field(default_factory=list)
    touched_accounts: set[str] = field(default_factory=set)


async def apply_own_events(
    session: AsyncSession,
    *,
    workspace_id: int,
    events: Mapping[uuid.UUID, Sequence[EventRecord]],
    now: datetime,
) -> AppliedBatch:
    """Put Clarion's own events about these canonical profiles (`Segment Entered`, say,
    decided in this transaction) on their timelines: who they are about is known, so no
    identity is resolved, and they are not the customer's activity, so neither seen times
    nor computed traits move. What changed, as `apply_events` says it. Flushes only.

    The profiles are held until the transaction ends (a person's erasure waits for it, then
    removes these events too); Conflict, rolling back the events with everything else, when
    one was erased before it could be held (the timeline has no foreign key to check it,
    migration 0021)."""
    held = await hold_rows(session, Profile, workspace_id=workspace_id, ids=events)
    if len(held) < len(events):
        raise Conflict("A profile was erased while events about it were stored; retry the batch.")
    timeline = [
        batch.TimelineRow(profile_id, event.id, event.timestamp)
        for profile_id, own in sorted(events.items())
        for event in own
    ]
    await batch.write_rows(
        session, workspace_id=workspace_id, now=now, timeline=timeline, changes=[], links=set()
    )
    return AppliedBatch(events={profile_id: list(own) for profile_id, own in events.items()})


def _event_keys(event: EventRecord) -> list[Key]:
    return identity_keys(
        user_id=event.user_id,
        anonymous_id=event.anonymous_id,
        traits=event.traits,
        with_contacts=event.type == "identify",
    )


def _lookup_keys(event: EventRecord) -> set[Key]:
    keys = set(_event_keys(event))
    if event.type == "alias" and event.previous_id:
        keys |= {("user_id", event.previous_id), ("anonymous_id", event.previous_id)}
        if event.user_id:
            keys.add(("anonymous_id", event.user_id))
    return keys


# Job kind: profiles changed by an upsert (API, CSV import), for later stages to re-evaluate.
PROFILES_CHANGED = "profiles.changed"


@dataclass
class AppliedBatch:
    """What a batch changed, by canonical profile at its end: what later stages (segments,
    journeys) re-evaluate."""

    events: dict[uuid.UUID, list[EventRecord]] = field(default_factory=dict)
    trait_keys: dict[uuid.UUID, set[str]] = field(default_factory=dict)
    absorbed: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)  # merged away -> survivor
    rebuilt: set[uuid.UUID] = field(default_factory=set)  # timelines re-attributed (un-merge)
    created: set[uuid.UUID] = field(default_factory=set)  # new profiles (never evaluated)

    def profile_ids(self) -> set[uuid.UUID]:
        """Every canonical profile the batch changed."""
        return set(self.events) | set(self.trait_keys) | self.rebuilt | self.created


async def apply_events(
    session: AsyncSession, *, workspace_id: int, events: Sequence[EventRecord], now: datetime
) -> AppliedBatch:
    """Attribute each event to its profile, resolving identities, traits and computed traits;
    what changed.

    Events of another workspace, or already applied, are skipped. Flushes, never commits.
    """
    events = [e for e in events if e.workspace_id == workspace_id]
    applied_batch = AppliedBatch()
    if not events:
        return applied_batch
    keys = set().union(*(_lookup_keys(e) for e in events))
    graph = await batch.load_graph(session, workspace_id=workspace_id, keys=keys, now=now)
    applied = await batch.applied_event_ids(
        session, workspace_id=workspace_id, event_ids=[e.id for e in events]
    )
    accounts = await batch.load_accounts(
        session,
        workspace_id=workspace_id,
        group_ids={e.group_id for e in events if e.type == "group" and e.group_id},
    )
    outcome = _Outcome()
    targets: list[tuple[uuid.UUID, EventRecord]] = []
    for event in events:
        if event.id in applied:
            continue
        applied.add(event.id)
        target = _resolve(graph, event)
        if target is not None:
            _apply(graph, graph.profiles[target], event, outcome, accounts)
            targets.append((target, event))
    session.add_all(outcome.new_accounts)
    await batch.write_graph(session, graph)
    await batch.write_rows(
        session,
        workspace_id=workspace_id,
        now=now,
        timeline=outcome.timeline,
        changes=outcome.changes,
        links=outcome.links,
    )
    for target, event in targets:
        applied_batch.events.setdefault(graph.canonical(target), []).append(event)
    _summarize(applied_batch, graph, outcome)
    return applied_batch


def _summarize(summary: AppliedBatch, graph: Graph, outcome: _Outcome) -> None:
    """Add the batch's trait changes and merges to `summary`, by final canonical profile."""
    for change in outcome.changes:
        summary.trait_keys.setdefault(graph.canonical(change.profile_id), set()).add(change.key)
    for merge in graph.merges:
        if merge.status == "merged":
            summary.absorbed[merge.absorbed_id] = graph.canonical(merge.survivor_id)
    summary.created |= {
        profile.id for profile in graph.new_profiles if graph.canonical(profile.id) == profile.id
    }


async def _announce(
    session: AsyncSession,
    *,
    workspace_id: int,
    graph: Graph,
    outcome: _Outcome,
    now: datetime,
    origin: Mapping[str, int] | None = None,
) -> None:
    """A `profiles.changed` job for what an upsert changed, in its transaction, so later
    stages (segments) re-evaluate those profiles as they do after events; `origin` (a
    journey run's `journey_id` and `journey_run_id`) goes with it."""
    summary = AppliedBatch()
    _summarize(summary, graph, outcome)
    if not (summary.trait_keys or summary.absorbed or summary.created):
        return
    payload: dict[str, Any] = {
        "trait_keys": {str(p): sorted(keys) for p, keys in summary.trait_keys.items()},
        "absorbed": {str(gone): str(survivor) for gone, survivor in summary.absorbed.items()},
        "created": sorted(str(profile_id) for profile_id in summary.created),
    }
    if origin:
        payload["origin"] = dict(origin)
    await enqueue(
        session,
        [NewJob(workspace_id=workspace_id, kind=PROFILES_CHANGED, payload=payload)],
        now=now,
    )


def changed_profiles(payload: dict[str, Any]) -> AppliedBatch:
    """What a `profiles.changed` job's payload says changed."""
    summary = AppliedBatch()
    for profile_id, keys in (payload.get("trait_keys") or {}).items():
        summary.trait_keys[uuid.UUID(profile_id)] = set(keys)
    for gone, survivor in (payload.get("absorbed") or {}).items():
        summary.absorbed[uuid.UUID(gone)] = uuid.UUID(survivor)
    summary.rebuilt = {uuid.UUID(profile_id) for profile_id in payload.get("rebuilt") or []}
    summary.created = {uuid.UUID(profile_id) for profile_id in payload.get("created") or []}
    return summary


async def announce_rebuilt(
    session: AsyncSession, *, workspace_id: int, profile_ids: Sequence[uuid.UUID], now: datetime
) -> None:
    """A `profiles.changed` job for profiles whose timelines were re-attributed (an
    un-merge): later stages rebuild what they keep of them."""
    payload = {"rebuilt": [str(profile_id) for profile_id in profile_ids]}
    await enqueue(
        session,
        [NewJob(workspace_id=workspace_id, kind=PROFILES_CHANGED, payload=payload)],
        now=now,
    )


def _resolve(graph: Graph, event: EventRecord) -> uuid.UUID | None:
    if event.type == "alias" and event.user_id and event.previous_id:
        return graph.resolve_alias(
            user_id=event.user_id,
            previous_id=event.previous_id,
            event_id=event.id,
            anonymous_id=event.anonymous_id,
        )
    keys = _event_keys(event)
    if not keys:
        return None
    return graph.resolve(keys, event_id=event.id, reason=event.type)


def _apply(
    graph: Graph,
    profile: ProfileRow,
    event: EventRecord,
    outcome: _Outcome,
    accounts: dict[str, Account],
) -> None:
    outcome.timeline.append(batch.TimelineRow(profile.id, event.id, event.timestamp))
    if not is_activity(event.source_id):
        return  # on the timeline, but not something the customer did
    if profile.first_seen_at is None or event.timestamp < profile.first_seen_at:
        profile.first_seen_at = event.timestamp
    if profile.last_seen_at is None or event.timestamp > profile.last_seen_at:
        profile.last_seen_at = event.timestamp
    seen = computed_traits.Seen(event.type, event.name, event.timestamp, event.properties)
    computed_traits.add_event(profile.computed, seen)
    if event.type == "identify" and event.traits:
        _set_traits(profile, event.traits, event.timestamp, event.id, "identify", outcome)
    if event.type == "group" and event.group_id:
        account = _account(graph, accounts, event.group_id, outcome)
        if event.traits:
            trait_rules.set_traits(
                account.traits, account.trait_times, event.traits, timestamp=event.timestamp
            )
            account.updated_at = graph.now
        outcome.links.add((profile.id, account.id))
    profile.updated_at = graph.now
    graph.touched.add(profile.id)


def _set_traits(
    profile: ProfileRow,
    incoming: dict[str, Any],
    timestamp: datetime,
    event_id: int | None,
    source: str,
    outcome: _Outcome,
) -> None:
    changed = trait_rules.set_traits(
        profile.traits, profile.trait_times, incoming, timestamp=timestamp
    )
    outcome.changes.extend(
        Change(profile.id, key, old, new, event_id, timestamp, source) for key, old, new in changed
    )


def _account(
    graph: Graph, accounts: dict[str, Account], group_id: str, outcome: _Outcome
) -> Account:
    account = accounts.get(group_id)
    if account is None:
        account = Account(
            id=uuid.uuid4(),
            workspace_id=graph.workspace_id,
            group_id=group_id,
            traits={},
            trait_times={},
            created_at=graph.now,
            updated_at=graph.now,
        )
        accounts[group_id] = account
        outcome.new_accounts.append(account)
    flag_modified(account, "traits")
    flag_modified(account, "trait_times")
    return account


@dataclass(frozen=True, slots=True)
class ProfileUpsert:
    """One profile to create or update by its identities, with traits to set."""

    user_id: str | None = None
    email: str | None = None
    phone: str | None = None
    traits: dict[str, Any] = field(default_factory=dict)


async def upsert_profiles(
    session: AsyncSession,
    *,
    workspace_id: int,
    upserts: Sequence[ProfileUpsert],
    now: datetime,
    source: str = "import",
) -> list[tuple[uuid.UUID, datetime]]:
    """For each upsert, in order, what `upsert_profile` does, in one pass over the batch: the
    (profile id, created at) of each. InvalidInput for the first upsert with no identity.
    Flushes only."""
    if source not in trait_rules.SOURCES:
        raise InvalidInput(
            f"Unknown trait source {source!r}.", errors=[FieldError("source", "unknown")]
        )
    planned = []
    for upsert in upserts:
        contacts = {"email": upsert.email, "phone": upsert.phone}
        keys = identity_keys(
            user_id=upsert.user_id, anonymous_id=None, traits=contacts, with_contacts=True
        )
        if not keys:
            raise InvalidInput(
                "A profile needs a user_id, an email or a phone.",
                errors=[FieldError("user_id", "give a user_id, a valid email or a valid phone")],
            )
        incoming = {**{k: v for k, v in contacts.items() if v is not None}, **upsert.traits}
        planned.append((keys, incoming))
    every_key = {key for keys, _ in planned for key in keys}
    graph = await batch.load_graph(session, workspace_id=workspace_id, keys=every_key, now=now)
    outcome = _Outcome()
    resolved = []
    for keys, incoming in planned:
        profile = graph.profiles[graph.resolve(keys, event_id=None, reason=source)]
        _set_traits(profile, incoming, now, None, source, outcome)
        profile.updated_at = now
        graph.touched.add(profile.id)
        resolved.append(profile.id)
    await batch.write_graph(session, graph)
    await batch.write_rows(
        session,
        workspace_id=workspace_id,
        now=now,
        timeline=[],
        changes=outcome.changes,
        links=set(),
    )
    await _announce(session, workspace_id=workspace_id, graph=graph, outcome=outcome, now=now)
    # A later upsert may have merged an earlier one's profile: answer where each one lives.
    canonical = [graph.profiles[graph.canonical(profile_id)] for profile_id in resolved]
    return [(profile.id, profile.created_at) for profile in canonical]


async def upsert_profile(
    session: AsyncSession,
    *,
    workspace_id: int,
    user_id: str | None = None,
    email: str | None = None,
    phone: str | None = None,
    traits: dict[str, Any],
    now: datetime,
    source: str = "import",
    origin: Mapping[str, int] | None = None,
) -> Profile:
    """The profile of these identities, created or linked like an identify, with `traits` set
    as of `now` (latest wins) and recorded in trait history under `source`. `origin` names
    the journey run whose action sets them (`journey_id`, `journey_run_id`): the segment
    events they cause carry it, so journeys see where they came from. Flushes only."""
    if source not in trait_rules.SOURCES:
        raise InvalidInput(
            f"Unknown trait source {source!r}.", errors=[FieldError("source", "unknown")]
        )
    contacts = {"email": email, "phone": phone}
    keys = identity_keys(user_id=user_id, anonymous_id=None, traits=contacts, with_contacts=True)
    if not keys:
        raise InvalidInput(
            "A profile needs a user_id, an email or a phone.",
            errors=[FieldError("user_id", "give a user_id, a valid email or a valid phone")],
        )
    incoming = {**{k: v for k, v in contacts.items() if v is not None}, **traits}
    graph = await batch.load_graph(session, workspace_id=workspace_id, keys=set(keys), now=now)
    profile_id = graph.resolve(keys, event_id=None, reason=source)
    profile = graph.profiles[profile_id]
    outcome = _Outcome()
    _set_traits(profile, incoming, now, None, source, outcome)
    profile.updated_at = now
    graph.touched.add(profile.id)
    await batch.write_graph(session, graph)
    await batch.write_rows(
        session,
        workspace_id=workspace_id,
        now=now,
        timeline=[],
        changes=outcome.changes,
        links=set(),
    )
    await _announce(
        session, workspace_id=workspace_id, graph=graph, outcome=outcome, now=now, origin=origin
    )
    written = await session.get(Profile, profile_id, populate_existing=True)
    if written is None:  # just written in this transaction: it cannot be missing
        raise RuntimeError(f"profile {profile_id} was not written")
    return written
