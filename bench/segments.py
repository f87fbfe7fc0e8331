"""Segments benchmark: batch recompute, real-time membership and event-to-entered latency.

Per database (PostgreSQL: 1,000,000 profiles and 10,000,000 events; SQLite: 100,000 and
1,000,000), on a fresh database filled by a seeded generator with rows exactly as
Clarion's pipeline writes them (profiles with traits and computed traits consistent with
their events, identities, the event log and the timeline; 200 profiles are checked by
rebuilding their computed traits from their timelines), in this order:

1. **Real time, no segment.** A backlog of new events for existing profiles (sessions of
   1-8 track events, a few identifies) is stored through the ingestion path with no worker
   running; one `clarion worker` then drains it: events applied per second.
2. **Latency, one segment.** With only "performed `Bench Ping` in the last day" defined,
   `clarion serve` (API and in-process worker) receives 500 pings/s for distinct existing
   users (batches of 50 every 100 ms); for each, the delay from its `received_at` to that
   of its `Segment Entered` event. Target: p99 < 1 s.
3. **Batch.** Five representative segments (traits only; an event count in a window; a
   revenue sum in a window; a nested any/all/not mix; RFM), each recomputed twice in
   process as the recompute job does it (`compute_rfm_boundaries`, `recompute_segment`,
   commit): the baseline (every member written) and the steady state (a diff). Target:
   each < 10 s on PostgreSQL at 1M profiles. Then 44 more segments, each with its
   baseline, for 50 in all.
4. **Real time, 50 segments.** The same kind of backlog: first for profiles new to
   real-time evaluation (their aggregates are rebuilt from their timelines), then again
   for the same profiles (aggregates kept), then again with `--workers` processes (2)
   sharing the backlog, as a deployment scales out on PostgreSQL, and a first touch with
   them too (profiles no round has touched). Target: >= 5,000 events/s.
5. **Latency, 50 segments.** As 2, for other users; then, on PostgreSQL, for others again
   with `clarion serve --no-worker` taking the pings and `--workers` `clarion worker`
   processes processing them, as a deployment scales out.
6. **The cost of a first touch**, in process: the worker CPU per profile that
   `evaluate_profiles` spends on customers not evaluated since the segments were defined
   (what every ping of 5 is), in batches of 50, rolled back. Steadier than the rounds: no
   other process shares it. Not a target; the figure to move for 2 and 5.

Peak RSS of the worker and the server (target < 1 GiB) and of this process. Exactly one
JSON line goes to stdout; progress goes to stderr.

    .venv/bin/python bench/segments.py [--quick] [--databases sqlite,postgresql]
        [--profiles N] [--events N] [--backlog N] [--latency-seconds S] [--seed S]
        [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import logging
import math
import os
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg  # type: ignore[import-untyped, unused-ignore]
import orjson
import psutil  # type: ignore[import-untyped, unused-ignore]
from sqlalchemy import func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import (
    CLARION,
    MIB,
    BenchError,
    RssSampler,
    clarion_env,
    fresh_database,
    machine,
    migrate,
    percentile,
    postgres_cpu_seconds,
    postgres_settings,
    run_async,
    running_server,
    send_paced,
    stop,
    tree_cpu_seconds,
)
from clarion.core import heap
from clarion.core.clock import SystemClock
from clarion.core.database import Database
from clarion.core.jobs.models import Job
from clarion.ingest import bulk
from clarion.ingest.jobs import PROCESS_EVENTS
from clarion.ingest.models import Event
from clarion.ingest.service import Accepted
from clarion.profiles import computed as computed_traits
from clarion.profiles.models import Profile, ProfileEvent
from clarion.segments import membership, recompute, service
from clarion.segments.catalog import Catalog, rule_context
from clarion.segments.membership import SEGMENT_ENTERED, SEGMENT_EXITED
from clarion.segments.models import ProfileSegmentState, Segment
from clarion.segments.parsing import parse_rule
from clarion.segments.rules import Rfm, TopPercent, walk
from clarion.segments.sql import members_query

log = logging.getLogger("bench.segments")

TARGET_BATCH_S = 10.0
TARGET_EVENTS_PER_S = 5_000
TARGET_P99_S = 1.0
TARGET_RSS_MIB = 1024.0
WORKSPACE_ID = 1
SPAN_DAYS = 400
DAY_US = 86_400_000_000
LATENCY_RATE = 500  # events per second
LATENCY_BATCH = 50
PING = "Bench Ping"
DRAIN_TIMEOUT_S = 1_500.0
DRAIN_POLL_S = 0.05  # a drain's end is seen this late at most
SIZES = {  # database: (profiles, events)
    "postgresql": (1_000_000, 10_000_000),
    "sqlite": (100_000, 1_000_000),
}
QUICK = (20_000, 200_000)

# --- The generated shop -----------------------------------------------------------------------

# Track events by share of the log (identify events, one per profile, come on top).
TRACK_MIX = (
    ("Product Viewed", 0.50),
    ("Product Added", 0.16),
    ("Cart Viewed", 0.08),
    ("Checkout Started", 0.06),
    ("Order Completed", 0.05),
    ("Email Opened", 0.15),
)
TRACK_NAMES = tuple(name for name, _ in TRACK_MIX)
ORDER = TRACK_NAMES.index("Order Completed")
CATEGORIES = ("Shoes", "Bags", "Dresses", "Jackets", "Accessories", "Home", "Beauty", "Sports")
PLANS = (("free", 0.60), ("plus", 0.25), ("pro", 0.15))
COUNTRIES = (  # country, share, time zones
    ("US", 0.34, ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")),
    ("GB", 0.12, ("Europe/London",)),
    ("DE", 0.10, ("Europe/Berlin",)),
    ("FR", 0.09, ("Europe/Paris",)),
    ("CA", 0.07, ("America/Toronto", "America/Vancouver")),
    ("ES", 0.06, ("Europe/Madrid",)),
    ("IT", 0.06, ("Europe/Rome",)),
    ("NL", 0.05, ("Europe/Amsterdam",)),
    ("BR", 0.04, ("America/Sao_Paulo",)),
    ("JP", 0.04, ("Asia/Tokyo",)),
    ("AU", 0.03, ("Australia/Sydney",)),
)
CAMPAIGNS = 24
PRODUCTS = 400
CONTEXTS = tuple(
    orjson.dumps(
        {
            "library": {"name": library, "version": version},
            "ip": f"203.0.113.{n * 37 % 250 + 1}",
            "locale": locale,
            "userAgent": agent,
        }
    ).decode()
    for n, (library, version, locale, agent) in enumerate(
        (
            (
                "analytics.js",
                "5.2.1",
                "en-US",
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/129",
            ),
            (
                "analytics.js",
                "5.2.1",
                "en-GB",
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) Safari",
            ),
            ("analytics.js", "5.2.0", "de-DE", "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Firefox"),
            ("analytics-ios", "4.1.8", "fr-FR", "Shop/3.2 (iPhone; iOS 17.6; Scale/3.00)"),
            ("analytics-android", "4.11.3", "es-ES", "Shop/3.2 (Android 14; Pixel 8)"),
            ("analytics.js", "5.2.1", "en-US", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6) Safari"),
        )
    )
)


def _cumulative(shares: Sequence[float]) -> list[float]:
    total, out = 0.0, []
    for share in shares:
        total += share
        out.append(total)
    return out


_TRACK_CUM = _cumulative([share for _, share in TRACK_MIX])
_PLAN_CUM = _cumulative([share for _, share in PLANS])
_COUNTRY_CUM = _cumulative([share for _, share, _ in COUNTRIES])


@dataclass(frozen=True, slots=True)
class Shape:
    """What to generate: profiles, events in all (one identify per profile, the rest track
    events), the seed, and the instant the newest event may have."""

    profiles: int
    events: int
    seed: int
    end: datetime


@dataclass(slots=True)
class Chunk:
    """Rows generated together, as plain values (times in microseconds since the epoch)."""

    events: list[tuple[Any, ...]] = field(default_factory=list)
    timeline: list[tuple[Any, ...]] = field(default_factory=list)
    identities: list[tuple[Any, ...]] = field(default_factory=list)


def user_id(index: int) -> str:
    """The user id of the generated profile `index`."""
    return f"user_{index:07d}"


class Shop:
    """A seeded shop: profiles join evenly over SPAN_DAYS (each with an identify event), and
    track events arrive at a rate growing with the number of profiles, each from a profile
    already there, picked by an activity weight (log-normal). Rows come out in time order
    (event ids follow time, as in a live log), and every profile's computed traits are
    counted as its events go by, so they match the timeline exactly."""

    CHUNK_EVENTS = 5_000

    def __init__(self, shape: Shape, source_id: uuid.UUID) -> None:
        if shape.events < shape.profiles or shape.profiles < 1:
            raise ValueError("events must be at least the profiles (one identify each)")
        self.shape = shape
        self.source = source_id.hex
        self.rng = random.Random(shape.seed)
        rng = self.rng
        n = shape.profiles
        self.end_us = _micros(shape.end.replace(microsecond=0))
        self.start_us = self.end_us - SPAN_DAYS * DAY_US
        self.ids = [uuid.UUID(int=rng.getrandbits(128), version=4).hex for _ in range(n)]
        self.weights = _cumulative([rng.lognormvariate(0.0, 0.8) for _ in range(n)])
        self.products = products(rng)
        self.joined = array("q", bytes(8 * n))  # identify time
        self.last_seen = array("q", bytes(8 * n))
        self.identify_id = array("q", bytes(8 * n))
        self.counts = [array("i", bytes(4 * n)) for _ in TRACK_NAMES]
        self.first_kind = [array("i", bytes(4 * n)) for _ in TRACK_NAMES]  # order of first seen
        self.revenue = array("q", bytes(8 * n))  # cents
        self.last_order = array("q", bytes(8 * n))
        self.traits: list[str] = []
        self.event_id = 0
        self.identity_id = 0

    # --- events -----------------------------------------------------------------------------

    def chunks(self) -> Iterator[Chunk]:
        """Every event, timeline and identity row, in time order, in chunks."""
        shape, rng = self.shape, self.rng
        n, tracks = shape.profiles, shape.events - shape.profiles
        span = self.end_us - self.start_us
        joined_next = 0
        chunk = Chunk()
        for j in range(tracks):
            # Track events are denser as profiles join: their time fraction x has CDF x².
            x = math.sqrt((j + rng.random()) / tracks)
            ready = min(n, int(x * n + 0.5))
            while joined_next < max(ready, 1):
                at = self.start_us + int(span * (joined_next + 0.5) / n)
                self._identify(chunk, joined_next, at)
                joined_next += 1
            at = max(self.start_us + int(span * x), self.joined[0])
            at -= at % 1000  # SDK timestamps have milliseconds
            profile = bisect.bisect_left(
                self.weights, rng.random() * self.weights[max(ready, 1) - 1], 0, max(ready, 1)
            )
            self._track(chunk, profile, max(at, self.joined[profile]))
            if len(chunk.events) >= self.CHUNK_EVENTS:
                yield chunk
                chunk = Chunk()
        while joined_next < n:
            at = self.start_us + int(span * (joined_next + 0.5) / n)
            self._identify(chunk, joined_next, at)
            joined_next += 1
            if len(chunk.events) >= self.CHUNK_EVENTS:
                yield chunk
                chunk = Chunk()
        if chunk.events:
            yield chunk

    def _row(
        self,
        chunk: Chunk,
        profile: int,
        at: int,
        kind: str,
        name: str | None,
        properties: str | None,
        traits: str | None,
    ) -> int:
        self.event_id += 1
        event_id = self.event_id
        received = at + 150_000 + int(self.rng.random() * 1_500_000)
        chunk.events.append(
            (
                event_id,
                self.source,
                f"bench-{self.shape.seed}-{event_id}",
                kind,
                name,
                user_id(profile),
                at,
                received,
                properties,
                traits,
                CONTEXTS[event_id % len(CONTEXTS)],
            )
        )
        applied = received + 40_000
        chunk.timeline.append((event_id, self.ids[profile], event_id, at, applied))
        if at > self.last_seen[profile]:
            self.last_seen[profile] = at
        return applied

    def _identify(self, chunk: Chunk, profile: int, at: int) -> None:
        rng = self.rng
        at -= at % 1000
        plan = PLANS[bisect.bisect_left(_PLAN_CUM, rng.random() * _PLAN_CUM[-1])][0]
        country, _, zones = COUNTRIES[
            bisect.bisect_left(_COUNTRY_CUM, rng.random() * _COUNTRY_CUM[-1])
        ]
        age = rng.randrange(18, 76)
        born = date(2026 - age, 1, 1) + timedelta(days=rng.randrange(365))
        traits = {
            "email": f"{user_id(profile).replace('_', '')}@example.com",
            "plan": plan,
            "country": country,
            "timezone": zones[profile % len(zones)],
            "age": age,
            "birthday": born.isoformat(),
            "newsletter": rng.random() < 0.4,
        }
        # Kept as text: orjson's bytes keep their whole (4 KiB) buffer.
        document = orjson.dumps(traits).decode()
        self.traits.append(document)
        self.joined[profile] = at
        self.identify_id[profile] = self.event_id + 1
        applied = self._row(chunk, profile, at, "identify", None, None, document)
        for kind, value in (("user_id", user_id(profile)), ("email", traits["email"])):
            self.identity_id += 1
            chunk.identities.append(
                (self.identity_id, self.ids[profile], kind, value, self.event_id, applied)
            )

    def _track(self, chunk: Chunk, profile: int, at: int) -> None:
        kind = bisect.bisect_left(_TRACK_CUM, self.rng.random() * _TRACK_CUM[-1])
        properties, cents = track_properties(self.rng, kind, self.products, self.event_id + 1)
        if kind == ORDER:
            self.revenue[profile] += cents
            if at > self.last_order[profile]:
                self.last_order[profile] = at
        counts = self.counts[kind]
        if counts[profile] == 0:
            self.first_kind[kind][profile] = self.event_id + 1
        counts[profile] += 1
        encoded = orjson.dumps(properties).decode()
        self._row(chunk, profile, at, "track", TRACK_NAMES[kind], encoded, None)

    # --- profiles ---------------------------------------------------------------------------

    def profiles(self) -> Iterator[tuple[Any, ...]]:
        """Every profile row, after `chunks` is exhausted: (id, traits, trait_times,
        computed, first_seen_at, last_seen_at, created_at, updated_at)."""
        for profile in range(self.shape.profiles):
            joined = self.joined[profile]
            moment = _instant(joined).isoformat()
            traits = self.traits[profile]
            times = orjson.dumps(dict.fromkeys(orjson.loads(traits), moment))
            seen = sorted(
                (self.first_kind[k][profile], name)
                for k, name in enumerate(TRACK_NAMES)
                if self.counts[k][profile]
            )
            orders = self.counts[ORDER][profile]
            document = {
                "event_counts": {
                    name: self.counts[TRACK_NAMES.index(name)][profile] for _, name in seen
                },
                "page_views": 0,
                "screen_views": 0,
                "orders": orders,
                "last_order_at": _instant(self.last_order[profile]).isoformat() if orders else None,
                "revenue": {"USD": self.revenue[profile]} if orders else {},
                "orders_by_currency": {"USD": orders} if orders else {},
            }
            last = self.last_seen[profile]
            yield (
                self.ids[profile],
                traits,
                times.decode(),
                orjson.dumps(document).decode(),
                joined,
                last,
                joined + 1_000_000,
                last + 1_000_000,
            )


def products(rng: random.Random) -> list[tuple[str, str, int]]:
    """The shop's products: (id, category, price in cents)."""
    return [
        (f"p{k:04d}", rng.choice(CATEGORIES), rng.randrange(500, 25_000)) for k in range(PRODUCTS)
    ]


