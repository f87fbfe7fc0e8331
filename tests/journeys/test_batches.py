"""Runs move in batches and obey the journey's participation caps and action modes: runs
that enter together wait in one step job and move on together, each sending once; caps
turn entries away beyond their count; parallel, series and priority actions do what their
names promise, failures included."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select

from clarion.core.jobs.models import Job
from clarion.core.jobs.queue import enqueue
from clarion.core.jobs.worker import Registry, Worker
from clarion.ingest.models import Event
from clarion.journeys import steps
from clarion.journeys.steps import STEP
from tests.campaigns.conftest import Desk
from tests.journeys.test_runtime import HOUR, archive_in_use, path, publish, runs, sent


def vip_journey(template_id: int, **entry: Any) -> dict[str, Any]:
    """Signed up, an hour later: VIPs get an email, everyone else leaves."""
    return {
        "entry": {"frequency": "every_time", **entry},
        "nodes": [
            {
                "id": "start",
                "type": "trigger",
                "trigger": {"kind": "event", "event": "Signed Up"},
                "next": "hour",
            },
            {
                "id": "hour",
                "type": "wait",
                "wait": {"kind": "duration", "seconds": HOUR},
                "next": "vip",
            },
            {
                "id": "vip",
                "type": "condition",
                "branches": [{"when": [["vip eq true"]], "next": "mail"}],
                "otherwise": "done",
            },
            {
                "id": "mail",
                "type": "action",
                "actions": [{"kind": "send", "template_id": template_id}],
                "next": "done",
            },
            {"id": "done", "type": "exit"},
        ],
    }


def signed_up(user_id: str) -> dict[str, Any]:
    return {"type": "track", "event": "Signed Up", "userId": user_id}


async def step_jobs(desk: Desk) -> list[dict[str, Any]]:
    async with desk.database.read_session() as session:
        found = await session.scalars(
            select(Job.payload).where(Job.kind == STEP, Job.workspace_id == desk.tenant.id)
        )
        return list(found.all())


async def test_runs_entering_together_wait_in_one_job_and_move_on_together(desk: Desk) -> None:
    template = await desk.template()
    users = [f"u{n}" for n in range(6)]
    ids = {}
    for number, user in enumerate(users):
        ids[user] = await desk.identify(user, email=f"{user}@example.com", vip=number % 2 == 0)
    await publish(desk, vip_journey(template))
    await desk.track_raw(*(signed_up(user) for user in users))

    waiting = await runs(desk)
    assert [(r.state, r.node) for r in waiting] == [("waiting", "hour")] * 6
    named = [run_id for job in await step_jobs(desk) for run_id, _ in job["runs"]]
    assert sorted(named) == sorted(r.id for r in waiting)  # each once, in as many jobs as
    # the pipeline's transactions entered them in. One job can move them all: put one in
    # their jobs' place.
    async with desk.database.write_session() as session:
        await session.execute(
            delete(Job).where(Job.kind == STEP, Job.workspace_id == desk.tenant.id)
        )
        wake = waiting[0].wake_at
        assert wake is not None and all(r.wake_at == wake for r in waiting)
        [job] = steps.step_jobs([(r.workspace_id, r.id, r.node) for r in waiting], wake)
        await enqueue(session, [job], now=desk.clock.now())
        await session.commit()

    await desk.later(timedelta(seconds=HOUR + 1), deliver=False)
    done = await runs(desk)
    assert {r.state for r in done} == {"completed"}
    assert sorted(profile for profile, _ in await sent(desk)) == sorted(
        ids[user] for user in users[::2]
    )
    vip = next(r for r in done if str(r.profile_id) == ids["u0"])
    assert [to for _, to, _ in await path(desk, vip.id)] == [
        "start", "hour", "vip", "mail", "done", "done"
    ]  # fmt: skip
    assert await step_jobs(desk) == []


def test_step_jobs_name_at_most_a_batch_of_runs_and_repeat_as_duplicates() -> None:
    at = datetime(2026, 11, 23, 9, tzinfo=UTC)
    runs_ = [(1, n, "wait") for n in range(450)] + [(2, 1_000, "mail")]
    jobs = steps.step_jobs(runs_, at)
    assert [(job.workspace_id, len(job.payload["runs"])) for job in jobs] == [
        (1, 200), (1, 200), (1, 50), (2, 1)
    ]  # fmt: skip
    assert all(job.run_at == at and job.kind == STEP for job in jobs)
    again = steps.step_jobs(runs_, at)
    assert [job.dedupe_key for job in again] == [job.dedupe_key for job in jobs]
    later = steps.step_jobs(runs_, at + timedelta(seconds=1))
    assert not {job.dedupe_key for job in later} & {job.dedupe_key for job in jobs}
    assert steps.step_payload(jobs[-1].payload) == {1_000: "mail"}
    assert steps.step_payload({"run_id": 7, "node": "x"}) == {7: "x"}  # jobs from before


async def test_participation_caps_turn_entries_away_beyond_their_count(desk: Desk) -> None:
    template = await desk.template()
    for user in ("a", "b", "c", "d"):
        await desk.identify(user, email=f"{user}@example.com")
    total = await publish(desk, vip_journey(template, max_entries=2), name="First two")
    daily = await publish(desk, vip_journey(template, max_entries_per_day=1), name="One a day")
    await desk.track_raw(signed_up("a"), signed_up("b"), signed_up("c"))

    entered = await runs(desk)
    assert len([r for r in entered if r.journey_id == total]) == 2
    assert len([r for r in entered if r.journey_id == daily]) == 1

    await desk.later(timedelta(days=1), deliver=False)
    await desk.track_raw(signed_up("d"))
    entered = await runs(desk)
    assert len([r for r in entered if r.journey_id == total]) == 2  # never more than two
    assert len([r for r in entered if r.journey_id == daily]) == 2  # one more the next day

    stats = await desk.get(f"/api/v1/journeys/{total}")
    assert stats["graph"]["entry"]["max_entries"] == 2


def action_journey(mode: str, actions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "entry": {"frequency": "every_time"},
        "nodes": [
            {
                "id": "start",
                "type": "trigger",
                "trigger": {"kind": "event", "event": "Signed Up"},
                "next": "act",
            },
            {"id": "act", "type": "action", "mode": mode, "actions": actions, "next": "done"},
            {"id": "done", "type": "exit"},
        ],
    }


async def emitted(desk: Desk, name: str) -> int:
    async with desk.database.read_session() as session:
        found = await session.scalars(select(Event.id).where(Event.name == name))
        return len(found.all())


async def test_parallel_series_and_priority_actions_and_their_failures(desk: Desk) -> None:
    good = await desk.template(name="Good")
    gone = await desk.template(name="Gone")
    await desk.identify("pat", email="pat@example.com")

    def emit(name: str) -> dict[str, Any]:
        return {"kind": "emit_event", "event": name}

    def send(template: int) -> dict[str, Any]:
        return {"kind": "send", "template_id": template}

    journeys = {
        "parallel": await publish(
            desk, action_journey("parallel", [send(gone), emit("Parallel Done")]), "P"
        ),
        "series": await publish(
            desk, action_journey("series", [emit("Series Done"), send(gone), emit("Never")]), "S"
        ),
        "priority": await publish(
            desk, action_journey("priority", [send(gone), send(good), emit("Skipped")]), "Q"
        ),
        "hopeless": await publish(desk, action_journey("priority", [send(gone)]), "H"),
    }
    await archive_in_use(desk.database, desk.tenant.id, gone)
    await desk.track_raw(signed_up("pat"))

    by_journey = {run.journey_id: run for run in await runs(desk)}
    parallel = by_journey[journeys["parallel"]]
    # Parallel: every action is tried; one failing fails the run, the others stay done.
    assert parallel.state == "failed" and (parallel.reason or "").startswith("action 0: ")
    assert await emitted(desk, "Parallel Done") == 1
    # Series: done up to the first failure, nothing after it.
    series = by_journey[journeys["series"]]
    assert series.state == "failed" and (series.reason or "").startswith("action 1: ")
    assert (await emitted(desk, "Series Done"), await emitted(desk, "Never")) == (1, 0)
    # Priority: the first that succeeds wins, the rest are skipped.
    priority = by_journey[journeys["priority"]]
    assert priority.state == "completed"
    assert [key for _, key in await sent(desk)] == [f"journey:{priority.id}:act:1"]
    assert await emitted(desk, "Skipped") == 0
    hopeless = by_journey[journeys["hopeless"]]
    assert hopeless.state == "failed" and (hopeless.reason or "").startswith("none succeeded")

    # Retrying the series run by hand does its first action again only in name: the event
    # it emitted has its messageId, so it is not emitted twice.
    await desk.post(f"/api/v1/journeys/{journeys['series']}/runs/{series.id}/retry")
    await desk.run(deliver=False)
    assert await emitted(desk, "Series Done") == 1


async def test_a_step_takes_over_other_due_step_jobs_and_moves_their_runs(desk: Desk) -> None:
    template = await desk.template()
    users = ["t1", "t2", "t3"]
    for user in users:
        await desk.identify(user, email=f"{user}@example.com", vip=True)
    await publish(desk, vip_journey(template))
    for user in users:  # one transaction each: three wake-up jobs
        await desk.track_raw(signed_up(user))
    assert len(await step_jobs(desk)) == 3

    desk.clock.advance(timedelta(seconds=HOUR + 1))
    step = desk.no_delivery.registry.kinds[STEP]
    one_at_a_time = Worker(desk.database, Registry({STEP: step}), clock=desk.clock, concurrency=1)
    assert await one_at_a_time.drain() == 1  # the first job took the other two over
    assert {r.state for r in await runs(desk)} == {"completed"}
    assert len(await sent(desk)) == 3
    assert await step_jobs(desk) == []


async def test_trait_values_may_be_templates_checked_when_published(desk: Desk) -> None:
    await desk.identify("ty", email="ty@example.com", first_name="Ty")
    tag = {
        "kind": "update_traits",
        "traits": {
            "plan": "{{ event.properties.plan }}",
            "greeting": "Hi {{ profile.traits.first_name }}",
            "score": 3,
        },
    }
    graph = action_journey("series", [tag])
    await publish(desk, graph, name="Templated traits")
    await desk.track_raw(
        {"type": "track", "event": "Signed Up", "userId": "ty", "properties": {"plan": "pro"}}
    )
    [run] = await runs(desk)
    assert run.state == "completed"
    traits = (await desk.get("/api/v1/profiles", user_id="ty"))["items"][0]["traits"]
    assert (traits["plan"], traits["greeting"], traits["score"]) == ("pro", "Hi Ty", 3)

    graph["nodes"][1]["actions"][0]["traits"] = {"oops": "{{ nope }}", "bad": "{{ 1 + }}"}
    created = await desk.post("/api/v1/journeys", {"name": "Bad", "graph": graph}, 201)
    response = await desk.client.post(
        f"/api/v1/journeys/{created['id']}/publish", headers=desk.tenant.admin
    )
    assert response.status_code == 400, response.text
    fields = {error["field"] for error in response.json()["errors"]}
    assert fields == {"nodes.act.actions.0.traits.oops", "nodes.act.actions.0.traits.bad"}


async def test_a_refused_trait_update_fails_its_run_never_the_events(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clarion.core.errors import InvalidInput
    from clarion.profiles import service as profile_service

    await desk.identify("ri", email="ri@example.com")
    tag = {"kind": "update_traits", "traits": {"stage": "trial"}}
    await publish(desk, action_journey("series", [tag]), name="Refused traits")

    async def refuse(*args: object, **kwargs: object) -> None:
        raise InvalidInput("That trait is not allowed here.")

    monkeypatch.setattr(profile_service, "upsert_profile", refuse)
    await desk.track_raw({"type": "track", "event": "Signed Up", "userId": "ri"})
    [run] = await runs(desk)
    assert run.state == "failed" and "not allowed" in (run.reason or "")
    async with desk.database.read_session() as session:  # the events job did not fail
        mine = Job.workspace_id == desk.tenant.id
        assert (await session.scalars(select(Job).where(mine, Job.state == "dead"))).all() == []
    timeline = await desk.get(f"/api/v1/profiles/{run.profile_id}/events")
    assert [e["name"] for e in timeline["items"] if e["type"] == "track"] == ["Signed Up"]


async def test_a_run_that_keeps_failing_its_step_fails_alone(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clarion.journeys import steps as journey_steps

    template = await desk.template()
    users = ["b1", "b2", "b3"]
    for user in users:
        await desk.identify(user, email=f"{user}@example.com", vip=True)
    poison = uuid.UUID(await desk.profile_id("b2"))
    await publish(desk, vip_journey(template))
    await desk.track_raw(*(signed_up(user) for user in users))

    real = journey_steps.rule_holds_for

    async def breaks_on_b2(session: Any, **kwargs: Any) -> dict[uuid.UUID, bool]:
        if poison in kwargs["profile_ids"]:
            raise RuntimeError("a bug that only b2's data shows")
        return await real(session, **kwargs)

    monkeypatch.setattr(journey_steps, "rule_holds_for", breaks_on_b2)
    await desk.later(timedelta(seconds=HOUR + 1), deliver=False)  # b2's batch fails
    [stuck] = [r for r in await runs(desk) if r.profile_id == poison]
    assert (stuck.state, stuck.node) == ("waiting", "hour")
    for _ in range(3):  # retried: run by run
        await desk.later(timedelta(hours=1), deliver=False)
    by_profile = {r.profile_id: r for r in await runs(desk)}
    failed = by_profile.pop(poison)
    assert failed.state == "failed" and "RuntimeError" in (failed.reason or "")
    assert failed.node == "hour"  # after its wait, for a person to retry or skip
    assert {r.state for r in by_profile.values()} == {"completed"}
    assert len(await sent(desk)) == 2

    # The bug fixed, a person retries it: it goes on from its wait at once.
    monkeypatch.undo()
    await desk.post(f"/api/v1/journeys/{failed.journey_id}/runs/{failed.id}/retry")
    await desk.run(deliver=False)
    [again] = [r for r in await runs(desk) if r.profile_id == poison]
    assert again.state == "completed"
    assert len(await sent(desk)) == 3
