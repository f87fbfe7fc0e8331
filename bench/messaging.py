"""Messaging benchmark: an email campaign to 100,000 recipients on PostgreSQL, delivered by
`clarion worker` processes to a local discarding SMTP sink.

In one run, on this machine:

1. **Rendering.** The campaign's email (bench/rendering.py's ~8 KB template with its CSS,
   product loop and filters, the products given in the template as a campaign has no
   event) made in process for 20,000 recipients the way delivery makes it: content parsed,
   `rendering.render`, signed links, click tracking and the open pixel, then the MIME bytes
   the email channel sends (8-bit bodies: the sink offers 8BITMIME). Per message, per stage.
2. **Ceiling.** A bare SMTP blaster (aiosmtplib, MAIL / RCPT / DATA as the email channel
   sends them, over 1, 4 and 8 reused connections: one channel's pool is 4) sends pre-built
   messages to the sink (`bench/smtp_blackhole.py`, aiosmtpd discarding everything) for a
   few seconds each: small ones (1.3 KB), and the campaign's own emails (the first 500
   made in step 1): messages/s accepted.
3. **Campaigns.** A fresh PostgreSQL database (`clarion migrate`) gets N profiles (an
   `email` trait, a first name, a tier...; COPY-loaded with their user id and email
   identities), an email channel to the sink, the template, and two segments (everyone;
   one profile in ten) given their members in process. For each round a new campaign over
   a segment is created and sent now with no worker running (`campaigns.service`,
   `campaigns.lifecycle`), then worker processes start: the launch job snapshots the
   audience, dispatch jobs call `queue_messages`, `messages.deliver` jobs render and send.
   Rounds: one worker at N/10, one worker at N (memory must be flat in the audience
   size), two workers at N.
   Figures come from the messages table (first to last `delivered_at`: messages/s), the
   sink (every recipient exactly once: accepted = distinct recipients = distinct
   Message-IDs = N), psutil (peak worker RSS; CPU of the workers, of this database's
   PostgreSQL backends, of the sink, and of the whole machine: others' work shows).

Targets: >= 1,000 emails/s delivered with two workers, at least half the ceiling (the
sink's rate for the campaign's emails over 4 connections, docs/adr/0011; the share of the
small-message rate is reported too), peak worker RSS at N within 25 % of that at N/10.
`BENCH_WORKER_PROFILE=<folder>` records each round's workers with py-spy.
Exactly one JSON line goes to stdout; progress goes to stderr.

    .venv/bin/python bench/messaging.py [--quick] [--recipients N] [--workers 1,2]
        [--renders N] [--blast-seconds S] [--seed S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import random
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import aiosmtplib
import asyncpg  # type: ignore[import-untyped, unused-ignore]
import orjson
import psutil  # type: ignore[import-untyped, unused-ignore]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import (
    CLARION,
    MIB,
    BenchError,
    RssSampler,
    clarion_env,
    free_port,
    fresh_database,
    machine,
    migrate,
    postgres_cpu_seconds,
    postgres_settings,
    run_async,
    stop,
    tree_cpu_seconds,
)
from bench.rendering import PREHEADER, TEMPLATE
from clarion.campaigns import lifecycle
from clarion.campaigns import service as campaigns
from clarion.campaigns.schemas import CampaignCreate, SendRequest
from clarion.core.crypto import Vault
from clarion.core.database import Database
from clarion.core.outbound import PUBLIC_ONLY
from clarion.messaging import channel_config, rendering, templates, tracking
from clarion.messaging.channel_config import ChannelPool
from clarion.messaging.channels.mime import build_mime
from clarion.messaging.models import Message
from clarion.messaging.sending import Composer
from clarion.profiles import computed as computed_traits
from clarion.segments import recompute
from clarion.segments import service as segments
from clarion.segments.catalog import Catalog

log = logging.getLogger("bench.messaging")

TARGET_DELIVERED_PER_S = 1_000.0
TARGET_CEILING_SHARE = 0.5
TARGET_RSS_GROWTH = 1.25  # peak RSS at N over peak RSS at N/10
WORKSPACE_ID = 1
PUBLIC_URL = "https://clarion.example.com"
FROM_ADDRESS = "news@shop.example.com"
SINK = Path(__file__).resolve().parent / "smtp_blackhole.py"
BLAST_CONNECTIONS = (1, 4, 8)
BLAST_MESSAGES = 500  # distinct messages the blaster sends round robin
EIGHT_BIT = ["BODY=8BITMIME"]
CEILING_CONNECTIONS = 4  # the email channel's default pool size
POLL_S = 0.25
ROUND_TIMEOUT_BASE_S = 300.0
ROUND_TIMEOUT_PER_MESSAGE_S = 0.1
DONE_KINDS = ["campaigns.launch", "campaigns.dispatch", "messages.deliver"]

# --- The campaign's email ---------------------------------------------------------------------

SUBJECT = "{{ profile.traits.first_name | default('Hi') }}, four favourites are back in stock"
PRODUCTS = [
    {
        "url": f"https://shop.example.com/p/{100_231 + 17 * n}",
        "image_url": f"https://cdn.example.com/p/{n}-{100_231 + 17 * n}.jpg",
        "name": f"{name} No. {12 + n} & co",
        "price": price,
        "compare_at": compare_at,
        "currency": "USD",
        "description": "Hand-made, " + "lovely and durable " * (3 + 2 * n) + "and on sale.",
        "stock": stock,
    }
    for n, (name, price, compare_at, stock) in enumerate(
        (("Mugs", 2450, 3200, 3), ("Lamps", 8900, 0, 12), ("Rugs", 15900, 19900, 2),
         ("Planters", 1850, 0, 27))
    )
]  # fmt: skip
# bench/rendering.py's template is triggered by an event carrying the products; a campaign
# has no event, so the products are set in the template, and the rest fits what delivery
# gives: the real computed trait `orders`.
CAMPAIGN_EDITS = (
    ("{% for product in event.properties.products %}", "{% for product in products %}"),
    ("profile.computed.orders_count", "profile.computed.orders"),
)


def campaign_html() -> str:
    """bench/rendering.py's template, made a campaign's (CAMPAIGN_EDITS)."""
    html = TEMPLATE
    for old, new in CAMPAIGN_EDITS:
        if old not in html:
            raise BenchError(f"bench/rendering.py's template no longer has {old!r}")
        html = html.replace(old, new)
    return "{% set products = " + json.dumps(PRODUCTS) + " %}" + html


def campaign_content() -> dict[str, Any]:
    """The template version's content, as stored."""
    return {"subject": SUBJECT, "html": campaign_html(), "preheader": PREHEADER}


