"""A run's life, in one place for the API, the ticker and the workers alike.

Created: a run is written QUEUED into the outbox (`queued_run`: the one shape of a new run,
StartRun's, SetSchedule's and the ticker's) in a free open-run lane (`free_lane`), asking the
providers `providers_to_ask` chooses (the one rule: the requested ones, by default the
workspace's enabled providers that have credentials), then sent (`service.outbox`).
Started: a worker expands it into one probe per (prompt, provider) and it is RUNNING
(`workers.runs.expand_run`, which fails it with `empty_reason` when there is nothing to ask).
Ended: exactly once (`end_run`: `UPDATE ... WHERE end_time IS NULL`) as SUCCEEDED, PARTIAL,
FAILED or CANCELED, its events (`run.completed`, `run.failed`) and alerts written in the
transaction that ends it (`service.domain.notifications.run_events`); `finish_runs` ends the runs whose probes are all terminal
(`final_status`). Canceled: `cancel` skips the pending probes (CancelRun, and the workers for
a run canceled or whose workspace was deleted: `cancel_and_finish`).
Re-sent: an open run whose messages were lost is sent again; `stalled` and `sent_before`
say which (`service.outbox.redispatch_stalled_runs`, `redispatch_open_runs`).

A probe is PENDING until it SUCCEEDED, FAILED or was SKIPPED (its run was canceled or its
workspace deleted).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final, cast

import prometheus_client
from sqlalchemy import ColumnElement, CursorResult, and_, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.clock import utcnow
from service.config import PROVIDERS
from service.db.database import Database
from service.db.models import Probe, Run
from service.db.sql_dialects import id_in, table_of
from service.domain.notifications import run_events


class RunStatus(StrEnum):
    """`runs.status`."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELED = "canceled"


class ProbeStatus(StrEnum):
    """`probes.status`; all but PENDING are terminal."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


# Probes that asked their provider (a skipped one never did).
FINISHED_PROBE_STATUSES: Final = (ProbeStatus.SUCCEEDED, ProbeStatus.FAILED)
CANCELED_REASON: Final = "the run was canceled"

RUNS_ENDED = prometheus_client.Counter(
    "beacon_runs_ended_total", "Runs that ended, by final status.", ["status"]
)
# Runs ended per statement of `finish_runs`.
IDS_PER_QUERY = 500
# Runs sent longer ago than this are not looked at by the stall sweep (bounds its scan of the
# enqueue_time index; a stalled run is re-stamped on each re-send, so it stays inside).
STALL_HORIZON = timedelta(days=2)

# The columns every new run starts with: QUEUED, not yet sent (enqueue_time NULL), nothing
# canceled; empty prompt and provider lists mean every prompt and the default providers.
QUEUED_RUN: Final[dict[str, object]] = {
    "status": RunStatus.QUEUED,
    "prompt_ids": [],
    "providers": [],
    "prompt_count": 0,
    "cancel_requested": False,
    "failure_reason": "",
}


def queued_run(
    *,
    run_id: str,
    workspace_id: str,
    trigger: str,
    open_lane: int,
    now: datetime,
    scheduled_time: datetime | None = None,
    prompt_ids: Sequence[str] = (),
    providers: Sequence[str] = (),
    prompt_count: int = 0,
) -> dict[str, object]:
    """The columns of a new run (`Run(**queued_run(...))`, or a row of a bulk INSERT)."""
    return {
        **QUEUED_RUN,
        "id": run_id,
        "workspace_id": workspace_id,
        "trigger": trigger,
        "scheduled_time": scheduled_time,
        "prompt_ids": list(prompt_ids),
        "providers": list(providers),
        "prompt_count": prompt_count,
        "create_time": now,
        "enqueue_time": None,
        "open_lane": open_lane,
    }


def free_lane(taken: Collection[int | None], limit: int) -> int | None:
    """The lowest open-run lane in 0..limit-1 not in `taken` (None: every one is)."""
    return next((lane for lane in range(limit) if lane not in taken), None)


def in_provider_order(names: Collection[str]) -> list[str]:
    """The known providers among `names`, in the registry's (display) order."""
    return [p for p in PROVIDERS if p in names]


def providers_to_ask(
    requested: Collection[str], enabled: Collection[str], configured: Collection[str]
) -> list[str]:
    """The providers a run asks: the `requested` ones, by default the workspace's `enabled`
    providers that have credentials (`configured`); in the registry's order."""
    chosen = set(requested) if requested else set(enabled) & set(configured)
    return in_provider_order(chosen)


def empty_reason(prompts: Sequence[object], providers: Sequence[str], requested: bool) -> str:
    """Why a run has nothing to ask (it ends FAILED with it); empty when it has."""
    if not prompts:
        return "the workspace has no prompts to ask"
    if not providers:
        if requested:
            return "none of the requested providers is enabled"
        return "no enabled provider has credentials configured"
    return ""


