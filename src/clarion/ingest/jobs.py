"""The work ingestion hands on: each stored event is processed by a durable job.

Events are split into shards by who sent them (the anonymousId, else the userId), and each
shard is a serial key: one customer's events are processed one batch at a time, in the order
they were stored, while different customers' events are processed in parallel by any number
of workers. The jobs are enqueued in the transaction that stores the events, so an accepted
event is always processed, and processed once.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterable
from typing import NamedTuple

from clarion.core.jobs.queue import NewJob

PROCESS_EVENTS = "events.process"
SHARDS = 16
# Events are processed ahead of bulk work (recomputations, broadcasts), behind nothing.
PRIORITY = 0


class StoredEvent(NamedTuple):
    """What the event log's insert returns for each event it stored."""

    id: int
    workspace_id: int
    message_id: str
    user_id: str | None
    anonymous_id: str | None


def shard_of(event: StoredEvent) -> int:
    """The shard of an event's sender: stable across processes and restarts."""
    sender = event.anonymous_id or event.user_id or ""
    return zlib.crc32(sender.encode()) % SHARDS


def processing_jobs(events: Iterable[StoredEvent]) -> list[NewJob]:
    """One job per workspace and shard for the stored events, holding their ids in order."""
    batches: dict[tuple[int, int], list[int]] = defaultdict(list)
    for event in sorted(events, key=lambda stored: stored.id):
        batches[(event.workspace_id, shard_of(event))].append(event.id)
    return [
        NewJob(
            workspace_id=workspace_id,
            kind=PROCESS_EVENTS,
            payload={"event_ids": ids},
            priority=PRIORITY,
            serial_key=f"events:{shard}",
        )
        for (workspace_id, shard), ids in batches.items()
    ]
