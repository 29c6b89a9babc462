"""Run and probe statuses, shared by the API and the workers, and the one way a run ends.

A run is QUEUED until a worker expands it into probes (RUNNING), and ends exactly once
(`end_run`: `UPDATE ... WHERE end_time IS NULL`) as SUCCEEDED, PARTIAL, FAILED or CANCELED.
A probe is PENDING until it SUCCEEDED, FAILED or was SKIPPED (its run was canceled or its
workspace deleted). `cancel` is how CancelRun and the workers alike skip a run's probes.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Final, cast

from prometheus_client import Counter
from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import Probe, Run


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

RUNS_ENDED = Counter("beacon_runs_ended_total", "Runs that ended, by final status.", ["status"])


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
