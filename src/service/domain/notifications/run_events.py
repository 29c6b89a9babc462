"""What a run's end tells the outside: `run.completed` / `run.failed`, and the alert rules.

`run_ended` is called once, in the transaction that ends the run (`end_run`), so the events
and alerts commit with the run's status or not at all (a run stopped by a spending cap fires
the SPENDING_CAP_REACHED rules here too). A workspace with neither endpoint nor
rule costs one small query.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import AlertRule, Probe, Run, WebhookEndpoint
from service.domain.notifications import events, spending_alerts
from service.domain.notifications.alerts import (
    COMPLETED,
    alert_data,
    evaluate_rules,
    figures_of_runs,
)

FAILED = "failed"


async def run_ended(session: AsyncSession, run_id: str, status: str, now: datetime) -> None:
    """Queues the run's event and fires the alert rules it trips (completed runs only).
    Canceled runs send nothing."""
    if status not in (*COMPLETED, FAILED):
        return
    # The run as this transaction left it (end_run updated it with a statement).
    run = await session.get(Run, run_id, populate_existing=True)
    if run is None:
        return
    workspace_id = run.workspace_id
    interested = await session.scalar(
        select(
            or_(
                exists().where(
                    WebhookEndpoint.workspace_id == workspace_id,
                    WebhookEndpoint.enabled.is_(True),
                ),
                exists().where(AlertRule.workspace_id == workspace_id),
            )
        )
    )
    if not interested:
        return
    if status == FAILED:
        await events.emit(
            session, workspace_id, events.RUN_FAILED, await _run_data(session, run), now
        )
    else:
        await events.emit(
            session, workspace_id, events.RUN_COMPLETED, await _run_data(session, run), now
        )
        for alert in await evaluate_rules(session, workspace_id, run_id, now):
            await events.emit(session, workspace_id, events.ALERT_TRIGGERED, alert_data(alert), now)
    # A run whose calls a spending cap stopped (it ends PARTIAL, or FAILED with no answer).
    await spending_alerts.run_stopped(session, run, now)


async def _run_data(session: AsyncSession, run: Run) -> dict[str, Any]:
    """The run as its event carries it: status, counts, mention rate per provider."""
    counts = dict(
        (
            await session.execute(
                select(Probe.status, func.count())
                .where(Probe.run_id == run.id)
                .group_by(Probe.status)
            )
        ).all()
    )
    by_provider = (await figures_of_runs(session, [run.id]))[run.id]
    answers = sum(f.answers for f in by_provider.values())
    mentions = sum(f.mentions for f in by_provider.values())
    return {
        "run_id": run.id,
        "workspace_id": run.workspace_id,
        "status": run.status,
        "trigger": run.trigger,
        "failure_reason": run.failure_reason,
        "create_time": events.rfc3339(run.create_time),
        "end_time": events.rfc3339(run.end_time) if run.end_time else None,
        "counts": {
            "prompts": run.prompt_count,
            "responses": sum(int(n) for n in counts.values()),
            "succeeded": int(counts.get("succeeded", 0)),
            "failed": int(counts.get("failed", 0)),
            "skipped": int(counts.get("skipped", 0)),
        },
        "mention_rate": round(100.0 * mentions / answers, 2) if answers else None,
        "providers": {
            provider: {
                "responses": f.answers,
                "mentions": f.mentions,
                "mention_rate": f.mention_rate,
                "average_rank": f.average_rank,
                "brand_citations": f.brand_citations,
            }
            for provider, f in sorted(by_provider.items())
        },
    }
