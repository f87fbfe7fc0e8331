"""The dry run: the path and messages of the draft for a real or described profile given
timed events, with nothing written or sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.campaigns.conftest import Desk
from tests.conftest import problem
from tests.journeys.test_compiler import node
from tests.journeys.test_runtime import cart_journey, runs, sent

T0 = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)


def at(delta: timedelta = timedelta()) -> str:
    return (T0 + delta).isoformat()


def event(name: str, cart: str, delta: timedelta = timedelta()) -> dict[str, Any]:
    return {"event": name, "at": at(delta), "properties": {"cart_id": cart}}


async def test_the_draft_is_walked_for_a_described_or_real_profile_writing_nothing(
    desk: Desk,
) -> None:
    template = await desk.template()
    made = await desk.post(
        "/api/v1/journeys", {"name": "Cart", "graph": cart_journey(template)}, 201
    )
    url = f"/api/v1/journeys/{made['id']}/simulate"

    vip = await desk.post(
        url, {"traits": {"vip": True}, "events": [event("Checkout Started", "c1")]}
    )
    assert vip["outcome"] == "completed"
    assert [(s["node"], s["reason"]) for s in vip["path"]] == [
        ("start", "entered"), ("hour", "started"), ("first", "timeout"), ("day", "done"),
        ("vip", "waited"), ("second", "branch 0"), ("done", "done"),
    ]  # fmt: skip
    assert [(m["node"], m["at"]) for m in vip["messages"]] == [
        ("first", at(timedelta(hours=1)).replace("+00:00", "Z")),
        ("second", at(timedelta(hours=25)).replace("+00:00", "Z")),
    ]

    # An order for the cart within the hour: the exit criterion ends it, nothing is sent.
    ordered = await desk.post(
        url,
        {
            "events": [
                event("Checkout Started", "c1"),
                event("Order Completed", "other", timedelta(minutes=10)),
                event("Order Completed", "c1", timedelta(minutes=30)),
            ]
        },
    )
    assert ordered["outcome"] == "exited" and ordered["messages"] == []
    assert ordered["path"][-1]["reason"] == "exit: Order Completed"

    # A real profile's own traits decide the branch; described traits lie over them.
    ann = await desk.identify("ann", vip=False)
    real = await desk.post(url, {"profile_id": ann, "events": [event("Checkout Started", "c9")]})
    assert [s["node"] for s in real["path"]][-2:] == ["vip", "done"]
    assert len(real["messages"]) == 1
    over = await desk.post(
        url,
        {"profile_id": ann, "traits": {"vip": True}, "events": [event("Checkout Started", "c9")]},
    )
    assert len(over["messages"]) == 2

    no_entry = await desk.post(url, {"events": [event("Product Viewed", "c1")]})
    assert (no_entry["outcome"], no_entry["path"]) == ("not_entered", [])
    assert await runs(desk) == [] and await sent(desk) == []


async def test_a_draft_that_would_not_publish_and_bad_requests_are_refused(desk: Desk) -> None:
    graph = cart_journey(999_999)
    made = await desk.post("/api/v1/journeys", {"name": "Broken", "graph": graph}, 201)
    url = f"/api/v1/journeys/{made['id']}/simulate"
    body = {"events": [event("Checkout Started", "c1")]}
    response = await desk.client.post(url, json=body, headers=desk.tenant.admin)
    problem(response, 400, "nodes.first.actions.0.template_id")
    template = await desk.template()
    node(graph, "first")["actions"][0]["template_id"] = template
    node(graph, "second")["actions"][0]["template_id"] = template
    await desk.client.patch(
        f"/api/v1/journeys/{made['id']}", json={"graph": graph}, headers=desk.tenant.admin
    )
    response = await desk.client.post(url, json={"events": []}, headers=desk.tenant.admin)
    problem(response, 422, "events")
    naive = {"events": [{"event": "Checkout Started", "at": "2026-11-02T15:00:00"}]}
    response = await desk.client.post(url, json=naive, headers=desk.tenant.admin)
    problem(response, 422, "events.0.at")  # a time without its offset is refused
    unknown = {"profile_id": "00000000-0000-0000-0000-00000000abcd", **body}
    problem(await desk.client.post(url, json=unknown, headers=desk.tenant.admin), 404)
