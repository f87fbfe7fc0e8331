"""Real-time membership, kept event by event through the pipeline (merges included), always
equals a batch recompute over the whole workspace at the same instant."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from clarion.core.clock import FrozenClock
from clarion.core.jobs.worker import Worker
from clarion.core.settings import Settings
from clarion.pipeline import Pipeline
from clarion.segments import service
from clarion.segments.catalog import Catalog, rule_context
from clarion.segments.models import SegmentMember
from clarion.segments.recompute import schedule
from clarion.segments.sql import members_query
from tests.conftest import make_tenant
from tests.segments.test_equivalence import behaviour, compare, properties, traits_strategy

USERS = ["u1", "u2", "u3"]
DEVICES = ["d1", "d2", "d3"]

leaves = st.one_of(compare("trait"), behaviour())
rules = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda c: {"type": "all", "conditions": c}),
        st.lists(children, min_size=1, max_size=3).map(lambda c: {"type": "any", "conditions": c}),
        children.map(lambda c: {"type": "not", "condition": c}),
    ),
    max_leaves=4,
)


@st.composite
def messages(draw: st.DrawFn, now: datetime, *, linking: bool = True) -> list[dict[str, Any]]:
    """Identify and track messages from users and devices; with `linking`, also aliases
    and messages carrying both ids, which merge profiles."""
    found = []
    for _ in range(draw(st.integers(1, 10))):
        kinds = ["track", "track", "identify"] + (["alias"] if linking else [])
        kind = draw(st.sampled_from(kinds))
        at = now - timedelta(seconds=draw(st.integers(0, 40 * 86_400)))
        message: dict[str, Any] = {"type": kind, "timestamp": at.isoformat()}
        if kind == "alias":
            message["userId"] = draw(st.sampled_from(USERS))
            message["previousId"] = draw(st.sampled_from(DEVICES))
            found.append(message)
            continue
        who = draw(st.sampled_from(["user", "device", "both"] if linking else ["user", "device"]))
        if who in ("user", "both"):
            message["userId"] = draw(st.sampled_from(USERS))
        if who in ("device", "both"):
            message["anonymousId"] = draw(st.sampled_from(DEVICES))
        if kind == "identify":
            message["traits"] = draw(traits_strategy())
        else:
            message["event"] = draw(st.sampled_from(["Order Completed", "Product Viewed"]))
            message["properties"] = draw(properties)
        found.append(message)
    return found


@st.composite
def histories(draw: st.DrawFn, now: datetime) -> list[list[dict[str, Any]]]:
    """Batches: users and devices apart first (separate profiles), then links that merge
    them, then anything."""
    links = st.lists(
        st.builds(
            lambda user, device: {"type": "alias", "userId": user, "previousId": device},
            st.sampled_from(USERS),
            st.sampled_from(DEVICES),
        ),
        min_size=1,
        max_size=2,
    )
    return [
        draw(messages(now, linking=False)),
        draw(links),
        draw(st.one_of(st.just([]), messages(now))),
    ]


# Ahead of the real clock (which stamps arrivals and so their jobs), so every job is due.
NOW = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    documents=st.lists(rules, min_size=1, max_size=3),
    batches=histories(NOW),
)
async def test_realtime_membership_equals_a_recompute(
    app: FastAPI,
    client: httpx.AsyncClient,
    settings: Settings,
    documents: list[dict[str, Any]],
    batches: list[list[dict[str, Any]]],
) -> None:
    database = app.state.database
    tenant = await make_tenant(database)
    clock = FrozenClock(NOW)
    pipeline = Pipeline(database, settings, clock)
    worker = Worker(database, pipeline.registry(), clock=clock)
    async with database.write_session() as session:
        segment_ids = []
        for n, document in enumerate(documents):
            segment, _ = await service.create_segment(
                session,
                workspace_id=tenant.id,
                name=f"s{n}",
                description="",
                raw_rule=document,
                now=NOW,
            )
            await schedule(session, segment=segment, now=NOW)
            segment_ids.append(segment.id)
        await session.commit()
    await worker.drain()  # the baselines, over nobody
    for batch in filter(None, batches):
        for message in batch:
            message["messageId"] = uuid.uuid4().hex
        sent = await client.post("/v1/batch", json={"batch": batch}, auth=tenant.writer)
        assert sent.status_code == 200, sent.text
        await worker.drain()
    await pipeline.close()

    async with database.read_session() as session:
        index = await Catalog().load(session, tenant.id)
        context = await rule_context(
            session, workspace_id=tenant.id, index=index, now=NOW, with_time_zones=True
        )
        for segment_id in segment_ids:
            query = members_query(
                index.segments[segment_id].rule,
                dialect=database.dialect,
                workspace_id=tenant.id,
                context=context,
            )
            batch_members = set((await session.scalars(query)).all())
            live = set(
                (
                    await session.scalars(
                        select(SegmentMember.profile_id).where(
                            SegmentMember.segment_id == segment_id
                        )
                    )
                ).all()
            )
            assert live == batch_members, (documents[segment_ids.index(segment_id)], batches)
