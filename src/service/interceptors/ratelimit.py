"""Rate limits from each RPC's `(beacon.v1.rate_limit)` options.

Counted in Redis when configured (shared by every server process; the `limits` library's
moving window runs as one atomic Lua script), in memory otherwise. When Redis is down a
rule fails open or closed as it declares.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)

from beacon.v1 import options_pb2
from service.auth.context import CallContext, current_call
from service.config import Settings
from service.domain.errors import ResourceExhausted, Unavailable
from service.interceptors.base import Around
from service.interceptors.rules import MethodRules, RateLimit

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


def build_storage(settings: Settings) -> Storage:
    if not settings.redis_url:
        return MemoryStorage()
    return RedisStorage(
        "async+" + settings.redis_url,
        implementation="redispy",
        wrap_exceptions=True,
        key_prefix=settings.rate_limit_key_prefix,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
    )


def _subject(limit: RateLimit, call: CallContext) -> str:
    if (
        limit.key == options_pb2.RATE_LIMIT_KEY_WORKSPACE
        and call.access
        and call.access.workspace_id
    ):
        return f"workspace:{call.access.workspace_id}"
    if limit.key == options_pb2.RATE_LIMIT_KEY_PEER or call.principal is None:
        return "peer:" + call.peer.rsplit(":", 1)[0]
    return f"user:{call.principal.actor_id}"


class RateLimitAround(Around):
    def __init__(self, settings: Settings, storage: Storage | None = None) -> None:
        self.storage = storage or build_storage(settings)
        self.limiter = STRATEGIES[settings.rate_limit_strategy](self.storage)
        self.scale = settings.rate_limit_scale
        self._items: dict[tuple[str, int], RateLimitItem] = {}

    def _item(self, rules: MethodRules, index: int, limit: RateLimit) -> RateLimitItem:
        item = self._items.get((rules.name, index))
        if item is None:
            amount = max(1, round(limit.requests * self.scale))
            item = RateLimitItemPerSecond(
                amount, limit.period_seconds, namespace=f"beacon:{rules.name}:{index}"
            )
            self._items[(rules.name, index)] = item
        return item

    async def before(self, rules: MethodRules, request: Any, context: Any) -> None:
        call = current_call()
        for index, limit in enumerate(rules.rate_limits):
            if limit.when_field and not getattr(request, limit.when_field):
                continue
            item = self._item(rules, index, limit)
            subject = _subject(limit, call)
            try:
                allowed = await self.limiter.hit(item, subject)
                if allowed:
                    continue
                stats = await self.limiter.get_window_stats(item, subject)
            except Exception as exc:  # the store is unreachable: limits wraps its errors
                if limit.fail_closed:
                    log.warning("rate limiter unavailable, refusing", extra={"error": str(exc)})
                    raise Unavailable(
                        "rate limiter unavailable; retry later", reason="RATE_LIMITER_UNAVAILABLE"
                    ) from exc
                log.warning("rate limiter unavailable, allowing", extra={"error": str(exc)})
                continue
            quota = f"{item.amount} per {limit.period_seconds}s per {KEY_NAMES[limit.key]}"
            raise ResourceExhausted(
                f"rate limit exceeded for {rules.name}: {quota}",
                retry_after=max(0.0, stats.reset_time - time.time()),
                subject=subject,
                quota=quota,
            )