def track_properties(
    rng: random.Random, kind: int, catalog: Sequence[tuple[str, str, int]], order: int
) -> tuple[dict[str, Any], int]:
    """The properties of a track event of kind `kind` (index in TRACK_MIX) and, for an
    order, its revenue in cents."""
    product_id, category, price = catalog[rng.randrange(len(catalog))]
    quantity = 1 + int(rng.random() ** 3 * 4)
    if kind == 0:
        return {"product_id": product_id, "category": category, "price": price / 100}, 0
    if kind == 1:
        return {
            "product_id": product_id,
            "category": category,
            "price": price / 100,
            "quantity": quantity,
        }, 0
    if kind == 2:
        return {"items": quantity}, 0
    if kind == 3:
        return {"value": price * quantity / 100, "currency": "USD"}, 0
    if kind == ORDER:
        cents = price * quantity
        return {
            "order_id": f"o-{order}",
            "revenue": cents / 100,
            "currency": "USD",
            "category": category,
            "quantity": quantity,
        }, cents
    return {"campaign": f"campaign-{rng.randrange(CAMPAIGNS):02d}"}, 0


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _instant(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


_SECONDS: dict[int, str] = {}


def sql_time(us: int) -> str:
    """Microseconds since the epoch as `UTCDateTime` stores them on SQLite:
    'YYYY-MM-DD HH:MM:SS.ffffff' (UTC). Rows come in time order: recent seconds are kept."""
    seconds, fraction = divmod(us, 1_000_000)
    prefix = _SECONDS.get(seconds)
    if prefix is None:
        if len(_SECONDS) > 10_000:
            _SECONDS.clear()
        prefix = _SECONDS[seconds] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))
    return f"{prefix}.{fraction:06d}"


