"""The database: engine, sessions, declarative base and portable column types.

One `Database` per process. SQLite is the embedded default and PostgreSQL the production
database; the same models and migrations serve both. On SQLite every write transaction starts
with `BEGIN IMMEDIATE`; sessions of one process queue on an asyncio lock, and everything else
(the event writer's thread, other processes) waits on SQLite's 30 s busy timeout, so
"database is locked" never reaches a user.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy import (
    ARRAY,
    JSON,
    BigInteger,
    ColumnElement,
    DateTime,
    Integer,
    MetaData,
    SQLColumnExpression,
    any_,
    bindparam,
    event,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, QueryableAttribute
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Commits checkpoint the WAL themselves only past this many pages (about 80 MB); below it,
# `checkpoint_continuously` copies pages back from another connection, off the commit path,
# often enough to keep the WAL (and its index, consulted on every page read) small.
SQLITE_AUTOCHECKPOINT_PAGES = 20_000
SQLITE_CHECKPOINT_INTERVAL_S = 0.25
# SQLite's planner reads statistics that only ANALYZE writes; without them it guessed
# "workspace_id = ? AND id IN (...)" to be a few rows and read the whole workspace through
# its index (190 ms a batch at a million events, against a lookup by key). ANALYZE samples
# this many rows an index (milliseconds at any size): enough to tell a column that splits
# the rows from one that does not.
SQLITE_ANALYSIS_LIMIT = 10_000
SQLITE_STATISTICS_INTERVAL_S = 3_600.0

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every Clarion table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on both databases (SQLite keeps no offset itself)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any] | None:
        """On SQLite, the stored text in one step (`sqlite_time`), instead of a naive UTC
        datetime that SQLite's `DATETIME` then formats: every row written binds several."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            if value is not None and value.tzinfo is None:
                raise ValueError("naive datetime given to a UTCDateTime column")
            return sqlite_time(value)

        return process


def sqlite_time(value: datetime | None) -> str | None:
    """A UTC datetime as `UTCDateTime` stores it on SQLite (naive, with microseconds), for
    statements written on a plain sqlite3 connection."""
    return None if value is None else _utc_text(value)


@lru_cache(maxsize=1_024)
def _utc_text(value: datetime) -> str:
    # Cached: the rows of one statement mostly bind the same instant (the run's `now`),
    # and the lookup costs a twentieth of the formatting. Equal instants in other zones
    # are equal keys, and have the same UTC text.
    return value.astimezone(UTC).isoformat(" ", "microseconds")[:26]


# JSON documents: JSONB on PostgreSQL (indexable, queryable), JSON text on SQLite.
# Python None is SQL NULL, never the JSON literal `null`.
JSONDocument = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
# 64-bit keys; SQLite only auto-increments an INTEGER PRIMARY KEY.
MAX_ROW_ID = 2**63 - 1  # the largest such key: a bigger number names no row
BigId = BigInteger().with_variant(Integer(), "sqlite")


def unindexed(column: SQLColumnExpression[int]) -> ColumnElement[int]:
    """`column` as a filter no index serves: rows found otherwise (by primary key) are
    checked against it. With no statistics (a table just filled, autovacuum behind)
    PostgreSQL took `workspace_id = ? AND id IN (...)` for a read of every row of the
    workspace through an index led by `workspace_id`."""
    return column + 0


def among(
    session: AsyncSession,
    column: ColumnElement[Any] | QueryableAttribute[Any],
    values: Collection[Any],
) -> ColumnElement[bool]:
    """`column IN values`. On PostgreSQL the values are bound as one array (`= ANY`): one
    statement whatever their number, prepared once per connection, where each length of an
    IN list is a statement of its own (written again at every execution, and prepared
    again on nearly every one: a run's lists have as many lengths as it has profiles)."""
    expression = column if isinstance(column, ColumnElement) else column.expression
    listed = list(values)
    if session.get_bind().dialect.name == "postgresql":
        return expression == any_(bindparam(None, listed, type_=ARRAY(expression.type)))
    return expression.in_(listed)


RowId = TypeVar("RowId", int, uuid.UUID)


