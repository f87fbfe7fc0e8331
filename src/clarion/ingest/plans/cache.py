"""The workspaces' plans, compiled and cached in process (and in Redis when configured).

Staleness bounds:
- Without Redis, a process caches a workspace's plans for `LOCAL_TTL_S` (5 s). A change made
  through a process is seen by that process at once (`announce_change` drops its copies);
  other processes see it within 5 s.
- With Redis (`CLARION_REDIS_URL`), the compiled configuration is also kept in Redis under a
  key per workspace and generation, and a change bumps the generation and publishes the
  workspace id on a channel every process subscribes to before its first load: every process
  drops its copy as soon as the message arrives (milliseconds). Local copies then live up to
  `LOCAL_TTL_WITH_REDIS_S` (60 s), which bounds staleness if a message is ever lost; a
  subscriber that loses its connection drops everything it holds. When Redis fails, loads go
  to the database and the 5 s bound applies.

Validators are compiled once per (plan id, version), however often the workspace reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from clarion.core.clock import Clock
from clarion.core.database import Database
from clarion.core.settings import Settings
from clarion.ingest.plans import service
from clarion.ingest.plans.definitions import CompiledPlan, compile_plan
from clarion.ingest.plans.secrets import HeaderVault

log = logging.getLogger(__name__)

LOCAL_TTL_S = 5.0
LOCAL_TTL_WITH_REDIS_S = 60.0
REDIS_TTL_S = 3600
_COMPILED_PLANS = 1000
_LIVE: weakref.WeakSet[PlanCache] = weakref.WeakSet()


@dataclass(frozen=True, slots=True)
class WorkspacePlans:
    """A workspace's compiled plans and which one each source uses."""

    plans: dict[int, CompiledPlan] = field(default_factory=dict)
    sources: dict[uuid.UUID, int] = field(default_factory=dict)
    default: int | None = None

    def plan_for(self, source_id: uuid.UUID) -> CompiledPlan | None:
        """The source's plan, else the default plan, else None."""
        plan_id = self.sources.get(source_id, self.default)
        return None if plan_id is None else self.plans.get(plan_id)


def namespace(settings: Settings) -> str:
    """Redis key prefix: processes on the same database share it, others never collide."""
    digest = hashlib.sha256(settings.database_url.encode()).hexdigest()[:12]
    return f"clarion:{digest}:tracking-plans"


