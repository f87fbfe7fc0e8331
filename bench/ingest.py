"""Ingestion benchmark: how many Segment events per second one `clarion serve` process accepts.

For each database (SQLite, PostgreSQL) it starts a real server on a fresh, empty database,
sends pre-built `POST /v1/batch` bodies of 100 e-commerce messages (as a Segment library
sends them) over a few keep-alive connections, and measures accepted events per second,
request latency (p50, p99) and the server's peak RSS. It then measures a ceiling on the same
machine: the same rows, built by Clarion's own normalization, inserted straight into another
fresh database in transactions of 1,000 rows, bypassing HTTP. The target is >= 10,000
accepted events/s per database with p99 < 100 ms.

Exactly one JSON line goes to stdout; progress goes to stderr.

    .venv/bin/python bench/ingest.py [--events N] [--concurrency C] [--databases sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped, unused-ignore]
import httpx
import orjson
import psutil  # type: ignore[import-untyped, unused-ignore]
import uvloop
from sqlalchemy import text

from clarion.core.database import Database
from clarion.ingest.service import Shared, accept_messages
from clarion.ingest.writer import EventWriter
from clarion.workspaces import models as _workspace_models  # noqa: F401 - maps `workspaces`

log = logging.getLogger("bench.ingest")
T = TypeVar("T")

BATCH_SIZE = 100
WARMUP_BATCHES = 20
CEILING_TRANSACTION_ROWS = 1_000
TARGET_EVENTS_PER_S = 10_000
TARGET_P99_MS = 100.0
WRITE_KEY = "bench-write-key-0001"
# The server's and the ceiling's SQLite durability: FULL (Clarion's default) or NORMAL.
SQLITE_SYNCHRONOUS = os.environ.get("BENCH_SQLITE_SYNCHRONOUS", "FULL")
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql://postgres@127.0.0.1:5432/{name}"
CLARION = Path(sys.executable).parent / "clarion"
HEALTH_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
RSS_INTERVAL_S = 0.05
MIB = 1024 * 1024

Send = Callable[[bytes], Awaitable[tuple[int, bytes]]]


class BenchError(RuntimeError):
    """The benchmark cannot go on: a server that will not start, or a response not expected."""


# --- Request bodies ----------------------------------------------------------------------------

USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/129.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6_1) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.6 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0",
)
LOCALES = ("en-US", "en-GB", "fr-FR", "de-DE", "es-ES", "pt-BR", "nl-NL")
TIMEZONES = ("America/New_York", "Europe/London", "Europe/Paris", "Europe/Berlin", "Asia/Tokyo")
CATEGORIES = ("Shoes", "Outerwear", "Accessories", "Kitchen", "Books", "Toys", "Garden")
ADJECTIVES = ("Classic", "Trail", "Organic", "Deluxe", "Compact", "Vintage", "Everyday")
NOUNS = ("Runner", "Parka", "Tote Bag", "Chef Knife", "Notebook", "Puzzle", "Planter")
FIRST_NAMES = ("Ada", "Grace", "Alan", "Linus", "Margaret", "Ken", "Barbara", "Dennis")
LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Thompson", "Liskov")
PAGES = (
    ("Home", "/"),
    ("Category", "/c/shoes"),
    ("Search", "/search?q=parka"),
    ("Cart", "/cart"),
    ("Product", "/p/trail-runner"),
)
LIBRARY = {"name": "analytics-python", "version": "2.3.3"}


@dataclass(frozen=True, slots=True)
class Product:
    """An item of the fake catalogue."""

    product_id: str
    sku: str
    name: str
    category: str
    price: float


class MessageFactory:
    """Deterministic (seeded) Segment messages of a small web shop."""

    def __init__(self, seed: int, now: datetime) -> None:
        self.rng = random.Random(seed)
        self.now = now
        self.products = [self._product(n) for n in range(500)]

    def _product(self, n: int) -> Product:
        category = self.rng.choice(CATEGORIES)
        name = f"{self.rng.choice(ADJECTIVES)} {self.rng.choice(NOUNS)}"
        price = round(self.rng.uniform(4.99, 249.99), 2)
        return Product(f"prod_{n:05d}", f"{category[:3].upper()}-{n:05d}", name, category, price)

    def uuid(self) -> str:
        """A version-4 UUID drawn from the seeded generator."""
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def message(self) -> dict[str, Any]:
        """One message: about 80 % track, 10 % identify, 10 % page."""
        roll = self.rng.random()
        if roll < 0.1:
            specific = self._identify()
        elif roll < 0.2:
            specific = self._page()
        else:
            specific = self._track()
        return {**self._common(), **specific}

    def _common(self) -> dict[str, Any]:
        rng = self.rng
        who = (
            {"userId": f"user_{rng.randrange(50_000):06d}"}
            if rng.random() < 0.7
            else {"anonymousId": self.uuid()}
        )
        timestamp = self.now - timedelta(milliseconds=rng.randrange(600_000))
        return {
            "messageId": self.uuid(),
            **who,
            "timestamp": _iso(timestamp),
            "context": {
                "library": LIBRARY,
                "ip": ".".join(str(rng.randrange(1, 224)) for _ in range(4)),
                "userAgent": rng.choice(USER_AGENTS),
                "locale": rng.choice(LOCALES),
                "timezone": rng.choice(TIMEZONES),
            },
            "integrations": {},
        }

    def _identify(self) -> dict[str, Any]:
        first, last = self.rng.choice(FIRST_NAMES), self.rng.choice(LAST_NAMES)
        number = self.rng.randrange(1_000_000)
        traits = {
            "email": f"{first.lower()}.{last.lower()}{number}@example.com",
            "name": f"{first} {last}",
            "plan": self.rng.choice(("free", "plus", "pro")),
            "phone": f"+1-555-{self.rng.randrange(10_000):04d}",
            "createdAt": _iso(self.now - timedelta(days=self.rng.randrange(1, 900))),
        }
        return {"type": "identify", "traits": traits}

    def _page(self) -> dict[str, Any]:
        name, path = self.rng.choice(PAGES)
        properties = {
            "path": path,
            "url": f"https://shop.example.com{path}",
            "title": f"{name} | Example Shop",
            "referrer": "https://www.google.com/",
        }
        return {"type": "page", "name": name, "properties": properties}

    def _track(self) -> dict[str, Any]:
        roll = self.rng.random()
        product = self.rng.choice(self.products)
        quantity = self.rng.randint(1, 3)
        properties: dict[str, Any] = {
            "product_id": product.product_id,
            "sku": product.sku,
            "name": product.name,
            "category": product.category,
            "price": product.price,
            "currency": "USD",
            "url": f"https://shop.example.com/p/{product.product_id}",
        }
        if roll < 0.55:
            event = "Product Viewed"
        elif roll < 0.82:
            event = "Product Added"
            properties |= {"quantity": quantity, "cart_id": self.uuid()[:13]}
        else:
            event = "Order Completed"
            revenue = round(product.price * quantity, 2)
            properties |= {
                "quantity": quantity,
                "order_id": f"ord_{self.rng.randrange(10**9):09d}",
                "revenue": revenue,
                "tax": round(revenue * 0.08, 2),
                "shipping": 4.99,
            }
        return {"type": "track", "event": event, "properties": properties}


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_bodies(factory: MessageFactory, events: int) -> list[bytes]:
    """`POST /v1/batch` bodies of up to BATCH_SIZE messages each, serialized up front."""
    bodies: list[bytes] = []
    sent_at = _iso(factory.now)
    for start in range(0, events, BATCH_SIZE):
        batch = [factory.message() for _ in range(min(BATCH_SIZE, events - start))]
        bodies.append(orjson.dumps({"batch": batch, "sentAt": sent_at}))
    return bodies


# --- Databases and the server ------------------------------------------------------------------


def run_async(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a fresh uvloop event loop (the loop the server uses too)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(work)


async def _pg_admin(statement: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextmanager
def fresh_database(kind: str, folder: Path) -> Iterator[str]:
    """The URL of a new, empty database of `kind`; a PostgreSQL one is dropped afterwards
    unless `$BENCH_KEEP_DATABASE` is set (its name is logged, for a look after the run)."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'clarion.db'}"
        return
    name = f"clarion_bench_{uuid.uuid4().hex[:12]}"
    run_async(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_URL.format(name=name)
    finally:
        if os.environ.get("BENCH_KEEP_DATABASE"):
            log.info("database %s kept", name)
        else:
            run_async(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def clarion_env(url: str, data_dir: Path) -> dict[str, str]:
    """The environment of a `clarion` command: ours, less any CLARION_* setting, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env |= {
        "CLARION_SQLITE_SYNCHRONOUS": SQLITE_SYNCHRONOUS,
        "CLARION_DATA_DIR": str(data_dir),
        "CLARION_DATABASE_URL": url,
        "CLARION_BOOTSTRAP_WRITE_KEY": WRITE_KEY,
        "CLARION_LOG_LEVEL": "warning",
    }
    return env


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(slots=True)
class Server:
    """A running `clarion serve` subprocess."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's output, for error messages."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def running_server(url: str, data_dir: Path, *, worker: bool = False) -> Iterator[Server]:
    """`clarion serve` on a free port, healthy; SIGTERM (then SIGKILL) on exit. Without
    `worker` it serves the API only, so ingestion is measured alone."""
    port = free_port()
    log_path = data_dir / "server.log"
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            [str(CLARION), "serve", "--port", str(port), "--worker" if worker else "--no-worker"],
            env=clarion_env(url, data_dir),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, port, log_path)
    try:
        wait_healthy(server)
        yield server
    finally:
        stop(process)


def wait_healthy(server: Server) -> None:
    """Poll `GET /healthz` until it answers 200; BenchError after HEALTH_TIMEOUT_S."""
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise BenchError(f"the server exited at start:\n{server.log_tail()}")
            try:
                if client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise BenchError(f"the server was not healthy after {HEALTH_TIMEOUT_S:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if the process still runs STOP_TIMEOUT_S later."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log.warning("the server ignored SIGTERM for %.0f s: killing it", STOP_TIMEOUT_S)
        process.kill()
        process.wait()


def migrate(url: str, data_dir: Path) -> None:
    """Create the schema with `clarion migrate`, as an operator would."""
    done = subprocess.run(
        [str(CLARION), "migrate"],
        env=clarion_env(url, data_dir),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"clarion migrate failed:\n{done.stdout}{done.stderr}")


# --- Measuring the server process --------------------------------------------------------------


class RssSampler:
    """Samples the RSS of a process and its children in a thread; keeps the peak.

    Listing children scans /proc (milliseconds of client CPU), so the list is refreshed only
    every CHILDREN_REFRESH_SAMPLES samples; reading the RSS of known processes is cheap.
    """

    CHILDREN_REFRESH_SAMPLES = 20

    def __init__(self, pid: int, interval_s: float = RSS_INTERVAL_S) -> None:
        self.process = psutil.Process(pid)
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        children: list[psutil.Process] = []
        samples = 0
        while not self._stop.is_set():
            try:
                if samples % self.CHILDREN_REFRESH_SAMPLES == 0:
                    children = self.process.children(recursive=True)
                rss = self.process.memory_info().rss
            except psutil.NoSuchProcess:
                return
            for child in children:
                with contextlib.suppress(psutil.NoSuchProcess):
                    rss += child.memory_info().rss
            self.peak_bytes = max(self.peak_bytes, rss)
            samples += 1
            self._stop.wait(self.interval_s)


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live children."""
    root = psutil.Process(pid)
    total = 0.0
    for member in [root, *root.children(recursive=True)]:
        times = member.cpu_times()
        total += times.user + times.system
    return total


def postgres_cpu_seconds() -> dict[int, float]:
    """CPU seconds of each PostgreSQL server process, by pid (read-only inspection)."""
    seconds: dict[int, float] = {}
    for process in psutil.process_iter(["name", "cpu_times"]):
        times = process.info["cpu_times"]
        if process.info["name"] in ("postgres", "postmaster") and times is not None:
            seconds[process.pid] = times.user + times.system
    return seconds


# --- The load ----------------------------------------------------------------------------------


def _authorization() -> str:
    return "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()


@asynccontextmanager
async def httpx_senders(port: int, concurrency: int) -> AsyncIterator[list[Send]]:
    """One send function per worker, sharing an httpx pool of `concurrency` connections."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": _authorization(), "Content-Type": "application/json"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, headers=headers, timeout=60.0
    ) as client:

        async def send(body: bytes) -> tuple[int, bytes]:
            response = await client.post("/v1/batch", content=body)
            return response.status_code, response.content

        yield [send] * concurrency


class RawConnection:
    """One HTTP/1.1 keep-alive connection speaking just what this benchmark needs.

    It writes a pre-formatted request and reads the status line, the headers and a
    Content-Length body: far less client CPU per request than a general HTTP client.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.prefix = (
            f"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: {_authorization()}\r\nContent-Type: application/json\r\n"
        ).encode()

    async def send(self, body: bytes) -> tuple[int, bytes]:
        """POST the body; the response's status and body."""
        self.writer.writelines((self.prefix, b"Content-Length: %d\r\n\r\n" % len(body), body))
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        length = None
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if length is None:
            raise BenchError(f"response without Content-Length: {head!r}")
        return int(status_line.split(" ", 2)[1]), await self.reader.readexactly(length)


@asynccontextmanager
async def raw_senders(port: int, concurrency: int) -> AsyncIterator[list[Send]]:
    """One send function per worker, each with its own raw keep-alive connection."""
    connections: list[RawConnection] = []
    try:
        for _ in range(concurrency):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            connections.append(RawConnection(reader, writer, port))
        yield [connection.send for connection in connections]
    finally:
        for connection in connections:
            connection.writer.close()


SENDERS = {"raw": raw_senders, "httpx": httpx_senders}


@dataclass(slots=True)
class Load:
    """What a run of requests did."""

    batches: Sequence[bytes]
    deadline: float
    next_index: int = 0
    sent: int = 0
    accepted: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def take(self) -> int | None:
        """The index of the next batch to send, or None when done or out of time."""
        if self.next_index >= len(self.batches) or time.perf_counter() >= self.deadline:
            return None
        self.next_index += 1
        return self.next_index - 1


def check_response(status: int, payload: bytes, expected: int) -> int:
    """The accepted count of a 200 answer accepting all `expected` messages; else BenchError."""
    try:
        answer = orjson.loads(payload)
    except orjson.JSONDecodeError:
        answer = None
    if (
        status != 200
        or not isinstance(answer, dict)
        or answer.get("success") is not True
        or answer.get("accepted") != expected
    ):
        raise BenchError(f"unexpected response {status}: {payload[:500]!r}")
    accepted: int = answer["accepted"]
    return accepted


async def _worker(send: Send, load: Load, counts: Sequence[int]) -> None:
    while (index := load.take()) is not None:
        started = time.perf_counter()
        try:
            status, payload = await send(load.batches[index])
        except (OSError, asyncio.IncompleteReadError, httpx.TransportError) as exc:
            raise BenchError(f"the connection to the server failed: {exc!r}") from exc
        load.latencies_ms.append((time.perf_counter() - started) * 1000)
        load.sent += counts[index]
        load.accepted += check_response(status, payload, counts[index])


def message_counts(batches: Sequence[bytes]) -> list[int]:
    """How many messages each body holds."""
    return [len(orjson.loads(body)["batch"]) for body in batches]


async def send_paced(port: int, bodies: Sequence[bytes], interval: float) -> float:
    """One batch body every `interval` seconds, on schedule, never bunched, over 4
    connections; every response must accept the whole batch. The seconds it took."""
    async with raw_senders(port, 4) as senders:
        free: asyncio.Queue[Any] = asyncio.Queue()
        for send in senders:
            free.put_nowait(send)
        start = time.monotonic()
        tasks = []

        async def post(body: bytes) -> None:
            send = await free.get()
            try:
                status, payload = await send(body)
                check_response(status, payload, len(orjson.loads(body)["batch"]))
            finally:
                free.put_nowait(send)

        for n, body in enumerate(bodies):
            await asyncio.sleep(max(0.0, start + n * interval - time.monotonic()))
            tasks.append(asyncio.create_task(post(body)))
        await asyncio.gather(*tasks)
        return time.monotonic() - start


async def send_batches(
    port: int, batches: Sequence[bytes], counts: Sequence[int], options: Options
) -> tuple[Load, float]:
    """Send every batch (or as many as fit in `--max-seconds`); the load and its wall seconds."""
    async with SENDERS[options.client](port, options.concurrency) as senders:
        load = Load(batches, deadline=time.perf_counter() + options.max_seconds)
        started = time.perf_counter()
        await asyncio.gather(*(_worker(send, load, counts) for send in senders))
        return load, time.perf_counter() - started


# --- The ceiling: the same rows, inserted directly ---------------------------------------------


def ceiling_chunks(batches: Sequence[bytes]) -> Iterator[tuple[list[Any], datetime | None]]:
    """The benchmark's messages in CEILING_TRANSACTION_ROWS chunks, with their batch sentAt."""
    chunk: list[Any] = []
    sent_at: datetime | None = None
    for body in batches:
        batch = orjson.loads(body)
        sent_at = datetime.fromisoformat(batch["sentAt"])
        chunk.extend(orjson.dumps(message) for message in batch["batch"])
        while len(chunk) >= CEILING_TRANSACTION_ROWS:
            yield chunk[:CEILING_TRANSACTION_ROWS], sent_at
            chunk = chunk[CEILING_TRANSACTION_ROWS:]
    if chunk:
        yield chunk, sent_at


async def insert_directly(
    url: str, batches: Sequence[bytes], max_seconds: float
) -> tuple[int, int, float]:
    """Insert the batches' rows in transactions of 1,000: rows offered, stored, seconds spent.

    Rows come from Clarion's own `accept_messages`, so the columns are exactly the server's;
    only `EventWriter.store` (insert and commit, one transaction per chunk) is timed, and it
    stops after `max_seconds` of them.
    """
    database = Database(url, sqlite_synchronous=SQLITE_SYNCHRONOUS)
    writer = EventWriter(database)
    try:
        async with database.read_session() as session:
            source = await session.scalar(text("SELECT id FROM sources LIMIT 1"))
        source_id = uuid.UUID(str(source)) if source is not None else uuid.uuid4()
        offered, stored, seconds = 0, 0, 0.0
        for messages, sent_at in ceiling_chunks(batches):
            if seconds >= max_seconds:
                log.warning("ceiling: stopped after %.0f s, %d rows inserted", seconds, stored)
                break
            accepted = accept_messages(
                messages,
                workspace_id=1,
                source_id=source_id,
                received_at=datetime.now(UTC),
                shared=Shared(sent_at=sent_at),
            )
            if accepted.rejected:
                raise BenchError(f"Clarion rejected messages: {accepted.rejected[:3]}")
            started = time.perf_counter()
            stored += await writer.store(accepted.rows)
            seconds += time.perf_counter() - started
            offered += len(accepted.rows)
        return offered, stored, seconds
    finally:
        await writer.close()
        await database.dispose()


def measure_ceiling(kind: str, folder: Path, batches: Sequence[bytes], max_seconds: float) -> float:
    """Rows per second inserted directly into a fresh, migrated database of `kind`."""
    with fresh_database(kind, folder) as url:
        migrate(url, folder)
        log.info("%s ceiling: inserting rows directly", kind)
        offered, stored, seconds = run_async(insert_directly(url, batches, max_seconds))
    if stored != offered:
        raise BenchError(f"{kind} ceiling stored {stored} of {offered} rows")
    log.info("%s ceiling: %d rows in %.2f s", kind, stored, seconds)
    return stored / seconds


# --- Putting it together -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    """The command line."""

    events: int
    concurrency: int
    databases: list[str]
    client: str
    max_seconds: float
    seed: int


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """CPU seconds used so far by this client, the server tree and PostgreSQL's processes."""

    client: float
    server: float
    postgres: dict[int, float]

    @classmethod
    def take(cls, server_pid: int) -> CpuSnapshot:
        """The counters now."""
        own = psutil.Process().cpu_times()
        return cls(own.user + own.system, tree_cpu_seconds(server_pid), postgres_cpu_seconds())

    def since(self, before: CpuSnapshot) -> dict[str, float]:
        """CPU seconds spent between `before` and this snapshot."""
        postgres = sum(v - before.postgres.get(pid, 0.0) for pid, v in self.postgres.items())
        return {
            "client": round(self.client - before.client, 2),
            "server": round(self.server - before.server, 2),
            "postgres": round(postgres, 2),
        }


def percentile(values: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * percent // 100))
    return ordered[int(rank) - 1]


def measure_server(
    kind: str, folder: Path, warmup: Sequence[bytes], batches: Sequence[bytes], options: Options
) -> dict[str, Any]:
    """Send the batches to a fresh server on a fresh database; the figures of the run."""
    counts = message_counts(batches)
    with fresh_database(kind, folder) as url, running_server(url, folder) as server:
        pid = server.process.pid
        log.info("%s: server %d on port %d is healthy; warming up", kind, pid, server.port)
        with RssSampler(pid) as rss:
            run_async(send_batches(server.port, warmup, message_counts(warmup), options))
            log.info("%s: sending %d events", kind, sum(counts))
            before = CpuSnapshot.take(pid)
            load, seconds = run_async(send_batches(server.port, batches, counts, options))
            cpu = CpuSnapshot.take(pid).since(before)
    if load.next_index < len(batches):
        log.warning(
            "%s: stopped after %.0f s, %d of %d batches sent",
            kind,
            seconds,
            load.next_index,
            len(batches),
        )
    log.info("%s: %d events accepted in %.2f s", kind, load.accepted, seconds)
    return {
        "events_sent": load.sent,
        "events_accepted": load.accepted,
        "requests": len(load.latencies_ms),
        "complete": load.sent == sum(counts),
        "seconds": round(seconds, 3),
        "accepted_events_per_s": round(load.accepted / seconds, 1),
        "request_latency_ms_p50": round(percentile(load.latencies_ms, 50), 2),
        "request_latency_ms_p99": round(percentile(load.latencies_ms, 99), 2),
        "peak_server_rss_mib": round(rss.peak_bytes / MIB, 1),
        "cpu_seconds": cpu,
    }


def measure(
    kind: str, warmup: Sequence[bytes], batches: Sequence[bytes], options: Options
) -> dict[str, Any]:
    """The server's figures on `kind`, its ceiling, and whether the target is met."""
    with tempfile.TemporaryDirectory(prefix=f"clarion-bench-{kind}-") as tmp:
        figures = measure_server(kind, Path(tmp) / "serve", warmup, batches, options)
        sent = batches[: figures["requests"]]  # the ceiling inserts the same messages
        ceiling = measure_ceiling(kind, Path(tmp) / "ceiling", sent, options.max_seconds)
    rate = figures["accepted_events_per_s"]
    figures |= {
        "bulk_insert_rows_per_s": round(ceiling, 1),
        "ratio_to_ceiling": round(rate / ceiling, 3),
        "target_met": rate >= TARGET_EVENTS_PER_S
        and figures["request_latency_ms_p99"] < TARGET_P99_MS,
    }
    return figures


POSTGRES_SETTINGS = (
    "autovacuum",
    "shared_buffers",
    "work_mem",
    "jit",
    "max_parallel_workers_per_gather",
)


async def postgres_settings() -> dict[str, str]:
    """The server settings the PostgreSQL figures depend on most. With `autovacuum` off,
    tables a benchmark grows have no planner statistics unless it analyzes them."""
    connection = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        return {name: str(await connection.fetchval(f"SHOW {name}")) for name in POSTGRES_SETTINGS}
    finally:
        await connection.close()


def machine() -> str:
    """`<cpu model>, <n> cores, <RAM>` of this machine."""
    model = "unknown CPU"
    with Path("/proc/cpuinfo").open() as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    cores = len(os.sched_getaffinity(0))
    return f"{model}, {cores} cores, {psutil.virtual_memory().total / 1024**3:.1f} GiB RAM"


def parse_args(argv: Sequence[str] | None) -> Options:
    """The options from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=200_000, help="events to send (200,000)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20,000 events")
    parser.add_argument("--concurrency", type=int, default=4, help="connections (4)")
    parser.add_argument(
        "--databases", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql"
    )
    parser.add_argument(
        "--client",
        choices=sorted(SENDERS),
        default="raw",
        help="raw: a minimal HTTP/1.1 client, cheapest on CPU (default); httpx",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=120.0,
        help="stop sending, and the ceiling's inserts, after this many seconds (120)",
    )
    parser.add_argument("--seed", type=int, default=20261122, help="random seed of the bodies")
    args = parser.parse_args(argv)
    databases = [name.strip() for name in args.databases.split(",") if name.strip()]
    unknown = set(databases) - {"sqlite", "postgresql"}
    if unknown or not databases:
        parser.error(f"--databases: unknown {', '.join(sorted(unknown)) or 'nothing'}")
    if args.events < 1 or args.concurrency < 1 or args.max_seconds <= 0:
        parser.error("--events, --concurrency and --max-seconds must be positive")
    events = 20_000 if args.quick else args.events
    return Options(events, args.concurrency, databases, args.client, args.max_seconds, args.seed)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print one JSON line on stdout."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    options = parse_args(argv)
    factory = MessageFactory(options.seed, datetime.now(UTC))
    warmup = build_bodies(factory, WARMUP_BATCHES * BATCH_SIZE)
    batches = build_bodies(factory, options.events)
    log.info(
        "%d bodies of %d messages built (%.1f MiB)",
        len(batches),
        BATCH_SIZE,
        sum(map(len, batches)) / MIB,
    )
    report: dict[str, Any] = {
        "bench": "ingest",
        "machine": machine(),
        "batch_size": BATCH_SIZE,
        "concurrency": options.concurrency,
        "client": options.client,
        "sqlite_synchronous": SQLITE_SYNCHRONOUS,
    }
    try:
        for kind in options.databases:
            report[kind] = measure(kind, warmup, batches, options)
    except BenchError as exc:
        log.error("benchmark failed: %s", exc)
        return 1
    sys.stdout.write(orjson.dumps(report).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
