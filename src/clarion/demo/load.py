"""Loading the demo shop through the ingestion path, in process, as `/v1/batch` would.

Messages go in batches of at most 500 (and 500 KB, the HTTP limit) through
`ingest.service.accept_messages` and `ingest.writer.EventWriter.store`, into a workspace's
first source, with the current time as `receivedAt`. The messageIds are derived from the
seed, so loading the same seed again stores nothing twice. A rejected message is a bug in
the generator: loading stops with `DemoRejected`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from clarion.core.clock import Clock
from clarion.core.database import Database
from clarion.core.errors import ClarionError
from clarion.demo.behaviour import DemoPlan, generate
from clarion.demo.catalog import load_catalog
from clarion.ingest import service as ingest
from clarion.ingest.writer import EventWriter
from clarion.workspaces import service as workspaces

BATCH_MESSAGES = 500
BATCH_BYTES = ingest.MAX_BATCH_BYTES
IN_FLIGHT = 4  # batches being stored while the next ones are generated


class DemoRejected(ClarionError):
    """The ingestion path refused a demo message: the generator is wrong."""


@dataclass(frozen=True, slots=True)
class DemoSummary:
    """What a load did: the shop's size, messages sent and stored, and how long it took."""

    customers: int
    products: int
    sent: int
    stored: int
    seconds: float

    def line(self) -> str:
        """The one-line summary `clarion demo` prints."""
        return (
            f"demo shop: {self.customers:,} customers, {self.products} products, "
            f"{self.stored:,} events stored ({self.sent - self.stored:,} already there) "
            f"in {self.seconds:.1f} s"
        )


async def demo_target(
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


async def workspace_has_events(database: Database, *, workspace_slug: str) -> bool:
    """Whether the workspace's event log holds anything yet."""
    async with database.read_session() as session:
        workspace = await workspaces.get_workspace_by_slug_or_raise(session, slug=workspace_slug)
        found, _ = await ingest.list_events(
            session, workspace_id=workspace.id, where=ingest.EventFilter(), limit=1
        )
        return bool(found)


async def load_demo(
    database: Database, plan: DemoPlan, *, workspace_slug: str, clock: Clock
) -> DemoSummary:
    """Generate the plan's messages and store them in the workspace; the summary."""
    started = time.perf_counter()
    workspace_id, source_id = await demo_target(
        database, workspace_slug=workspace_slug, clock=clock
    )
    sent, stored = await store_messages(
        database, generate(plan), workspace_id=workspace_id, source_id=source_id, clock=clock
    )
    return DemoSummary(
        customers=plan.customers,
        products=len(load_catalog()),
        sent=sent,
        stored=stored,
        seconds=time.perf_counter() - started,
    )


async def store_messages(
    database: Database,
    messages: Iterable[bytes],
    *,
    workspace_id: int,
    source_id: uuid.UUID,
    clock: Clock,
) -> tuple[int, int]:
    """Accept and store the messages batch by batch, as `/v1/batch` does; how many were sent
    and how many were new. DemoRejected when the ingestion path refuses any of them."""
    writer = EventWriter(database)
    in_flight: set[asyncio.Task[int]] = set()
    sent = stored = 0
    try:
        for batch in batches(messages):
            accepted = ingest.accept_messages(
                batch, workspace_id=workspace_id, source_id=source_id, received_at=clock.now()
            )
            if accepted.rejected:
                first = accepted.rejected[0]
                raise DemoRejected(
                    f"the ingestion path refused {len(accepted.rejected)} demo message(s); "
                    f"first: {first.field or 'message'}: {first.message}",
                    errors=accepted.rejected,
                )
            sent += len(batch)
            in_flight.add(asyncio.create_task(writer.store(accepted.rows)))
            await asyncio.sleep(0)  # let the writer start while the next batch is generated
            if len(in_flight) >= IN_FLIGHT:
                done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                stored += sum(task.result() for task in done)
        stored += sum(await asyncio.gather(*in_flight))
        in_flight.clear()
    finally:
        # On failure, let what was handed to the writer finish before it stops.
        await asyncio.gather(*in_flight, return_exceptions=True)
        await writer.close()
    return sent, stored


def batches(messages: Iterable[bytes]) -> Iterator[list[bytes]]:
    """The messages in batches of at most `BATCH_MESSAGES` and `BATCH_BYTES`."""
    batch: list[bytes] = []
    size = 0
    for message in messages:
        if batch and (len(batch) == BATCH_MESSAGES or size + len(message) > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(message)
        size += len(message) + 1  # the comma between messages in a batch body
    if batch:
        yield batch