# --- Loading ----------------------------------------------------------------------------------

LOADED_TABLES = ("events", "profile_events", "profile_identities", "profiles")
EVENT_COLUMNS = (
    "id",
    "workspace_id",
    "source_id",
    "message_id",
    "type",
    "name",
    "user_id",
    "timestamp",
    "original_timestamp",
    "received_at",
    "properties",
    "traits",
    "context",
)
TIMELINE_COLUMNS = ("id", "workspace_id", "profile_id", "event_id", "timestamp", "applied_at")
IDENTITY_COLUMNS = ("id", "workspace_id", "profile_id", "kind", "value", "event_id", "created_at")
PROFILE_COLUMNS = (
    "id",
    "workspace_id",
    "traits",
    "trait_times",
    "computed",
    "first_seen_at",
    "last_seen_at",
    "created_at",
    "updated_at",
)


def _event_values(row: tuple[Any, ...]) -> tuple[Any, ...]:
    event_id, source, message_id, kind, name, user, at, received, properties, traits, context = row
    moment = sql_time(at)
    return (
        event_id,
        WORKSPACE_ID,
        source,
        message_id,
        kind,
        name,
        user,
        moment,
        moment,
        sql_time(received),
        properties,
        traits,
        context,
    )


def _timeline_values(row: tuple[Any, ...]) -> tuple[Any, ...]:
    row_id, profile_id, event_id, at, applied = row
    return (row_id, WORKSPACE_ID, profile_id, event_id, sql_time(at), sql_time(applied))


def _identity_values(row: tuple[Any, ...]) -> tuple[Any, ...]:
    row_id, profile_id, kind, value, event_id, created = row
    return (row_id, WORKSPACE_ID, profile_id, kind, value, event_id, sql_time(created))


def _profile_values(row: tuple[Any, ...]) -> tuple[Any, ...]:
    profile_id, traits, times, document, first, last, created, updated = row
    return (
        profile_id,
        WORKSPACE_ID,
        traits,
        times,
        document,
        sql_time(first),
        sql_time(last),
        sql_time(created),
        sql_time(updated),
    )


NULL = "\\N"


def _pg_times(values: tuple[Any, ...], positions: Sequence[int]) -> tuple[Any, ...]:
    """The values with the times at `positions` given their offset, for PostgreSQL."""
    out = list(values)
    for position in positions:
        out[position] += "+00"
    return tuple(out)


def _copy_line(values: tuple[Any, ...]) -> str:
    """A row in COPY's text format (the generated values hold no tab, newline or backslash)."""
    return "\t".join("\\N" if v is None else str(v) for v in values) + "\n"


def _pg_event(row: tuple[Any, ...]) -> str:
    event_id, source, message_id, kind, name, user, at, received, properties, traits, context = row
    moment = sql_time(at)
    return (
        f"{event_id}\t{WORKSPACE_ID}\t{source}\t{message_id}\t{kind}\t{name or NULL}\t{user}"
        f"\t{moment}+00\t{moment}+00\t{sql_time(received)}+00\t{properties or NULL}"
        f"\t{traits or NULL}\t{context}\n"
    )


def _pg_timeline(row: tuple[Any, ...]) -> str:
    row_id, profile_id, event_id, at, applied = row
    return (
        f"{row_id}\t{WORKSPACE_ID}\t{profile_id}\t{event_id}\t{sql_time(at)}+00"
        f"\t{sql_time(applied)}+00\n"
    )


@dataclass(frozen=True, slots=True)
class Loaded:
    """What the load made, and how long it took."""

    profiles: int
    events: int
    buyers: int
    seconds: float
    index_seconds: float
    bench_cpu_seconds: float  # this process: generating and formatting the rows


async def _source_id(url: str) -> uuid.UUID:
    database = Database(url)
    try:
        async with database.read_session() as session:
            found = await session.scalar(text("SELECT id FROM sources ORDER BY created_at LIMIT 1"))
    finally:
        await database.dispose()
    return uuid.UUID(str(found))


_PG_INDEXES = """
SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
WHERE t.relname = ANY($1::text[]) AND NOT x.indisprimary
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.oid)
ORDER BY t.relname, i.relname
"""


def _own_cpu() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def _pg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _feed(
    queue: asyncio.Queue[bytes | None], data: bytes | None, copy: asyncio.Task[Any]
) -> None:
    """Hand `data` to a COPY's queue; the COPY's error if it stopped instead of taking it."""
    put = asyncio.ensure_future(queue.put(data))
    await asyncio.wait({put, copy}, return_when=asyncio.FIRST_COMPLETED)
    if not put.done():
        put.cancel()
        copy.result()
        raise BenchError("a COPY ended before its data did")


async def load_postgres(url: str, shape: Shape) -> Loaded:
    """Generate the shop into a migrated PostgreSQL database: secondary indexes dropped,
    rows streamed with COPY (foreign-key triggers off for the loading sessions, the data
    being consistent by construction), the indexes rebuilt exactly as they were, ANALYZE."""
    started, cpu = time.perf_counter(), _own_cpu()
    shop = Shop(shape, await _source_id(url))
    connections = [await asyncpg.connect(_pg_dsn(url)) for _ in range(3)]
    try:
        for connection in connections:
            await connection.execute(
                "SET session_replication_role = replica; SET synchronous_commit = off;"
                " SET maintenance_work_mem = '512MB'; SET TIME ZONE 'UTC'"
            )
        indexes = await connections[0].fetch(_PG_INDEXES, list(LOADED_TABLES))
        for name, _ in indexes:
            await connections[0].execute(f'DROP INDEX "{name}"')
        queues: list[asyncio.Queue[bytes | None]] = [asyncio.Queue(maxsize=8) for _ in range(3)]

        async def drain(queue: asyncio.Queue[bytes | None]) -> AsyncIterator[bytes]:
            while (data := await queue.get()) is not None:
                yield data

        copies = [
            asyncio.create_task(
                connection.copy_to_table(
                    table, source=drain(queue), columns=list(columns), format="text"
                )
            )
            for connection, queue, table, columns in zip(
                connections,
                queues,
                ("events", "profile_events", "profile_identities"),
                (EVENT_COLUMNS, TIMELINE_COLUMNS, IDENTITY_COLUMNS),
                strict=True,
            )
        ]
        for chunk in shop.chunks():
            parts = (
                "".join(map(_pg_event, chunk.events)),
                "".join(map(_pg_timeline, chunk.timeline)),
                "".join(_copy_line(_pg_times(_identity_values(r), (6,))) for r in chunk.identities),
            )
            for queue, copy, part in zip(queues, copies, parts, strict=True):
                if part:
                    await _feed(queue, part.encode(), copy)
            if shop.event_id % 1_000_000 < Shop.CHUNK_EVENTS:
                log.info("  %d events generated", shop.event_id)
        for queue, copy in zip(queues, copies, strict=True):
            await _feed(queue, None, copy)
        await asyncio.gather(*copies)

        def profile_lines() -> Iterator[bytes]:
            lines: list[str] = []
            for row in shop.profiles():
                lines.append(_copy_line(_pg_times(_profile_values(row), (5, 6, 7, 8))))
                if len(lines) >= 5_000:
                    yield "".join(lines).encode()
                    lines = []
            if lines:
                yield "".join(lines).encode()

        async def profile_source() -> AsyncIterator[bytes]:
            for data in profile_lines():
                yield data

        await connections[0].copy_to_table(
            "profiles", source=profile_source(), columns=list(PROFILE_COLUMNS), format="text"
        )
        log.info("rows loaded in %.0f s; building indexes", time.perf_counter() - started)
        indexed = time.perf_counter()
        pending = [definition for _, definition in indexes]

        async def build(connection: asyncpg.Connection) -> None:
            while pending:
                await connection.execute(pending.pop(0))

        await asyncio.gather(*(build(connection) for connection in connections[:2]))
        for table, column in (
            ("events", "id"),
            ("profile_events", "id"),
            ("profile_identities", "id"),
        ):
            await connections[0].execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
                f" (SELECT max({column}) FROM {table}))"
            )
        await asyncio.gather(
            connections[0].execute("ANALYZE events"),
            connections[1].execute("ANALYZE profile_events"),
        )
        await connections[0].execute("ANALYZE profiles; ANALYZE profile_identities")
        index_seconds = time.perf_counter() - indexed
    finally:
        for connection in connections:
            await connection.close()
    return Loaded(
        profiles=shape.profiles,
        events=shop.event_id,
        buyers=sum(1 for n in shop.counts[ORDER] if n),
        seconds=time.perf_counter() - started,
        index_seconds=index_seconds,
        bench_cpu_seconds=_own_cpu() - cpu,
    )


