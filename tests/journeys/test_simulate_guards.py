"""The dry run refuses entry where the runtime would, with the reason: history (old or bulk
loaded events), Clarion's own events from a write key, the entry rules against the real
profile's runs, and the participation caps."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tests.campaigns.conftest import Desk
from tests.journeys.test_runtime import cart_journey, checkout, publish
from tests.journeys.test_runtime_guards import mailer, runs, track, track_settled


def hist(at: datetime, received_at: datetime | None = None, **fields: Any) -> dict[str, Any]:
    """A `Hist` event for the dry run, happening at `at` (received then, or at `received_at`)."""
    if received_at is not None:
        fields["received_at"] = received_at.isoformat()
    return {"event": "Hist", "at": at.isoformat(), **fields}


async def _simulate(desk: Desk, journey: int, *events: dict[str, Any], **body: Any) -> Any:
    return await desk.post(f"/api/v1/journeys/{journey}/simulate", {"events": list(events), **body})


async def test_old_and_bulk_loaded_events_enter_nobody_in_the_dry_run(desk: Desk) -> None:
    template = await desk.template()
    journey = await publish(desk, mailer({"kind": "event", "event": "Hist"}, template), "Hist")
    now = desk.clock.now()

    late = await _simulate(desk, journey, hist(now, received_at=now + timedelta(hours=25)))
    assert (late["outcome"], late["path"]) == ("not_entered", [])
    assert "received more than 24 hours after it happened" in late["reason"]
    loaded = {"library": {"name": "clarion-import-orders", "version": "1.0"}}
    imported = await _simulate(desk, journey, hist(now, context=loaded))
    assert imported["outcome"] == "not_entered"
    assert "loaded in bulk by clarion-import-orders" in imported["reason"]
    # An hour late (a phone that was offline) still enters; so does a later event that is
    # news, after one that is history.
    offline = await _simulate(desk, journey, hist(now, received_at=now + timedelta(hours=1)))
    assert offline["outcome"] == "completed"
    fresh = now + timedelta(minutes=5)
    both = await _simulate(desk, journey, hist(now, context=loaded), hist(fresh))
    assert both["outcome"] == "completed"
    assert both["path"][0]["at"] == fresh.isoformat().replace("+00:00", "Z")

    # The runtime agrees on the same events.
    await desk.identify("hi", email="hi@example.com")
    yesterday = (now - timedelta(hours=25)).isoformat()
    await track_settled(desk, track("hi", "Hist", timestamp=yesterday))
    await track_settled(desk, track("hi", "Hist", context=loaded))
    assert await runs(desk) == []


async def test_clarions_own_events_from_a_write_key_are_seen_by_no_dry_run(desk: Desk) -> None:
    template = await desk.template()
    segment = await desk.segment()
    graph = mailer({"kind": "segment_entered", "segment_id": segment}, template)
    graph["exit_when"] = [{"event": "Email Opened"}]
    journey = await publish(desk, graph, name="Pros")
    now = desk.clock.now()
    entered = {"event": "Segment Entered", "at": now.isoformat(),
               "properties": {"segment_id": segment}}  # fmt: skip
    opened = {"event": "Email Opened", "at": (now + timedelta(minutes=5)).isoformat()}

    real = await _simulate(desk, journey, entered)  # Clarion's own name: from Clarion
    assert real["outcome"] == "completed"
    forged = await _simulate(desk, journey, {**entered, "source": "write_key"})
    assert forged["outcome"] == "not_entered"
    assert "Segment Entered" in forged["reason"] and "write key" in forged["reason"]
    # Forged, an exit criterion ends nothing either.
    exited = await _simulate(desk, journey, entered, {**opened, "source": "clarion"})
    assert (exited["outcome"], exited["path"][-1]["reason"]) == ("exited", "exit: Email Opened")
    kept = await _simulate(desk, journey, entered, {**opened, "source": "write_key"})
    assert kept["outcome"] == "completed"


async def test_the_entry_rules_count_the_real_profiles_runs(desk: Desk) -> None:
    template = await desk.template()
    journey = await publish(desk, cart_journey(template))  # every time, 3 live at most
    ann = await desk.identify("ann", email="ann@example.com")
    await desk.track_raw(checkout("ann", "c1"))
    now = desk.clock.now()

    def cart(key: str) -> dict[str, Any]:
        return {"event": "Checkout Started", "at": now.isoformat(), "properties": {"cart_id": key}}

    again = await _simulate(desk, journey, cart("c1"), profile_id=ann)
    assert again["outcome"] == "not_entered"
    assert "already has a live run for entry key 'c1'" in again["reason"]
    assert (await _simulate(desk, journey, cart("c2"), profile_id=ann))["outcome"] != (
        "not_entered"
    )
    assert (await _simulate(desk, journey, cart("c1")))["outcome"] != "not_entered"  # described
    await desk.track_raw(checkout("ann", "c2"), checkout("ann", "c3"))
    full = await _simulate(desk, journey, cart("c4"), profile_id=ann)
    assert full["outcome"] == "not_entered"
    assert "already has 3 live runs (max_active)" in full["reason"]
    # The runtime agrees.
    await desk.track_raw(checkout("ann", "c4"))
    assert sorted(run.entry_key for run in await runs(desk)) == ["c1", "c2", "c3"]


async def test_once_and_once_per_period_in_the_dry_run(desk: Desk) -> None:
    template = await desk.template()
    graph = mailer({"kind": "event", "event": "Hist"}, template)
    graph["entry"] = {"frequency": "once"}
    journey = await publish(desk, graph, name="Once")
    bo = await desk.identify("bo", email="bo@example.com")
    await track_settled(desk, track("bo", "Hist"))
    now = desk.clock.now()
    await desk.later(timedelta(hours=2), deliver=False)  # the run ends: only the rule holds
    once = await _simulate(desk, journey, hist(now + timedelta(days=30)), profile_id=bo)
    assert (once["outcome"], once["reason"]) == (
        "not_entered", f"Hist at {(now + timedelta(days=30)).isoformat()}: "
        "entry rule once: the profile already had a run",
    )  # fmt: skip

    graph["entry"] = {"frequency": "once_per_period", "period_days": 7}
    url = f"/api/v1/journeys/{journey}"
    await desk.client.patch(url, json={"graph": graph}, headers=desk.tenant.admin)
    soon = await _simulate(desk, journey, hist(now + timedelta(days=1)), profile_id=bo)
    assert "entry rule once_per_period" in soon["reason"]
    later = await _simulate(desk, journey, hist(now + timedelta(days=8)), profile_id=bo)
    assert later["outcome"] == "completed", later["reason"]


async def test_participation_caps_in_the_dry_run(desk: Desk) -> None:
    template = await desk.template()
    graph = mailer({"kind": "event", "event": "Hist"}, template)
    graph["entry"] = {"frequency": "every_time", "max_entries_per_day": 1}
    journey = await publish(desk, graph, name="Capped")
    await desk.identify("cy", email="cy@example.com")
    await track_settled(desk, track("cy", "Hist"))
    now = desk.clock.now()
    today = await _simulate(desk, journey, hist(now))
    assert "the journey's max_entries_per_day cap is reached" in today["reason"]
    tomorrow = await _simulate(desk, journey, hist(now + timedelta(days=1)))
    assert tomorrow["outcome"] == "completed"
    graph["entry"] = {"frequency": "every_time", "max_entries": 1}
    url = f"/api/v1/journeys/{journey}"
    await desk.client.patch(url, json={"graph": graph}, headers=desk.tenant.admin)
    ever = await _simulate(desk, journey, hist(now + timedelta(days=1)))
    assert "the journey's max_entries cap is reached" in ever["reason"]
