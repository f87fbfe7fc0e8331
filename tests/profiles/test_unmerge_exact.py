"""Un-merge is exact: after random identifies (late, equal, tied), aliases and an undo, every
profile holds the traits a workspace that never saw the undone alias gives it."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clarion.core.clock import SystemClock
from clarion.core.database import Database
from clarion.profiles import merges, queries
from tests.conftest import Tenant, make_tenant
from tests.profiles.conftest import alias, apply, identify, ingest

USER = "u1"
DEVICES = ["v1", "v2"]
PARTIES = [("user_id", USER), *(("anonymous_id", device) for device in DEVICES)]

traits = st.dictionaries(
    st.sampled_from(["plan", "tier"]), st.sampled_from(["a", "b", None]), min_size=1
)


@st.composite
def identifies(draw: st.DrawFn, parties: list[tuple[str, str]] = PARTIES) -> dict[str, Any]:
    """An identify from one party, at one of a few minutes (so timestamps tie)."""
    kind, value = draw(st.sampled_from(parties))
    minute, sent = draw(st.integers(0, 6)), draw(traits)
    if kind == "user_id":
        return identify(value, minute=minute, **sent)
    return identify(anonymous_id=value, minute=minute, **sent)


@st.composite
def stories(draw: st.DrawFn) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]], int]:
    """Batches (every party known first, then each alias among identifies, then more), the
    identifies sent after the undo, and which of the merges is undone."""
    known = [draw(identifies([party])) for party in PARTIES]
    batches = [draw(st.permutations(known)) + draw(st.lists(identifies(), max_size=3))]
    devices = draw(st.lists(st.sampled_from(DEVICES), min_size=1, max_size=2, unique=True))
    for device in devices:
        around = draw(st.lists(identifies(), max_size=3))
        at = draw(st.integers(0, len(around)))
        around.insert(at, alias(device, USER, minute=draw(st.integers(0, 6))))
        batches.append(around)
    batches.append(draw(st.lists(identifies(), max_size=4)))
    after = draw(st.lists(identifies(), max_size=3))
    return batches, after, draw(st.integers(0, len(devices) - 1))


async def _send(
    client: httpx.AsyncClient, database: Database, tenant: Tenant, messages: list[dict[str, Any]]
) -> None:
    if messages:
        copies = [dict(message) for message in messages]  # ingest adds a messageId
        await apply(database, tenant, await ingest(client, database, tenant, copies))


async def _state(database: Database, tenant: Tenant) -> dict[str, Any]:
    """Each party's canonical profile: which parties share it, its traits and their times."""
    async with database.read_session() as session:
        found = {
            value: await queries.get_by_identity(
                session, workspace_id=tenant.id, kind=kind, value=value
            )
            for kind, value in PARTIES
        }
    state = {}
    for value, profile in found.items():
        assert profile is not None, value
        together = sorted(v for v, p in found.items() if p is not None and p.id == profile.id)
        state[value] = (together, profile.traits, profile.trait_times)
    return state


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(story=stories())
async def test_undone_profiles_equal_a_rebuild_from_their_own_events(
    app: FastAPI,
    client: httpx.AsyncClient,
    story: tuple[list[list[dict[str, Any]]], list[dict[str, Any]], int],
) -> None:
    batches, after, undone = story
    database: Database = app.state.database
    tenant, reference = await make_tenant(database), await make_tenant(database)
    for batch in batches:
        await _send(client, database, tenant, batch)
    async with database.read_session() as session:
        user = await queries.get_by_identity(
            session, workspace_id=tenant.id, kind="user_id", value=USER
        )
        assert user is not None
        records = await queries.list_merges(session, workspace_id=tenant.id, profile_id=user.id)
    live = sorted((r for r in records if r.status == "merged"), key=lambda r: r.id)
    merge = live[undone]
    async with database.write_session() as session:
        await merges.unmerge(
            session,
            workspace_id=tenant.id,
            profile_id=user.id,
            merge_id=merge.id,
            now=SystemClock().now(),
        )
        await session.commit()
    await _send(client, database, tenant, after)

    # The same story in a workspace that never saw the alias whose merge was undone.
    for batch in batches:
        kept = [m for m in batch if m["type"] != "alias" or m["previousId"] != merge.identity_value]
        await _send(client, database, reference, kept)
    await _send(client, database, reference, after)
    assert await _state(database, tenant) == await _state(database, reference)
