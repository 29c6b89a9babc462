"""Counting calls against the `(beacon.v1.rate_limit)` rules of the RPCs.

Counted in Redis when configured (shared by every server process; the `limits` library's
moving window runs as one atomic Lua script), in memory otherwise. When Redis is unreachable a
rule declared `fail_closed` refuses the call (UNAVAILABLE with RetryInfo); any other rule is
counted in this process's memory until Redis is back, so no limit ever disappears.

Besides the per-RPC rules, every call counts against one per-peer ceiling
(`peer_rate_limit_per_minute`) before its credentials are even looked at.

Hot rules (not fail-closed, at least HOT_RULE_REQUESTS per window as declared: the read
budgets and the peer ceiling) skip the Redis round trip per call: `BatchedCounters` counts them
in fixed windows, exact within the process, and adds its counts to the shared Redis counter
every FLUSH_SECONDS, learning the other replicas' counts in the same round trip (a subject's
first call in a window is counted in Redis at once). Across R replicas a window can admit at
most what the other R - 1 admit within one flush interval beyond its limit. Fail-closed rules
(money, other tenants) and small budgets stay exact and shared, counted in Redis per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis_async
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)

from beacon.v1 import options_pb2
from service.auth.context import CallContext
from service.config import Settings
from service.domain.errors import ResourceExhausted, Unavailable
from service.rpc_options import MethodRules, RateLimit, method_rules

log = logging.getLogger("beacon.ratelimit")

STRATEGIES: dict[str, type[RateLimiter]] = {
    "moving-window": MovingWindowRateLimiter,
    "fixed-window": FixedWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
}
KEY_NAMES: dict[int, str] = {
    options_pb2.RATE_LIMIT_KEY_USER: "user",
    options_pb2.RATE_LIMIT_KEY_WORKSPACE: "workspace",
    options_pb2.RATE_LIMIT_KEY_PEER: "peer",
}
# What a client refused because the limiter is unreachable is told to wait (RetryInfo).
UNAVAILABLE_RETRY_SECONDS = 5.0
PEER_CEILING = "beacon.v1/*"
START_RUN = "/beacon.v1.RunService/StartRun"
HOT_RULE_REQUESTS = 600  # declared requests per window from which a rule may be batched
FLUSH_SECONDS = 0.1
# (rule, subject, window) slots one process batches at most; beyond, a new subject is counted
# exactly (in Redis per call) until expired windows free room.
MAX_BATCHED_SLOTS = 20_000
# (rule, subject) keys counted in process memory at most (no Redis, or Redis unreachable);
# a new key beyond it first drops every count (see BoundedMemoryStorage).
MAX_MEMORY_KEYS = 100_000


class BoundedMemoryStorage(MemoryStorage):
    """`limits`' in-process storage, bounded: it drops expired keys itself, but a flood of
    distinct subjects within one window (peers, say) would grow it without limit. A new key
    that would make MAX_MEMORY_KEYS clears every count, as a restart would."""

    def _bound(self, key: str) -> None:
        if key in self.storage or key in self.events:
            return
        if len(self.storage) + len(self.events) >= MAX_MEMORY_KEYS:
            log.warning("in-process rate limit counts full: cleared")
            self.storage.clear()
            self.expirations.clear()
            self.events.clear()
            self.locks.clear()

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        self._bound(key)
        return await super().incr(key, expiry, amount)

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        self._bound(key)
        return await super().acquire_entry(key, limit, expiry, amount)


def build_storage(settings: Settings) -> Storage:
    if not settings.redis_url:
        return BoundedMemoryStorage()
    return RedisStorage(
        "async+" + settings.redis_url,
        implementation="redispy",
        wrap_exceptions=True,
        key_prefix=settings.rate_limit_key_prefix,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
    )


def peer_subject(call: CallContext) -> str:
    """The connection's address without its port ("peer:ipv4:10.0.0.7")."""
    return "peer:" + call.peer.rsplit(":", 1)[0]