class PlanCache:
    """Compiled plans per workspace for one process; see the module docstring for bounds."""

    def __init__(self, database: Database, settings: Settings, clock: Clock) -> None:
        self._database = database
        self._clock = clock
        self._headers = HeaderVault(settings.secret_keys())
        self._namespace = namespace(settings)
        self._redis: aioredis.Redis | None = None
        if settings.redis_url:
            self._redis = aioredis.Redis.from_url(
                settings.redis_url, socket_timeout=2, socket_connect_timeout=2
            )
        self._ttl = timedelta(seconds=LOCAL_TTL_WITH_REDIS_S if self._redis else LOCAL_TTL_S)
        self._entries: dict[int, tuple[datetime, WorkspacePlans]] = {}
        self._generations: dict[int, int] = {}
        self._loading: dict[int, asyncio.Task[WorkspacePlans]] = {}
        self._compiled: dict[tuple[int, int], CompiledPlan] = {}
        self._pubsub: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Lock()
        self._retry_at: datetime | None = None
        _LIVE.add(self)

    @property
    def channel(self) -> str:
        """The pub/sub channel change announcements travel on."""
        return f"{self._namespace}:changed"

    async def get(self, workspace_id: int) -> WorkspacePlans:
        """The workspace's plans, from this process's cache when fresh."""
        entry = self._entries.get(workspace_id)
        if entry is not None and entry[0] > self._clock.now():
            return entry[1]
        await self._listen()
        task = self._loading.get(workspace_id)
        if task is None:
            task = asyncio.ensure_future(self._load(workspace_id))
            self._loading[workspace_id] = task
            task.add_done_callback(lambda _: self._loading.pop(workspace_id, None))
        return await asyncio.shield(task)

    def cached(self, workspace_id: int) -> bool:
        """Whether a fresh copy of the workspace's plans is held (for tests and metrics)."""
        entry = self._entries.get(workspace_id)
        return entry is not None and entry[0] > self._clock.now()

    def drop(self, workspace_id: int) -> None:
        """Forget the workspace's plans; a load already under way will not be kept."""
        self._entries.pop(workspace_id, None)
        self._generations[workspace_id] = self._generations.get(workspace_id, 0) + 1

    def drop_all(self) -> None:
        """Forget every workspace's plans."""
        for workspace_id in list(self._entries):
            self.drop(workspace_id)
        for workspace_id in list(self._loading):
            self.drop(workspace_id)

    async def announce(self, workspace_id: int) -> None:
        """Drop this cache's copy at once and, with Redis, tell every other process."""
        self.drop(workspace_id)
        if self._redis is None:
            return
        try:
            await self._redis.incr(self._key(workspace_id, "gen"))
            await self._redis.publish(self.channel, str(workspace_id))
        except RedisError:  # committed already; other processes catch up within their TTL
            log.warning("could not announce a tracking plan change over Redis", exc_info=True)

    async def _load(self, workspace_id: int) -> WorkspacePlans:
        generation = self._generations.get(workspace_id, 0)
        snapshot = await self._snapshot(workspace_id)
        plans = self._build(snapshot)
        if self._generations.get(workspace_id, 0) == generation:
            # Unsubscribed (no Redis, or Redis down), nothing tells us of changes: short TTL.
            ttl = self._ttl if self._listener is not None else timedelta(seconds=LOCAL_TTL_S)
            self._entries[workspace_id] = (self._clock.now() + ttl, plans)
        return plans

    async def _snapshot(self, workspace_id: int) -> dict[str, Any]:
        config_key = None
        if self._redis is not None:
            try:
                generation = int(await self._redis.get(self._key(workspace_id, "gen")) or 0)
                config_key = self._key(workspace_id, f"config:{generation}")
                raw = await self._redis.get(config_key)
                if raw is not None:
                    snapshot: dict[str, Any] = orjson.loads(raw)
                    return snapshot
            except (RedisError, ValueError):
                log.warning(
                    "tracking plans: Redis unavailable, reading the database", exc_info=True
                )
                config_key = None
        async with self._database.read_session() as session:
            snapshot = await service.load_snapshot(session, workspace_id=workspace_id)
        if self._redis is not None and config_key is not None:
            try:
                await self._redis.set(config_key, orjson.dumps(snapshot), ex=REDIS_TTL_S)
            except RedisError:
                log.warning("tracking plans: could not cache in Redis", exc_info=True)
        return snapshot

    def _build(self, snapshot: dict[str, Any]) -> WorkspacePlans:
        plans = {}
        for raw in snapshot["plans"]:
            key = (int(raw["id"]), int(raw["version"]))
            compiled = self._compiled.get(key)
            if compiled is None:
                if len(self._compiled) >= _COMPILED_PLANS:
                    self._compiled.clear()
                compiled = compile_plan(
                    plan_id=key[0],
                    version=key[1],
                    unplanned=raw["unplanned_events"],
                    invalid=raw["invalid_events"],
                    events=raw["events"],
                    headers=self._headers,
                )
                self._compiled[key] = compiled
            plans[key[0]] = compiled
        sources = {uuid.UUID(source): int(plan) for source, plan in snapshot["sources"].items()}
        return WorkspacePlans(plans, sources, snapshot["default"])

    def _key(self, workspace_id: int, suffix: str) -> str:
        return f"{self._namespace}:{workspace_id}:{suffix}"

    async def _listen(self) -> None:
        """Subscribe (once, before the first load) to change announcements."""
        if self._redis is None or self._listener is not None:
            return
        if self._retry_at is not None and self._clock.now() < self._retry_at:
            return  # Redis was down a moment ago: do not make every load wait on it
        async with self._subscribed:
            if self._listener is not None:
                return
            try:
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(self.channel)
                # Wait for the confirmation: from here on no announcement can be missed.
                while (await pubsub.get_message(timeout=2.0)) is None:
                    pass
            except (RedisError, OSError):
                log.warning("tracking plans: cannot subscribe to changes", exc_info=True)
                self._retry_at = self._clock.now() + timedelta(seconds=LOCAL_TTL_S)
                return
            self._pubsub = pubsub
            self._listener = asyncio.create_task(self._receive())

    async def _receive(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=1.0
                )
                if message is not None and message["type"] == "message":
                    self.drop(int(message["data"]))
            except (RedisError, OSError, ValueError):
                # Announcements may have been missed while disconnected: start afresh.
                log.warning("tracking plans: change subscription interrupted", exc_info=True)
                self.drop_all()
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        """Stop listening and close the Redis connections."""
        _LIVE.discard(self)
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._pubsub is not None:
            await self._pubsub.aclose()
        if self._redis is not None:
            await self._redis.aclose()


async def announce_change(settings: Settings, workspace_id: int) -> None:
    """After a committed change to a workspace's plans: drop this process's copies at once
    and, with Redis, tell the other processes."""
    local = [cache for cache in list(_LIVE) if cache._namespace == namespace(settings)]
    for cache in local:
        cache.drop(workspace_id)
    if not settings.redis_url:
        return
    for cache in local:
        if cache._redis is not None:
            await cache.announce(workspace_id)
            return
    client = aioredis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    prefix = namespace(settings)
    try:
        await client.incr(f"{prefix}:{workspace_id}:gen")
        await client.publish(f"{prefix}:changed", str(workspace_id))
    except RedisError:
        log.warning("could not announce a tracking plan change over Redis", exc_info=True)
    finally:
        await client.aclose()
