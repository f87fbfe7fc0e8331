"""A journey's stats per version: runs stay on the version they entered, so each version's
funnel is drawn from its own graph and runs, and its node rows add up to its runs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.campaigns.conftest import Desk
from tests.conftest import problem
from tests.journeys.test_runtime import publish

STATES = ("active", "waiting", "completed", "exited", "failed")


def _graph(template_id: int, wait: str) -> dict[str, Any]:
    """Signed up: the template at once, then a day's wait at node `wait`."""
    return {
        "nodes": [
            {
                "id": "start",
                "type": "trigger",
                "trigger": {"kind": "event", "event": "Signed Up"},
                "next": "a",
            },
            {
                "id": "a",
                "type": "action",
                "actions": [{"kind": "send", "template_id": template_id}],
                "next": wait,
            },
            {
                "id": wait,
                "type": "wait",
                "wait": {"kind": "duration", "seconds": 24 * 3600},
                "next": "done",
            },
            {"id": "done", "type": "exit"},
        ]
    }


async def _sign_up(desk: Desk, *users: str) -> None:
    for user in users:
        await desk.identify(user, email=f"{user}@example.com")
    await desk.track_raw(*({"type": "track", "event": "Signed Up", "userId": u} for u in users))


def _rows(stats: dict[str, Any]) -> list[tuple[Any, ...]]:
    """(version, node, type, entered, runs there now by state...) of each node row."""
    return [
        (n["version"], n["node"], n["type"], n["entered"], *(n[s] for s in STATES))
        for n in stats["nodes"]
    ]


async def test_stats_are_per_version_and_add_up_to_the_runs(desk: Desk) -> None:
    first, second = await desk.template("First"), await desk.template("Second")
    journey = await publish(desk, _graph(first, "w1"), name="Welcome")
    url = f"/api/v1/journeys/{journey}"
    await _sign_up(desk, "a", "b")  # two runs on version 1, waiting at w1
    await desk.client.patch(url, json={"graph": _graph(second, "w2")}, headers=desk.tenant.admin)
    await desk.post(f"{url}/publish")
    await desk.later(timedelta(minutes=1), deliver=False)
    await _sign_up(desk, "c")  # one on version 2, waiting at w2

    stats = await desk.get(f"{url}/stats")
    assert (stats["runs"], stats["states"], stats["converted"]) == (3, {"waiting": 3}, 0)
    there = {(n["node"], s): n[s] for n in stats["nodes"] for s in STATES if n[s]}
    assert sum(there.values()) == stats["runs"]
    # Oldest version first: the live one's rows come last.
    assert _rows(stats) == [
        (1, "start", "trigger", 2, 0, 0, 0, 0, 0),
        (1, "a", "action", 2, 0, 0, 0, 0, 0),
        (1, "w1", "wait", 2, 0, 2, 0, 0, 0),
        (1, "done", "exit", 0, 0, 0, 0, 0, 0),
        (2, "start", "trigger", 1, 0, 0, 0, 0, 0),
        (2, "a", "action", 1, 0, 0, 0, 0, 0),
        (2, "w2", "wait", 1, 0, 1, 0, 0, 0),
        (2, "done", "exit", 0, 0, 0, 0, 0, 0),
    ]

    # One version: its rows and totals only.
    only = await desk.get(f"{url}/stats", version=1)
    assert (only["runs"], only["states"]) == (2, {"waiting": 2})
    assert [row[:2] for row in _rows(only)] == [(1, "start"), (1, "a"), (1, "w1"), (1, "done")]
    missing = await desk.client.get(
        f"{url}/stats", params={"version": 3}, headers=desk.tenant.admin
    )
    assert "has no version 3" in problem(missing, 404)["detail"]
    for wrong in ("0", "1.5", "x"):
        refused = await desk.client.get(
            f"{url}/stats", params={"version": wrong}, headers=desk.tenant.admin
        )
        assert refused.status_code == 422, refused.text

    # Version 1's runs finish; it keeps its funnel. Version 3, with no runs yet, is live.
    await desk.later(timedelta(days=1), deliver=False)
    await desk.post(f"{url}/publish")
    stats = await desk.get(f"{url}/stats")
    assert stats["states"] == {"completed": 3}
    # (version, node, entered, completed there)
    ends = [(r[0], r[1], r[3], r[6]) for r in _rows(stats) if r[1] in ("w1", "w2", "done")]
    assert ends == [
        (1, "w1", 2, 0), (1, "done", 2, 2), (2, "w2", 1, 0), (2, "done", 1, 1),
        (3, "w2", 0, 0), (3, "done", 0, 0),
    ]  # fmt: skip


async def test_a_draft_never_published_shows_its_nodes(desk: Desk) -> None:
    template = await desk.template()
    created = await desk.post(
        "/api/v1/journeys", {"name": "Draft", "graph": _graph(template, "w")}, 201
    )
    stats = await desk.get(f"/api/v1/journeys/{created['id']}/stats")
    assert (stats["runs"], stats["states"]) == (0, {})
    assert [(n["version"], n["node"], n["entered"]) for n in stats["nodes"]] == [
        (None, "start", 0), (None, "a", 0), (None, "w", 0), (None, "done", 0)
    ]  # fmt: skip
