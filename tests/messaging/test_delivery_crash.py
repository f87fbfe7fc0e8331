"""A `clarion worker` killed with SIGKILL in the middle of a campaign: after another worker
takes over, every recipient has the message, and any repeat is the same message (same
Message-ID), which mail systems drop. Nothing accepted is lost."""

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

from sqlalchemy import select

from clarion.core.clock import FrozenClock
from clarion.core.jobs.worker import Worker
from clarion.core.settings import Settings
from clarion.messaging import delivery
from clarion.messaging.models import Message
from clarion.pipeline import Pipeline
from tests.messaging.shop import PUBLIC, Post

RECIPIENTS = 450  # more than two delivery batches: the kill finds some unsent


def _worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env |= {
        "CLARION_DATABASE_URL": settings.database_url,
        "CLARION_DATA_DIR": str(settings.data_dir),  # the same secret key: it reads the channel
        "CLARION_PUBLIC_URL": PUBLIC,
        "CLARION_LOG_LEVEL": "warning",
    }
    if settings.secret_key is not None:
        env["CLARION_SECRET_KEY"] = settings.secret_key.get_secret_value()
    return env


async def test_a_worker_killed_mid_campaign_leaves_every_recipient_one_message(
    post: Post, settings: Settings
) -> None:
    users = [f"crash-{n}" for n in range(RECIPIENTS)]
    batch = [
        {"type": "identify", "userId": u, "traits": {"email": f"{u}@example.org"}, "messageId": u}
        for u in users
    ]
    sent = await post.client.post("/v1/batch", json={"batch": batch}, auth=post.tenant.writer)
    assert sent.status_code == 200, sent.text
    await post.worker.drain()
    # A campaign to all of them, sent now: the worker process launches, dispatches and
    # delivers it.
    campaign = {
        "name": "Blast",
        "audience": {"type": "list", "user_ids": users},
        "template_id": post.template_id,
    }
    created = await post.client.post("/api/v1/campaigns", json=campaign, headers=post.tenant.admin)
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    sent = await post.client.post(
        f"/api/v1/campaigns/{campaign_id}/send", headers=post.tenant.admin
    )
    assert sent.status_code == 200, sent.text

    process = subprocess.Popen(  # noqa: ASYNC220 - a real worker process, killed once
        [str(Path(sys.executable).parent / "clarion"), "worker"],
        env=_worker_env(settings),
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while len(post.sink.messages()) < RECIPIENTS // 3:
            assert process.poll() is None, "the worker died on its own"
            assert time.monotonic() < deadline, "the worker never sent a third of them"
            await asyncio.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)  # mid-send: some batches are half done
    finally:
        process.kill()
        process.wait()
    killed_at = len(post.sink.messages())
    assert killed_at < RECIPIENTS, "the worker sent everything before it was killed"

    # Another worker, once the dead one's leases have expired, finishes the work.
    clock = FrozenClock(datetime.now(UTC) + timedelta(minutes=5))
    pipeline = Pipeline(post.database, settings.model_copy(update={"public_url": PUBLIC}), clock)
    try:
        await Worker(post.database, pipeline.registry(), clock=clock).drain()
    finally:
        await pipeline.close()

    mails = post.sink.messages()
    by_recipient: dict[str, set[str]] = {}
    for mail in mails:
        [recipient] = mail.rcpt_tos
        by_recipient.setdefault(recipient, set()).add(mail.message["Message-ID"])
    assert sorted(by_recipient) == sorted(f"{u}@example.org" for u in users)
    # Repeats (a batch cut between the server's 250 and the commit) are the same message.
    assert all(len(ids) == 1 for ids in by_recipient.values())
    repeats = sum(Counter(m.rcpt_tos[0] for m in mails).values()) - RECIPIENTS
    # At most what each running batch (4 a worker) sent since it last recorded outcomes,
    # and the sends in flight over the channel's 4 connections.
    assert repeats <= (delivery.RECORD_EVERY + 4) * 4
    async with post.database.read_session() as session:
        statuses = Counter(
            (
                await session.scalars(
                    select(Message.status).where(Message.workspace_id == post.tenant.id)
                )
            ).all()
        )
    assert statuses == {"delivered": RECIPIENTS}
    results = await post.client.get(
        f"/api/v1/campaigns/{campaign_id}/results", headers=post.tenant.admin
    )
    assert results.json()["delivered"] == RECIPIENTS, results.text
