"""What journeys read, and when: stats for a version never published are a 404 before any
run is counted, and a date pass reads each page's runs once, for both its one run per date
and the entry rules (which see the profile's runs under other dates too)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from tests.campaigns.conftest import Desk
from tests.conftest import problem
from tests.journeys.test_runtime import cart_journey, checkout, publish, runs, send_journey
from tests.journeys.test_simulate_caps import reads_of_runs


async def test_stats_of_a_version_never_published_are_a_404_counting_nothing(
    desk: Desk,
) -> None:
    template = await desk.template()
    await desk.identify("st", email="st@example.com")
    journey = await publish(desk, cart_journey(template))
    await desk.track_raw(checkout("st", "c1"))
    url = f"/api/v1/journeys/{journey}/stats"
    with reads_of_runs(desk.database) as statements:
        missing = await desk.client.get(url, params={"version": 3}, headers=desk.tenant.admin)
    body = problem(missing, 404)
    assert {key: body[key] for key in ("type", "title", "status", "detail", "code")} == {
        "type": "urn:clarion:problem:not-found",
        "title": "Not found",
        "status": 404,
        "detail": f"Journey {journey} has no version 3.",
        "code": "not-found",
    }
    assert statements == []  # no run counted before the version was looked for
    assert (await desk.get(url, version=1))["runs"] == 1


async def test_a_date_pass_reads_runs_once_and_its_rules_see_other_dates(desk: Desk) -> None:
    template = await desk.template()
    now = desk.clock.now()
    midnight = datetime.combine(now.date() + timedelta(days=1), time(0), tzinfo=UTC)
    renewal = midnight.date()
    trigger = {"kind": "date", "trait": "renewal", "local_time": "03:00"}
    graph = send_journey(trigger, template, frequency="once_per_period")
    graph["entry"]["period_days"] = 7
    await publish(desk, graph, name="Renewal")
    await desk.run(deliver=False)  # the pass at publishing: nobody has the trait yet
    for user in ("re", "rf"):
        await desk.identify(user, email=f"{user}@example.com", timezone="UTC",
                            renewal=renewal.isoformat())  # fmt: skip
    desk.clock.advance(midnight + timedelta(hours=4) - desk.clock.now())
    with reads_of_runs(desk.database) as statements:
        await desk.run(deliver=False)  # the late midnight pass: both enter, at once
    read = [s for s in statements if "SELECT journey_runs.profile_id, journey_runs.entry_key" in s]
    assert len(read) == 1, statements  # the page's runs, read once
    assert sorted(run.entry_key for run in await runs(desk)) == [renewal.isoformat()] * 2

    # Re's date moves two days on: a run under another date within the period keeps them
    # out; rf's moves eight days on, and the next pass then lets them in.
    await desk.identify("re", renewal=(renewal + timedelta(days=2)).isoformat())
    await desk.identify("rf", renewal=(renewal + timedelta(days=8)).isoformat())
    for _ in range(8):  # eight daily passes
        await desk.later(timedelta(days=1), deliver=False)
    keys = sorted((str(run.profile_id), run.entry_key) for run in await runs(desk))
    rf = await desk.profile_id("rf")
    assert [key for profile, key in keys if profile == rf] == [
        renewal.isoformat(), (renewal + timedelta(days=8)).isoformat(),
    ]  # fmt: skip
    assert len(keys) == 3
