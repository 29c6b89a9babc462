"""Provider budgets shared by the fleet: requests and tokens per minute, cooldowns, fair shares.

Real provider limits belong to the API key, not to a process, so every count lives where all
workers see it: in Redis (`BEACON_REDIS_URL`), or in the process when there is none (`beacon
dev`, the embedded worker). Before each provider call a worker takes, for that provider:

1. the end of any cooldown. A 429 from the provider stores, in one shared key, the time its
   Retry-After ends; no worker calls that provider before then (the whole fleet's rate for it
   drops to zero for the period the provider asked for, instead of every process finding out
   with a 429 of its own);
2. a call slot of `BEACON_<PROVIDER>_RPM`: the fleet's calls are spaced `60 / RPM` seconds
   apart, booked in one shared key (GCRA without burst, on the Redis server's clock).
   Providers enforce per-minute limits over shorter periods too, so neither a minute's budget
   spent in its first second nor a burst at the start of every second (which network jitter
   squeezes into less than a second on the provider's side) would be safe;
3. the call's estimated tokens of `BEACON_<PROVIDER>_TPM` (a `limits` sliding minute): the
   prompt at four characters a token, plus the mean answer length this process has seen from
   that provider;
4. the workspace's fair share. Workspaces that have probes waiting for a budgeted provider are
   registered (for `ACTIVE_SECONDS`, refreshed by every attempt and by run expansion); while
   several are, each may make `ceil(RPM / 60 / workspaces)` calls a second (a `limits` moving
   window per workspace). A probe of a workspace over its share is handed back to the queue
   for a moment rather than wait on a worker thread, so one workspace with 500 prompts cannot
   hold every thread while the others' messages wait behind its own.

A probe waits for its budget on the worker's event loop for `MAX_WAIT_SECONDS` at most; a
longer wait (a long Retry-After, a spent minute, a booked-out second) hands it back to the
queue with a delay, so that worker threads keep turning over and other workspaces' messages
(and run expansions, which register their workspaces) are not stuck behind a waiting backlog.
RPM defaults to a conservative `service.config.DEFAULT_PROVIDER_RPM` (60) per provider,
TPM to no budget; 0 means no budget: only the cooldowns apply. When the store cannot be reached the
call goes ahead (the provider's own 429s still pace the fleet) and a warning is logged.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as redis_async
from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

from service.config import PROVIDERS, Settings

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4
# Until a provider has answered, an answer is assumed to be this many tokens.
DEFAULT_ANSWER_TOKENS = 500
# A workspace stays registered as waiting this long after its last probe attempt.
ACTIVE_SECONDS = 5.0
# How stale this process's view of the shared cooldown and workspace count may be.
COOLDOWN_CACHE_SECONDS = 0.05
ACTIVE_CACHE_SECONDS = 0.5
# A probe holds its worker thread waiting for a budget this long at most, then is handed back.
MAX_WAIT_SECONDS = 2.0
# A probe over its workspace's share comes back after this long (spread, so they trickle).
DEFER_SECONDS = (0.5, 2.0)
# Sleeps between tries for a budget: at least this (Redis round trips), at most a second.
MIN_SLEEP_SECONDS = 0.01
STORE_TIMEOUT_SECONDS = 0.5
# Connections of a worker process to the shared state (calls wait for a free one).
STATE_CONNECTIONS = 32
WARNING_INTERVAL_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Budget:
    """One provider's configured limits; 0 means unlimited."""

    rpm: int = 0
    tpm: int = 0

    @property
    def per_second(self) -> int:
        return math.ceil(self.rpm / 60)


def budgets_of(settings: Settings) -> dict[str, Budget]:
    """Every provider's budget from `BEACON_<PROVIDER>_RPM` / `_TPM` (RPM 60 unless set)."""
    return {
        name: Budget(provider.rpm, provider.tpm) for name, provider in settings.providers.items()
    }


def defer_seconds() -> float:
    """How long a probe handed back waits in the queue (spread, so that they trickle back)."""
    return random.uniform(*DEFER_SECONDS)


