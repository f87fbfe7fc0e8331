"""The delivery pipeline: messages are rows first, then durable `messages.deliver` jobs send
them, each job a batch.

`queue_messages` writes the rows in the caller's transaction (its idempotency key is unique
per workspace, and the row's id derives from it) and enqueues their delivery there too, so
asking twice for one message makes one row and one send. A delivery job then, for its
batch:

1. decides, reading only: consent and suppression (`consent.service.refusals`), quiet hours
   in each recipient's time zone (the message waits for their end, never dropped), and
   frequency caps with priority arbitration (`policy.py`); renders each message left;
2. records the refusals, deferrals and inbox messages, and marks the rest `sending`
   (committed before any provider is called);
3. sends those through their channels, concurrently, within each channel's rate;
4. records the outcomes as the sends finish, `RECORD_EVERY` at a time (or after
   every `RECORD_WITHIN` seconds), the last ones with the job's completion: sent / delivered,
   bounced (the address goes on the suppression list), failed, or queued again with backoff
   after a temporary failure until the last attempt.

A crash between 2 and 4 leaves the messages not yet recorded `sending`; the job's retry
sends them again under the same idempotency key (the email's Message-ID, Twilio's
idempotency token, the webhook id), which receivers use to drop the repeat: delivery is at
least once, and the window for a repeat is the sends since a batch's last record (at most
`RECORD_EVERY` and those in flight, per batch running).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, defer

from clarion.core.clock import Clock
from clarion.core.database import Database, unindexed
from clarion.core.jobs.queue import NewJob, enqueue
from clarion.core.jobs.worker import JobContext, PermanentFailure
from clarion.ingest.internal import OwnEvents
from clarion.messaging import feedback, policy
from clarion.messaging.channels.base import Channel, Sent, TemporaryFailure
from clarion.messaging.channels.base import PermanentFailure as Refused
from clarion.messaging.consent import suppressions
from clarion.messaging.feedback import Outcome, message_key
from clarion.messaging.models import Message, MessageEvent
from clarion.messaging.ratelimit import RateLimiter
from clarion.messaging.sending import Composer, Prepared

DELIVER = "messages.deliver"  # job kind: deliver a batch of messages
DELIVER_PRIORITY = 10  # behind event processing and segment lapses
BATCH = 200  # messages per delivery job
MAX_ATTEMPTS = 6
RECORD_EVERY = 100  # a batch's outcomes are recorded this many at a time as its sends finish
RECORD_WITHIN = 1.0  # or every this many seconds, when sends are slow
_BACKOFF = (timedelta(seconds=30), timedelta(minutes=2), timedelta(minutes=10), timedelta(hours=1))
_UNIQUE = ["workspace_id", "idempotency_key"]


@dataclass(frozen=True, slots=True)
class MessageRequest:
    """One message to send: to whom, with which template version and channel, why."""

    profile_id: uuid.UUID
    template_id: int
    template_version_id: int
    channel: str
    idempotency_key: str
    origin: str
    origin_id: str | None = None
    channel_id: int | None = None
    category: str = "marketing"
    topic_id: int | None = None
    priority: int = 0
    send_after: datetime | None = None
    address: str | None = None  # else the profile's address on the channel
    context: dict[str, Any] = field(default_factory=dict)  # event, journey


async def queue_messages(
    session: AsyncSession, *, workspace_id: int, requests: Sequence[MessageRequest], now: datetime
) -> list[uuid.UUID]:
    """Write the messages not already asked for (by idempotency key) and enqueue their
    delivery, in the caller's transaction; every request's message id, in order."""
    rows: list[dict[str, Any]] = [
        {
            "id": message_key(workspace_id, r.idempotency_key),
            "workspace_id": workspace_id,
            "profile_id": r.profile_id,
            "channel": r.channel,
            "channel_id": r.channel_id,
            "template_id": r.template_id,
            "template_version_id": r.template_version_id,
            "idempotency_key": r.idempotency_key,
            "origin": r.origin,
            "origin_id": r.origin_id,
            "category": r.category,
            "topic_id": r.topic_id,
            "priority": r.priority,
            "address": r.address,
            "status": "queued",
            "context": r.context,
            "links": [],
            "attempts": 0,
            "send_after": r.send_after or now,
            "created_at": now,
            "updated_at": now,
        }
        for r in requests
    ]
    insert = postgres_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    created: list[tuple[uuid.UUID, datetime]] = []
    for start in range(0, len(rows), 1_000):
        result = await session.execute(
            insert(Message)
            .on_conflict_do_nothing(index_elements=_UNIQUE)
            .returning(Message.id, Message.send_after),
            rows[start : start + 1_000],
        )
        created.extend((row[0], row[1]) for row in result)
    await enqueue(session, delivery_jobs(workspace_id, created), now=now)
    return [message_key(workspace_id, r.idempotency_key) for r in requests]


def delivery_jobs(
    workspace_id: int, messages: Sequence[tuple[uuid.UUID, datetime]]
) -> list[NewJob]:
    """Delivery jobs for these (message id, due time) pairs: one per batch due together."""
    by_time: dict[datetime, list[uuid.UUID]] = {}
    for message_id, due in messages:
        by_time.setdefault(due, []).append(message_id)
    jobs = []
    for due, ids in sorted(by_time.items()):
        for start in range(0, len(ids), BATCH):
            jobs.append(
                NewJob(
                    workspace_id=workspace_id,
                    kind=DELIVER,
                    payload={"message_ids": [str(i) for i in ids[start : start + BATCH]]},
                    run_at=due,
                    priority=DELIVER_PRIORITY,
                )
            )
    return jobs


def _backoff(attempts: int) -> timedelta:
    return _BACKOFF[min(attempts, len(_BACKOFF)) - 1]


@dataclass
class _Plan:
    """What a batch's reading phase decided, by message id."""

    refused: dict[uuid.UUID, str] = field(default_factory=dict)
    failed: dict[uuid.UUID, str] = field(default_factory=dict)
    deferred: dict[uuid.UUID, datetime] = field(default_factory=dict)
    inbox: list[Prepared] = field(default_factory=list)
    sends: list[Prepared] = field(default_factory=list)


