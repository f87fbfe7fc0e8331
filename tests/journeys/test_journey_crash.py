"""A `clarion worker` killed with SIGKILL while runs are mid-journey: after another worker
takes over, every run has finished, each step happened once (one move into each node, one
emitted event, one message row), and any repeated email is the same message."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from clarion.core.clock import FrozenClock
from clarion.core.jobs.worker import Worker
from clarion.core.settings import Settings
from clarion.ingest.models import Event
from clarion.journeys.models import JourneyRun, JourneyTransition
from clarion.messaging.models import Message
from clarion.pipeline import Pipeline
from tests.messaging.shop import PUBLIC, Post
from tests.messaging.test_delivery_crash import _worker_env

PEOPLE = 60


async def test_a_worker_killed_mid_journey_leaves_each_step_done_once(
    post: Post, settings: Settings
) -> None:
    users = [f"j-crash-{n}" for n in range(PEOPLE)]
    identify = [
        {"type": "identify", "userId": u, "traits": {"email": f"{u}@example.org"}, "messageId": u}
        for u in users
    ]
    sent = await post.client.post("/v1/batch", json={"batch": identify}, auth=post.tenant.writer)
    assert sent.status_code == 200, sent.text
    await post.worker.drain()
    graph = {
        "entry": {"frequency": "once"},
        "nodes": [
            {"id": "start", "type": "trigger",
             "trigger": {"kind": "event", "event": "Signed Up"}, "next": "note"},
            {"id": "note", "type": "action",
             "actions": [{"kind": "emit_event", "event": "Welcome Noted"}], "next": "split"},
            # Half the runs finish seconds after the other half: the kill, at the first
            # finished run, always finds runs on the way.
            {"id": "split", "type": "split",
             "paths": [{"weight": 1, "next": "short"}, {"weight": 1, "next": "long"}]},
            {"id": "short", "type": "wait",
             "wait": {"kind": "duration", "seconds": 1}, "next": "mail"},
            {"id": "long", "type": "wait",
             "wait": {"kind": "duration", "seconds": 30}, "next": "mail"},
            {"id": "mail", "type": "action",
             "actions": [{"kind": "send", "template_id": post.template_id}], "next": "done"},
            {"id": "done", "type": "exit"},
        ],
    }  # fmt: skip
    made = await post.client.post(
        "/api/v1/journeys", json={"name": "Welcome", "graph": graph}, headers=post.tenant.admin
    )
    assert made.status_code == 201, made.text
    published = await post.client.post(
        f"/api/v1/journeys/{made.json()['id']}/publish", headers=post.tenant.admin
    )
    assert published.status_code == 200, published.text
    signups = [
        {"type": "track", "event": "Signed Up", "userId": u, "messageId": f"s-{u}"} for u in users
    ]
    sent = await post.client.post("/v1/batch", json={"batch": signups}, auth=post.tenant.writer)
    assert sent.status_code == 200, sent.text

    process = subprocess.Popen(  # noqa: ASYNC220 - a real worker process, killed once
        [str(Path(sys.executable).parent / "clarion"), "worker"],
        env=_worker_env(settings),
        stderr=subprocess.DEVNULL,
    )

    async def completed() -> int:
        async with post.database.read_session() as session:
            found = await session.scalar(
                select(func.count()).where(
                    JourneyRun.workspace_id == post.tenant.id, JourneyRun.state == "completed"
                )
            )
            return int(found or 0)

    try:
        deadline = time.monotonic() + 120
        while await completed() == 0:  # some runs done, the rest somewhere on the way
            assert process.poll() is None, "the worker died on its own"
            assert time.monotonic() < deadline, "the worker never finished a run"
            await asyncio.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert await completed() < PEOPLE, "the worker finished every run before it was killed"

    clock = FrozenClock(datetime.now(UTC) + timedelta(minutes=5))
    pipeline = Pipeline(post.database, settings.model_copy(update={"public_url": PUBLIC}), clock)
    try:
        await Worker(post.database, pipeline.registry(), clock=clock).drain()
    finally:
        await pipeline.close()

    async with post.database.read_session() as session:
        states = Counter(
            (
                await session.scalars(
                    select(JourneyRun.state).where(JourneyRun.workspace_id == post.tenant.id)
                )
            ).all()
        )
        moves = Counter(
            (
                await session.execute(
                    select(JourneyTransition.run_id, JourneyTransition.to_node).where(
                        JourneyTransition.workspace_id == post.tenant.id,
                        JourneyTransition.from_node.is_distinct_from(JourneyTransition.to_node),
                    )
                )
            ).all()
        )
        noted = await session.scalar(
            select(func.count()).where(
                Event.workspace_id == post.tenant.id, Event.name == "Welcome Noted"
            )
        )
        messages = Counter(
            (
                await session.scalars(
                    select(Message.status).where(
                        Message.workspace_id == post.tenant.id, Message.origin == "journey"
                    )
                )
            ).all()
        )
    assert states == {"completed": PEOPLE}
    assert set(moves.values()) == {1}  # no move made twice
    assert len(moves) == PEOPLE * 6  # start, note, split, short or long, mail, done
    assert noted == PEOPLE
    assert messages == {"delivered": PEOPLE}
    by_recipient: dict[str, set[str]] = {}
    for mail in post.sink.messages():
        [recipient] = mail.rcpt_tos
        by_recipient.setdefault(recipient, set()).add(mail.message["Message-ID"])
    assert sorted(by_recipient) == sorted(f"{u}@example.org" for u in users)
    assert all(len(ids) == 1 for ids in by_recipient.values())