def load_sqlite(path: Path, shape: Shape, source_id: uuid.UUID) -> Loaded:
    """Generate the shop into a migrated SQLite database with sqlite3: secondary indexes
    dropped, rows inserted in large transactions (foreign keys not enforced on this
    connection), indexes rebuilt exactly as they were. No ANALYZE: Clarion never runs it on
    SQLite, so the planner works as it does in production."""
    started, cpu = time.perf_counter(), _own_cpu()
    shop = Shop(shape, source_id)
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA foreign_keys=OFF")
        connection.execute("PRAGMA synchronous=OFF")
        indexes = connection.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            f" AND tbl_name IN ({','.join('?' * len(LOADED_TABLES))})",
            LOADED_TABLES,
        ).fetchall()
        for name, _ in indexes:
            connection.execute(f'DROP INDEX "{name}"')

        def insert(table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
            connection.executemany(
                f"INSERT INTO {table} ({', '.join(columns)})"
                f" VALUES ({', '.join('?' * len(columns))})",
                rows,
            )

        connection.execute("BEGIN")
        for chunk in shop.chunks():
            insert("events", EVENT_COLUMNS, [_event_values(r) for r in chunk.events])
            insert(
                "profile_events", TIMELINE_COLUMNS, [_timeline_values(r) for r in chunk.timeline]
            )
            insert(
                "profile_identities",
                IDENTITY_COLUMNS,
                [_identity_values(r) for r in chunk.identities],
            )
            if shop.event_id % 250_000 < Shop.CHUNK_EVENTS:
                connection.execute("COMMIT")
                connection.execute("BEGIN")
                if shop.event_id % 1_000_000 < Shop.CHUNK_EVENTS:
                    log.info("  %d events generated", shop.event_id)
        rows: list[tuple[Any, ...]] = []
        for row in shop.profiles():
            rows.append(_profile_values(row))
            if len(rows) >= 10_000:
                insert("profiles", PROFILE_COLUMNS, rows)
                rows = []
        insert("profiles", PROFILE_COLUMNS, rows)
        connection.execute("COMMIT")
        log.info("rows loaded in %.0f s; building indexes", time.perf_counter() - started)
        indexed = time.perf_counter()
        for _, definition in indexes:
            connection.execute(definition)
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        index_seconds = time.perf_counter() - indexed
    finally:
        connection.close()
    return Loaded(
        profiles=shape.profiles,
        events=shop.event_id,
        buyers=sum(1 for n in shop.counts[ORDER] if n),
        seconds=time.perf_counter() - started,
        index_seconds=index_seconds,
        bench_cpu_seconds=_own_cpu() - cpu,
    )


async def check_sample(url: str, seed: int, sample: int = 200) -> int:
    """Rebuild the computed traits and seen times of `sample` random profiles from their
    timelines with Clarion's own `computed.add_event`; BenchError on any difference."""
    database = Database(url)
    try:
        async with database.read_session() as session:
            ids = (await session.scalars(select(Profile.id).order_by(Profile.id))).all()
            chosen = random.Random(seed).sample(list(ids), min(sample, len(ids)))
            for profile_id in chosen:
                profile = await session.get(Profile, profile_id)
                assert profile is not None
                rows = (
                    await session.execute(
                        select(Event.type, Event.name, Event.timestamp, Event.properties)
                        .join(ProfileEvent, ProfileEvent.event_id == Event.id)
                        .where(ProfileEvent.profile_id == profile_id)
                        .order_by(Event.timestamp, Event.id)
                    )
                ).all()
                rebuilt = computed_traits.empty()
                for kind, name, at, properties in rows:
                    computed_traits.add_event(
                        rebuilt, computed_traits.Seen(kind, name, at, properties or {})
                    )
                seen = (min(r[2] for r in rows), max(r[2] for r in rows))
                if rebuilt != profile.computed or seen != (
                    profile.first_seen_at,
                    profile.last_seen_at,
                ):
                    raise BenchError(
                        f"profile {profile_id}: stored {profile.computed}"
                        f" {profile.first_seen_at} {profile.last_seen_at}, rebuilt {rebuilt} {seen}"
                    )
    finally:
        await database.dispose()
    return len(chosen)


# --- Segments ---------------------------------------------------------------------------------

Rule = dict[str, Any]


def trait(key: str, operator: str, value: Any = None) -> Rule:
    """A trait condition."""
    node: Rule = {"type": "trait", "trait": key, "operator": operator}
    return node if operator == "exists" else node | {"value": value}


def prop(key: str, operator: str, value: Any) -> Rule:
    """A property condition (in a `where`)."""
    return {"type": "property", "property": key, "operator": operator, "value": value}


def performed(
    name: str,
    count: int = 1,
    operator: str = "gte",
    days: int | None = None,
    where: Rule | None = None,
) -> Rule:
    """An event count condition."""
    node: Rule = {"type": "event", "event": name, "operator": operator, "count": count}
    if days is not None:
        node["window"] = {"last_days": days}
    if where is not None:
        node["where"] = where
    return node


def aggregate(
    name: str,
    prop_: str,
    function: str,
    operator: str,
    value: Any,
    days: int | None = None,
    where: Rule | None = None,
) -> Rule:
    """An aggregate condition."""
    node: Rule = {
        "type": "aggregate",
        "event": name,
        "property": prop_,
        "function": function,
        "operator": operator,
        "value": value,
    }
    if days is not None:
        node["window"] = {"last_days": days}
    if where is not None:
        node["where"] = where
    return node


def occurrence(name: str, which: str, operator: str, value: Any) -> Rule:
    """A first / last occurrence condition."""
    return {
        "type": "occurrence",
        "event": name,
        "which": which,
        "operator": operator,
        "value": value,
    }


def attribute(name: str, operator: str, value: Any) -> Rule:
    """A first / last seen condition."""
    return {"type": "attribute", "attribute": name, "operator": operator, "value": value}


def all_(*conditions: Rule) -> Rule:
    """Every condition."""
    return {"type": "all", "conditions": list(conditions)}


def any_(*conditions: Rule) -> Rule:
    """At least one condition."""
    return {"type": "any", "conditions": list(conditions)}


def not_(condition: Rule) -> Rule:
    """Not the condition."""
    return {"type": "not", "condition": condition}


def rfm(**scores: list[int]) -> Rule:
    """An RFM condition."""
    return {"type": "rfm", **scores}


def in_segment(name: str) -> Rule:
    """A reference to the segment called `name` (made an id when it is created)."""
    return {"type": "segment", "name": name}


VIEWED, ADDED, CART = "Product Viewed", "Product Added", "Cart Viewed"
CHECKOUT, ORDERED, OPENED = "Checkout Started", "Order Completed", "Email Opened"

# (a): the five representative segments, recomputed in batch.
BATCH_SEGMENTS: tuple[tuple[str, str, Rule], ...] = (
    (
        "traits",
        "Paying plans in North America and the UK, 25+",
        all_(
            trait("plan", "in", ["plus", "pro"]),
            trait("country", "in", ["US", "CA", "GB"]),
            trait("age", "gte", 25),
        ),
    ),
    ("event_count", "Viewed 3+ products in 30 days", performed(VIEWED, 3, days=30)),
    (
        "revenue_sum",
        "Spent 100+ in 90 days",
        aggregate(ORDERED, "revenue", "sum", "gte", 100, days=90),
    ),
    (
        "nested",
        "Engaged but not buying lately",
        all_(
            any_(trait("plan", "eq", "pro"), performed(ADDED, 2, days=14)),
            not_(performed(ORDERED, days=30)),
            any_(trait("country", "in", ["US", "CA"]), trait("age", "between", [25, 44])),
        ),
    ),
    ("rfm", "Champions", rfm(recency=[4, 5], frequency=[4, 5], monetary=[4, 5])),
)

# (b): 44 more, for 50 in all with (a)'s and the latency segment: what a shop's marketers
# define over a year.
MORE_SEGMENTS: tuple[tuple[str, Rule], ...] = (
    # traits
    ("Pro plan", trait("plan", "eq", "pro")),
    ("United States", trait("country", "eq", "US")),
    ("EU core", trait("country", "in", ["DE", "FR", "ES", "IT", "NL"])),
    ("Aged 18-24", trait("age", "between", [18, 24])),
    ("Aged 55+", trait("age", "gte", 55)),
    ("Newsletter", trait("newsletter", "eq", True)),
    ("Birthdays this week", trait("birthday", "anniversary_within_days", 6)),
    ("Free plan in the UK", all_(trait("plan", "eq", "free"), trait("country", "eq", "GB"))),
    # event counts, windows, filters
    ("Browsed this week", performed(VIEWED, days=7)),
    ("Carted today", performed(ADDED, days=1)),
    ("Bought in 30 days", performed(ORDERED, days=30)),
    ("3+ orders in a year", performed(ORDERED, 3, days=365)),
    ("Never ordered", performed(ORDERED, 0, "eq")),
    ("Opens emails", performed(OPENED, 3, days=30)),
    ("Checkout this week", performed(CHECKOUT, days=7)),
    ("Shoe browsers", performed(VIEWED, 2, days=30, where=prop("category", "eq", "Shoes"))),
    ("Big order in 90 days", performed(ORDERED, days=90, where=prop("revenue", "gte", 100))),
    ("Multi-item carts", performed(ADDED, days=14, where=prop("quantity", "gte", 2))),
    # aggregates
    ("Lifetime spend 500+", aggregate(ORDERED, "revenue", "sum", "gte", 500)),
    ("Average order 80+", aggregate(ORDERED, "revenue", "avg", "gte", 80)),
    ("Looked at luxury", aggregate(VIEWED, "price", "max", "gte", 200, days=30)),
    ("Category hoppers", aggregate(VIEWED, "category", "count_distinct", "gte", 3, days=30)),
    ("Campaign collectors", aggregate(OPENED, "campaign", "count_distinct", "gte", 5)),
    ("Small orders", aggregate(ORDERED, "revenue", "min", "lte", 20, days=365)),
    ("Checkout value 50-500", aggregate(CHECKOUT, "value", "sum", "between", [50, 500], days=30)),
    # occurrences and seen times
    ("New buyers", occurrence(ORDERED, "first", "within_last_days", 30)),
    ("Lapsed buyers", occurrence(ORDERED, "last", "more_than_days_ago", 180)),
    ("Browsed in 3 days", occurrence(VIEWED, "last", "within_last_days", 3)),
    ("New customers", attribute("first_seen_at", "within_last_days", 7)),
    ("Dormant", attribute("last_seen_at", "more_than_days_ago", 90)),
    ("Opened in 2 weeks", occurrence(OPENED, "last", "within_last_days", 14)),
    # RFM
    ("Loyal", rfm(recency=[3, 4, 5], frequency=[4, 5])),
    ("At risk (RFM)", rfm(recency=[1, 2], frequency=[3, 4, 5])),
    ("Hibernating", rfm(recency=[1, 2], frequency=[1, 2])),
    ("Top spenders", rfm(monetary=[5])),
    # mixes
    ("Cart abandoners", all_(performed(ADDED, days=1), performed(ORDERED, 0, "eq", days=1))),
    ("At risk", all_(performed(ORDERED, 2), performed(ORDERED, 0, "eq", days=90))),
    (
        "Pro buyers or quiet Americans",
        any_(
            all_(trait("plan", "eq", "pro"), performed(ORDERED, days=30)),
            all_(trait("country", "eq", "US"), not_(performed(OPENED, days=30))),
        ),
    ),
    (
        "Mid-age engaged",
        all_(
            trait("age", "between", [25, 45]),
            any_(
                performed(VIEWED, 3, days=30, where=prop("category", "in", ["Shoes", "Bags"])),
                aggregate(ORDERED, "revenue", "sum", "gte", 150, days=90),
            ),
            not_(trait("plan", "eq", "free")),
        ),
    ),
    ("Disengaged", not_(any_(performed(ORDERED, days=365), performed(OPENED, days=90)))),
    # segment references
    ("Pro recent buyers", all_(in_segment("Bought in 30 days"), trait("plan", "eq", "pro"))),
    (
        "Abandoners on the newsletter",
        all_(in_segment("Cart abandoners"), trait("newsletter", "eq", True)),
    ),
    ("Best customers", any_(in_segment("Champions"), in_segment("Spent 100+ in 90 days"))),
    (
        "Browsers, not buyers",
        all_(in_segment("Browsed this week"), not_(in_segment("Bought in 30 days"))),
    ),
)
# (c): the segment whose `Segment Entered` events the latency is measured to.
PING_SEGMENT = ("Pinged today", performed(PING, days=1))


def resolved(rule: Rule, ids: dict[str, int]) -> Rule:
    """The rule with references by name made references by id."""
    if rule.get("type") == "segment" and "name" in rule:
        return {"type": "segment", "segment_id": ids[rule["name"]]}
    out: Rule = dict(rule)
    if "conditions" in rule:
        out["conditions"] = [resolved(c, ids) for c in rule["conditions"]]
    if "condition" in rule:
        out["condition"] = resolved(rule["condition"], ids)
    return out


# --- (a) Batch recompute ----------------------------------------------------------------------


async def _create(database: Database, name: str, rule: Rule, ids: dict[str, int]) -> int:
    async with database.write_session() as session:
        segment, _ = await service.create_segment(
            session,
            workspace_id=WORKSPACE_ID,
            name=name,
            description="bench/segments.py",
            raw_rule=resolved(rule, ids),
            now=datetime.now(UTC),
        )
        await session.commit()
        ids[name] = segment.id
        return segment.id


async def recompute_once(database: Database, catalog: Catalog, segment_id: int) -> dict[str, Any]:
    """What the recompute job does for one segment (the RFM boundaries when its rule reads
    them, then the segment, then commit), timed in its parts."""
    async with database.write_session() as session:
        started = time.perf_counter()
        now = datetime.now(UTC)
        segment = await session.get(Segment, segment_id)
        assert segment is not None
        index = await catalog.load(session, WORKSPACE_ID)
        rule = (
            index.expanded(segment.id) if segment.id in index.segments else parse_rule(segment.rule)
        )
        if any(isinstance(node, Rfm | TopPercent) for node in walk(rule)):
            await recompute.compute_rfm_boundaries(session, workspace_id=WORKSPACE_ID, now=now)
        bounded = time.perf_counter()
        baseline = segment.recomputed_at is None
        result = await recompute.recompute_segment(
            session, workspace_id=WORKSPACE_ID, segment=segment, index=index, now=now
        )
        await session.commit()
        done = time.perf_counter()
    return {
        "run": "baseline" if baseline else "steady",
        "seconds": round(done - started, 3),
        "rfm_boundaries_seconds": round(bounded - started, 3),
        "recompute_seconds": round(done - bounded, 3),
        "members": result.size,
        "entered": result.entered,
        "exited": result.exited,
    }


async def query_seconds(database: Database, catalog: Catalog, segment_id: int) -> float:
    """The members query alone (the SQL the recompute runs, its ids fetched): how much of a
    recompute is the query, the rest being the diff and its writes."""
    async with database.read_session() as session:
        segment = await session.get(Segment, segment_id)
        assert segment is not None
        index = await catalog.load(session, WORKSPACE_ID)
        context = await rule_context(
            session,
            workspace_id=WORKSPACE_ID,
            index=index,
            now=datetime.now(UTC),
            with_time_zones=True,
        )
        query = members_query(
            index.segments[segment_id].rule,
            dialect=database.dialect,
            workspace_id=WORKSPACE_ID,
            context=context,
        )
        started = time.perf_counter()
        len((await session.scalars(query)).all())
        return time.perf_counter() - started


async def measure_batch(url: str, ids: dict[str, int]) -> dict[str, Any]:
    """Create the five batch segments and recompute each twice (baseline, steady state)."""
    database = Database(url)
    catalog = Catalog()
    segments: dict[str, Any] = {}
    try:
        for key, name, rule in BATCH_SEGMENTS:
            segment_id = await _create(database, name, rule, ids)
            runs = [await recompute_once(database, catalog, segment_id) for _ in range(2)]
            query = await query_seconds(database, catalog, segment_id)
            segments[key] = {
                "name": name,
                "members": runs[-1]["members"],
                "baseline": runs[0],
                "steady": runs[1],
                "members_query_seconds": round(query, 3),
                "target_met": all(run["seconds"] < TARGET_BATCH_S for run in runs),
            }
            log.info(
                "batch %s: %d members, baseline %.2f s, steady %.2f s (query alone %.2f s)",
                key,
                runs[-1]["members"],
                runs[0]["seconds"],
                runs[1]["seconds"],
                query,
            )
    finally:
        await database.dispose()
    return segments


async def define_more(url: str, ids: dict[str, int]) -> dict[str, Any]:
    """The other 44 segments, each created and given its baseline by a recompute."""
    database = Database(url)
    catalog = Catalog()
    seconds: dict[str, float] = {}
    try:
        for name, rule in MORE_SEGMENTS:
            segment_id = await _create(database, name, rule, ids)
            run = await recompute_once(database, catalog, segment_id)
            seconds[name] = run["seconds"]
            log.info("  %s: %d members in %.2f s", name, run["members"], run["seconds"])
    finally:
        await database.dispose()
    slowest = max(seconds, key=lambda name: seconds[name])
    return {
        "segments": len(seconds),
        "baseline_seconds_total": round(sum(seconds.values()), 1),
        "slowest": {"name": slowest, "seconds": seconds[slowest]},
        "over_target": sorted(name for name, s in seconds.items() if s >= TARGET_BATCH_S),
    }


# --- (b) Real-time membership -----------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def live_messages(
    rng: random.Random, users: Sequence[int], total: int, now: datetime
) -> tuple[list[bytes], list[int]]:
    """About `total` messages as a shop's visitors send them: sessions of 1-8 track events
    (3 % opening with an identify that changes the plan) of users drawn from `users`, over
    the last five minutes, interleaved. The messages, and the users who sent them."""
    catalog = products(random.Random(rng.random()))
    timed: list[tuple[float, bytes]] = []
    sent: list[int] = []
    while len(timed) < total:
        user = rng.choice(users)
        sent.append(user)
        at = now - timedelta(seconds=rng.uniform(10, 300))
        common = {"userId": user_id(user), "context": {"library": {"name": "analytics.js"}}}
        if rng.random() < 0.03:
            message = common | {
                "type": "identify",
                "messageId": f"live-{rng.getrandbits(64):016x}",
                "timestamp": _iso(at),
                "traits": {"plan": rng.choice(("plus", "pro"))},
            }
            timed.append((at.timestamp(), orjson.dumps(message)))
        for _ in range(rng.randint(1, 8)):
            at += timedelta(seconds=rng.uniform(1, 20))
            kind = bisect.bisect_left(_TRACK_CUM, rng.random() * _TRACK_CUM[-1])
            properties, _ = track_properties(rng, kind, catalog, rng.getrandbits(40))
            message = common | {
                "type": "track",
                "event": TRACK_NAMES[kind],
                "messageId": f"live-{rng.getrandbits(64):016x}",
                "timestamp": _iso(min(at, now)),
                "properties": properties,
            }
            timed.append((at.timestamp(), orjson.dumps(message)))
    timed.sort(key=lambda pair: pair[0])
    return [message for _, message in timed], sent


