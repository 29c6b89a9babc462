"""A run's life in the workers: expansion into probes, and its end once every probe is done.

`expand_run` turns a queued run into one probe row per (prompt, provider) and one message per
probe. Rows are inserted under the probes' unique key, so a redelivered (or re-sent, see
`workers.dispatch.redispatch_stalled_runs`) run message inserts nothing new and only re-sends
the probes still pending, each with its next attempt number. `finish_runs` ends a run exactly once
(`UPDATE ... WHERE end_time IS NULL`) when none of its probes is pending any more.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import dramatiq
from sqlalchemy import exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service import tracing
from service.clock import new_id, utcnow
from service.config import PROVIDERS, Settings
from service.db.database import Database
from service.db.models import Probe, Prompt, Run, Workspace
from service.domain.collection.run_status import ProbeStatus, RunStatus, cancel, end_run
from service.domain.money import caps
from service.domain.money.estimates import Pricing
from workers import metrics
from workers.broker import send_messages
from workers.budgets import ProviderBudgets
from workers.messages import probe_messages
from workers.sql_dialects import id_in, insert_ignoring_duplicates, table_of


class RunContext(Protocol):
    """What expanding a run needs of the worker's context (a `workers.context.WorkerContext`,
    which holds the probe store that imports this module: hence a protocol, not an import)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def db(self) -> Database: ...
    @property
    def broker(self) -> dramatiq.Broker: ...
    @property
    def budgets(self) -> ProviderBudgets: ...


log = logging.getLogger(__name__)

ROWS_PER_INSERT = 1000
IDS_PER_QUERY = 500


@dataclass(frozen=True, slots=True)
class Expansion:
    """What `expand_run` did: probes created now and probe messages sent."""

    created: int
    sent: int


async def expand_run(context: RunContext, run_id: str) -> Expansion:
    """Creates the run's probes (first delivery only) and sends a message per pending probe.

    A run whose workspace has no prompts, or no enabled provider with credentials, ends FAILED
    with the reason; a run canceled before expansion ends CANCELED; an ended run is left alone.
    """
    db = context.db
    now = utcnow()
    created = 0
    async with db.transaction() as session:
        row = (
            await session.execute(
                select(Run, Workspace.enabled_providers, Workspace.delete_time)
                .join(Workspace, Workspace.id == Run.workspace_id)
                .where(Run.id == run_id)
            )
        ).one_or_none()
        if row is None:
            log.info("run %s no longer exists", run_id)
            return Expansion(0, 0)
        run, enabled, deleted = row
        workspace_id = run.workspace_id
        tracing.annotate(**{tracing.WORKSPACE: workspace_id})
        if run.end_time is not None:
            return Expansion(0, 0)
        if run.cancel_requested or deleted is not None:
            if run.status == RunStatus.QUEUED:
                await cancel(session, run_id, now)
                return Expansion(0, 0)
        elif run.status == RunStatus.QUEUED:
            prompts = await _prompts_of(session, run)
            providers = _providers_of(run, enabled, context.settings.configured_providers())
            reason = _empty_reason(prompts, providers, bool(run.providers))
            if not reason and run.trigger == "schedule":
                reason = await caps.scheduled_run_refusal(
                    session,
                    workspace_id,
                    providers,
                    len(prompts),
                    Pricing.from_settings(context.settings),
                    now,
                )
            if reason:
                await end_run(session, run_id, RunStatus.FAILED, now, reason)
                return Expansion(0, 0)
            created = await _insert_probes(db, session, run, prompts, providers, now)
            await session.execute(
                update(Run)
                .where(Run.id == run_id, Run.status == RunStatus.QUEUED)
                .values(
                    status=RunStatus.RUNNING,
                    start_time=now,
                    providers=providers,
                    prompt_count=len(prompts),
                )
            )
    async with db.transaction(write=False) as session:
        rows = (
            await session.execute(
                select(Probe.id, Probe.attempts, Probe.provider)
                .where(Probe.run_id == run_id, Probe.status == ProbeStatus.PENDING)
                .order_by(Probe.prompt_id, Probe.provider)
            )
        ).all()
    pending = [(probe_id, attempts) for probe_id, attempts, _ in rows]
    # The workspace counts for the fair shares of its providers from now, not from when its
    # first probe reaches a worker (which another workspace's backlog may delay).
    for provider in sorted({provider for _, _, provider in rows}):
        await context.budgets.waiting_for(provider, [workspace_id])
    if pending:
        # A probe waiting for a retry (its attempts are stored) goes on with the next attempt.
        by_attempt: dict[int, list[str]] = {}
        for probe_id, attempts in pending:
            by_attempt.setdefault(attempts + 1, []).append(probe_id)
        messages = [
            message
            for attempt, ids in sorted(by_attempt.items())
            for message in probe_messages(ids, attempt)
        ]
        await asyncio.to_thread(send_messages, context.broker, messages)
    elif created == 0:
        # Every probe already ended (a redelivery after a crash): make sure the run did too.
        await finish_runs(db, [run_id])
    metrics.PROBES_CREATED.inc(created)
    return Expansion(created, len(pending))


async def _prompts_of(session: AsyncSession, run: Run) -> list[tuple[str, str]]:
    query = select(Prompt.id, Prompt.text).where(Prompt.workspace_id == run.workspace_id)
    if run.prompt_ids:
        query = query.where(Prompt.id.in_(run.prompt_ids))
    rows = await session.execute(query.order_by(Prompt.create_time, Prompt.id))
    return [(prompt_id, text) for prompt_id, text in rows.all()]


def _providers_of(run: Run, enabled: Sequence[str], configured: Iterable[str]) -> list[str]:
    """The run's requested providers; by default the enabled ones that have credentials."""
    chosen = set(run.providers) if run.providers else set(enabled) & set(configured)
    return [name for name in PROVIDERS if name in chosen]


def _empty_reason(prompts: Sequence[object], providers: Sequence[str], requested: bool) -> str:
    if not prompts:
        return "the workspace has no prompts to ask"
    if not providers:
        if requested:
            return "none of the requested providers is enabled"
        return "no enabled provider has credentials configured"
    return ""


async def _insert_probes(
    db: Database,
    session: AsyncSession,
    run: Run,
    prompts: Sequence[tuple[str, str]],
    providers: Sequence[str],
    now: datetime,
) -> int:
    rows = [
        {
            "id": new_id("rsp"),
            "run_id": run.id,
            "workspace_id": run.workspace_id,
            "prompt_id": prompt_id,
            "prompt_text": text,
            "provider": provider,
            "status": ProbeStatus.PENDING,
            "create_time": now,
        }
        for prompt_id, text in prompts
        for provider in providers
    ]
    statement = insert_ignoring_duplicates(db, Probe, ("run_id", "prompt_id", "provider"))
    connection = await session.connection()
    for start in range(0, len(rows), ROWS_PER_INSERT):
        await connection.execute(statement, rows[start : start + ROWS_PER_INSERT])
    return len(rows)


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


async def cancel_run(db: Database, run_id: str) -> None:
    """Skips the pending probes of a run canceled (or whose workspace was deleted) and ends
    it, as CancelRun does (`service.domain.collection.run_status.cancel`)."""
    async with db.transaction() as session:
        await cancel(session, run_id, utcnow())
    # Its probes may all have ended before (a crash between the last one and the run's end).
    await finish_runs(db, [run_id])
