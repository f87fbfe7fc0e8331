"""Per-channel send rates: a token bucket per channel, shared by every worker through Redis
when `CLARION_REDIS_URL` is set, else kept in the process (then each worker process gets
the full rate: run one worker, or configure Redis, when a provider's limit is strict).

`wait` reserves one send and says how long to sleep before making it, so concurrent
senders queue behind each other instead of all retrying at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from redis.asyncio import Redis

# A bucket holds at most one second of sends: a burst never exceeds the rate by more.
_BURST_SECONDS = 1.0
# KEYS[1] the bucket; ARGV: rate per second, capacity, now (s). Returns the wait in ms.
# The bucket may go negative: each caller reserves its token and waits its turn.
_RESERVE = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate) - 1
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 60)
if tokens >= 0 then return 0 end
return math.ceil(-tokens / rate * 1000)
"""


class RateLimiter(Protocol):
    """Reserves sends against a per-channel rate."""

    async def wait(self, channel_id: int, rate: float) -> float:
        """Reserve one send on the channel; the seconds to wait before making it."""
        ...


class LocalRateLimiter:
    """Token buckets in this process."""

    def __init__(self) -> None:
        self._buckets: dict[int, tuple[float, float]] = {}  # channel -> (tokens, at)
        self._lock = asyncio.Lock()

    async def wait(self, channel_id: int, rate: float) -> float:
        """Reserve one send on the channel; the seconds to wait before making it."""
        capacity = max(1.0, rate * _BURST_SECONDS)
        async with self._lock:
            now = time.monotonic()
            tokens, at = self._buckets.get(channel_id, (capacity, now))
            tokens = min(capacity, tokens + (now - at) * rate) - 1
            self._buckets[channel_id] = (tokens, now)
        return 0.0 if tokens >= 0 else -tokens / rate


class RedisRateLimiter:
    """Token buckets in Redis, one key per channel, shared by every process."""

    def __init__(self, redis: Redis, *, prefix: str = "clarion:rate:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._script = redis.register_script(_RESERVE)

    async def wait(self, channel_id: int, rate: float) -> float:
        """Reserve one send on the channel; the seconds to wait before making it."""
        capacity = max(1.0, rate * _BURST_SECONDS)
        # Redis' own clock: every process reads the same one.
        seconds, micros = await self._redis.time()
        now = seconds + micros / 1_000_000
        waited = await self._script(
            keys=[f"{self._prefix}{channel_id}"], args=[rate, capacity, now]
        )
        return int(waited) / 1000
