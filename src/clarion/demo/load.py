"""Loading the demo shop through the ingestion path, in process, as `/v1/batch` would.

Messages go through `ingest.bulk` (batches of at most 500 messages and 500 KB, accepted and
stored as `/v1/batch` does) into a workspace's first source. The messageIds are derived from the
seed, so loading the same seed again stores nothing twice. A rejected message is a bug in
the generator: loading stops with `DemoRejected`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from clarion.core.clock import Clock
from clarion.core.database import Database
from clarion.core.errors import ClarionError
from clarion.demo.behaviour import DemoPlan, generate
from clarion.demo.catalog import load_catalog
from clarion.ingest import bulk
from clarion.ingest import service as ingest
from clarion.workspaces import service as workspaces


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
    workspace_id, source_id = await bulk.first_source(
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
    sent = 0

    def check(batch: list[bytes], accepted: ingest.Accepted) -> None:
        nonlocal sent
        if accepted.rejected:
            first = accepted.rejected[0]
            raise DemoRejected(
                f"the ingestion path refused {len(accepted.rejected)} demo message(s); "
                f"first: {first.field or 'message'}: {first.message}",
                errors=accepted.rejected,
            )
        sent += len(batch)

    stored = await bulk.store_batches(
        database,
        messages,
        message=bytes,
        accepted=check,
        workspace_id=workspace_id,
        source_id=source_id,
        clock=clock,
    )
    return sent, stored
