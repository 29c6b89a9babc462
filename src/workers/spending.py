"""Spending caps held call by call across the fleet (`service.domain.money.caps` says what
the caps are; this is how the workers keep to them while runs are under way).

Before each provider call for a workspace under a cap (its own or its organization's), the
worker reserves the call's cost on a counter per capped scope and month, shared by every
worker: in Redis (`BEACON_REDIS_URL`, one Lua script, so that concurrent workers of several
processes cannot both take the last room), or in the process when there is no Redis (`beacon
dev`, the embedded worker). The reservation is the price table's default answer cost for the
provider's model (above what most answers cost); once the answer is in, the counter is
settled to its real cost (or given back when there was none). A call that does not fit is not
made: the probe ends FAILED with the reason and the run records it (it ends PARTIAL, or FAILED
when nothing was answered). So the month's spend passes a cap by at most what calls in flight
cost beyond their reservations.

A counter missing (first call of the month, or idle for `COUNTER_TTL_MS`) is seeded from the
database's usage rollups, which every answer's cost is added to. When the counter store cannot
be reached the call is refused ("fails closed"): a capped workspace makes no provider call
it cannot account for. Workspaces with no cap never touch the counters.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import redis.asyncio as redis_async
from redis.exceptions import RedisError
from sqlalchemy import update

from service.clock import utcnow
from service.config import Settings
from service.db.database import Database
from service.db.models import Run
from service.domain.money import ledger
from service.domain.money.caps import stop_reason
from workers.probe_store import ProbeTask

log = logging.getLogger(__name__)

# A counter idle this long is dropped and seeded again from the database on next use.
COUNTER_TTL_MS = 3_600_000
STORE_TIMEOUT_SECONDS = 0.5
UNREACHABLE_REASON = "spending cap could not be checked: the counter store is unreachable"

# KEYS: the counters of the capped scopes. ARGV[1]: the amount, ARGV[2]: the TTL in ms,
# ARGV[3]: "1" when seeds follow; then one cap per key, then (with seeds) one seed per key.
# Returns {-1, 0} when a counter is missing and no seeds were given, {i, spent} when the
# amount does not fit under the i-th cap, {0, 0} once it is reserved on every counter.
_RESERVE = """
local n = #KEYS
local amount = tonumber(ARGV[1])
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    if ARGV[3] ~= '1' then return {-1, 0} end
    redis.call('SET', KEYS[i], ARGV[3 + n + i], 'PX', ARGV[2])
  end
end
for i = 1, n do
  local spent = tonumber(redis.call('GET', KEYS[i]))
  if spent + amount > tonumber(ARGV[3 + i]) then return {i, spent} end
end
for i = 1, n do
  redis.call('INCRBY', KEYS[i], amount)
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return {0, 0}
"""

# Adds ARGV[1] to each existing counter (a dropped one is seeded afresh from the database).
_SETTLE = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], ARGV[1]) end
end
return 0
"""


class CounterStore(Protocol):
    async def reserve(
        self, keys: list[str], caps: list[int], amount: int, seeds: list[int] | None
    ) -> tuple[int, int]:
        """(0, 0) when reserved; (-1, 0) when a counter needs its seed; (i, spent) when the
        amount does not fit under the i-th (1-based) cap."""
        ...

    async def settle(self, keys: list[str], delta: int) -> None: ...

    async def close(self) -> None: ...


class MemoryCounters:
    """`CounterStore` of one process (no Redis)."""

    def __init__(self) -> None:
        self._counters: dict[str, int] = {}

    async def reserve(
        self, keys: list[str], caps: list[int], amount: int, seeds: list[int] | None
    ) -> tuple[int, int]:
        for index, key in enumerate(keys):
            if key not in self._counters:
                if seeds is None:
                    return (-1, 0)
                self._counters[key] = seeds[index]
        for index, key in enumerate(keys):
            if self._counters[key] + amount > caps[index]:
                return (index + 1, self._counters[key])
        for key in keys:
            self._counters[key] += amount
        return (0, 0)

    async def settle(self, keys: list[str], delta: int) -> None:
        for key in keys:
            if key in self._counters:
                self._counters[key] += delta

    async def close(self) -> None:
        return None