async def hold_rows(
    session: AsyncSession, table: Any, *, workspace_id: int, ids: Iterable[RowId]
) -> set[RowId]:
    """On PostgreSQL, hold the workspace's rows of `table` (a model with `id` and
    `workspace_id`) among `ids` until the transaction ends (`FOR KEY SHARE`, in id order),
    against a delete or an archive that locks the row `FOR UPDATE` first: what starts using
    them (a journey published, a campaign sent, a timeline row written) takes this before
    it checks them, so one of the two waits for the other and then sees it. An edit that
    keeps the row's keys neither waits for it nor holds it up. The ids held: those not
    deleted meanwhile. SQLite has one writer at a time: nothing to hold there, and every id
    is taken as present (the caller read them in its write transaction)."""
    wanted = sorted(set(ids))
    if not wanted or session.get_bind().dialect.name != "postgresql":
        return set(wanted)
    held = await session.scalars(
        select(table.id)
        .where(unindexed(table.workspace_id) == workspace_id, among(session, table.id, wanted))
        .order_by(table.id)
        .with_for_update(read=True, key_share=True)
    )
    return set(held)


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def async_url(url: str) -> str:
    """The SQLAlchemy URL with the async driver Clarion uses for its database."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return str(parsed.set(drivername="sqlite+aiosqlite"))
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database {backend!r}: use SQLite or PostgreSQL")


class Database:
    """The process's engine and session factories; writes go through `write_session()`."""

    def __init__(self, url: str, *, pool_size: int = 10, sqlite_synchronous: str = "FULL") -> None:
        self.url = async_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite:
            database = make_url(self.url).database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_async_engine(
                self.url,
                json_serializer=_json_dumps,
                json_deserializer=orjson.loads,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            )
            _configure_sqlite(self.engine, synchronous=sqlite_synchronous)
        else:
            self.engine = create_async_engine(
                self.url,
                json_serializer=_json_dumps,
                json_deserializer=orjson.loads,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_pre_ping=True,
            )
        self._sqlite_path = make_url(self.url).database if self.is_sqlite else None
        self._sqlite_synchronous = sqlite_synchronous
        self._write_engine = self.engine.execution_options(clarion_write=True)
        self._read_sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = async_sessionmaker(self._write_engine, expire_on_commit=False)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self.engine.dialect.name

    @asynccontextmanager
    async def read_session(self) -> AsyncIterator[AsyncSession]:
        """A session for reading; it never writes and is closed on exit."""
        async with self._read_sessions() as session:
            yield session

    @asynccontextmanager
    async def write_session(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction may write; the caller commits, an error rolls back."""
        if self._write_lock is None:
            async with self._write_sessions() as session:
                yield session
            return
        async with self._write_lock, self._write_sessions() as session:
            yield session

    def open_sqlite_writer(self) -> sqlite3.Connection:
        """A plain sqlite3 connection configured like the pool's, for one dedicated writer
        thread (the event log's hot path); the caller closes it."""
        if self._sqlite_path is None:
            raise RuntimeError("open_sqlite_writer is for SQLite databases")
        connection = sqlite3.connect(
            self._sqlite_path,
            isolation_level=None,
            check_same_thread=False,
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
        )
        for pragma in _sqlite_pragmas(self._sqlite_synchronous):
            connection.execute(pragma)
        return connection

    async def checkpoint_continuously(self) -> None:
        """On SQLite, copy the WAL back into the database four times a second until cancelled.

        A passive checkpoint waits for no one, so writers never stall on it; it keeps the WAL
        short without making every Nth commit pay for the copy.
        """
        if not self.is_sqlite:
            return
        while True:
            await asyncio.sleep(SQLITE_CHECKPOINT_INTERVAL_S)
            try:
                async with self.engine.connect() as connection:
                    await connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            except Exception:  # a failed checkpoint is retried at the next tick
                log.warning("WAL checkpoint failed", exc_info=True)

    async def refresh_statistics(self) -> None:
        """On SQLite, write fresh planner statistics (sampled: see `SQLITE_ANALYSIS_LIMIT`)
        and let the pool's connections go, as each reads them once when it opens; on
        PostgreSQL nothing (autovacuum keeps them)."""
        if self._sqlite_path in (None, "", ":memory:"):
            return  # PostgreSQL; or a database that lives in its only connection
        async with self.write_session() as session:
            await session.execute(text("ANALYZE"))
            await session.commit()
        # Connections out at the moment are closed when they come back.
        await self.engine.dispose()

    async def keep_statistics_fresh(self) -> None:
        """On SQLite, refresh the planner statistics every `SQLITE_STATISTICS_INTERVAL_S`
        until cancelled, as the tables grow."""
        if not self.is_sqlite:
            return
        while True:
            await asyncio.sleep(SQLITE_STATISTICS_INTERVAL_S)
            try:
                await self.refresh_statistics()
            except Exception:  # retried at the next interval
                log.warning("refreshing SQLite statistics failed", exc_info=True)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def _sqlite_pragmas(synchronous: str) -> tuple[str, ...]:
    return (
        "PRAGMA journal_mode=WAL",
        f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
        f"PRAGMA synchronous={synchronous}",
        "PRAGMA foreign_keys=ON",
        f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES}",
        f"PRAGMA analysis_limit={SQLITE_ANALYSIS_LIMIT}",
    )


def _configure_sqlite(engine: AsyncEngine, *, synchronous: str) -> None:
    """WAL, a busy timeout, foreign keys, and BEGIN IMMEDIATE for write transactions."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in _sqlite_pragmas(synchronous):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        write = connection.get_execution_options().get("clarion_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