def estimate_tokens(text: str) -> int:
    """Tokens of `text` at `CHARS_PER_TOKEN` characters each (at least one)."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


class SharedState(Protocol):
    """Cooldowns and waiting workspaces, as every worker of the fleet sees them."""

    async def cooldown_until(self, provider: str) -> float:
        """Epoch seconds until which `provider` is not to be called (0: no cooldown)."""
        ...

    async def cool_down(self, provider: str, until: float) -> None:
        """Extends `provider`'s cooldown to `until` (never shortens it)."""
        ...

    async def reserve(self, provider: str, interval: float, within: float) -> float | None:
        """Books `provider`'s next call slot, `interval` seconds after the previous one: the
        seconds until it, or None (and nothing booked) when it is further than `within`."""
        ...

    async def mark_waiting(self, provider: str, workspace_ids: list[str], now: float) -> None:
        """Registers the workspaces as waiting for `provider` for `ACTIVE_SECONDS`."""
        ...

    async def waiting(self, provider: str) -> float:
        """How many workspaces are registered as waiting for `provider`."""
        ...

    async def close(self) -> None: ...


class MemoryState:
    """`SharedState` of one process (no Redis)."""

    def __init__(self) -> None:
        self._cooldowns: dict[str, float] = {}
        self._next_slots: dict[str, float] = {}
        self._waiting: dict[str, dict[str, float]] = {name: {} for name in PROVIDERS}

    async def cooldown_until(self, provider: str) -> float:
        return self._cooldowns.get(provider, 0.0)

    async def cool_down(self, provider: str, until: float) -> None:
        self._cooldowns[provider] = max(until, self._cooldowns.get(provider, 0.0))

    async def reserve(self, provider: str, interval: float, within: float) -> float | None:
        now = time.monotonic()
        slot = max(now, self._next_slots.get(provider, 0.0))
        if slot - now > within:
            return None
        self._next_slots[provider] = slot + interval
        return slot - now

    async def mark_waiting(self, provider: str, workspace_ids: list[str], now: float) -> None:
        for workspace_id in workspace_ids:
            self._waiting[provider][workspace_id] = now + ACTIVE_SECONDS

    async def waiting(self, provider: str) -> float:
        now = time.time()
        entries = self._waiting[provider]
        for workspace_id in [w for w, expiry in entries.items() if expiry <= now]:
            del entries[workspace_id]
        return len(entries)

    async def close(self) -> None:
        return None


# Sets the cooldown to ARGV[1] (epoch ms) unless it already ends later; expires with it.
_COOL_DOWN = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[1])
end
return 0
"""


# Books the next call slot (GCRA with no burst): KEYS[1] holds the slot after the last one
# booked, in microseconds of the Redis server's clock (one clock for the whole fleet). ARGV:
# interval and horizon in microseconds. Returns the wait in microseconds, or -1 (not booked).
_RESERVE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
if slot < now then slot = now end
if slot - now > tonumber(ARGV[2]) then return -1 end
local after = slot + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%d', after), 'PX', math.ceil((after - now) / 1000) + 1000)
return slot - now
"""


class RedisState:
    """`SharedState` in Redis: a cooldown key and a sorted set of waiting workspaces (scored by
    the time their registration expires) per provider, under `<prefix>:budget:`."""

    def __init__(self, url: str, prefix: str) -> None:
        pool = redis_async.BlockingConnectionPool.from_url(
            url,
            max_connections=STATE_CONNECTIONS,
            timeout=STORE_TIMEOUT_SECONDS,
            socket_timeout=STORE_TIMEOUT_SECONDS,
            socket_connect_timeout=STORE_TIMEOUT_SECONDS,
        )
        self._client = redis_async.Redis(connection_pool=pool)
        self._prefix = f"{prefix}:budget"
        self._cool_down = self._client.register_script(_COOL_DOWN)
        self._reserve = self._client.register_script(_RESERVE)

    def _key(self, provider: str, what: str) -> str:
        return f"{self._prefix}:{provider}:{what}"

    async def cooldown_until(self, provider: str) -> float:
        value = await self._client.get(self._key(provider, "cooldown"))
        return int(value) / 1000 if value else 0.0

    async def cool_down(self, provider: str, until: float) -> None:
        await self._cool_down(keys=[self._key(provider, "cooldown")], args=[round(until * 1000)])

    async def reserve(self, provider: str, interval: float, within: float) -> float | None:
        micros = await self._reserve(
            keys=[self._key(provider, "next")],
            args=[round(interval * 1e6), round(max(within, 0.0) * 1e6)],
        )
        return None if int(micros) < 0 else int(micros) / 1e6

    async def mark_waiting(self, provider: str, workspace_ids: list[str], now: float) -> None:
        key = self._key(provider, "waiting")
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.zadd(key, dict.fromkeys(workspace_ids, now + ACTIVE_SECONDS))
            pipe.expire(key, math.ceil(ACTIVE_SECONDS) * 2)
            await pipe.execute()

    async def waiting(self, provider: str) -> float:
        now = time.time()
        key = self._key(provider, "waiting")
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zcard(key)
            _, count = await pipe.execute()
        return float(count)

    async def close(self) -> None:
        await self._client.aclose()