async def store_backlog(url: str, messages: Sequence[bytes]) -> int:
    """Store the messages through the ingestion path (as `POST /v1/batch` stores them, with
    their processing jobs); the largest event id before them."""
    database = Database(url)
    clock = SystemClock()
    try:
        async with database.read_session() as session:
            boundary = int(await session.scalar(select(func.coalesce(func.max(Event.id), 0))) or 0)
        workspace_id, source_id = await bulk.first_source(
            database, workspace_slug="default", clock=clock
        )

        def accepted(batch: list[bytes], result: Accepted) -> None:
            if result.rejected:
                raise BenchError(f"messages refused: {result.rejected[:3]}")

        stored = await bulk.store_batches(
            database,
            messages,
            message=lambda message: message,
            accepted=accepted,
            workspace_id=workspace_id,
            source_id=source_id,
            clock=clock,
        )
        if stored != len(messages):
            raise BenchError(f"{stored} of {len(messages)} backlog messages stored")
    finally:
        await database.dispose()
    return boundary


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


class Drained(NamedTuple):
    seconds: float  # from the call, workers' start included
    at: datetime  # when no `events.process` job was seen left (to DRAIN_POLL_S)


def wait_drained(
    url: str, processes: Sequence[subprocess.Popen[bytes]], log_paths: Sequence[Path]
) -> Drained:
    """Poll until no `events.process` job is left."""
    started = time.monotonic()

    async def poll() -> datetime:
        database = Database(url)
        try:
            while True:
                async with database.read_session() as session:
                    count = await session.scalar(
                        select(func.count()).select_from(Job).where(Job.kind == PROCESS_EVENTS)
                    )
                if not count:
                    return datetime.now(UTC)
                for process, log_path in zip(processes, log_paths, strict=True):
                    if process.poll() is not None:
                        raise BenchError(
                            f"a worker exited while jobs were pending:\n{_tail(log_path)}"
                        )
                if time.monotonic() - started > DRAIN_TIMEOUT_S:
                    raise BenchError(f"jobs still pending after {DRAIN_TIMEOUT_S:.0f} s")
                await asyncio.sleep(DRAIN_POLL_S)
        finally:
            await database.dispose()

    at = run_async(poll())
    return Drained(time.monotonic() - started, at)


