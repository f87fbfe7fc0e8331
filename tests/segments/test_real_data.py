"""Ready-made segments and RFM groups on real orders: every order line of 40 customers of the
UCI Online Retail data set (CC BY 4.0, `data/`), imported through ingestion and processed by
the pipeline, checked against what the CSV itself says."""

from __future__ import annotations

import csv
import gzip
import math
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI

from clarion.core.clock import FrozenClock
from clarion.core.database import Database
from clarion.core.jobs.worker import Worker
from clarion.core.settings import Settings
from clarion.ingest.orders import import_orders
from clarion.pipeline import Pipeline
from clarion.segments import recompute, service
from tests.conftest import Tenant

DATA = Path(__file__).parent / "data" / "online_retail_40_customers.csv.gz"
NOW = datetime(2011, 12, 10, tzinfo=UTC)  # the day after the data set's last order
LONDON = ZoneInfo("Europe/London")


@dataclass
class Buyer:
    """What the CSV says of one customer's orders (cancellations are not orders)."""

    invoices: set[str] = field(default_factory=set)
    revenue: Decimal = Decimal(0)
    last_order: datetime | None = None


def buyers_in_csv() -> dict[str, Buyer]:
    invoices: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    times: dict[tuple[str, str], datetime] = {}
    with gzip.open(DATA, "rt", encoding="utf-8", newline="") as file:
        for row in csv.DictReader(file):
            if row["InvoiceNo"].startswith("C"):
                continue
            key = (row["CustomerID"], row["InvoiceNo"])
            invoices[key] += Decimal(row["Quantity"]) * Decimal(row["UnitPrice"])
            local = datetime.fromisoformat(row["InvoiceDate"]).replace(tzinfo=LONDON)
            times[key] = min(times.get(key, local), local)
    buyers: dict[str, Buyer] = defaultdict(Buyer)
    for (customer, invoice), total in invoices.items():
        buyer = buyers[customer]
        buyer.invoices.add(invoice)
        buyer.revenue += total.quantize(Decimal("0.01"))
        moment = times[(customer, invoice)].astimezone(UTC)
        buyer.last_order = max(buyer.last_order or moment, moment)
    return dict(buyers)


def nearest_rank(values: list[float], k: int, parts: int) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * k / parts) - 1)]


def scores(buyers: dict[str, Buyer]) -> dict[str, tuple[int, int, int]]:
    """Each buyer's (recency, frequency, monetary) quintile score, computed from the CSV."""
    recency = [b.last_order.timestamp() for b in buyers.values() if b.last_order]
    frequency = [float(len(b.invoices)) for b in buyers.values()]
    monetary = [float(b.revenue * 100) for b in buyers.values()]

    def score(value: float, values: list[float]) -> int:
        return 1 + sum(value > nearest_rank(values, k, 5) for k in (1, 2, 3, 4))

    return {
        customer: (
            score(b.last_order.timestamp(), recency) if b.last_order else 0,
            score(float(len(b.invoices)), frequency),
            score(float(b.revenue * 100), monetary),
        )
        for customer, b in buyers.items()
    }


@dataclass
class Shop:
    client: httpx.AsyncClient
    tenant: Tenant
    worker: Worker
    database: Database

    async def members(self, template: str) -> set[str]:
        """The user ids in the ready-made segment, created and computed on NOW's clock."""
        async with self.database.write_session() as session:
            segment, _ = await service.create_from_template(
                session, workspace_id=self.tenant.id, key=template, now=NOW
            )
            await recompute.schedule(session, segment=segment, now=NOW)
            await session.commit()
        await self.worker.drain()  # its baseline recompute
        exported = await self.client.get(
            f"/api/v1/segments/{segment.id}/members.csv", headers=self.tenant.admin
        )
        return {row["user_id"] for row in csv.DictReader(exported.text.splitlines())}


@pytest.fixture
async def shop(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, settings: Settings
) -> AsyncIterator[Shop]:
    clock = FrozenClock(NOW)
    with gzip.open(DATA, "rt", encoding="utf-8", newline="") as text:
        result = await import_orders(
            app.state.database, text, workspace_slug=tenant.slug, clock=clock
        )
    assert result.skipped_invoices == 0 and not result.errors
    pipeline = Pipeline(app.state.database, settings, clock)
    worker = Worker(app.state.database, pipeline.registry(), clock=clock)
    await worker.drain()
    yield Shop(client, tenant, worker, app.state.database)
    await pipeline.close()


async def test_ready_made_segments_on_real_orders(shop: Shop) -> None:
    buyers = buyers_in_csv()
    assert len(buyers) >= 30
    # The pipeline's computed traits are the CSV's own sums.
    for customer in sorted(buyers)[:5]:
        found = await shop.client.get(
            "/api/v1/profiles", params={"user_id": customer}, headers=shop.tenant.admin
        )
        [profile] = found.json()["items"]
        assert profile["computed"]["orders"] == len(buyers[customer].invoices)
        [money] = profile["computed"]["money"]
        assert (money["currency"], money["lifetime_value"]) == (
            "GBP",
            int(buyers[customer].revenue * 100),
        )

    by_score = scores(buyers)
    expected = {
        "rfm_champions": {c for c, (r, f, m) in by_score.items() if r >= 4 and f >= 4 and m >= 4},
        "rfm_loyal": {c for c, (r, f, _) in by_score.items() if r >= 3 and f >= 4},
        "rfm_at_risk": {c for c, (r, f, _) in by_score.items() if r <= 2 and f >= 3},
        "rfm_hibernating": {c for c, (r, f, _) in by_score.items() if r <= 2 and f <= 2},
    }
    for template, customers in expected.items():
        assert await shop.members(template) == customers, template
    assert any(expected.values())

    ninetieth = nearest_rank([float(b.revenue * 100) for b in buyers.values()], 90, 100)
    top = {c for c, b in buyers.items() if float(b.revenue * 100) > ninetieth}
    assert 1 <= len(top) <= len(buyers) // 10
    assert await shop.members("high_value") == top

    lapsed = {
        c
        for c, b in buyers.items()
        if len(b.invoices) >= 2 and b.last_order and b.last_order < NOW - timedelta(days=90)
    }
    assert lapsed
    assert await shop.members("at_risk") == lapsed