def subject(limit: RateLimit, call: CallContext) -> tuple[str, str]:
    """What `limit` counts the current call by, and how a refusal names it to the caller.

    A user is counted by the person (`Principal.identity`: their tokens' issuer and
    subject), not by their user id, which a deleted and re-created account changes; the
    refusal names the user id the caller knows.
    """
    if (
        limit.key == options_pb2.RATE_LIMIT_KEY_WORKSPACE
        and call.access
        and call.access.workspace_id
    ):
        workspace = f"workspace:{call.access.workspace_id}"
        return workspace, workspace
    if limit.key == options_pb2.RATE_LIMIT_KEY_PEER or call.principal is None:
        peer = peer_subject(call)
        return peer, peer
    return f"user:{call.principal.rate_limit_id}", f"user:{call.principal.actor_id}"


@dataclass(slots=True)
class _Slot:
    """One (rule, subject, window): what Redis last said, and what is not yet sent."""

    expires: float  # wall-clock end of the window
    known: int = 0
    pending: int = 0


class BatchedCounters:
    """Fixed-window counters of the hot rules, flushed to Redis in batches (module docstring)."""

    def __init__(self, redis_url: str, key_prefix: str) -> None:
        self.client = redis_async.from_url(
            redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        self.prefix = f"{key_prefix}:batched:"
        self._slots: dict[str, _Slot] = {}
        self._swept = 0.0  # when `accepts` last dropped the expired slots
        self._flusher: asyncio.Task[None] | None = None

    async def hit(self, namespace: str, subject: str, amount: int, period: int) -> float | None:
        """Counts one call; None when allowed, else the seconds until the window resets."""
        now = time.time()
        window = int(now // period)
        key = f"{self.prefix}{namespace}:{subject}:{window}"
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot(expires=(window + 1) * period)
            try:  # the first call of a window is counted in Redis at once
                slot.known = await self._add(key, 1, period)
            except Exception:
                slot.pending += 1  # Redis is unreachable: counted here until it is back
                self._schedule()
                return None
            return None if slot.known <= amount else slot.expires - now
        if slot.known + slot.pending >= amount:
            return slot.expires - now
        slot.pending += 1
        self._schedule()
        return None

    def accepts(self, namespace: str, subject: str, period: int) -> bool:
        """Whether a call of `subject` can be batched: its window has a slot, or there is
        room for one (expired slots are dropped to make room)."""
        if len(self._slots) < MAX_BATCHED_SLOTS:
            return True
        key = f"{self.prefix}{namespace}:{subject}:{int(time.time() // period)}"
        if key in self._slots:
            return True
        now = time.time()
        if now - self._swept >= 1.0:  # a full scan at most once a second
            self._swept = now
            for expired in [k for k, slot in self._slots.items() if slot.expires <= now]:
                del self._slots[expired]
        return len(self._slots) < MAX_BATCHED_SLOTS

    async def _add(self, key: str, count: int, period: int) -> int:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.incrby(key, count)
            pipe.expire(key, period + 1)
            total, _ = await pipe.execute()
        return int(total)

    def _schedule(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(FLUSH_SECONDS)
        now = time.time()
        for key in [k for k, slot in self._slots.items() if slot.expires <= now]:
            del self._slots[key]
        batch = [(key, slot, slot.pending) for key, slot in self._slots.items() if slot.pending]
        if not batch:
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for key, slot, count in batch:
                    pipe.incrby(key, count)
                    pipe.expire(key, int(slot.expires - now) + 1)
                results = await pipe.execute()
        except Exception as exc:
            log.warning("rate limiter unavailable, counting in process", extra={"error": str(exc)})
            self._schedule()
            return
        for (_, slot, count), total in zip(batch, results[::2], strict=True):
            slot.known = int(total)
            slot.pending -= count
        if any(slot.pending for slot in self._slots.values()):
            self._schedule()

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.client.aclose()


def is_hot(limit: RateLimit) -> bool:
    """Whether `limit` is counted in batches (module docstring)."""
    return not limit.fail_closed and limit.requests >= HOT_RULE_REQUESTS


class RateLimits:
    """The counters of every rule, built once per process (see the module docstring)."""

    def __init__(self, settings: Settings, storage: Storage | None = None) -> None:
        self.storage = storage or build_storage(settings)
        strategy = STRATEGIES[settings.rate_limit_strategy]
        self.limiter = strategy(self.storage)
        # Only a shared store can become unreachable; memory is its stand-in meanwhile.
        self.fallback = strategy(BoundedMemoryStorage()) if settings.redis_url else None
        self.scale = settings.rate_limit_scale
        self.peer_ceiling = (
            RateLimit(
                settings.peer_rate_limit_per_minute, 60, options_pb2.RATE_LIMIT_KEY_PEER, False, ""
            )
            if settings.peer_rate_limit_per_minute > 0
            else None
        )
        self._items: dict[tuple[str, int], RateLimitItem] = {}
        self.batched = (
            BatchedCounters(settings.redis_url, settings.rate_limit_key_prefix)
            if settings.redis_url and storage is None
            else None
        )

    def _item(self, name: str, index: int, limit: RateLimit) -> RateLimitItem:
        item = self._items.get((name, index))
        if item is None:
            amount = max(1, round(limit.requests * self.scale))
            item = RateLimitItemPerSecond(
                amount, limit.period_seconds, namespace=f"beacon:{name}:{index}"
            )
            self._items[(name, index)] = item
        return item

    async def hit(
        self, name: str, index: int, limit: RateLimit, subject: str, shown: str = ""
    ) -> None:
        """Counts one call of rule `index` of RPC `name` for `subject`.

        Raises ResourceExhausted (naming `shown`, or else `subject`) when the window is
        full, Unavailable when the store is unreachable and the rule fails closed.
        """
        item = self._item(name, index, limit)
        batched = self.batched
        if (
            batched is not None
            and is_hot(limit)
            and batched.accepts(item.namespace, subject, item.get_expiry())
        ):
            wait = await batched.hit(item.namespace, subject, item.amount, item.get_expiry())
            if wait is None:
                return
            raise self._exhausted(name, item, limit, shown or subject, wait)
        try:
            if await self.limiter.hit(item, subject):
                return
            stats = await self.limiter.get_window_stats(item, subject)
        except Exception as exc:  # the store is unreachable: limits wraps its errors
            if limit.fail_closed or self.fallback is None:
                log.warning("rate limiter unavailable, refusing", extra={"error": str(exc)})
                raise Unavailable(
                    "rate limiter unavailable; retry later",
                    reason="RATE_LIMITER_UNAVAILABLE",
                    retry_after=UNAVAILABLE_RETRY_SECONDS,
                ) from exc
            log.warning("rate limiter unavailable, counting in process", extra={"error": str(exc)})
            if await self.fallback.hit(item, subject):
                return
            stats = await self.fallback.get_window_stats(item, subject)
        raise self._exhausted(name, item, limit, shown or subject, stats.reset_time - time.time())

    @staticmethod
    def _exhausted(
        name: str, item: RateLimitItem, limit: RateLimit, subject: str, wait: float
    ) -> ResourceExhausted:
        quota = f"{item.amount} per {limit.period_seconds}s per {KEY_NAMES[limit.key]}"
        return ResourceExhausted(
            f"rate limit exceeded for {name}: {quota}",
            retry_after=max(0.0, wait),
            subject=subject,
            quota=quota,
        )

    async def hit_rules(
        self, rules: MethodRules, keys: frozenset[int], call: CallContext, request: Any
    ) -> None:
        """Counts the call against each rule of `rules` whose key is in `keys` (and whose
        `when_field`, if any, is set in `request`)."""
        for index, limit in enumerate(rules.rate_limits):
            if limit.key not in keys:
                continue
            if limit.when_field and not getattr(request, limit.when_field):
                continue
            counted, shown = subject(limit, call)
            await self.hit(rules.name, index, limit, counted, shown)

    async def hit_peer_ceiling(self, call: CallContext) -> None:
        """Counts the call against the per-peer ceiling shared by every RPC."""
        if self.peer_ceiling is not None:
            await self.hit(PEER_CEILING, 0, self.peer_ceiling, peer_subject(call))

    async def charge_run(self, workspace_id: str) -> None:
        """Charges one run to the workspace's StartRun budget, as if StartRun had been called:
        every way of starting a run on demand shares that budget."""
        rules = method_rules()[START_RUN]
        for index, limit in enumerate(rules.rate_limits):
            if limit.key == options_pb2.RATE_LIMIT_KEY_WORKSPACE:
                await self.hit(rules.name, index, limit, f"workspace:{workspace_id}")
