"""An alias's own anonymousId belongs to the person it aliases (Segment's spec): it becomes
an identity of the userId's profile, linked (or refused) as an identify's would be."""

from __future__ import annotations

from datetime import UTC, datetime

from clarion.core.database import Database
from clarion.profiles.identity import ANONYMOUS_ID, USER_ID, Graph
from tests.conftest import Tenant
from tests.profiles.conftest import Send, alias, identify
from tests.profiles.test_resolution import by, merges_of, pid


def _graph() -> Graph:
    return Graph(
        workspace_id=1,
        now=datetime(2026, 1, 1, tzinfo=UTC),
        profiles={},
        owner={},
        user_ids={},
        blocked=set(),
        refused_with={},
    )


def test_an_unknown_anonymous_id_becomes_the_users() -> None:
    graph = _graph()
    target = graph.resolve_alias(user_id="u1", previous_id="old", event_id=1, anonymous_id="dev")
    assert graph.find((USER_ID, "u1")) == target
    assert graph.find((ANONYMOUS_ID, "old")) == target
    assert graph.find((ANONYMOUS_ID, "dev")) == target
    assert [new.key for new in graph.new_identities] == [
        (USER_ID, "u1"),
        (ANONYMOUS_ID, "old"),
        (ANONYMOUS_ID, "dev"),
    ]


def test_the_anonymous_ids_profile_is_merged_into_the_users() -> None:
    graph = _graph()
    device = graph.resolve([(ANONYMOUS_ID, "dev")], event_id=1, reason="track")
    user = graph.resolve([(USER_ID, "u1")], event_id=2, reason="identify")
    target = graph.resolve_alias(user_id="u1", previous_id="old", event_id=3, anonymous_id="dev")
    assert target == user and graph.canonical(device) == user
    assert [(m.survivor_id, m.absorbed_id, m.status) for m in graph.merges] == [
        (user, device, "merged")
    ]


def test_an_anonymous_id_of_another_user_is_refused_not_merged() -> None:
    graph = _graph()
    other = graph.resolve([(USER_ID, "u2"), (ANONYMOUS_ID, "dev")], event_id=1, reason="identify")
    target = graph.resolve_alias(user_id="u1", previous_id="old", event_id=2, anonymous_id="dev")
    assert target != other and graph.find((ANONYMOUS_ID, "dev")) == other
    assert [(m.status, m.reason) for m in graph.merges] == [("refused", "user_id_conflict")]


def test_an_anonymous_id_equal_to_the_previous_id_adds_nothing() -> None:
    plain, same = _graph(), _graph()
    plain.resolve_alias(user_id="u1", previous_id="old", event_id=1)
    same.resolve_alias(user_id="u1", previous_id="old", event_id=1, anonymous_id="old")
    assert [n.key for n in same.new_identities] == [n.key for n in plain.new_identities]
    assert not same.merges


async def test_an_alias_records_its_anonymous_id(
    send: Send, database: Database, tenant: Tenant
) -> None:
    await send(identify(anonymous_id="dev", minute=1, color="red"))
    message = alias("old", "u1", minute=2)
    message["anonymousId"] = "dev"
    await send(message)
    user = await by(database, tenant, "user_id", "u1")
    assert user is not None
    assert await pid(database, tenant, "anonymous_id", "old") == user.id
    assert await pid(database, tenant, "anonymous_id", "dev") == user.id
    assert user.traits == {"color": "red"}
    assert await merges_of(database, tenant, user) == [("merged", "alias")]