class ProviderBudgets:
    """The budgets of one worker process's provider calls; see the module docstring.

    `acquire` before a call (None: go ahead; a number: hand the probe back for that many
    seconds), `spent` after an answer, `throttled` on a 429.
    """

    def __init__(
        self,
        budgets: Mapping[str, Budget],
        storage: Storage,
        state: SharedState,
    ) -> None:
        self.budgets = dict(budgets)
        self._state = state
        self._moving = MovingWindowRateLimiter(storage)
        self._sliding = SlidingWindowCounterRateLimiter(storage)
        # Seconds between two calls of the fleet; the workspace shares count against the
        # calls of a second.
        self._intervals: dict[str, float] = {}
        self._shares: dict[str, RateLimitItem] = {}
        self._tokens: dict[str, RateLimitItem] = {}
        for name, budget in self.budgets.items():
            if budget.rpm > 0:
                self._intervals[name] = 60.0 / budget.rpm
                self._shares[name] = RateLimitItemPerSecond(
                    budget.per_second, 1, namespace=f"share:{name}"
                )
            if budget.tpm > 0:
                self._tokens[name] = RateLimitItemPerMinute(budget.tpm, 1, namespace=f"tpm:{name}")
        # Shared values by (kind, provider): (monotonic time read, value), and reads under way.
        self._cache: dict[tuple[str, str], tuple[float, float]] = {}
        self._reads: dict[tuple[str, str], asyncio.Future[float]] = {}
        self._marked: dict[tuple[str, str], float] = {}
        self._answer_tokens: dict[str, tuple[int, int]] = {}
        self._warned = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderBudgets:
        """Counted in Redis when `settings.redis_url` is set, in this process otherwise."""
        if not settings.redis_url:
            return cls(budgets_of(settings), MemoryStorage(), MemoryState())
        prefix = f"{settings.rate_limit_key_prefix}:budget"
        storage = RedisStorage(
            "async+" + settings.redis_url,
            implementation="redispy",
            wrap_exceptions=True,
            key_prefix=prefix,
            socket_timeout=STORE_TIMEOUT_SECONDS,
            socket_connect_timeout=STORE_TIMEOUT_SECONDS,
        )
        return cls(
            budgets_of(settings),
            storage,
            RedisState(settings.redis_url, settings.rate_limit_key_prefix),
        )

    async def close(self) -> None:
        await self._state.close()

    def fair(self, provider: str) -> bool:
        """Whether `provider`'s calls are shared out between workspaces (it has an RPM)."""
        return provider in self._intervals

    async def waiting_for(self, provider: str, workspace_ids: list[str]) -> None:
        """Registers workspaces whose probes are about to wait for `provider` (run expansion)."""
        if not self.fair(provider) or not workspace_ids:
            return
        try:
            await self._state.mark_waiting(provider, workspace_ids, time.time())
        except Exception as exc:
            self._unavailable(exc)

    async def acquire(self, provider: str, workspace_id: str, prompt: str) -> float | None:
        """Waits for `provider`'s cooldown, budget and the workspace's share; None when the
        call may go ahead, else the seconds after which to try the probe again."""
        try:
            return await self._acquire(provider, workspace_id, prompt)
        except Exception as exc:  # the store is unreachable: limits wraps its errors
            self._unavailable(exc)
            return None

    async def _acquire(self, provider: str, workspace_id: str, prompt: str) -> float | None:
        interval = self._intervals.get(provider)
        share_item = self._shares.get(provider)
        tokens_item = self._tokens.get(provider)
        tokens = min(
            estimate_tokens(prompt) + self._answer_estimate(provider),
            tokens_item.amount if tokens_item else 0,
        )
        if share_item is not None:
            await self._mark(provider, workspace_id)
        need_tokens = tokens_item is not None
        waited = 0.0
        while True:
            wait = await self._cooldown_wait(provider)
            if wait <= 0 and need_tokens and tokens_item is not None:
                if await self._sliding.hit(tokens_item, cost=tokens):
                    need_tokens = False
                else:
                    wait = await self._reset_in(tokens_item)
            if wait <= 0 and interval is not None and share_item is not None:
                if await self._over_share(provider, workspace_id, share_item):
                    return defer_seconds()
                slot = await self._state.reserve(provider, interval, MAX_WAIT_SECONDS - waited)
                if slot is None:
                    return defer_seconds()
                await self._moving.hit(share_item, workspace_id)
                if slot > 0:
                    await asyncio.sleep(slot)
                return None
            if wait <= 0:
                return None
            if waited + wait > MAX_WAIT_SECONDS:
                return max(wait, defer_seconds())
            waited += wait
            await asyncio.sleep(wait)

    async def _cooldown_wait(self, provider: str) -> float:
        until = await self._shared(
            "cooldown", provider, COOLDOWN_CACHE_SECONDS, self._state.cooldown_until
        )
        now = time.time()
        if until <= now:
            return 0.0
        # Spread the fleet's restart over a moment rather than all at the same instant.
        return until - now + random.uniform(0.0, 0.2)

    async def _shared(
        self,
        kind: str,
        provider: str,
        max_age: float,
        read: Callable[[str], Awaitable[float]],
    ) -> float:
        """A shared value as of `max_age` seconds ago at most, read once for all the calls
        that want it meanwhile (thousands of calls in flight must not each open a read)."""
        key = (kind, provider)
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] <= max_age:
            return cached[1]
        task = self._reads.get(key)
        if task is None or task.done():
            task = asyncio.ensure_future(self._read(key, read))
            self._reads[key] = task
        return await asyncio.shield(task)

    async def _read(self, key: tuple[str, str], read: Callable[[str], Awaitable[float]]) -> float:
        value = await read(key[1])
        self._cache[key] = (time.monotonic(), value)
        return value

    async def _over_share(self, provider: str, workspace_id: str, item: RateLimitItem) -> bool:
        workspaces = await self._shared(
            "waiting", provider, ACTIVE_CACHE_SECONDS, self._state.waiting
        )
        if workspaces <= 1:
            return False
        share = math.ceil(item.amount / workspaces)
        stats = await self._moving.get_window_stats(item, workspace_id)
        return item.amount - stats.remaining >= share

    async def _mark(self, provider: str, workspace_id: str) -> None:
        now = time.time()
        key = (provider, workspace_id)
        if now - self._marked.get(key, 0.0) < 1.0:
            return
        if len(self._marked) > 10_000:
            self._marked.clear()
        self._marked[key] = now
        await self._state.mark_waiting(provider, [workspace_id], now)

    async def _reset_in(self, item: RateLimitItem) -> float:
        stats = await self._sliding.get_window_stats(item)
        wait = stats.reset_time - time.time()
        return min(max(wait, MIN_SLEEP_SECONDS), float(item.get_expiry())) + random.uniform(
            0.0, MIN_SLEEP_SECONDS
        )

    def spent(self, provider: str, answer_text: str) -> None:
        """Learns the length of `provider`'s answers (the token estimate of the next calls)."""
        count, total = self._answer_tokens.get(provider, (0, 0))
        self._answer_tokens[provider] = (count + 1, total + estimate_tokens(answer_text))

    def _answer_estimate(self, provider: str) -> int:
        count, total = self._answer_tokens.get(provider, (0, 0))
        return round(total / count) if count else DEFAULT_ANSWER_TOKENS

    async def throttled(self, provider: str, seconds: float) -> None:
        """A 429: no worker of the fleet calls `provider` for `seconds`."""
        until = time.time() + seconds
        known = self._cache.get(("cooldown", provider), (0.0, 0.0))[1]
        self._cache["cooldown", provider] = (time.monotonic(), max(until, known))
        try:
            await self._state.cool_down(provider, until)
        except Exception as exc:
            self._unavailable(exc)

    def _unavailable(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned > WARNING_INTERVAL_SECONDS:
            self._warned = now
            log.warning("provider budgets unavailable, calling without them: %s", exc)