ProcessOwnEvents = Callable[[AsyncSession, int, OwnEvents, datetime], Awaitable[None]]
"""Applies feedback events stored in a transaction, in it (`Pipeline.process_own_events`)."""


class Delivery:
    """Runs `messages.deliver` jobs (one instance per worker process)."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        composer: Composer,
        limiter: RateLimiter,
        process_own: ProcessOwnEvents | None = None,
    ) -> None:
        self.database = database
        self.clock = clock
        self.composer = composer
        self.limiter = limiter
        # With `process_own`, a batch's feedback events (`Email Delivered`, ...) are applied
        # with its results, not by processing jobs (one per batch and shard); without it,
        # by those jobs.
        self.process_own = process_own

    async def close(self) -> None:
        """Close the channels' connections (SMTP sessions, HTTP clients)."""
        await self.composer.channels.close()

    async def deliver(self, context: JobContext) -> None:
        """Decide, send and record one batch of messages (see the module docstring)."""
        workspace_id = context.job.workspace_id
        try:
            ids = [uuid.UUID(str(i)) for i in context.job.payload["message_ids"]]
        except (KeyError, TypeError, ValueError) as error:
            raise PermanentFailure(f"payload names no messages: {context.job.payload}") from error
        now = self.clock.now()
        async with self.database.read_session() as session:
            plan = await self._plan(session, workspace_id, ids, now)
        async with self.database.write_session() as session:
            if not plan.sends:
                await context.complete(session)
            sending = await self._record_plan(session, workspace_id, ids, plan, now)
            await session.commit()
        if not sending:
            if plan.sends:  # another run took them meanwhile: nothing left to do here
                async with self.database.write_session() as session:
                    await context.complete(session)
                    await session.commit()
            return
        # Outcomes are recorded as the sends finish, a few at a time, not once the batch is
        # done: a crash then repeats only what was sent since the last record.
        results: list[tuple[Prepared, Sent | Exception]] = []
        left, recorded = len(sending), time.monotonic()
        for finished in asyncio.as_completed([self._send(item) for item in sending]):
            results.append(await finished)
            left -= 1
            if left and len(results) < RECORD_EVERY and time.monotonic() - recorded < RECORD_WITHIN:
                continue
            async with self.database.write_session() as session:
                if not left:
                    await context.complete(session)
                await self._record_results(session, workspace_id, results, self.clock.now())
                await session.commit()
            results, recorded = [], time.monotonic()

    async def _plan(
        self, session: AsyncSession, workspace_id: int, ids: Sequence[uuid.UUID], now: datetime
    ) -> _Plan:
        plan = _Plan()
        messages = await _pending(session, workspace_id, ids)
        if not messages:
            return plan
        prepared = await self.composer.prepare(session, workspace_id, messages, now)
        capped = await policy.cap_refusals(
            session,
            workspace_id=workspace_id,
            messages=[p.message for p in prepared if p.refusal is None and p.quiet_until is None],
            now=now,
        )
        for item in prepared:
            message_id = item.message.id
            if item.refusal is not None:
                plan.refused[message_id] = item.refusal
            elif item.quiet_until is not None:
                plan.deferred[message_id] = item.quiet_until
            elif message_id in capped:
                plan.refused[message_id] = capped[message_id]
            elif item.failure is not None:
                plan.failed[message_id] = item.failure
            elif item.message.channel == "inbox":
                plan.inbox.append(item)
            else:
                plan.sends.append(item)
        return plan

    async def _record_plan(
        self,
        session: AsyncSession,
        workspace_id: int,
        ids: Sequence[uuid.UUID],
        plan: _Plan,
        now: datetime,
    ) -> list[Prepared]:
        """Write what was decided without a provider, on rows still pending (read again,
        locked on PostgreSQL); the sends still to make, now `sending`."""
        sends = {item.message.id: item for item in plan.sends}
        # The sends (nearly every message) are checked and updated by id, without loading
        # them as objects; the rest, few, are loaded for what records them.
        attempts: dict[uuid.UUID, int] = {}
        if sends:
            query = _pending_query(session, workspace_id, list(sends), lock=True)
            found = await session.execute(query.with_only_columns(Message.id, Message.attempts))
            attempts = {row[0]: row[1] for row in found}
        others = [i for i in ids if i not in sends]
        rows = {m.id: m for m in await _pending(session, workspace_id, others, lock=True)}
        inbox = [item for item in plan.inbox if item.message.id in rows]
        # Caps are decided again here, under each profile's lock, now that what other
        # batches decided since this one planned is visible: two batches planned at one
        # moment must never both take a profile's last slot.
        capped = await policy.cap_refusals(
            session,
            workspace_id=workspace_id,
            messages=[sends[i].message for i in attempts] + [item.message for item in inbox],
            now=now,
            lock_profiles=True,
        )
        if capped:
            plan.refused.update(capped)
            late = [i for i in capped if i in attempts]
            rows.update({m.id: m for m in await _pending(session, workspace_id, late)})
            attempts = {i: n for i, n in attempts.items() if i not in capped}
            inbox = [item for item in inbox if item.message.id not in capped]
        outcomes = [
            Outcome(rows[i], "refused", reason=reason)
            for i, reason in plan.refused.items()
            if i in rows
        ] + [
            Outcome(rows[i], "failed", reason=reason)
            for i, reason in plan.failed.items()
            if i in rows
        ]
        deferred = [(rows[i], until) for i, until in plan.deferred.items() if i in rows]
        for message, until in deferred:
            message.send_after = until
            message.updated_at = now
            session.add(_history(workspace_id, message, "deferred", now, until=until.isoformat()))
        await enqueue(
            session, delivery_jobs(workspace_id, [(m.id, u) for m, u in deferred]), now=now
        )
        for item in inbox:
            item.message = rows[item.message.id]
            await self.composer.deliver_inbox(session, item, now)
        sending = [item for message_id, item in sends.items() if message_id in attempts]
        if sending:
            await session.execute(
                update(Message),
                [
                    {
                        "id": item.message.id,
                        "status": "sending",
                        "attempts": attempts[item.message.id] + 1,
                        "links": item.links,
                        "content": item.stored,
                        "address": item.address,
                        "updated_at": now,
                    }
                    for item in sending
                ],
            )
        await self._record(session, workspace_id, outcomes, now)
        return sending

    async def _send(self, item: Prepared) -> tuple[Prepared, Sent | Exception]:
        channel: Channel | None = item.channel
        assert channel is not None and item.outgoing is not None
        if item.rate_per_second and item.channel_id is not None:
            wait = await self.limiter.wait(item.channel_id, item.rate_per_second)
            if wait > 0:
                await asyncio.sleep(wait)
        try:
            return item, await channel.send(item.outgoing)
        except (Refused, TemporaryFailure) as error:
            return item, error
        except Exception as error:  # an adapter bug must not lose the batch
            return item, TemporaryFailure(f"{type(error).__name__}: {error}")

    async def _record_results(
        self,
        session: AsyncSession,
        workspace_id: int,
        results: Sequence[tuple[Prepared, Sent | Exception]],
        now: datetime,
    ) -> None:
        ids = [item.message.id for item, _ in results]
        # Outcomes read the rows' status and identity, never what was sent: the kept HTML
        # (15-20 KB an email), its links and context stay in the database.
        rows = {
            m.id: m
            for m in await _pending(
                session,
                workspace_id,
                ids,
                lock=True,
                without=(Message.content, Message.links, Message.context),
            )
        }
        outcomes: list[Outcome] = []
        retries: list[tuple[uuid.UUID, datetime]] = []
        bounced: list[tuple[Message, str, str]] = []
        for item, result in results:
            message = rows.get(item.message.id)
            if message is None or message.status != "sending":
                continue
            if isinstance(result, Sent):
                status = "delivered" if message.channel in ("email", "webhook") else "sent"
                outcomes.append(Outcome(message, status, provider_id=result.provider_id))
            elif isinstance(result, Refused):
                outcome = _refusal_outcome(message, result)
                outcomes.append(outcome)
                kind = result.bounce
                if kind in ("hard", "complaint") and outcome.status != "failed" and message.address:
                    bounced.append((message, message.address, kind))
            elif message.attempts >= MAX_ATTEMPTS:
                outcomes.append(Outcome(message, "failed", reason=f"gave up: {result}"))
            else:
                wait = _backoff(message.attempts)
                if isinstance(result, TemporaryFailure) and result.retry_after:
                    wait = max(wait, timedelta(seconds=result.retry_after))
                message.status = "queued"
                message.send_after = now + wait
                message.reason = str(result)
                message.updated_at = now
                retries.append((message.id, message.send_after))
                session.add(_history(workspace_id, message, "retrying", now, reason=str(result)))
        await self._record(session, workspace_id, outcomes, now)
        await enqueue(session, delivery_jobs(workspace_id, retries), now=now)
        for bounced_message, address, bounce in bounced:
            await self.composer.suppress(
                session, workspace_id, bounced_message, address, bounce, now
            )

    async def _record(
        self, session: AsyncSession, workspace_id: int, outcomes: list[Outcome], now: datetime
    ) -> None:
        """`feedback.record` the outcomes, applying their events here when this delivery
        can."""
        if self.process_own is None:
            await feedback.record(session, workspace_id=workspace_id, outcomes=outcomes, now=now)
            return
        own: OwnEvents = {}
        await feedback.record(
            session, workspace_id=workspace_id, outcomes=outcomes, now=now, own_events=own
        )
        await self.process_own(session, workspace_id, own, now)