# --- The audience -----------------------------------------------------------------------------

FIRST_NAMES = ("Ann", "Bob", "Chloé", "Dmitri", "Émile", "Fatima", "Grace", "Hiro", "Ines", "Jon")
LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Liskov", "Hamilton", "Ritchie", "Knuth")
TIMEZONES = ("America/New_York", "Europe/Paris", "Asia/Tokyo", "Europe/London", "UTC")
COHORTS = 10  # the small round's segment is cohort 0
PROFILE_COLUMNS = [
    "id", "workspace_id", "traits", "trait_times", "computed", "first_seen_at", "last_seen_at",
    "created_at", "updated_at",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Recipient:
    """One generated profile."""

    id: uuid.UUID
    user_id: str
    traits: dict[str, Any]
    computed: dict[str, Any]


def recipients(count: int, seed: int) -> Iterator[Recipient]:
    """`count` seeded profiles, each with an email, most with a first name."""
    rng = random.Random(seed)
    for number in range(count):
        user_id = f"customer_{number:07d}"
        traits: dict[str, Any] = {
            "email": f"customer{number:07d}@example.com",
            "last_name": rng.choice(LAST_NAMES),
            "tier": rng.choice(("gold", "silver", "none")),
            "plan": rng.choice(("free", "plus", "pro")),
            "timezone": rng.choice(TIMEZONES),
            "cohort": number % COHORTS,
        }
        if rng.random() < 0.9:
            traits["first_name"] = rng.choice(FIRST_NAMES) + ("<b>" if number % 97 == 0 else "")
        if rng.random() < 0.6:
            traits["loyalty_points"] = rng.randrange(0, 5_000)
        computed = computed_traits.empty() | {"orders": rng.choice((0, 0, 1, 2, 5))}
        yield Recipient(uuid.UUID(int=rng.getrandbits(128), version=4), user_id, traits, computed)


async def load_profiles(url: str, count: int, seed: int) -> float:
    """COPY the profiles and their user id and email identities in; the seconds it took."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    moment = now.isoformat()
    connection = await asyncpg.connect(url)
    try:
        profiles: list[tuple[Any, ...]] = []
        identities: list[tuple[Any, ...]] = []

        async def flush() -> None:
            await connection.copy_records_to_table(
                "profiles",
                records=profiles,
                columns=PROFILE_COLUMNS,
            )
            await connection.copy_records_to_table(
                "profile_identities",
                records=identities,
                columns=["workspace_id", "profile_id", "kind", "value", "created_at"],
            )
            profiles.clear()
            identities.clear()

        for who in recipients(count, seed):
            traits = orjson.dumps(who.traits).decode()
            times = orjson.dumps(dict.fromkeys(who.traits, moment)).decode()
            computed = orjson.dumps(who.computed).decode()
            profiles.append((who.id, WORKSPACE_ID, traits, times, computed, now, now, now, now))
            identities.append((WORKSPACE_ID, who.id, "user_id", who.user_id, now))
            identities.append((WORKSPACE_ID, who.id, "email", who.traits["email"], now))
            if len(profiles) >= 10_000:
                await flush()
        await flush()
        await connection.execute("ANALYZE profiles; ANALYZE profile_identities")
    finally:
        await connection.close()
    return time.perf_counter() - started


# --- The sink and the ceiling -----------------------------------------------------------------


class Sink:
    """bench/smtp_blackhole.py in a subprocess, spoken to through its stdin and stdout."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.log_path = folder / "sink.log"
        with self.log_path.open("wb") as errors:
            self.process = subprocess.Popen(
                [sys.executable, str(SINK), "--port", str(self.port)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
            )
        if self._line() != "ready":
            raise BenchError(f"the SMTP sink did not start:\n{self.log_path.read_text()}")
        self.cpu = psutil.Process(self.process.pid)

    def _line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().decode().strip()

    def command(self, name: str) -> dict[str, Any]:
        """`status` or `reset`: the sink's counts (before the reset)."""
        stdin: IO[bytes] | None = self.process.stdin
        assert stdin is not None
        stdin.write(f"{name}\n".encode())
        stdin.flush()
        answer: dict[str, Any] = orjson.loads(self._line())
        return answer

    def cpu_seconds(self) -> float:
        """CPU time the sink has used."""
        times = self.cpu.cpu_times()
        return float(times.user + times.system)

    def close(self) -> None:
        """End its stdin; it stops (SIGTERM, then SIGKILL, if it does not)."""
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            stop(self.process)


@contextlib.contextmanager
def running_sink(folder: Path) -> Iterator[Sink]:
    """A started sink, stopped on exit."""
    sink = Sink(folder)
    try:
        yield sink
    finally:
        sink.close()


def blast_payloads(size: int, count: int = BLAST_MESSAGES) -> list[tuple[str, bytes]]:
    """`count` distinct (recipient, MIME bytes) of about `size` bytes of body."""
    filler = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * (size // 56 + 1))[:size]
    payloads = []
    for number in range(count):
        to = f"blast{number:04d}@example.com"
        outgoing = rendering.Rendered("email", None, subject="Hello", text=filler).outgoing(
            message_id=f"blast-{number}", idempotency_key=f"blast-{number}", to=to
        )
        payloads.append((to, build_mime(outgoing, from_address=FROM_ADDRESS)))
    return payloads


async def blast(port: int, connections: int, seconds: float, payloads: Sequence[Any]) -> int:
    """Send `payloads` round robin over `connections` reused connections for `seconds`
    (8-bit ones declared `BODY=8BITMIME`, as the email channel does); how many were
    accepted."""
    clients = [
        aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        for _ in range(connections)
    ]
    for client in clients:
        await client.connect()
    deadline = time.perf_counter() + seconds
    sent = 0

    async def loop(client: aiosmtplib.SMTP, start: int) -> None:
        nonlocal sent
        index = start
        while time.perf_counter() < deadline:
            to, payload = payloads[index % len(payloads)]
            await client.mail(FROM_ADDRESS, options=[] if payload.isascii() else EIGHT_BIT)
            await client.rcpt(to)
            await client.data(payload)
            sent += 1
            index += connections

    try:
        await asyncio.gather(*(loop(client, n) for n, client in enumerate(clients)))
    finally:
        for client in clients:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.quit()
    return sent


def measure_ceiling(
    sink: Sink, seconds: float, messages: dict[str, list[tuple[str, bytes]]]
) -> dict[str, Any]:
    """Messages/s the sink accepts from the blaster, by kind of message and connections."""
    figures: dict[str, Any] = {}
    for label, payloads in messages.items():
        mean_bytes = sum(len(payload) for _, payload in payloads) / len(payloads)
        figures[label] = {"message_bytes": round(mean_bytes)}
        for connections in BLAST_CONNECTIONS:
            sink.command("reset")
            cpu = sink.cpu_seconds()
            own = time.process_time()
            sent = run_async(blast(sink.port, connections, seconds, payloads))
            status = sink.command("status")
            if status["accepted"] != sent:
                raise BenchError(f"the blaster sent {sent}, the sink accepted {status}")
            figures[label][f"{connections}_connections"] = {
                "per_s": status["per_s"],
                "sink_cpu_us_per_message": round((sink.cpu_seconds() - cpu) / sent * 1e6, 1),
                "blaster_cpu_us_per_message": round((time.process_time() - own) / sent * 1e6, 1),
            }
            log.info("ceiling %s, %d connections: %.0f/s", label, connections, status["per_s"])
    sink.command("reset")
    return figures


# --- Rendering in process ---------------------------------------------------------------------


@dataclass(slots=True)
class Stages:
    """Seconds (wall, CPU) spent in each stage of making the messages."""

    wall: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, wall: float, cpu: float) -> None:
        """Count one stage's time."""
        self.wall[stage] = self.wall.get(stage, 0.0) + wall
        self.cpu[stage] = self.cpu.get(stage, 0.0) + cpu


def make_message(
    who: Recipient, stored: dict[str, Any], composer: Composer, stages: Stages
) -> bytes:
    """One recipient's email as delivery makes it (`sending.Composer._compose`: its links,
    the render, its click tracking and open pixel; then the email channel's MIME bytes),
    each stage timed into `stages`. The composer's own private steps are called, so this
    follows delivery as it changes."""
    clock = [time.perf_counter(), time.process_time()]

    def lap(stage: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        stages.add(stage, wall - clock[0], cpu - clock[1])
        clock[:] = [wall, cpu]

    message = Message(
        id=uuid.uuid5(uuid.NAMESPACE_URL, f"bench:{who.id}"),
        workspace_id=WORKSPACE_ID,
        profile_id=who.id,
        channel="email",
        topic_id=None,
        idempotency_key=f"bench:{who.id}",
    )
    links = composer._links(message)
    context = rendering.RenderContext(
        profile=rendering.ProfileContext(
            id=who.id, user_id=who.user_id, email=who.traits["email"], traits=who.traits,
            computed=who.computed,
        ),
        message_id=str(message.id),
        now=datetime.now(UTC),
        links=links,
    )  # fmt: skip
    lap("links")
    content = rendering.parse_content("email", stored)
    rendered = rendering.render("email", content, context)
    lap("render")
    html, _ = composer._track(message, rendered.html or "", links)
    lap("tracking")
    assert links.unsubscribe_url is not None
    outgoing = dataclasses.replace(rendered, html=html).outgoing(
        message_id=str(message.id),
        idempotency_key=message.idempotency_key,
        to=who.traits["email"],
        headers=tracking.list_unsubscribe_headers(links.unsubscribe_url),
    )
    # 8-bit bodies: the sink offers 8BITMIME and the bench's channel does not sign.
    payload = build_mime(outgoing, from_address=FROM_ADDRESS, eight_bit=True)
    lap("mime")
    return payload


def measure_rendering(count: int, seed: int) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """Make `count` recipients' emails in process; per-stage rates, and the first
    `BLAST_MESSAGES` emails with their recipients (the blaster's campaign emails)."""
    stored = campaign_content()
    problems = rendering.validate("email", rendering.parse_content("email", stored))
    if problems:
        raise BenchError(f"the campaign template is invalid: {problems}")
    signer = tracking.LinkSigner(secrets.token_urlsafe(32))
    # Rendering only: no channel is called, so the outbound policy is never consulted.
    channels = ChannelPool(Vault(secrets.token_urlsafe(32)), PUBLIC_ONLY)
    composer = Composer(channels=channels, signer=signer, public_url=PUBLIC_URL)
    people = list(recipients(count, seed + 1))
    make_message(people[0], stored, composer, Stages())  # warm-up: compile, prepare
    stages = Stages()
    emails: list[tuple[str, bytes]] = []  # the first few, kept for the blaster
    sizes = []
    for who in people:
        payload = make_message(who, stored, composer, stages)
        sizes.append(len(payload))
        if len(emails) < BLAST_MESSAGES:
            emails.append((who.traits["email"], payload))
    wall, cpu = stages.wall, stages.cpu
    render = wall["links"] + wall["render"]
    tracked = render + wall["tracking"]
    whole = tracked + wall["mime"]
    figures = {
        "recipients": count,
        "template_bytes": len(stored["html"]),
        "email_bytes_mean": round(sum(sizes) / count),
        "renders_per_s": round(count / render),
        "with_tracking_per_s": round(count / tracked),
        "with_mime_per_s": round(count / whole),
        "cpu_us": {stage: round(seconds / count * 1e6, 1) for stage, seconds in cpu.items()},
    }
    log.info(
        "rendering: %d/s rendered, %d/s with tracking, %d/s with MIME (%d bytes)",
        figures["renders_per_s"],
        figures["with_tracking_per_s"],
        figures["with_mime_per_s"],
        figures["email_bytes_mean"],
    )
    return figures, emails


# --- The database -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setup:
    """What the campaigns are made of."""

    template_id: int
    channel_id: int
    segments: dict[str, tuple[int, int]]  # label: (segment id, members)
    seconds: float


EVERYONE = ("Everyone with an email", {"type": "trait", "trait": "email", "operator": "exists"})
ONE_IN_TEN = ("Cohort 0", {"type": "trait", "trait": "cohort", "operator": "eq", "value": 0})


async def set_up(url: str, secret: str, sink_port: int) -> Setup:
    """The template, the email channel to the sink and the segments (members computed)."""
    started = time.perf_counter()
    database = Database(url)
    now = datetime.now(UTC)
    try:
        async with database.write_session() as session:
            template, _ = await templates.create_template(
                session, workspace_id=WORKSPACE_ID, name="Back in stock", channel="email",
                category="marketing", topic_id=None, content=campaign_content(), now=now,
            )  # fmt: skip
            channel = await channel_config.create_channel(
                session, workspace_id=WORKSPACE_ID, vault=Vault(secret), name="Blackhole",
                kind="email", secrets={}, rate_per_second=None, is_default=True, now=now,
                settings={"host": "127.0.0.1", "port": sink_port, "security": "none",
                          "from_address": FROM_ADDRESS, "from_name": "Example Shop"},
            )  # fmt: skip
            await session.commit()
            ids = (template.id, channel.id)
        found: dict[str, tuple[int, int]] = {}
        for label, (name, rule) in (("everyone", EVERYONE), ("one_in_ten", ONE_IN_TEN)):
            async with database.write_session() as session:
                segment, _ = await segments.create_segment(
                    session, workspace_id=WORKSPACE_ID, name=name, description="bench/messaging.py",
                    raw_rule=rule, now=now,
                )  # fmt: skip
                result = await recompute.recompute_one(
                    session, workspace_id=WORKSPACE_ID, segment=segment, catalog=Catalog(), now=now
                )
                await session.commit()
                found[label] = (segment.id, result.size)
    finally:
        await database.dispose()
    return Setup(ids[0], ids[1], found, time.perf_counter() - started)


async def send_campaign(url: str, setup: Setup, name: str, segment_id: int) -> int:
    """A new campaign to the segment, sent now (its launch job waits for a worker)."""
    database = Database(url)
    now = datetime.now(UTC)
    body = CampaignCreate.model_validate(
        {
            "name": name,
            "audience": {"type": "segment", "segment_id": segment_id},
            "template_id": setup.template_id,
            "channel_id": setup.channel_id,
        }
    )
    try:
        async with database.write_session() as session:
            campaign = await campaigns.create_campaign(
                session, workspace_id=WORKSPACE_ID, body=body, now=now
            )
            await lifecycle.send_campaign(
                session, workspace_id=WORKSPACE_ID, campaign_id=campaign.id,
                request=SendRequest(when="now"), now=now,
            )  # fmt: skip
            await session.commit()
            return campaign.id
    finally:
        await database.dispose()


_JOBS = """
SELECT count(*) FILTER (WHERE kind = ANY($1::text[])),
       count(*) FILTER (WHERE state IN ('ready', 'running') AND run_at <= now()),
       count(*) FILTER (WHERE state = 'dead')
FROM jobs
"""
_MESSAGES = """
SELECT count(*), count(DISTINCT profile_id), count(*) FILTER (WHERE status = 'delivered'),
       min(delivered_at), max(delivered_at),
       percentile_disc(0.1) WITHIN GROUP (ORDER BY delivered_at),
       percentile_disc(0.9) WITHIN GROUP (ORDER BY delivered_at),
       min(created_at), max(created_at)
FROM messages WHERE workspace_id = $1 AND origin = 'campaign' AND origin_id = $2
"""
_STATUSES = """
SELECT status, count(*) FROM messages
WHERE workspace_id = $1 AND origin = 'campaign' AND origin_id = $2 GROUP BY status
"""
_AFTER_FIRST = """
SELECT count(*) FROM messages
WHERE workspace_id = $1 AND origin = 'campaign' AND origin_id = $2 AND delivered_at > $3
"""


# --- A round: workers deliver one campaign -----------------------------------------------------


class Backends:
    """CPU seconds of the PostgreSQL backends serving this database (others' databases on
    the same server left out), each counted from when a poll first saw it."""

    def __init__(self) -> None:
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}

    async def sample(self, connection: asyncpg.Connection) -> None:
        """Read the CPU time of every backend connected to the database now."""
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        )
        for (pid,) in rows:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                times = psutil.Process(pid).cpu_times()
                self.first.setdefault(pid, times.user + times.system)
                self.last[pid] = times.user + times.system

    def seconds(self) -> float:
        """CPU seconds used by the backends seen, since first seen."""
        return sum(last - self.first[pid] for pid, last in self.last.items())


@dataclass(slots=True)
class Cpu:
    """CPU seconds used so far: the workers, this database's PostgreSQL backends, every
    PostgreSQL process, the sink, and the whole machine (busy, and available)."""

    workers: float
    database: float
    postgres: dict[int, float]
    sink: float
    machine_busy: float
    monotonic: float

    @classmethod
    def take(cls, workers: Sequence[subprocess.Popen[bytes]], sink: Sink, database: float) -> Cpu:
        """The counters now."""
        machine = psutil.cpu_times()
        return cls(
            sum(tree_cpu_seconds(p.pid) for p in workers if p.poll() is None),
            database,
            postgres_cpu_seconds(),
            sink.cpu_seconds(),
            sum(machine) - machine.idle - machine.iowait,
            time.monotonic(),
        )

    def since(self, before: Cpu) -> dict[str, float]:
        """CPU seconds spent between `before` and this moment; `others` is the machine's
        busy time not used by the workers, this database's backends or the sink (other
        work on the machine, PostgreSQL's shared processes, this bench's polling)."""
        postgres = sum(v - before.postgres.get(pid, 0.0) for pid, v in self.postgres.items())
        spent = {
            "workers": self.workers - before.workers,
            "postgres_this_database": self.database - before.database,
            "sink": self.sink - before.sink,
        }
        busy = self.machine_busy - before.machine_busy
        capacity = psutil.cpu_count() * (self.monotonic - before.monotonic)
        return {k: round(v, 2) for k, v in spent.items()} | {
            "postgres_all_processes": round(postgres, 2),
            "machine_busy": round(busy, 2),
            "machine_capacity": round(capacity, 2),
            "others": round(busy - sum(spent.values()), 2),
        }


@dataclass(slots=True)
class Progress:
    """When a round's milestones were reached (monotonic seconds) and the CPU then."""

    delivered_s: float = 0.0
    drained_s: float = 0.0
    before: Cpu | None = None
    delivered_cpu: Cpu | None = None
    drained_cpu: Cpu | None = None
    dead_jobs: int = 0


async def wait_done(
    url: str,
    campaign_id: int,
    workers: Sequence[subprocess.Popen[bytes]],
    sink: Sink,
    timeout_s: float,
) -> Progress:
    """Poll until the campaign is sent with no launch, dispatch or delivery job left, then
    until no job at all is due (the `Email Delivered` events applied)."""
    started = time.monotonic()
    progress = Progress(before=Cpu.take(workers, sink, 0.0))
    backends = Backends()
    connection = await asyncpg.connect(url)
    try:
        while True:
            await asyncio.sleep(POLL_S)
            elapsed = time.monotonic() - started
            if any(p.poll() is not None for p in workers):
                raise BenchError("a worker exited during the round (see its log)")
            if elapsed > timeout_s:
                raise BenchError(f"the round was not done after {timeout_s:.0f} s")
            await backends.sample(connection)
            state = await connection.fetchval(
                "SELECT state FROM campaigns WHERE id = $1", campaign_id
            )
            delivering, due, dead = await connection.fetchrow(_JOBS, DONE_KINDS)
            if progress.delivered_cpu is None and state in ("sent", "cancelled") and not delivering:
                progress.delivered_s = elapsed
                progress.delivered_cpu = Cpu.take(workers, sink, backends.seconds())
            if progress.delivered_cpu is not None and not due:
                progress.drained_s, progress.dead_jobs = elapsed, dead
                progress.drained_cpu = Cpu.take(workers, sink, backends.seconds())
                return progress
    finally:
        await connection.close()


async def delivery_figures(url: str, campaign_id: int, started: datetime) -> dict[str, Any]:
    """The round's figures from the messages and campaigns tables."""
    connection = await asyncpg.connect(url)
    try:
        origin = str(campaign_id)
        row = await connection.fetchrow(_MESSAGES, WORKSPACE_ID, origin)
        messages, profiles, delivered, first, last, p10, p90, queued_first, queued_last = row
        statuses = dict(await connection.fetch(_STATUSES, WORKSPACE_ID, origin))
        after_first = await connection.fetchval(_AFTER_FIRST, WORKSPACE_ID, origin, first)
        campaign = await connection.fetchrow(
            "SELECT state, audience_size, launched_at FROM campaigns WHERE id = $1", campaign_id
        )
        table_bytes, all_messages = await connection.fetchrow(
            "SELECT pg_total_relation_size('messages'), (SELECT count(*) FROM messages)"
        )
    finally:
        await connection.close()
    if not delivered:
        raise BenchError(f"no message of campaign {campaign_id} was delivered: {statuses}")
    window = (last - first).total_seconds()
    steady = (p90 - p10).total_seconds()
    return {
        "campaign_state": campaign["state"],
        "audience_size": campaign["audience_size"],
        "messages": messages,
        "distinct_profiles": profiles,
        "statuses": statuses,
        "seconds_to_first_delivered": round((first - started).total_seconds(), 2),
        "seconds_to_first_queued": round((queued_first - started).total_seconds(), 2),
        "seconds_queueing": round((queued_last - queued_first).total_seconds(), 2),
        "seconds_first_to_last_delivered": round(window, 2),
        "delivered_per_s": round(after_first / window, 1) if window else 0.0,
        "steady_delivered_per_s": round(0.8 * delivered / steady, 1) if steady else 0.0,
        "end_to_end_seconds": round((last - started).total_seconds(), 2),
        "end_to_end_per_s": round(delivered / (last - started).total_seconds(), 1),
        "messages_table_bytes_per_message": round(table_bytes / all_messages),
    }


def py_spy() -> str | None:
    """py-spy when `$BENCH_WORKER_PROFILE` names a folder: `$BENCH_PY_SPY`, else the one on
    the PATH or in the virtual environment."""
    if not os.environ.get("BENCH_WORKER_PROFILE"):
        return None
    spy = os.environ.get("BENCH_PY_SPY") or shutil.which("py-spy") or str(CLARION.parent / "py-spy")
    return spy if Path(spy).exists() else None


def source_version() -> str:
    """The checkout's commit, `+dirty` when `src/` has uncommitted changes: workers load
    the code as it is when they start, and others may commit meanwhile."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        return done.stdout.strip()

    return git("rev-parse", "--short", "HEAD") + (
        "+dirty" if git("status", "--porcelain", "--", "src") else ""
    )


def start_workers(
    count: int, env: dict[str, str], folder: Path, label: str
) -> list[subprocess.Popen[bytes]]:
    """`count` `clarion worker` processes, their stderr in `<folder>/worker-<label>-<n>.log`.
    When profiling, each runs under `py-spy record` (which cannot attach to a process it did
    not start here), writing `$BENCH_WORKER_PROFILE/<label>-<n>.txt` (collapsed stacks)."""
    processes = []
    spy = py_spy()
    for number in range(count):
        command = [str(CLARION), "worker"]
        if spy is not None:
            output = Path(os.environ["BENCH_WORKER_PROFILE"]) / f"{label}-{number}.txt"
            command = [spy, "record", "--format", "raw", "-o", str(output), "--", *command]
        with (folder / f"worker-{label}-{number}.log").open("wb") as errors:
            processes.append(
                subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=errors)
            )
    return processes


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    """Stop a worker; under py-spy, the worker first, so py-spy writes its profile."""
    with contextlib.suppress(psutil.NoSuchProcess):
        children = psutil.Process(process.pid).children()
        for child in children:
            child.terminate()
        if children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
    stop(process)


@dataclass(frozen=True, slots=True)
class Round:
    """One campaign delivered by `workers` worker processes to a segment of `expected`."""

    label: str
    workers: int
    segment: str
    expected: int


def run_round(
    spec: Round, url: str, folder: Path, env: dict[str, str], sink: Sink, setup: Setup
) -> dict[str, Any]:
    """Send a new campaign with no worker running, then deliver it with the workers."""
    segment_id, members = setup.segments[spec.segment]
    if members != spec.expected:
        raise BenchError(f"segment {spec.segment} holds {members}, not {spec.expected}")
    sink.command("reset")
    campaign_id = run_async(send_campaign(url, setup, f"Back in stock ({spec.label})", segment_id))
    log.info("%s: campaign %d sent to %d; starting %d worker(s)", spec.label, campaign_id,
             members, spec.workers)  # fmt: skip
    started, version = datetime.now(UTC), source_version()
    workers = start_workers(spec.workers, env, folder, spec.label)
    samplers = [RssSampler(p.pid) for p in workers]
    timeout = ROUND_TIMEOUT_BASE_S + ROUND_TIMEOUT_PER_MESSAGE_S * members
    try:
        with contextlib.ExitStack() as stack:
            for sampler in samplers:
                stack.enter_context(sampler)
            progress = run_async(wait_done(url, campaign_id, workers, sink, timeout))
    finally:
        for process in workers:
            stop_worker(process)
    figures = run_async(delivery_figures(url, campaign_id, started))
    figures |= round_figures(spec, progress, sink.command("status"), samplers, figures)
    figures["source"] = version
    log.info(
        "%s: %d delivered in %.1f s (%.0f/s; steady %.0f/s; end to end %.0f/s), sink %d,"
        " peak RSS %s MiB, CPU per message %s us",
        spec.label,
        figures["statuses"].get("delivered", 0),
        figures["seconds_first_to_last_delivered"],
        figures["delivered_per_s"],
        figures["steady_delivered_per_s"],
        figures["end_to_end_per_s"],
        figures["sink"]["accepted"],
        figures["peak_worker_rss_mib"],
        figures["cpu_us_per_message"],
    )
    return figures


def round_figures(
    spec: Round,
    progress: Progress,
    received: dict[str, Any],
    samplers: Sequence[RssSampler],
    figures: dict[str, Any],
) -> dict[str, Any]:
    """The sink's, the CPU and the memory figures of a round."""
    assert progress.before and progress.delivered_cpu and progress.drained_cpu
    cpu = progress.delivered_cpu.since(progress.before)
    per_message = {
        k: round(cpu[k] / spec.expected * 1e6)
        for k in ("workers", "postgres_this_database", "sink")
    }
    return {
        "workers": spec.workers,
        "seconds_until_no_job_due": round(progress.drained_s, 2),
        "dead_jobs": progress.dead_jobs,
        "sink": {k: received[k] for k in ("accepted", "distinct_recipients",
                                          "distinct_message_ids", "per_s")},
        "exactly_once": received["accepted"] == received["distinct_recipients"]
        == received["distinct_message_ids"] == figures["statuses"].get("delivered")
        == spec.expected,
        "cpu_seconds_until_delivered": cpu,
        "cpu_us_per_message": per_message,
        # What the CPU spent per message allows with every core for this work alone.
        "cpu_bound_per_s": round(psutil.cpu_count() * 1e6 / sum(per_message.values()), 1),
        "cpu_seconds_after_delivered": progress.drained_cpu.since(progress.delivered_cpu),
        "peak_worker_rss_mib": [round(s.peak_bytes / MIB, 1) for s in samplers],
    }  # fmt: skip


def settle(url: str, env: dict[str, str], folder: Path, sink: Sink) -> float:
    """Run one worker until no job is due (whatever the setup left); the seconds it took."""

    async def due() -> int:
        connection = await asyncpg.connect(url)
        try:
            return int((await connection.fetchrow(_JOBS, DONE_KINDS))[1])
        finally:
            await connection.close()

    if not run_async(due()):
        return 0.0
    started = time.monotonic()
    workers = start_workers(1, env, folder, "settle")
    try:
        while run_async(due()):
            if workers[0].poll() is not None:
                raise BenchError("the settling worker exited")
            time.sleep(1.0)
    finally:
        stop_worker(workers[0])
    return time.monotonic() - started


# --- Putting it together ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    """The command line."""

    recipients: int
    workers: list[int]
    renders: int
    blast_seconds: float
    seed: int
    quick: bool


def campaign_rounds(options: Options) -> list[Round]:
    """One worker at N/10, then each worker count at N."""
    small = options.recipients // COHORTS
    first = min(options.workers)
    return [Round(f"{first}-worker-{small}", first, "one_in_ten", small)] + [
        Round(f"{w}-worker-{options.recipients}", w, "everyone", options.recipients)
        for w in options.workers
    ]


def measure_campaigns(
    options: Options, folder: Path, sink: Sink, report: dict[str, Any]
) -> list[dict[str, Any]]:
    """Load the database, then deliver each round's campaign."""
    secret = secrets.token_urlsafe(48)
    with fresh_database("postgresql", folder) as url:
        migrate(url, folder)
        env = clarion_env(url, folder) | {
            "CLARION_SECRET_KEY": secret,
            "CLARION_PUBLIC_URL": PUBLIC_URL,
        }
        log.info("loading %d profiles", options.recipients)
        loaded = run_async(load_profiles(url, options.recipients, options.seed))
        setup = run_async(set_up(url, secret, sink.port))
        settled = settle(url, env, folder, sink)
        report["setup"] = {
            "load_seconds": round(loaded, 1),
            "segments_seconds": round(setup.seconds, 1),
            "settle_seconds": round(settled, 1),
            "segments": {k: members for k, (_, members) in setup.segments.items()},
        }
        log.info("loaded in %.1f s, segments in %.1f s", loaded, setup.seconds)
        return [
            {"label": spec.label} | run_round(spec, url, folder, env, sink, setup)
            for spec in campaign_rounds(options)
        ]


def targets(report: dict[str, Any], options: Options) -> dict[str, Any]:
    """Which targets the figures meet."""
    rounds = {r["label"]: r for r in report["campaigns"]}
    small, *large = campaign_rounds(options)
    first_large = rounds[large[0].label]
    small_peak = max(rounds[small.label]["peak_worker_rss_mib"])
    growth = max(first_large["peak_worker_rss_mib"]) / small_peak
    # The ceiling is the sink's rate for the campaign's own emails (docs/adr/0011); the
    # small-message rate is reported beside it.
    small_ceiling = report["ceiling"]["small"][f"{CEILING_CONNECTIONS}_connections"]["per_s"]
    ceiling = report["ceiling"]["campaign"][f"{CEILING_CONNECTIONS}_connections"]["per_s"]
    found: dict[str, Any] = {
        "ceiling_per_s": ceiling,
        "small_message_ceiling_per_s": small_ceiling,
        "rss_growth_n_over_n10": round(growth, 3),
        f"rss_flat_within_{TARGET_RSS_GROWTH}x": growth <= TARGET_RSS_GROWTH,
        "exactly_once_every_round": all(r["exactly_once"] for r in report["campaigns"]),
    }
    for spec in large:
        rate = rounds[spec.label]["delivered_per_s"]
        found[f"{spec.workers}_workers"] = {
            "share_of_ceiling": round(rate / ceiling, 3),
            "share_of_small_message_ceiling": round(rate / small_ceiling, 3),
            "at_least_half_the_ceiling": rate >= TARGET_CEILING_SHARE * ceiling,
            "at_least_1000_per_s": rate >= TARGET_DELIVERED_PER_S,
        }
    return found


def parse_args(argv: Sequence[str] | None) -> Options:
    """The options from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--recipients", type=int, help="the campaign's audience (100,000)")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 5,000 recipients, 5,000 renders"
    )
    parser.add_argument("--workers", default="1,2", help="worker processes per round (1,2)")
    parser.add_argument("--renders", type=int, help="emails made in process (20,000)")
    parser.add_argument(
        "--blast-seconds", type=float, help="seconds of each ceiling blast (5; quick 2)"
    )
    parser.add_argument("--seed", type=int, default=20261124, help="random seed of the profiles")
    args = parser.parse_args(argv)
    try:
        workers = sorted({int(part) for part in args.workers.split(",") if part.strip()})
    except ValueError:
        parser.error("--workers: comma-separated worker counts")
    recipients = args.recipients or (5_000 if args.quick else 100_000)
    renders = args.renders or (5_000 if args.quick else 20_000)
    blast_seconds = args.blast_seconds or (2.0 if args.quick else 5.0)
    if not workers or min(workers) < 1 or recipients < COHORTS or renders < 1:
        parser.error(f"--workers >= 1, --recipients >= {COHORTS}, --renders >= 1")
    return Options(recipients, workers, renders, blast_seconds, args.seed, args.quick)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print one JSON line on stdout."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")
    options = parse_args(argv)
    started = time.monotonic()
    report: dict[str, Any] = {
        "bench": "messaging",
        "machine": machine(),
        "load_average_before": [round(x, 2) for x in psutil.getloadavg()],
        "recipients": options.recipients,
        "workers": options.workers,
        "seed": options.seed,
        "audience_via": "campaign (segment)",
        "source": source_version(),
        "postgres_settings": run_async(postgres_settings()),
    }
    try:
        report["rendering"], campaign_emails = measure_rendering(options.renders, options.seed)
        with tempfile.TemporaryDirectory(prefix="clarion-messaging-") as tmp:
            folder = Path(tmp)
            with running_sink(folder) as sink:
                messages = {"small": blast_payloads(1_000), "campaign": campaign_emails}
                report["ceiling"] = measure_ceiling(sink, options.blast_seconds, messages)
                report["campaigns"] = measure_campaigns(options, folder, sink, report)
    except BenchError as exc:
        log.error("benchmark failed: %s", exc)
        return 1
    report["targets"] = targets(report, options)
    report["load_average_after"] = [round(x, 2) for x in psutil.getloadavg()]
    report["bench_peak_rss_mib"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
    )
    report["seconds"] = round(time.monotonic() - started, 1)
    sys.stdout.write(orjson.dumps(report).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
