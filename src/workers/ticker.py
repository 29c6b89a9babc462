"""The ticker: turns due cron schedules into runs, safely however many tickers run.

Each tick claims due schedules in batches (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so
concurrent tickers take disjoint batches; on SQLite the write transaction is exclusive), inserts
one run per (workspace, slot) under the runs' unique key, advances each schedule's next run time
past now and commits; only then are the new runs sent to the broker (the outbox, see
`service.outbox`). Missed slots collapse into one run for the latest of them. A slot of a
workspace that still has its maximum of open runs (`BEACON_MAX_OPEN_RUNS_PER_WORKSPACE`,
queued or running) creates no run: the schedule advances and the slot is skipped, counted in
`beacon_ticker_slots_skipped_total` and the tick's log line (the open run is already asking
the same prompts; queueing another behind it would only pile up spend). Each scheduled run
takes a free open-run lane like StartRun's, so the unique index on open lanes holds the cap
when a ticker and a StartRun race. Every tick ends
with a sweep of runs that were written but never sent, by any process; every
`run_stall_seconds / STALL_SWEEPS_PER_DEADLINE` the ticker also re-sends runs whose messages
were lost (`service.outbox.redispatch_stalled_runs`); a Redis that lost its data is noticed at
the next tick (`service.outbox.BrokerEpoch`), and every open run is re-sent at once. Each tick
also sends the due digests and hands the due webhook deliveries to the workers
(`workers.webhooks.sweep`).

The cost of a tick follows the number of due schedules: schedules are found through the index
on `next_run_time` and advanced by key, the runs a batch wrote are stamped by key, and the sweep
finds unsent runs through the index on `enqueue_time`. A batch is three statements (claim, one
INSERT ... SELECT FROM unnest, one UPDATE ... FROM unnest) and its dispatch one; sequential scans
are off in these transactions (`service.db.sql_dialects.tune_batch_transaction` says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import dramatiq
from croniter import CroniterBadDateError
from sqlalchemy import JSON, SmallInteger, String, bindparam, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from service.broker import broker_of
from service.clock import new_ids, utcnow
from service.config import Settings
from service.db.database import Database
from service.db.models import Run, Schedule, Workspace
from service.db.sql_dialects import id_in, table_of, tune_batch_transaction
from service.db.types import UTCDateTime
from service.domain.collection.run_lifecycle import QUEUED_RUN, free_lane, queued_run
from service.domain.collection.schedules import next_fire_time
from service.outbox import (
    BrokerEpoch,
    dispatch_pending_runs,
    redispatch_open_runs,
    redispatch_stalled_runs,
)
from workers import metrics, webhooks
from workers.health import Health

log = logging.getLogger(__name__)

SCHEDULE_TRIGGER = "schedule"
# Slots missed for longer than this are found from here instead of walked one by one.
CATCH_UP_WINDOW = timedelta(days=2)
# A schedule whose next time cannot be computed is looked at again after this long.
BROKEN_SCHEDULE_RETRY = timedelta(days=1)
# Outbox sweeps per tick at most (each sends up to `ticker_batch_size` runs).
MAX_SWEEPS = 100
PURGE_INTERVAL = timedelta(hours=1)
# Looks for stalled runs this many times per `run_stall_seconds`.
STALL_SWEEPS_PER_DEADLINE = 4


@dataclass(frozen=True, slots=True)
class TickResult:
    """What one tick did."""

    claimed: int  # due schedules advanced
    created: int  # runs created (a slot that already had its run creates none)
    dispatched: int  # run messages sent, including the sweep of older unsent runs
    skipped: int = 0  # due slots whose workspace had its maximum of runs open


@dataclass(frozen=True, slots=True)
class Claim:
    """One batch of due schedules, advanced; the runs it created (not yet sent)."""

    claimed: int
    run_ids: list[str]
    skipped: int = 0


async def tick(
    db: Database, settings: Settings, now: datetime, *, broker: dramatiq.Broker
) -> TickResult:
    """Fires every schedule due at `now`, then sends unsent runs (see the module docstring)."""
    started = time.perf_counter()
    claimed = created = dispatched = skipped = 0
    batch_size = settings.ticker_batch_size
    # Each batch's runs are sent while the next batch is claimed (two connections at work).
    sending: asyncio.Task[int] | None = None
    try:
        while True:
            claim = await claim_due_schedules(
                db, now, batch_size, max_open=settings.max_open_runs_per_workspace
            )
            claimed += claim.claimed
            created += len(claim.run_ids)
            skipped += claim.skipped
            if sending is not None:
                dispatched += await sending
                sending = None
            if claim.run_ids:
                sending = asyncio.create_task(
                    dispatch_pending_runs(
                        db, broker, run_ids=claim.run_ids, limit=len(claim.run_ids)
                    )
                )
            if claim.claimed < batch_size:
                break
    finally:
        if sending is not None:  # dispatching never raises: its failures are logged
            dispatched += await sending
    for _ in range(MAX_SWEEPS):
        swept = await dispatch_pending_runs(db, broker, limit=batch_size)
        dispatched += swept
        if swept < batch_size:
            break
    metrics.TICKS.inc()
    metrics.TICK_SECONDS.observe(time.perf_counter() - started)
    metrics.SCHEDULES_CLAIMED.inc(claimed)
    metrics.RUNS_CREATED.inc(created)
    metrics.SLOTS_SKIPPED.inc(skipped)
    return TickResult(claimed=claimed, created=created, dispatched=dispatched, skipped=skipped)


# Looks for a free open-run lane a slot makes before it is skipped (each after a racer took one).
LANE_ATTEMPTS = 3


async def claim_due_schedules(
    db: Database, now: datetime, limit: int, *, max_open: int = 1
) -> Claim:
    """Claims up to `limit` schedules due at `now`: creates their runs, advances them, commits.

    Schedules of deleted workspaces are advanced without a run, and so are those of
    workspaces that have `max_open` runs open (counted as skipped).
    """
    fire_times = FireTimes(now)
    async with db.transaction() as session:
        await tune_batch_transaction(db, session)
        conn = await session.connection()
        rows = (await conn.execute(_claim_query(db.is_sqlite), {"now": now, "limit": limit})).all()
        if not rows:
            return Claim(0, [])
        runs: list[tuple[str, datetime]] = []
        advance: list[tuple[str, datetime]] = []
        for workspace_id, cron, time_zone, due, deleted in rows:
            slot, following = fire_times.get(cron, time_zone, due)
            advance.append((workspace_id, following))
            if slot is not None and deleted is None:
                runs.append((workspace_id, slot))
        run_ids: list[str] = []
        pending = runs
        # A StartRun racing this batch may take the lane it was given (the insert drops that
        # slot's run): the slot looks again for a free lane, so it is skipped only when the
        # workspace really has `max_open` runs open.
        for _ in range(LANE_ATTEMPTS):
            lanes = await _free_lanes(db, conn, [ws for ws, _ in pending], max_open)
            laned = [(ws, slot, lanes[ws]) for ws, slot in pending if ws in lanes]
            if not laned:
                break
            ids = new_ids("run", len(laned))
            inserted = set(await _insert_runs(db, conn, laned, ids, now))
            run_ids += [run_id for run_id in ids if run_id in inserted]
            pending = [
                (ws, slot)
                for run_id, (ws, slot, _) in zip(ids, laned, strict=True)
                if run_id not in inserted
            ]
            if not pending:
                break
        await _advance_schedules(db, conn, advance, now)
    return Claim(len(rows), run_ids, skipped=len(runs) - len(run_ids))


async def _free_lanes(
    db: Database, conn: AsyncConnection, workspace_ids: list[str], max_open: int
) -> dict[str, int]:
    """The open-run lane each workspace's next run takes; workspaces without a free one are
    left out. One statement per batch, through the partial unique index on open lanes."""
    runs = table_of(Run)
    rows = await conn.execute(
        select(runs.c.workspace_id, runs.c.open_lane).where(
            id_in(db, runs.c.workspace_id, workspace_ids),
            runs.c.end_time.is_(None),
            runs.c.open_lane.is_not(None),
        )
    )
    taken: dict[str, set[int]] = defaultdict(set)
    for workspace_id, lane in rows:
        taken[workspace_id].add(int(lane))
    lanes = {}
    for workspace_id in workspace_ids:
        lane = free_lane(taken.get(workspace_id, ()), max_open)
        if lane is not None:
            lanes[workspace_id] = lane
    return lanes


@functools.cache
def _claim_query(sqlite: bool) -> Any:
    """Due schedules (:now, :limit) with their workspace's delete time, locked on PostgreSQL
    (`FOR UPDATE SKIP LOCKED`: concurrent tickers take disjoint batches)."""
    schedules, workspaces = table_of(Schedule), table_of(Workspace)
    # A correlated lookup rather than a join: the planner may hash-join every workspace.
    delete_time = (
        select(workspaces.c.delete_time).where(workspaces.c.id == schedules.c.workspace_id)
    ).scalar_subquery()
    query = (
        select(
            schedules.c.workspace_id,
            schedules.c.cron,
            schedules.c.time_zone,
            schedules.c.next_run_time,
            delete_time,
        )
        .where(schedules.c.next_run_time <= bindparam("now", type_=UTCDateTime()))
        .order_by(schedules.c.next_run_time)
        .limit(bindparam("limit"))
    )
    return query if sqlite else query.with_for_update(skip_locked=True, of=schedules)


async def _advance_schedules(
    db: Database, conn: AsyncConnection, advance: list[tuple[str, datetime]], now: datetime
) -> None:
    """Sets each claimed schedule's next run time (the rows are locked by the claim)."""
    if not db.is_sqlite:
        # One UPDATE ... FROM unnest(...) whatever the number of distinct next run times.
        parameters = {
            "workspace_ids": [ws for ws, _ in advance],
            "followings": [following for _, following in advance],
            "now": now,
        }
        await conn.execute(_unnest_advance(), parameters)
        return
    by_time: dict[datetime, list[str]] = defaultdict(list)
    for workspace_id, following in advance:
        by_time[following].append(workspace_id)
    schedules = table_of(Schedule)
    for following, workspace_ids in by_time.items():
        await conn.execute(
            update(schedules)
            .where(schedules.c.workspace_id.in_(workspace_ids))
            .values(next_run_time=following, update_time=now)
        )


