"""Access decisions (and the workspace views read with them) cached per process, invalidated
across every replica.

An entry maps (kind of check, user, resource id) to the `Access` the auth check resolved and is
tagged with what it depends on: `user:<id>`, `org:<id>`, `ws:<id>`. Every committed change that
can alter a decision or a view names the tags it touches:

- ORM changes to workspaces, their members and schedules (`ws:`), organizations and their
  members (`org:`), users (`user:`), seen when the session flushes;
- bulk UPDATE/DELETE/INSERT statements on those tables (account deletion, purges, schedule
  and join-code changes), which name no rows: they invalidate everything (`*`). The ticker's
  bulk updates of schedule times (not part of any view) are the exception.

On PostgreSQL the tags travel with the transaction itself (`pg_notify` on `beacon_access`, run
in the transaction that makes the change: delivered on commit, dropped on rollback), and each
server process LISTENs on a connection of its own. On SQLite (one process) the commit
invalidates the process's caches directly; the committing process does that on PostgreSQL too,
so a replica reads its own writes at once.

Staleness: an invalidation reaches the other replicas within the notification latency
(milliseconds). The cache is off while the listening connection is down (and emptied when it
drops), an entry read while any invalidation arrived is not stored, and every entry expires
after TTL_SECONDS whatever happens: the documented worst case is 1 second, e.g. a removed
member loses access on every replica within 1 s even if a notification were lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import Counter
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from service.db.models import (
    Organization,
    OrganizationMember,
    Schedule,
    User,
    Workspace,
    WorkspaceMember,
)
from service.domain.actor import Access

log = logging.getLogger("beacon.access_cache")

CHANNEL = "beacon_access"
TTL_SECONDS = 1.0  # the worst-case staleness: never raise it above 1 s
MAX_ENTRIES = 50_000
# Keys listed under tags: an expired entry dropped by `get` stays listed until its tag is
# invalidated, so the lists are bounded apart from the entries (each entry has <= 3 tags).
MAX_TAGGED_KEYS = 3 * MAX_ENTRIES
EVERYTHING = "*"
NOTIFY_LIMIT = 7000  # bytes of one payload (PostgreSQL's limit is 8000)
RECONNECT_SECONDS = 0.5
_PENDING = "beacon_access_tags"

# (kind, user id, resource id): kind "ws" for workspace-level checks, "org" for organization ones.
Key = tuple[str, str, str]

_caches: weakref.WeakSet[AccessCache] = weakref.WeakSet()

LOOKUPS = Counter("beacon_access_cache_total", "Access checks by cache result", ["result"])
HITS, MISSES = LOOKUPS.labels("hit"), LOOKUPS.labels("miss")
INVALIDATIONS = Counter(
    "beacon_access_invalidations_total",
    "Invalidations applied to the access cache, by where they came from",
    ["source"],
)
FROM_COMMIT, FROM_NOTIFY = INVALIDATIONS.labels("commit"), INVALIDATIONS.labels("notify")


class AccessCache:
    """The process's cached access decisions (see the module docstring).

    `shared` caches (PostgreSQL, several replicas) start disabled: they serve nothing until
    their listener is connected, and are emptied and disabled again whenever it drops.
    A `ttl` above TTL_SECONDS (the documented worst case) is clamped to it; `clock` (monotonic
    seconds) lets tests move time.
    """

    def __init__(
        self,
        *,
        shared: bool,
        ttl: float = TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = min(ttl, TTL_SECONDS)
        self._clock = clock
        self.enabled = not shared and self.ttl > 0
        self.generation = 0  # moves on every invalidation
        self._entries: dict[Key, tuple[float, Access]] = {}
        self._tagged: dict[str, set[Key]] = {}
        self._tagged_keys = 0  # the sum of the sizes of the sets in _tagged
        _caches.add(self)

    def get(self, key: Key) -> Access | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._clock() or not self.enabled:
            if entry is not None:
                del self._entries[key]
            MISSES.inc()
            return None
        HITS.inc()
        return entry[1]

    def put(self, key: Key, access: Access, generation: int) -> None:
        """Stores `access`, read when `self.generation` was `generation`: unless an
        invalidation arrived meanwhile (the read may predate the change)."""
        if not self.enabled or generation != self.generation:
            return
        if len(self._entries) >= MAX_ENTRIES or self._tagged_keys >= MAX_TAGGED_KEYS:
            self.clear()
        now = self._clock()
        # Oldest first, so that the entries are in expiry order: drop up to two expired ones
        # (an entry whose key is never asked again would otherwise wait for MAX_ENTRIES).
        self._entries.pop(key, None)
        for old in list(itertools.islice(self._entries.items(), 2)):
            if old[1][0] > now:
                break
            del self._entries[old[0]]
        self._entries[key] = (now + self.ttl, access)
        tags = [f"user:{key[1]}", f"org:{access.organization_id}"]
        if access.workspace_id:
            tags.append(f"ws:{access.workspace_id}")
        elif key[2].startswith("ws_"):
            tags.append(f"ws:{key[2]}")
        for tag in tags:
            listed = self._tagged.setdefault(tag, set())
            if key not in listed:
                listed.add(key)
                self._tagged_keys += 1

    def invalidate(self, tags: Iterable[str]) -> None:
        self.generation += 1
        for tag in tags:
            if tag == EVERYTHING:
                self.clear()
                return
            listed = self._tagged.pop(tag, set())
            self._tagged_keys -= len(listed)
            for key in listed:
                self._entries.pop(key, None)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._tagged.clear()
        self._tagged_keys = 0

    def set_enabled(self, enabled: bool) -> None:
        if not enabled:
            self.clear()
        self.enabled = enabled and self.ttl > 0


def invalidate_local(tags: Iterable[str]) -> None:
    """Invalidates `tags` in every cache of this process."""
    tags = list(tags)
    FROM_COMMIT.inc()
    for cache in list(_caches):
        cache.invalidate(tags)


# Publishing: what a transaction changes ---------------------------------------------------


def _tags_of(obj: Any) -> list[str]:
    if isinstance(obj, Workspace):
        return [f"ws:{obj.id}"]
    if isinstance(obj, WorkspaceMember | Schedule):
        return [f"ws:{obj.workspace_id}"]
    if isinstance(obj, Organization):
        return [f"org:{obj.id}"]
    if isinstance(obj, OrganizationMember):
        return [f"org:{obj.organization_id}"]
    if isinstance(obj, User):
        return [f"user:{obj.id}"]
    return []


_WATCHED_TABLES = frozenset(
    str(model.__tablename__)
    for model in (Workspace, WorkspaceMember, Schedule, Organization, OrganizationMember, User)
)


def _publish(session: Session, tags: set[str]) -> None:
    """Remembers `tags` for the commit and, on PostgreSQL, notifies them in the transaction."""
    if not tags:
        return
    pending: set[str] = session.info.setdefault(_PENDING, set())
    fresh = tags - pending
    if not fresh:
        return
    pending |= fresh
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return
    payload = ",".join(sorted(fresh))
    if len(payload.encode()) > NOTIFY_LIMIT:
        payload = EVERYTHING
    session.connection().execute(
        text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload}
    )


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _flush: UOWTransaction) -> None:
    tags = {
        tag for obj in (*session.new, *session.dirty, *session.deleted) for tag in _tags_of(obj)
    }
    _publish(session, tags)


@event.listens_for(Session, "do_orm_execute")
def _on_execute(state: ORMExecuteState) -> None:
    if state.is_select or not (state.is_update or state.is_delete or state.is_insert):
        return
    table = getattr(state.statement, "table", None)
    name = getattr(table, "name", None)
    if name not in _WATCHED_TABLES:
        return
    if name == Schedule.__tablename__ and state.is_update:
        return  # the ticker moving next_run_time: not part of any view
    _publish(state.session, {EVERYTHING})


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    tags = session.info.pop(_PENDING, None)
    if tags:
        invalidate_local(tags)


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, _previous: Any) -> None:
    session.info.pop(_PENDING, None)


# Listening: the other replicas' changes ---------------------------------------------------


class InvalidationListener:
    """LISTENs on CHANNEL over a connection of its own (asyncpg) and invalidates `cache`;
    the cache is enabled only while the connection is up."""

    def __init__(self, database_url: str, cache: AccessCache) -> None:
        self.dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
        self.cache = cache
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.cache.set_enabled(False)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        FROM_NOTIFY.inc()
        self.cache.invalidate(payload.split(","))

    async def _run(self) -> None:
        import asyncpg  # type: ignore[import-untyped]  # only servers on PostgreSQL listen

        while True:
            lost = asyncio.Event()
            conn: Any = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=5)
                conn.add_termination_listener(functools.partial(_set_event, lost))
                await conn.add_listener(CHANNEL, self._on_notify)
                self.cache.set_enabled(True)
                self.connected.set()
                await lost.wait()
                log.warning("access cache listener lost its connection; cache off")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("access cache listener cannot connect", extra={"error": str(exc)})
            finally:
                self.cache.set_enabled(False)
                self.connected.clear()
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=1)
            await asyncio.sleep(RECONNECT_SECONDS)


def _set_event(flag: asyncio.Event, _conn: Any) -> None:
    flag.set()
