"""What monitoring answers about nodes, versions and profiles it does not know: timing per
version (as stats), a 404 naming the node a journey lacks, and a profile's journeys by its
canonical profile (404 for none)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx

from tests.campaigns.conftest import Desk
from tests.conftest import problem
from tests.journeys.test_compiler import node
from tests.journeys.test_runtime import HOUR, cart_journey, checkout, publish


async def test_timing_is_per_version_as_stats_and_says_which(desk: Desk) -> None:
    template = await desk.template()
    for user in ("v1", "v2"):
        await desk.identify(user, email=f"{user}@example.com")
    graph = cart_journey(template)
    journey = await publish(desk, graph)
    url = f"/api/v1/journeys/{journey}"
    await desk.track_raw(checkout("v1", "c1"))
    await desk.later(timedelta(minutes=61), deliver=False)  # version 1: an hour's wait
    node(graph, "hour")["wait"]["timeout_seconds"] = 2 * HOUR
    node(graph, "hour")["timeout_next"] = node(graph, "first")["id"] = "later"
    await desk.client.patch(url, json={"graph": graph}, headers=desk.tenant.admin)
    await desk.post(f"{url}/publish")
    await desk.track_raw(checkout("v2", "c2"))
    await desk.later(timedelta(minutes=121), deliver=False)  # version 2: two hours

    both = await desk.get(f"{url}/timing", from_node="start", to_node="day")
    assert (both["version"], both["runs"]) == (None, 2)
    one = await desk.get(f"{url}/timing", from_node="start", to_node="day", version=1)
    assert (one["version"], one["runs"], one["p50_seconds"]) == (1, 1, 61 * 60.0)
    two = await desk.get(f"{url}/timing", from_node="start", to_node="day", version=2)
    assert (two["version"], two["runs"], two["p50_seconds"]) == (2, 1, 121 * 60.0)

    async def timing(**params: Any) -> httpx.Response:
        return await desk.client.get(f"{url}/timing", params=params, headers=desk.tenant.admin)

    missing = await timing(from_node="start", to_node="day", version=3)
    assert "has no version 3" in problem(missing, 404)["detail"]
    for wrong in ("0", "1.5", "x"):
        refused = await timing(from_node="start", to_node="day", version=wrong)
        assert refused.status_code == 422, refused.text
    # `later` is version 2's (version 1's `first`): version 1 has no such node.
    assert (await desk.get(f"{url}/timing", from_node="hour", to_node="later"))["runs"] == 1
    body = problem(await timing(from_node="hour", to_node="later", version=1), 404, "to_node")
    assert "'later' in version 1" in body["detail"]


async def test_timing_between_nodes_the_journey_lacks_is_a_404_naming_them(desk: Desk) -> None:
    template = await desk.template()
    journey = await publish(desk, cart_journey(template))
    url = f"/api/v1/journeys/{journey}/timing"
    admin = desk.tenant.admin
    for params, fields in (
        ({"from_node": "nowhere", "to_node": "first"}, ["from_node"]),
        ({"from_node": "hour", "to_node": "nowhere"}, ["to_node"]),
        ({"from_node": "nowhere", "to_node": "nowhere"}, ["from_node", "to_node"]),
    ):
        body = problem(await desk.client.get(url, params=params, headers=admin), 404)
        assert [e["field"] for e in body["errors"]] == fields
        assert body["detail"] == f"Journey {journey} has no node 'nowhere'."
    # A node of the draft not yet published is the journey's: nothing timed yet.
    graph = cart_journey(template)
    graph["nodes"].append({"id": "spare", "type": "exit"})
    await desk.client.patch(f"/api/v1/journeys/{journey}", json={"graph": graph}, headers=admin)
    spare = await desk.get(url, from_node="start", to_node="spare")
    assert (spare["version"], spare["runs"], spare["p50_seconds"]) == (None, 0, None)


async def test_runs_at_a_node_the_journey_lacks_are_a_404_naming_it(desk: Desk) -> None:
    template = await desk.template()
    journey = await publish(desk, cart_journey(template))
    runs = f"/api/v1/journeys/{journey}/runs"
    body = problem(
        await desk.client.get(runs, params={"node": "nowhere"}, headers=desk.tenant.admin),
        404,
        "node",
    )
    assert body["detail"] == f"Journey {journey} has no node 'nowhere'."
    assert (await desk.get(runs, node="hour"))["items"] == []


async def test_a_profiles_journeys_404_for_no_profile_and_follow_a_merge(desk: Desk) -> None:
    template = await desk.template()
    await publish(desk, cart_journey(template))
    unknown = await desk.client.get(
        f"/api/v1/profiles/{uuid.uuid4()}/journeys", headers=desk.tenant.admin
    )
    problem(unknown, 404)

    # A visitor's run goes with the visitor into the customer it turns out to be: asked
    # by the visitor's (merged-away) id, the customer's runs answer.
    user = await desk.identify("mu", email="mu@example.com")
    await desk.track_raw(
        {"type": "track", "event": "Checkout Started", "anonymousId": "visitor",
         "properties": {"cart_id": "v1"}}
    )  # fmt: skip
    visitor = (await desk.get("/api/v1/profiles", anonymous_id="visitor"))["items"][0]["id"]
    [before] = await desk.get(f"/api/v1/profiles/{visitor}/journeys")
    await desk.track_raw({"type": "alias", "previousId": "visitor", "userId": "mu"})
    assert [r["id"] for r in await desk.get(f"/api/v1/profiles/{user}/journeys")] == [before["id"]]
    moved = await desk.get(f"/api/v1/profiles/{visitor}/journeys")
    assert [(r["id"], r["profile_id"]) for r in moved] == [(before["id"], user)]