async def applied_since(url: str, boundary: int, drained_at: datetime) -> dict[str, Any]:
    """The backlog's figures from the timeline: events applied per second from the start of
    the first run that applied any (its `applied_at`) to the moment no processing job was
    left, and the segment events emitted meanwhile. Also the measure of sessions before
    29, which left the first run's events out and closed the window at the last run's
    start: it leaves one run's work out of the time and so reads higher as runs grow."""
    database = Database(url)
    try:
        async with database.read_session() as session:
            rows = (
                await session.execute(
                    select(ProfileEvent.applied_at)
                    .join(Event, Event.id == ProfileEvent.event_id)
                    .where(
                        ProfileEvent.event_id > boundary,
                        Event.name.not_in((SEGMENT_ENTERED, SEGMENT_EXITED)) | Event.name.is_(None),
                    )
                )
            ).all()
            emitted = dict(
                (
                    await session.execute(
                        select(Event.name, func.count())
                        .where(
                            Event.id > boundary, Event.name.in_((SEGMENT_ENTERED, SEGMENT_EXITED))
                        )
                        .group_by(Event.name)
                    )
                ).all()
            )
    finally:
        await database.dispose()
    applied = [row[0] for row in rows]
    first = min(applied, default=None)
    window = (drained_at - first).total_seconds() if first else 0.0
    starts = (max(applied) - first).total_seconds() if first else 0.0
    after_first = sum(1 for at in applied if first is not None and at > first)
    return {
        "events_applied": len(applied),
        "processing_seconds": round(window, 2),
        "events_per_s": round(len(applied) / window, 1) if window > 0 else 0.0,
        "events_per_s_start_to_start": round(after_first / starts, 1) if starts else 0.0,
        "segment_entered_emitted": int(emitted.get(SEGMENT_ENTERED, 0)),
        "segment_exited_emitted": int(emitted.get(SEGMENT_EXITED, 0)),
    }