@functools.cache
def _unnest_advance() -> Any:
    """UPDATE schedules SET next_run_time = v.following FROM unnest(:workspace_ids,
    :followings) AS v (PostgreSQL)."""
    source = select(
        func.unnest(bindparam("workspace_ids", type_=postgresql.ARRAY(String))).label("ws"),
        func.unnest(bindparam("followings", type_=postgresql.ARRAY(UTCDateTime()))).label(
            "following"
        ),
    ).subquery()
    schedules = table_of(Schedule)
    return (
        update(schedules)
        .where(schedules.c.workspace_id == source.c.ws)
        .values(
            next_run_time=source.c.following,
            update_time=bindparam("now", type_=UTCDateTime()),
        )
    )


async def _insert_runs(
    db: Database,
    conn: AsyncConnection,
    slots: list[tuple[str, datetime, int]],
    ids: list[str],
    now: datetime,
) -> list[str]:
    """Inserts a queued scheduled run with id `ids[i]` per (workspace, slot, open-run lane)
    unless the slot has one already or the lane was taken meanwhile (a racing StartRun);
    returns the ids of the runs inserted."""
    if db.is_sqlite:
        rows = [
            queued_run(
                run_id=run_id,
                workspace_id=ws,
                trigger=SCHEDULE_TRIGGER,
                open_lane=lane,
                now=now,
                scheduled_time=slot,
            )
            for run_id, (ws, slot, lane) in zip(ids, slots, strict=True)
        ]
        table = table_of(Run)
        statement = sqlite.insert(table).on_conflict_do_nothing().returning(table.c.id)
        return list((await conn.execute(statement, rows)).scalars())
    # PostgreSQL: one INSERT ... SELECT over arrays, whatever the batch size.
    parameters = {
        "ids": ids,
        "workspace_ids": [ws for ws, _, _ in slots],
        "slots": [slot for _, slot, _ in slots],
        "lanes": [lane for _, _, lane in slots],
        "now": now,
    }
    return list((await conn.execute(_unnest_insert(), parameters)).scalars())


