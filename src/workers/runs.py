"""A run's start in the workers: its expansion into probes (the rest of its life, and the
rules expansion follows, are `service.domain.collection.run_lifecycle`'s).

`expand_run` turns a queued run into one probe row per (prompt, provider) and one message per
probe. Rows are inserted under the probes' unique key, so a redelivered (or re-sent, see
`service.outbox.redispatch_stalled_runs`) run message inserts nothing new and only re-sends
the probes still pending, each with its next attempt number. A run ends through
`run_lifecycle.finish_runs` once none of its probes is pending any more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import dramatiq
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service import tracing
from service.broker import send_messages
from service.clock import new_id, utcnow
from service.config import Settings
from service.db.database import Database
from service.db.models import Probe, Prompt, Run, Workspace
from service.db.sql_dialects import insert_ignoring_duplicates
from service.domain.collection.run_lifecycle import (
    ProbeStatus,
    RunStatus,
    cancel,
    empty_reason,
    end_run,
    finish_runs,
    providers_to_ask,
)
from service.domain.money import caps
from service.domain.money.estimates import Pricing
from service.domain.notifications import spending_alerts
from service.messages import probe_messages
from workers import metrics
from workers.budgets import ProviderBudgets


class RunContext(Protocol):
    """What expanding a run needs of the worker's context (a `workers.context.WorkerContext`)."""

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
            configured = context.settings.configured_providers()
            providers = providers_to_ask(run.providers, enabled, configured)
            reason = empty_reason(prompts, providers, bool(run.providers))
            refused = None
            if not reason and run.trigger == "schedule":
                refused = await caps.scheduled_run_refusal(
                    session,
                    workspace_id,
                    providers,
                    len(prompts),
                    Pricing.from_settings(context.settings),
                    now,
                )
                reason = caps.skip_reason(refused) if refused else ""
            if reason:
                await end_run(session, run_id, RunStatus.FAILED, now, reason)
                if refused is not None:  # in the skip's transaction
                    await spending_alerts.run_refused(
                        session,
                        workspace_id,
                        refused,
                        trigger=spending_alerts.SCHEDULED_RUN,
                        run_id=run_id,
                        now=now,
                    )
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
