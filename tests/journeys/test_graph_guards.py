"""What the journeys API refuses before anything runs: loose numbers and ids, trait actions
that would set identities or what no profile keeps, drafts past a journey's size, several
live runs without a key, crons that never fire, ready-made journeys naming what the
workspace lacks; and the dry run enters only as the runtime would."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest

from clarion.core.errors import InvalidInput
from clarion.journeys.ready_made import ready_made_draft
from tests.campaigns.conftest import Desk
from tests.conftest import problem
from tests.journeys.test_compiler import node, trait_graph
from tests.journeys.test_runtime import cart_journey, publish, runs
from tests.journeys.test_simulate import at, event


async def faults(desk: Desk, graph: Any) -> dict[str, str]:
    """The faults `POST /journeys/validate` names (none: valid)."""
    checked = await desk.post("/api/v1/journeys/validate", {"graph": graph})
    assert checked["valid"] is not bool(checked["errors"])
    return {fault["field"]: fault["message"] for fault in checked["errors"]}


async def test_loose_numbers_and_ids_do_not_validate(desk: Desk) -> None:
    template = await desk.template()
    graph = cart_journey(template)
    assert await faults(desk, graph) == {}
    for seconds in ("5", True, 5.5):
        node(graph, "day")["wait"]["seconds"] = seconds
        assert set(await faults(desk, graph)) == {"nodes.day.wait.seconds"}
    node(graph, "day")["wait"]["seconds"] = 5
    node(graph, "first")["actions"][0]["template_id"] = float(template)
    assert set(await faults(desk, graph)) == {"nodes.first.actions.0.template_id"}


async def test_trait_actions_are_checked_when_published(desk: Desk) -> None:
    traits = {"k" * 300: 1, "": 2, "email": "not-an-email", "user_id": "hijack"}
    made = await desk.post("/api/v1/journeys", {"name": "Tags", "graph": trait_graph(traits)}, 201)
    response = await desk.client.post(
        f"/api/v1/journeys/{made['id']}/publish", headers=desk.tenant.admin
    )
    body = problem(response, 400, "nodes.tag.actions.0.traits")
    assert {error["field"] for error in body["errors"]} == {
        "nodes.tag.actions.0.traits",
        "nodes.tag.actions.0.traits.email",
        "nodes.tag.actions.0.traits.user_id",
    }


async def test_a_templated_email_that_renders_to_no_address_fails_the_run(desk: Desk) -> None:
    await desk.identify("te", email="te@example.com")
    graph = trait_graph({"email": "{{ event.properties.address }}", "source": "form"})
    graph["entry"] = {"frequency": "every_time"}
    await publish(desk, graph, name="Address")
    signed_up = {"type": "track", "event": "Signed Up", "userId": "te"}
    await desk.track_raw(signed_up | {"properties": {"address": "no address"}})
    [run] = await runs(desk)
    assert (run.state, run.reason) == ("failed", "action 0: traits.email: is not an email address")
    found = await desk.get("/api/v1/profiles", user_id="te")
    assert found["items"][0]["traits"]["email"] == "te@example.com"
    await desk.track_raw(signed_up | {"properties": {"address": "new@example.com"}})
    second = [r for r in await runs(desk) if r.id != run.id]
    assert [r.state for r in second] == ["completed"]
    found = await desk.get("/api/v1/profiles", user_id="te")
    assert found["items"][0]["traits"]["email"] == "new@example.com"


async def test_a_draft_past_a_journeys_size_is_refused_naming_graph(desk: Desk) -> None:
    junk = {"nodes": [], "junk": "x" * (5 * 1024 * 1024)}
    for method, url in (("POST", "/api/v1/journeys"), ("POST", "/api/v1/journeys/validate")):
        body = {"name": "Junk", "graph": junk} if url.endswith("journeys") else {"graph": junk}
        response = await desk.client.request(method, url, json=body, headers=desk.tenant.admin)
        problem(response, 422, "graph")
    made = await desk.post("/api/v1/journeys", {"name": "Fine", "graph": {"nodes": []}}, 201)
    many = {"nodes": [{"id": f"n{n}", "type": "exit"} for n in range(201)]}
    response = await desk.client.patch(
        f"/api/v1/journeys/{made['id']}", json={"graph": many}, headers=desk.tenant.admin
    )
    problem(response, 422, "graph")


async def test_several_live_runs_need_an_entry_key(desk: Desk) -> None:
    graph = cart_journey(await desk.template())
    del graph["entry_key"], graph["exit_when"]
    del node(graph, "hour")["wait"]["same_key"]
    found = await faults(desk, graph)
    assert set(found) == {"entry.max_active"} and "entry_key" in found["entry.max_active"]


async def test_a_schedule_that_never_fires_is_refused(desk: Desk) -> None:
    segment = await desk.segment()
    graph = {
        "nodes": [
            {
                "id": "start",
                "type": "trigger",
                "trigger": {"kind": "schedule", "cron": "0 0 31 2 *", "segment_id": segment},
                "next": "done",
            },
            {"id": "done", "type": "exit"},
        ]
    }
    assert await faults(desk, graph) == {"nodes.start.trigger.cron": "never fires"}
    node(graph, "start")["trigger"]["cron"] = "0 0 28 2 *"
    assert await faults(desk, graph) == {}


async def test_the_dry_run_enters_nothing_for_an_event_without_the_entry_key(desk: Desk) -> None:
    template = await desk.template()
    made = await desk.post(
        "/api/v1/journeys", {"name": "Cart", "graph": cart_journey(template)}, 201
    )
    url = f"/api/v1/journeys/{made['id']}/simulate"
    keyless = await desk.post(url, {"events": [{"event": "Checkout Started", "at": at()}]})
    assert (keyless["outcome"], keyless["path"], keyless["messages"]) == ("not_entered", [], [])
    assert "properties.cart_id" in keyless["reason"]
    # The runtime agrees: the same event enters nobody.
    await desk.identify("nk", email="nk@example.com")
    await publish(desk, cart_journey(template), name="Live cart")
    await desk.track_raw({"type": "track", "event": "Checkout Started", "userId": "nk"})
    assert await runs(desk) == []
    # A later checkout with its cart enters, there and in the dry run.
    later = event("Checkout Started", "c1", timedelta(minutes=5))
    keyed = await desk.post(
        url, {"events": [{"event": "Checkout Started", "at": at()}, later], "traits": {"vip": True}}
    )
    assert keyed["outcome"] == "completed" and keyed["reason"] is None
    assert keyed["path"][0]["at"] == at(timedelta(minutes=5)).replace("+00:00", "Z")
    nothing = await desk.post(url, {"events": [event("Product Viewed", "c1")]})
    assert (nothing["outcome"], nothing["reason"]) == (
        "not_entered", "no event given triggers the journey"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "birthday", "template_ids": ["1"]}, "template_ids.0"),
        ({"kind": "birthday", "template_ids": 1.0}, "template_ids"),
        ({"kind": "birthday", "template_ids": [1.0]}, "template_ids.0"),
        ({"kind": "abandoned_cart", "template_ids": [-5, 0]}, "template_ids.1"),
        ({"kind": "win_back", "template_ids": [1, 2], "segment_id": "3"}, "segment_id"),
        ({"kind": "birthday", "template_ids": [1], "days_before": "3"}, "days_before"),
    ],
)
async def test_ready_made_ids_are_whole_positive_numbers(
    desk: Desk, body: dict[str, Any], field: str
) -> None:
    response = await desk.client.post(
        "/api/v1/journeys/ready-made", json=body, headers=desk.tenant.admin
    )
    problem(response, 422, field)


async def test_ready_made_fields_a_kind_does_not_use_are_refused(desk: Desk) -> None:
    template = await desk.template()
    url = "/api/v1/journeys/ready-made"
    for extra, field in (({"segment_id": 3}, "segment_id"), ({"days_before": 2}, "days_before")):
        body = {"kind": "welcome", "template_ids": [template] * 3, **extra}
        response = await desk.client.post(url, json=body, headers=desk.tenant.admin)
        problem(response, 400, field)
    made = await desk.post(url, {"kind": "birthday", "template_ids": [template]}, 201)
    assert node(made["graph"], "start")["trigger"]["offset_days"] == 0


async def test_a_ready_made_draft_names_templates_and_segments_the_workspace_lacks(
    desk: Desk,
) -> None:
    template = await desk.template()
    segment = await desk.segment()
    async with desk.database.read_session() as session:

        async def draft(**fields: Any) -> dict[str, Any]:
            values = {"segment_id": None, "days_before": None} | fields
            return await ready_made_draft(session, workspace_id=desk.tenant.id, **values)

        with pytest.raises(InvalidInput) as raised:
            await draft(kind="win_back", template_ids=[template, 999_999], segment_id=999)
        assert {(e.field, e.message) for e in raised.value.errors} == {
            ("template_ids.1", "no such template (or archived)"),
            ("segment_id", "no such segment"),
        }
        graph = await draft(kind="win_back", template_ids=[template, template], segment_id=segment)
        assert node(copy.deepcopy(graph), "start")["trigger"]["segment_id"] == segment