class RedisCounters:
    """`CounterStore` in Redis, under `<prefix>:spend:`."""

    def __init__(self, url: str) -> None:
        pool = redis_async.BlockingConnectionPool.from_url(
            url,
            max_connections=16,
            timeout=STORE_TIMEOUT_SECONDS,
            socket_timeout=STORE_TIMEOUT_SECONDS,
            socket_connect_timeout=STORE_TIMEOUT_SECONDS,
        )
        self._client = redis_async.Redis(connection_pool=pool)
        self._reserve = self._client.register_script(_RESERVE)
        self._settle = self._client.register_script(_SETTLE)

    async def reserve(
        self, keys: list[str], caps: list[int], amount: int, seeds: list[int] | None
    ) -> tuple[int, int]:
        args: list[int | str] = [amount, COUNTER_TTL_MS, "1" if seeds is not None else "0"]
        args += caps
        args += seeds or []
        found = await self._reserve(keys=keys, args=args)
        return (int(found[0]), int(found[1]))

    async def settle(self, keys: list[str], delta: int) -> None:
        await self._settle(keys=keys, args=[delta])

    async def close(self) -> None:
        await self._client.aclose()


@dataclass(frozen=True, slots=True)
class Hold:
    """A call's reservation on its scopes' counters."""

    keys: list[str] = field(default_factory=list)
    amount: int = 0


@dataclass(frozen=True, slots=True)
class Refusal:
    """The call may not be made, and why (shown on the probe and the run)."""

    reason: str


@dataclass(frozen=True, slots=True)
class _Scope:
    name: str
    scope_id: str
    cap: int


class SpendingGuard:
    """The caps of one worker process's calls; see the module docstring. `hold` before a
    call (a `Hold` to settle after it, None when no cap applies, a `Refusal`), `settle`
    after."""

    def __init__(self, store: CounterStore, db: Database, prefix: str) -> None:
        self._store = store
        self._db = db
        self._prefix = f"{prefix}:spend"

    @classmethod
    def from_settings(cls, settings: Settings, db: Database) -> SpendingGuard:
        """Counted in Redis when `settings.redis_url` is set, in this process otherwise."""
        store: CounterStore = (
            RedisCounters(settings.redis_url) if settings.redis_url else MemoryCounters()
        )
        return cls(store, db, settings.rate_limit_key_prefix)

    async def close(self) -> None:
        await self._store.close()

    async def hold(self, task: ProbeTask, amount: int) -> Hold | Refusal | None:
        """Reserves `amount` for the task's call under every cap that applies to it."""
        scopes = _scopes(task)
        if not scopes:
            return None
        now = utcnow()
        month = f"{now.year:04d}-{now.month:02d}"
        keys = [f"{self._prefix}:{month}:{s.name}:{s.scope_id}" for s in scopes]
        caps = [s.cap for s in scopes]
        try:
            found = await self._store.reserve(keys, caps, amount, None)
            if found[0] == -1:
                seeds = await self._seeds(scopes, now)
                found = await self._store.reserve(keys, caps, amount, seeds)
        except (RedisError, OSError) as exc:
            log.warning("spending counters unreachable (%s): call refused", exc)
            return Refusal(UNREACHABLE_REASON)
        if found[0] > 0:
            scope = scopes[found[0] - 1]
            return Refusal(stop_reason(scope.name, found[1], scope.cap))
        return Hold(keys, amount)

    async def settle(self, hold: Hold | None, cost: int) -> None:
        """Replaces the call's reservation by its real cost (0: it cost nothing)."""
        if hold is None or cost == hold.amount:
            return
        try:
            await self._store.settle(hold.keys, cost - hold.amount)
        except (RedisError, OSError) as exc:
            # The counter keeps the reservation: it errs on the side of the cap.
            log.warning("spending counters unreachable (%s): reservation kept", exc)

    async def _seeds(self, scopes: list[_Scope], now: datetime) -> list[int]:
        async with self._db.transaction(write=False) as session:
            return [
                await ledger.scope_month_to_date(session, scope.name, scope.scope_id, now)
                for scope in scopes
            ]


def _scopes(task: ProbeTask) -> list[_Scope]:
    scopes = []
    if task.workspace_cap is not None:
        scopes.append(_Scope("workspace", task.workspace_id, task.workspace_cap))
    if task.organization_cap is not None:
        scopes.append(_Scope("organization", task.organization_id, task.organization_cap))
    return scopes


async def record_stop(db: Database, run_id: str, reason: str) -> None:
    """Records on the run why its calls stopped (the first reason is kept; the run shows it
    once it ends)."""
    async with db.transaction() as session:
        await session.execute(
            update(Run)
            .where(Run.id == run_id, Run.failure_reason == "", Run.end_time.is_(None))
            .values(failure_reason=reason)
        )