def _refusal_outcome(message: Message, refused: Refused) -> Outcome:
    """What a provider's refusal makes of the message: bounced or complained when it says
    so of an address that can go on the suppression list; else failed with its reason
    (an address no list can hold fails without suppressing anything, so that recording
    the batch's other outcomes never fails with it)."""
    kind = refused.bounce
    status = "complained" if kind == "complaint" else "bounced" if kind else "failed"
    if kind in ("hard", "complaint") and message.address:
        problem = suppressions.address_problem(message.channel, message.address)
        if problem is not None:
            return Outcome(message, "failed", reason=f"{refused.reason} ({problem})")
    return Outcome(message, status, reason=refused.reason)


def _history(
    workspace_id: int, message: Message, kind: str, now: datetime, **detail: Any
) -> MessageEvent:
    return MessageEvent(
        workspace_id=workspace_id,
        message_id=message.id,
        kind=kind,
        machine=False,
        detail={**detail, "attempt": message.attempts},
        at=now,
    )


async def _pending(
    session: AsyncSession,
    workspace_id: int,
    ids: Sequence[uuid.UUID],
    *,
    lock: bool = False,
    without: Sequence[InstrumentedAttribute[Any]] = (),
) -> list[Message]:
    """The messages among `ids` still to deliver (queued or sending), oldest first; the
    columns `without` are not loaded (reading one later is an error)."""
    if not ids:
        return []
    query = _pending_query(session, workspace_id, ids, lock=lock)
    if without:
        query = query.options(*(defer(column, raiseload=True) for column in without))
    return list((await session.scalars(query)).all())


def _pending_query(
    session: AsyncSession, workspace_id: int, ids: Sequence[uuid.UUID], *, lock: bool
) -> Select[Message]:
    query = (
        select(Message)
        .where(
            Message.id.in_(ids),
            # Found by key: with no statistics PostgreSQL read every message of the
            # workspace through its index instead, three times a batch.
            unindexed(Message.workspace_id) == workspace_id,
            Message.status.in_(("queued", "sending")),
        )
        .order_by(Message.created_at, Message.id)
    )
    if lock and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return query
