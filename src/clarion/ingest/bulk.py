"""Loading many messages in process exactly as `POST /v1/batch` stores them: for the demo
shop and for file imports (orders).

Messages go in batches of at most 500 (and 500 KB, the HTTP limit) through
`service.accept_messages` and `writer.EventWriter.store`, into a workspace's first source,
with the current time as `receivedAt`; a few batches are stored while the next are built.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from clarion.core.clock import Clock
from clarion.core.database import Database
from clarion.ingest import service as ingest
from clarion.ingest.writer import EventWriter
from clarion.workspaces import service as workspaces

BATCH_MESSAGES = 500
BATCH_BYTES = ingest.MAX_BATCH_BYTES
IN_FLIGHT = 4  # batches being stored while the next ones are built

Item = TypeVar("Item")


async def first_source(
    database: Database, *, workspace_slug: str, clock: Clock
) -> tuple[int, uuid.UUID]:
    """The workspace's id and its first source's, the source created when it has none."""
    async with database.write_session() as session:
        workspace = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace_slug)
        sources = await workspaces.list_sources(session, workspace_id=workspace.id)
        if sources:
            return workspace.id, sources[0].id
        source = await workspaces.create_source(
            session, workspace_id=workspace.id, name=workspaces.DEFAULT_SOURCE_NAME, now=clock.now()
        )
        await session.commit()
        return workspace.id, source.id


def batches(items: Iterable[Item], message: Callable[[Item], bytes]) -> Iterator[list[Item]]:
    """The items in batches of at most `BATCH_MESSAGES` messages and `BATCH_BYTES`."""
    batch: list[Item] = []
    size = 0
    for item in items:
        length = len(message(item))
        if batch and (len(batch) == BATCH_MESSAGES or size + length > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += length + 1  # the comma between messages in a batch body
    if batch:
        yield batch


async def store_batches(
    database: Database,
    items: Iterable[Item],
    *,
    message: Callable[[Item], bytes],
    accepted: Callable[[list[Item], ingest.Accepted], None],
    workspace_id: int,
    source_id: uuid.UUID,
    clock: Clock,
) -> int:
    """Accept and store the items' messages batch by batch, as `/v1/batch` does; how many
    events were new. `accepted` sees each batch with what ingestion made of it before it is
    stored (it may raise to stop the load)."""
    writer = EventWriter(database)
    in_flight: set[asyncio.Task[int]] = set()
    stored = 0
    try:
        for batch in batches(items, message):
            result = ingest.accept_messages(
                [message(item) for item in batch],
                workspace_id=workspace_id,
                source_id=source_id,
                received_at=clock.now(),
            )
            accepted(batch, result)
            in_flight.add(asyncio.create_task(writer.store(result.rows)))
            await asyncio.sleep(0)  # let the writer start while the next batch is built
            if len(in_flight) >= IN_FLIGHT:
                done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                stored += sum(task.result() for task in done)
        stored += sum(await asyncio.gather(*in_flight))
        in_flight.clear()
    finally:
        # On failure, let what was handed to the writer finish before it stops.
        await asyncio.gather(*in_flight, return_exceptions=True)
        await writer.close()
    return stored