@functools.cache
def _unnest_insert() -> Any:
    """INSERT INTO runs ... SELECT FROM unnest(:ids, :workspace_ids, :slots, :lanes) ON
    CONFLICT DO NOTHING RETURNING id (PostgreSQL): a slot that has its run, or a lane a
    concurrent start took, inserts nothing."""
    source = select(
        func.unnest(bindparam("ids", type_=postgresql.ARRAY(String))).label("id"),
        func.unnest(bindparam("workspace_ids", type_=postgresql.ARRAY(String))).label("ws"),
        func.unnest(bindparam("slots", type_=postgresql.ARRAY(UTCDateTime()))).label("slot"),
        func.unnest(bindparam("lanes", type_=postgresql.ARRAY(SmallInteger))).label("lane"),
    ).subquery()
    constants = {
        name: literal(value, JSON if isinstance(value, list) else None)
        for name, value in {"trigger": SCHEDULE_TRIGGER, **QUEUED_RUN}.items()
    }
    rows = select(
        source.c.id,
        source.c.ws,
        source.c.slot,
        source.c.lane,
        bindparam("now", type_=UTCDateTime()),
        *constants.values(),
    )
    table = table_of(Run)
    columns = ["id", "workspace_id", "scheduled_time", "open_lane", "create_time", *constants]
    return (
        postgresql.insert(table)
        .from_select(columns, rows)
        .on_conflict_do_nothing()
        .returning(table.c.id)
    )


