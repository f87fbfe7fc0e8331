"""Runs that pass a node more than once: each visit sends, emits and sets traits once, and
a visit taken up again (a step retried, a failed run retried by hand) does nothing twice."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from clarion.ingest.models import Event
from tests.campaigns.conftest import Desk
from tests.journeys.test_runtime import archive_in_use, publish, runs, sent


def loop(*actions: dict[str, Any], mode: str = "parallel") -> dict[str, Any]:
    """`W Go` enters; node `a` does the actions, waits 3 s and comes back to `a`; `W Stop`
    ends the run."""
    return {
        "exit_when": [{"event": "W Stop"}],
        "nodes": [
            {
                "id": "start",
                "type": "trigger",
                "trigger": {"kind": "event", "event": "W Go"},
                "next": "a",
            },
            {"id": "a", "type": "action", "mode": mode, "actions": list(actions), "next": "w"},
            {"id": "w", "type": "wait", "wait": {"kind": "duration", "seconds": 3}, "next": "a"},
        ],
    }


async def pings(desk: Desk) -> list[str]:
    """The messageIds of the `W Ping` events emitted so far."""
    async with desk.database.read_session() as session:
        found = await session.scalars(
            select(Event.message_id)
            .where(Event.workspace_id == desk.tenant.id, Event.name == "W Ping")
            .order_by(Event.id)
        )
        return list(found.all())


async def test_each_pass_through_a_loop_sends_and_emits_again(desk: Desk) -> None:
    template = await desk.template()
    await desk.identify("lo", email="lo@example.com")
    graph = loop(
        {"kind": "send", "template_id": template},
        {"kind": "emit_event", "event": "W Ping"},
        {"kind": "update_traits", "traits": {"pinged": True}},
    )
    await publish(desk, graph, name="Loop")
    await desk.track_raw({"type": "track", "event": "W Go", "userId": "lo"})
    await desk.later(timedelta(seconds=3), deliver=False)
    await desk.later(timedelta(seconds=3), deliver=False)
    await desk.track_raw({"type": "track", "event": "W Stop", "userId": "lo"})
    [run] = await runs(desk)
    assert (run.state, run.node) == ("exited", "w")
    keys = [key for _, key in await sent(desk)]
    assert sorted(keys) == [
        f"journey:{run.id}:a:0", f"journey:{run.id}:a:0:2", f"journey:{run.id}:a:0:3"
    ]  # fmt: skip
    assert sorted(await pings(desk)) == [
        f"clarion:journey:{run.id}:a:1",
        f"clarion:journey:{run.id}:a:1:2",
        f"clarion:journey:{run.id}:a:1:3",
    ]
    found = await desk.get("/api/v1/profiles", user_id="lo")
    assert found["items"][0]["traits"]["pinged"] is True


async def test_a_failed_visit_retried_by_hand_does_not_send_again(desk: Desk) -> None:
    kept = await desk.template(name="Kept")
    dropped = await desk.template(name="Dropped")
    await desk.identify("re", email="re@example.com")
    graph = loop(
        {"kind": "send", "template_id": kept},
        {"kind": "send", "template_id": dropped},
        mode="series",
    )
    journey = await publish(desk, graph, name="Loop")
    await desk.track_raw({"type": "track", "event": "W Go", "userId": "re"})
    [run] = await runs(desk)
    assert len(await sent(desk)) == 2  # the first pass sent both
    await archive_in_use(desk.database, desk.tenant.id, dropped)
    await desk.later(timedelta(seconds=3), deliver=False)
    [run] = await runs(desk)
    assert (run.state, run.node) == ("failed", "a")
    second_pass = [f"journey:{run.id}:a:0", f"journey:{run.id}:a:0:2", f"journey:{run.id}:a:1"]
    assert sorted(key for _, key in await sent(desk)) == second_pass
    # Retried by hand, the second pass runs `a` again: what it sent is not sent again.
    for _ in range(2):
        await desk.post(f"/api/v1/journeys/{journey}/runs/{run.id}/retry")
        await desk.run(deliver=False)
        [run] = await runs(desk)
        assert (run.state, run.node) == ("failed", "a")
        assert sorted(key for _, key in await sent(desk)) == second_pass