async def end_run(
    session: AsyncSession, run_id: str, status: RunStatus, now: datetime, reason: str = ""
) -> bool:
    """Ends the run with `status` unless it has ended already; whether this call ended it.
    Without a `reason`, one recorded while it ran (a spending cap that stopped it) is kept."""
    reasons = {"failure_reason": reason} if reason else {}
    result = await session.execute(
        update(Run)
        .where(Run.id == run_id, Run.end_time.is_(None))
        .values(status=status, end_time=now, **reasons)
    )
    ended = bool(cast(CursorResult[Any], result).rowcount)
    if ended:
        RUNS_ENDED.labels(status).inc()
        await run_events.run_ended(session, run_id, status, now)
    return ended


async def cancel(session: AsyncSession, run_id: str, now: datetime) -> bool:
    """Skips the run's pending probes (complete at `now`, with `CANCELED_REASON`) and ends
    the run CANCELED when that skipped one or it has no probes yet; whether it ended now.

    A run whose probes had all ended already is left to whoever ended its last probe (it
    ends with their statuses: `workers.runs.finish_runs`).
    """
    skipped = await session.execute(
        update(Probe)
        .where(Probe.run_id == run_id, Probe.status == ProbeStatus.PENDING)
        .values(status=ProbeStatus.SKIPPED, complete_time=now, error=CANCELED_REASON)
    )
    if not cast(CursorResult[Any], skipped).rowcount:
        probes = await session.scalar(select(func.count()).where(Probe.run_id == run_id))
        if probes:
            return False
    return await end_run(session, run_id, RunStatus.CANCELED, now)


def final_status(counts: Counter[str]) -> RunStatus | None:
    """The status a run ends with given its probes' statuses; None while one is pending.

    Skipped probes mean the run was canceled before every probe finished.
    """
    if not counts or counts[ProbeStatus.PENDING]:
        return None
    if counts[ProbeStatus.SKIPPED]:
        return RunStatus.CANCELED
    if not counts[ProbeStatus.FAILED]:
        return RunStatus.SUCCEEDED
    return RunStatus.PARTIAL if counts[ProbeStatus.SUCCEEDED] else RunStatus.FAILED


async def finish_runs(db: Database, run_ids: Iterable[str]) -> list[str]:
    """Ends each open run whose probes are all terminal; returns the runs ended by this call.

    Call it after the transaction that made a probe terminal has committed: of two workers
    finishing a run's last two probes concurrently, the later check then sees both.
    """
    open_ids = sorted(set(run_ids))
    ended: list[str] = []
    runs, probes = table_of(Run), table_of(Probe)
    pending = exists().where(probes.c.run_id == runs.c.id, probes.c.status == ProbeStatus.PENDING)
    for start in range(0, len(open_ids), IDS_PER_QUERY):
        chunk = open_ids[start : start + IDS_PER_QUERY]
        # Most checks find a pending probe: a cheap read settles them.
        query = select(runs.c.id).where(
            id_in(db, runs.c.id, chunk), runs.c.end_time.is_(None), ~pending
        )
        async with db.transaction(write=False) as session:
            done = list((await (await session.connection()).execute(query)).scalars())
        if not done:
            continue
        async with db.transaction() as session:
            counts: dict[str, Counter[str]] = {run_id: Counter() for run_id in done}
            rows = await session.execute(
                select(Probe.run_id, Probe.status, func.count())
                .where(Probe.run_id.in_(done))
                .group_by(Probe.run_id, Probe.status)
            )
            for run_id, probe_status, count in rows:
                counts[run_id][probe_status] = count
            now = utcnow()
            for run_id in done:
                status = final_status(counts[run_id])
                if status is not None and await end_run(session, run_id, status, now):
                    ended.append(run_id)
    return ended


async def cancel_and_finish(db: Database, run_id: str) -> None:
    """Skips the pending probes of a run canceled (or whose workspace was deleted) and ends
    it, as CancelRun does (`cancel`), in a transaction of its own (the workers)."""
    async with db.transaction() as session:
        await cancel(session, run_id, utcnow())
    # Its probes may all have ended before (a crash between the last one and the run's end).
    await finish_runs(db, [run_id])


def stalled(now: datetime, stall_seconds: float) -> ColumnElement[bool]:
    """Open runs sent, started and last answered (any probe) before `now - stall_seconds`."""
    cutoff = now - timedelta(seconds=stall_seconds)
    answered = exists().where(Probe.run_id == Run.id, Probe.complete_time >= cutoff)
    return and_(
        Run.enqueue_time < cutoff,
        Run.enqueue_time >= now - STALL_HORIZON,
        Run.end_time.is_(None),
        or_(Run.start_time.is_(None), Run.start_time < cutoff),
        ~answered,
    )


def sent_before(now: datetime) -> ColumnElement[bool]:
    """Open runs sent before `now` (all of them lost their messages with the broker's data)."""
    return and_(Run.enqueue_time < now, Run.end_time.is_(None))