class FireTimes:
    """Slot computations for one tick, shared by the schedules with the same cron and due time."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self._cache: dict[tuple[str, str, datetime], tuple[datetime | None, datetime]] = {}

    def get(self, cron: str, time_zone: str, due: datetime) -> tuple[datetime | None, datetime]:
        """(the slot to run, the next run time): see `fire_slot`."""
        key = (cron, time_zone, due)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = fire_slot(cron, time_zone, due, self.now)
        return found


def fire_slot(
    cron: str, time_zone: str, due: datetime, now: datetime
) -> tuple[datetime | None, datetime]:
    """The slot to run for a schedule due at `due`, and its next run time after `now`.

    The slots are `due` itself and every firing after it; the latest one at or before `now` is
    run (missed slots collapse into it). A schedule that can no longer fire gets no slot and is
    looked at again after `BROKEN_SCHEDULE_RETRY`.
    """
    slot = due
    try:
        if now - due > CATCH_UP_WINDOW:
            recent = next_fire_time(cron, time_zone, now - CATCH_UP_WINDOW)
            if recent <= now:
                slot = recent
        while True:
            following = next_fire_time(cron, time_zone, slot)
            if following > now:
                return slot, following
            slot = following
    except (CroniterBadDateError, ValueError, KeyError) as exc:
        log.error("schedule %r in %s cannot fire: %s", cron, time_zone, exc)
        return None, now + BROKEN_SCHEDULE_RETRY


async def purge_deleted(db: Database, settings: Settings, now: datetime) -> int:
    """Purges workspaces past their retention, when the tenancy domain provides it."""
    try:
        from service.domain.tenancy.workspace_purge import purge_deleted_workspaces
    except ImportError:
        return 0
    return await purge_deleted_workspaces(db, now, retention_days=settings.workspace_retention_days)


class Ticker:
    """The ticker loop: a tick every `ticker_interval_seconds` until stopped."""

    def __init__(self, settings: Settings, db: Database, broker: dramatiq.Broker) -> None:
        self.settings = settings
        self.db = db
        self.broker = broker
        self.stopping = asyncio.Event()
        self.epoch = BrokerEpoch(broker)
        self._last_purge: datetime | None = None
        self._last_stall_sweep: float | None = None

    async def run(self) -> None:
        """Ticks until `stop` is called; a failed tick is logged and retried next interval."""
        while not self.stopping.is_set():
            await self.run_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.stopping.wait(), timeout=self.settings.ticker_interval_seconds
                )

    async def run_once(self) -> TickResult | None:
        now = utcnow()
        try:
            result = await tick(self.db, self.settings, now, broker=self.broker)
            if self._last_purge is None or now - self._last_purge >= PURGE_INTERVAL:
                self._last_purge = now
                purged = await purge_deleted(self.db, self.settings, now)
                if purged:
                    log.info("purged %d deleted workspaces", purged)
            await self._notice_lost_broker(now)
            await self._sweep_stalled(now)
            await webhooks.sweep(self.db, self.settings, self.broker, now)
        except Exception:
            log.exception("tick failed; retrying at the next interval")
            return None
        if result.claimed or result.dispatched:
            log.info(
                "tick: %d schedules due, %d runs created, %d slots skipped (a run was open),"
                " %d sent",
                result.claimed,
                result.created,
                result.skipped,
                result.dispatched,
            )
        return result

    async def _notice_lost_broker(self, now: datetime) -> None:
        """Re-sends every open run at once when the broker lost its data (`BrokerEpoch`)."""
        try:
            lost = await asyncio.to_thread(self.epoch.lost)
        except Exception as exc:  # the broker is down: the tick's sends are failing too
            log.warning("cannot reach the broker to check its epoch: %s", exc)
            return
        if lost:
            sent = await redispatch_open_runs(
                self.db, self.broker, now=now, limit=self.settings.ticker_batch_size
            )
            log.warning(
                "the broker lost its epoch mark (a Redis restarted without its data):"
                " re-sent %d open runs",
                sent,
            )

    async def _sweep_stalled(self, now: datetime) -> None:
        stall = self.settings.run_stall_seconds
        clock = time.monotonic()
        last = self._last_stall_sweep
        if stall <= 0 or (last is not None and clock - last < stall / STALL_SWEEPS_PER_DEADLINE):
            return
        self._last_stall_sweep = clock
        await redispatch_stalled_runs(
            self.db, self.broker, stall, now=now, limit=self.settings.ticker_batch_size
        )

    def stop(self) -> None:
        self.stopping.set()


def run_ticker(settings: Settings) -> None:
    """The `beacon ticker` process: ticks until SIGTERM or SIGINT, then exits cleanly."""
    broker = broker_of(settings)
    metrics.serve_metrics(settings, "ticker", Health(settings, broker))
    asyncio.run(_run_until_signal(settings, broker))


async def _run_until_signal(settings: Settings, broker: dramatiq.Broker) -> None:
    db = Database(settings.database_url)
    ticker = Ticker(settings, db, broker)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, ticker.stop)
    log.info("ticker started: every %gs", settings.ticker_interval_seconds)
    try:
        await ticker.run()
    finally:
        await db.dispose()
        log.info("ticker stopped")
