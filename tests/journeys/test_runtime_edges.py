"""Runs follow their customer: a profile merged into another hands its runs over (the
survivor's events then end them), and the events a batch holds after a run's trigger count
for that run at once."""

from __future__ import annotations

from datetime import timedelta

from tests.campaigns.conftest import Desk
from tests.journeys.test_runtime import HOUR, cart_journey, checkout, order, publish, runs, sent


async def test_an_order_in_the_same_batch_as_the_checkout_ends_the_run(desk: Desk) -> None:
    template = await desk.template()
    await desk.identify("cy", email="cy@example.com")
    await publish(desk, cart_journey(template))
    await desk.track_raw(checkout("cy", "k1"), order("cy", "k1"))
    [run] = await runs(desk)
    assert (run.state, run.reason) == ("exited", "exit: Order Completed")
    await desk.later(timedelta(seconds=HOUR + 1), deliver=False)
    assert await sent(desk) == []


async def test_a_merged_profile_hands_its_runs_to_the_survivor(desk: Desk) -> None:
    template = await desk.template()
    await desk.identify("zoe", email="zoe@example.com")
    await publish(desk, cart_journey(template))
    await desk.track_raw(checkout("zoe", "shared"))
    anonymous = [
        {"type": "track", "event": "Checkout Started", "anonymousId": "anon-7",
         "properties": {"cart_id": cart}}
        for cart in ("c9", "shared")
    ]  # fmt: skip
    await desk.track_raw(*anonymous)
    assert len(await runs(desk)) == 3
    # The visitor signs in: two profiles become one.
    await desk.track_raw({"type": "identify", "userId": "zoe", "anonymousId": "anon-7"})
    survivor = await desk.profile_id("zoe")
    found = await runs(desk)
    assert {str(run.profile_id) for run in found} == {survivor}
    shared = [run for run in found if run.entry_key == "shared"]
    assert sorted(run.state for run in shared) == ["exited", "waiting"]  # one live per key
    [merged] = [run for run in shared if run.state == "exited"]
    assert (merged.reason or "").startswith("merged into profile ")

    # The survivor's order ends the run that came from the visitor.
    await desk.track_raw(order("zoe", "c9"))
    [c9] = [run for run in await runs(desk) if run.entry_key == "c9"]
    assert (c9.state, c9.reason) == ("exited", "exit: Order Completed")