def sample_stacks(pid: int, folder: Path, label: str) -> subprocess.Popen[bytes] | None:
    """When `$BENCH_WORKER_PROFILE` names a folder and py-spy is installed, py-spy sampling
    the worker `pid` into `<folder>/<run>-<label>.txt` (collapsed stacks) until SIGINT."""
    profiles = os.environ.get("BENCH_WORKER_PROFILE")
    spy = shutil.which("py-spy")
    if not profiles or not spy:
        return None
    output = Path(profiles) / f"{folder.name}-{label}.txt"
    command = [spy, "record", "--pid", str(pid), "--format", "raw", "-o", str(output)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_workers(
    url: str, folder: Path, label: str, count: int
) -> tuple[list[subprocess.Popen[bytes]], list[Path]]:
    """`count` `clarion worker` processes, and the files their stderr goes to."""
    processes: list[subprocess.Popen[bytes]] = []
    log_paths: list[Path] = []
    for number in range(count):
        log_paths.append(folder / f"worker-{label}-{number}.log")
        with log_paths[-1].open("wb") as output:
            processes.append(
                subprocess.Popen(
                    [str(CLARION), "worker"],
                    env=clarion_env(url, folder),
                    stdout=subprocess.DEVNULL,
                    stderr=output,
                )
            )
    return processes, log_paths


@contextlib.contextmanager
def watching(
    processes: Sequence[subprocess.Popen[bytes]], folder: Path, label: str
) -> Iterator[list[RssSampler]]:
    """RSS samplers on `processes` and, under `$BENCH_WORKER_PROFILE`, py-spy on each
    (`<label>-<n>`), stopped on exit."""
    samplers = [
        sample_stacks(process.pid, folder, f"{label}-{number}")
        for number, process in enumerate(processes)
    ]
    try:
        with contextlib.ExitStack() as stack:
            yield [stack.enter_context(RssSampler(process.pid)) for process in processes]
    finally:
        for sampler in samplers:
            if sampler is not None:
                sampler.send_signal(signal.SIGINT)
                sampler.wait(timeout=60)


def drain_round(
    kind: str, url: str, folder: Path, label: str, messages: Sequence[bytes], workers: int = 1
) -> dict[str, Any]:
    """Store `messages` with no worker running, then drain them with `workers` `clarion
    worker` processes."""
    boundary = run_async(store_backlog(url, messages))
    log.info("%s %s: %d events stored; starting %d worker(s)", kind, label, len(messages), workers)
    drained = drain_stored(kind, url, folder, label, boundary, workers)
    return {"events_stored": len(messages)} | drained


def drain_stored(
    kind: str, url: str, folder: Path, label: str, boundary: int, workers: int = 1
) -> dict[str, Any]:
    """Drain the events stored after event id `boundary` with `workers` `clarion worker`
    processes: the round's figures (events/s, segment events, CPU of the workers and of
    PostgreSQL's processes, peak worker RSS)."""
    postgres_before = postgres_cpu_seconds()
    processes, log_paths = start_workers(url, folder, label, workers)
    try:
        with watching(processes, folder, label) as rss:
            drained = wait_drained(url, processes, log_paths)
            worker_cpu = [tree_cpu_seconds(process.pid) for process in processes]
            postgres_after = postgres_cpu_seconds()
    finally:
        for process in processes:
            stop(process)
    figures = run_async(applied_since(url, boundary, drained.at))
    postgres_cpu = sum(v - postgres_before.get(pid, 0.0) for pid, v in postgres_after.items())
    log.info(
        "%s %s: %d events applied at %.0f events/s (%d entered, %d exited)",
        kind,
        label,
        figures["events_applied"],
        figures["events_per_s"],
        figures["segment_entered_emitted"],
        figures["segment_exited_emitted"],
    )
    return {
        "workers": workers,
        **figures,
        "seconds_to_drain": round(drained.seconds, 2),
        "cpu_seconds": {"worker": round(sum(worker_cpu), 2), "postgres": round(postgres_cpu, 2)},
        "peak_worker_rss_mib": round(max(sampler.peak_bytes for sampler in rss) / MIB, 1),
    }


# --- (c) Event-to-entered latency -------------------------------------------------------------


def ping_bodies(rng: random.Random, users: Sequence[int]) -> list[bytes]:
    """`POST /v1/batch` bodies of LATENCY_BATCH `Bench Ping` events, one for each user (no
    timestamp: Clarion stamps them with their arrival)."""
    bodies = []
    for start in range(0, len(users), LATENCY_BATCH):
        batch = [
            {
                "type": "track",
                "event": PING,
                "userId": user_id(user),
                "messageId": f"ping-{rng.getrandbits(64):016x}",
                "properties": {"n": start + n},
            }
            for n, user in enumerate(users[start : start + LATENCY_BATCH])
        ]
        bodies.append(orjson.dumps({"batch": batch}))
    return bodies


async def entered_latencies(url: str, boundary: int, segment_id: int) -> tuple[int, list[float]]:
    """Pings sent after `boundary`, and for each the seconds from its arrival to that of
    its sender's `Segment Entered` event for the segment (pings without one left out)."""
    database = Database(url)
    try:
        async with database.read_session() as session:
            rows = (
                await session.execute(
                    select(Event.name, Event.user_id, Event.received_at, Event.properties).where(
                        Event.id > boundary, Event.name.in_((PING, SEGMENT_ENTERED))
                    )
                )
            ).all()
    finally:
        await database.dispose()
    pings = {user: at for name, user, at, _ in rows if name == PING}
    entered: dict[str, datetime] = {}
    for name, user, at, properties in rows:
        if name == SEGMENT_ENTERED and (properties or {}).get("segment_id") == segment_id:
            entered[user] = min(at, entered.get(user, at))
    return len(pings), [
        (entered[user] - at).total_seconds() for user, at in pings.items() if user in entered
    ]


async def _max_event_id(url: str) -> int:
    database = Database(url)
    try:
        async with database.read_session() as session:
            return int(await session.scalar(select(func.coalesce(func.max(Event.id), 0))) or 0)
    finally:
        await database.dispose()


async def define_ping(url: str, ids: dict[str, int]) -> int:
    """The latency segment, created and given its (empty) baseline in process."""
    database = Database(url)
    try:
        name, rule = PING_SEGMENT
        segment_id = await _create(database, name, rule, ids)
        await recompute_once(database, Catalog(), segment_id)
    finally:
        await database.dispose()
    return segment_id


def measure_latency(
    kind: str,
    url: str,
    folder: Path,
    users: Sequence[int],
    segment_id: int,
    seed: int,
    workers: int = 0,
) -> dict[str, Any]:
    """Send LATENCY_RATE pings/s, one per user, to `clarion serve`; ping-to-entered delays.
    With `workers`, the server only takes the pings and that many `clarion worker`
    processes process them (a scaled-out deployment); else its own worker does."""
    bodies = ping_bodies(random.Random(seed), users)
    boundary = run_async(_max_event_id(url))
    folder.mkdir(parents=True, exist_ok=True)
    processes, log_paths = start_workers(url, folder, "latency", workers)
    try:
        with running_server(url, folder, worker=not workers) as server:
            pid = server.process.pid
            log.info(
                "%s latency: server %d up (%d separate workers); sending %d pings",
                kind,
                pid,
                workers,
                len(users),
            )
            watched = processes or [server.process]
            with watching(watched, folder, "latency") as rss:
                sending = run_async(send_paced(server.port, bodies, LATENCY_BATCH / LATENCY_RATE))
                drained = wait_drained(url, watched, log_paths or [server.log_path])
    finally:
        for process in processes:
            stop(process)
    sent, latencies = run_async(entered_latencies(url, boundary, segment_id))
    if not latencies:
        raise BenchError(f"no Segment Entered for any of {sent} pings")
    log.info(
        "%s latency: %d of %d pings entered; p50 %.3f s, p99 %.3f s",
        kind,
        len(latencies),
        sent,
        percentile(latencies, 50),
        percentile(latencies, 99),
    )
    return {
        "events_per_s_sent": LATENCY_RATE,
        "seconds_sending": round(sending, 2),
        "pings": sent,
        "entered": len(latencies),
        "seconds_to_drain_after_sending": round(drained.seconds, 2),
        "latency_s_p50": round(percentile(latencies, 50), 3),
        "latency_s_p99": round(percentile(latencies, 99), 3),
        "latency_s_max": round(max(latencies), 3),
        "separate_workers": workers,
        "peak_server_rss_mib": round(max(sampler.peak_bytes for sampler in rss) / MIB, 1),
    }


# --- (d) The cost of a first touch, in process -----------------------------------------------

FIRST_TOUCH_PROFILES = 500
FIRST_TOUCH_BATCH = 50


async def first_touch_cost(url: str) -> dict[str, Any]:
    """Worker CPU per profile to bring profiles Clarion has not evaluated since the segments
    were defined up to date (aggregates from the timeline, every segment answered, next
    changes), measured in this process on batches as a run takes them, each rolled back.
    Steadier than the rounds above (no other process shares the measurement)."""
    database = Database(url)
    catalog = Catalog()
    try:
        async with database.read_session() as session:
            workspace_id: int = await session.scalar(select(func.min(Profile.workspace_id))) or 0
            stateless = (
                select(Profile.id)
                .where(
                    Profile.workspace_id == workspace_id,
                    Profile.canonical_id.is_(None),
                    ~select(ProfileSegmentState.profile_id)
                    .where(ProfileSegmentState.profile_id == Profile.id)
                    .exists(),
                )
                .order_by(Profile.id)
                .limit(FIRST_TOUCH_PROFILES)
            )
            ids = list((await session.scalars(stateless)).all())
        if not ids:
            raise BenchError("no profile left without real-time state")
        now = datetime.now(UTC)
        heap.settle()  # the collector as `clarion worker` sets it once started
        started = time.process_time()
        for first in range(0, len(ids), FIRST_TOUCH_BATCH):
            batch = ids[first : first + FIRST_TOUCH_BATCH]
            async with database.write_session() as session:
                index = await catalog.load(session, workspace_id)
                await membership.evaluate_profiles(
                    session,
                    workspace_id=workspace_id,
                    index=index,
                    touched={
                        profile_id: membership.Touched(everything=True) for profile_id in batch
                    },
                    absorbed={},
                    now=now,
                    cause="realtime",
                )
                await session.rollback()
        cpu = time.process_time() - started
    finally:
        await database.dispose()
    return {
        "profiles": len(ids),
        "batch": FIRST_TOUCH_BATCH,
        "segments": len(index.segments),
        "cpu_ms_per_profile": round(1000 * cpu / len(ids), 2),
    }


# --- Putting it together ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    """The command line."""

    databases: list[str]
    profiles: int | None
    events: int | None
    quick: bool
    seed: int
    backlog: int
    latency_seconds: float
    workers: int

    def size(self, kind: str) -> tuple[int, int]:
        """Profiles and events for a database of `kind`."""
        profiles, events = QUICK if self.quick else SIZES[kind]
        return self.profiles or profiles, self.events or events


def load(kind: str, url: str, shape: Shape) -> Loaded:
    """Fill the migrated database with the generated shop."""
    if kind == "postgresql":
        return run_async(load_postgres(url, shape))
    source_id = run_async(_source_id(url))
    return load_sqlite(Path(url.removeprefix("sqlite:///")), shape, source_id)


def measure(kind: str, options: Options) -> dict[str, Any]:
    """Every figure for one database."""
    profiles, events = options.size(kind)
    rng = random.Random(options.seed)
    pings = int(options.latency_seconds * LATENCY_RATE)
    latency_rounds = 3 if kind == "postgresql" and options.workers > 1 else 2
    if latency_rounds * pings > profiles:
        raise BenchError(
            f"{profiles} profiles are too few for {latency_rounds} x {pings} pingers apart"
        )
    pingers = rng.sample(range(profiles), 2 * pings)
    result: dict[str, Any] = {"profiles": profiles, "events": events}
    with tempfile.TemporaryDirectory(prefix=f"clarion-segments-{kind}-") as tmp:
        folder = Path(tmp)
        with fresh_database(kind, folder) as url:
            migrate(url, folder)
            if kind == "postgresql":
                result["postgres_settings"] = run_async(postgres_settings())
            log.info("%s: generating %d profiles and %d events", kind, profiles, events)
            loaded = load(kind, url, Shape(profiles, events, options.seed, datetime.now(UTC)))
            checked = run_async(check_sample(url, options.seed))
            log.info("%s: loaded in %.0f s (%d profiles checked)", kind, loaded.seconds, checked)
            result["load"] = {
                "seconds": round(loaded.seconds, 1),
                "index_and_analyze_seconds": round(loaded.index_seconds, 1),
                "bench_cpu_seconds": round(loaded.bench_cpu_seconds, 1),
                "buyers": loaded.buyers,
                "profiles_checked": checked,
            }
            now = datetime.now(UTC)
            messages, _ = live_messages(rng, range(profiles), options.backlog, now)
            realtime: dict[str, Any] = {
                "no_segments": drain_round(kind, url, folder, "no-segments", messages)
            }
            ids: dict[str, int] = {}
            ping = run_async(define_ping(url, ids))
            latency = {
                "one_segment": measure_latency(
                    kind, url, folder / "latency-1", pingers[:pings], ping, options.seed
                )
            }
            result["batch"] = run_async(measure_batch(url, ids))
            log.info("%s: defining %d more segments, each with its baseline", kind, 44)
            result["more_segments"] = run_async(define_more(url, ids))
            realtime["segments"] = len(ids)
            messages, users = live_messages(rng, range(profiles), options.backlog, now)
            realtime["first_touch"] = drain_round(kind, url, folder, "first-touch", messages)
            messages, _ = live_messages(rng, sorted(set(users)), options.backlog, now)
            realtime["again"] = drain_round(kind, url, folder, "again", messages)
            if options.workers > 1:
                messages, _ = live_messages(rng, sorted(set(users)), options.backlog, now)
                realtime["again_more_workers"] = drain_round(
                    kind, url, folder, "again-workers", messages, options.workers
                )
                # A first touch again, with the workers: profiles no round has touched since
                # the segments were defined (nor the latency rounds' pingers).
                touched = set(users) | set(pingers)
                untouched = [user for user in range(profiles) if user not in touched]
                messages, _ = live_messages(rng, untouched, options.backlog, now)
                realtime["first_touch_more_workers"] = drain_round(
                    kind, url, folder, "first-touch-workers", messages, options.workers
                )
            result["realtime"] = realtime
            latency["all_segments"] = measure_latency(
                kind, url, folder / "latency-50", pingers[pings:], ping, options.seed + 1
            )
            if kind == "postgresql" and options.workers > 1:
                # Other users again, drawn apart so that the rounds above keep their data.
                taken = set(pingers)
                drawn = random.Random(options.seed + 2).sample(range(profiles), 3 * pings)
                latency["all_segments_more_workers"] = measure_latency(
                    kind,
                    url,
                    folder / "latency-50-workers",
                    [user for user in drawn if user not in taken][:pings],
                    ping,
                    options.seed + 2,
                    options.workers,
                )
            result["latency"] = latency
            result["first_touch_cost"] = run_async(first_touch_cost(url))
            log.info(
                "%s: a first touch costs %.2f ms of CPU a profile",
                kind,
                result["first_touch_cost"]["cpu_ms_per_profile"],
            )
    rounds = (
        "no_segments",
        "first_touch",
        "again",
        "again_more_workers",
        "first_touch_more_workers",
    )
    rss = [realtime[name]["peak_worker_rss_mib"] for name in rounds if name in realtime] + [
        figures["peak_server_rss_mib"] for figures in latency.values()
    ]
    result["peak_rss_mib"] = max(rss)
    result["targets"] = {
        "batch_each_under_10_s": {
            key: figures["target_met"] for key, figures in result["batch"].items()
        },
        "realtime_5000_events_per_s_with_50_segments": {
            name: realtime[name]["events_per_s"] >= TARGET_EVENTS_PER_S
            for name in rounds[1:]
            if name in realtime
        },
        "latency_p99_under_1_s": {
            name: figures["latency_s_p99"] < TARGET_P99_S for name, figures in latency.items()
        },
        "peak_rss_under_1_gib": max(rss) < TARGET_RSS_MIB,
    }
    return result


def parse_args(argv: Sequence[str] | None) -> Options:
    """The options from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--databases", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql"
    )
    parser.add_argument(
        "--profiles", type=int, help="profiles (PostgreSQL 1,000,000; SQLite 100,000)"
    )
    parser.add_argument(
        "--events", type=int, help="events in all (PostgreSQL 10,000,000; SQLite 1,000,000)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 20,000 profiles, 200,000 events"
    )
    parser.add_argument("--seed", type=int, default=20261122, help="random seed of the data")
    parser.add_argument(
        "--backlog", type=int, help="events per real-time round (20,000; quick 4,000)"
    )
    parser.add_argument("--latency-seconds", type=float, help="seconds of pings (20; quick 5)")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="worker processes of the scaled-out rounds (2; 1 leaves them out)",
    )
    args = parser.parse_args(argv)
    databases = [name.strip() for name in args.databases.split(",") if name.strip()]
    unknown = set(databases) - set(SIZES)
    if unknown or not databases:
        parser.error(f"--databases: unknown {', '.join(sorted(unknown)) or 'nothing'}")
    for name in ("profiles", "events", "backlog", "latency_seconds", "workers"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    return Options(
        databases=databases,
        profiles=args.profiles,
        events=args.events,
        quick=args.quick,
        seed=args.seed,
        backlog=args.backlog or (4_000 if args.quick else 20_000),
        latency_seconds=args.latency_seconds or (5.0 if args.quick else 20.0),
        workers=args.workers,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print one JSON line on stdout."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    options = parse_args(argv)
    report: dict[str, Any] = {"bench": "segments", "machine": machine(), "seed": options.seed}
    started = time.monotonic()
    try:
        for kind in options.databases:
            report[kind] = measure(kind, options)
    except BenchError as exc:
        log.error("benchmark failed: %s", exc)
        return 1
    report["bench_peak_rss_mib"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
    )
    report["seconds"] = round(time.monotonic() - started, 1)
    sys.stdout.write(orjson.dumps(report).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
