"""SPENDING_CAP_REACHED alert rules: a monthly cap stopped the workspace's spending.

A cap stops spending in three places: a StartRun (or SetSchedule's run) refused by
`caps.check_run`, a scheduled run skipped when it is expanded, and a run whose calls the
workers stopped (`caps.stop_reason` on the run, reported when it ends). Each calls `cap_reached`,
which fires every such rule of the workspace ONCE per cap (scope and amount) and calendar
month (UTC): the rule remembers `scope:month:cap` in `firing`, so a second refusal the same
month fires nothing, while a new month, or a cap changed and reached again, fires anew.

The alert and its `alert.triggered` event are written in the session given: the transaction
of the run's end or skip, or SetSchedule's. A refused StartRun's transaction is rolled back by
its error, so the application service writes its alert in a small transaction of its own
before raising (`RunService.start`).

The minimum sample does not apply: a cap reached is a fact about money, not a statistic over
answers that one noisy run could fake.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import Alert, AlertRule, Run
from service.domain.money import caps, ledger
from service.domain.notifications import events
from service.domain.notifications.alerts import SPENDING_CAP_REACHED, Finding, alert_data, fire

START_RUN: Final = "start_run"
SCHEDULE_SET: Final = "schedule_set"
SCHEDULED_RUN: Final = "scheduled_run"
RUN_STOPPED: Final = "run_stopped"


async def cap_reached(
    session: AsyncSession,
    workspace_id: str,
    *,
    scope: str,
    scope_id: str,
    cap: int,
    spent: int,
    estimate: int | None,
    trigger: str,
    run_id: str,
    now: datetime,
) -> list[Alert]:
    """Fires the workspace's SPENDING_CAP_REACHED rules that have not fired for this cap
    this month; stores each alert and queues its `alert.triggered` in `session`."""
    rules = list(
        await session.scalars(
            select(AlertRule)
            .where(
                AlertRule.workspace_id == workspace_id,
                AlertRule.kind == SPENDING_CAP_REACHED,
            )
            .order_by(AlertRule.create_time, AlertRule.id)
            .with_for_update()
        )
    )
    month = f"{now.year:04d}-{now.month:02d}"
    key = f"{scope}:{month}:{cap}"
    finding = Finding(
        scope,
        True,
        {
            "scope": scope,
            "scope_id": scope_id,
            "month": month,
            "cap_micros": cap,
            "month_to_date_micros": spent,
            "estimate_micros": estimate,
            "trigger": trigger,
        },
    )
    fired: list[Alert] = []
    for rule in rules:
        if key in rule.firing:
            continue
        # Keys of past months are dropped: the list stays a few entries long.
        rule.firing = sorted({k for k in rule.firing if f":{month}:" in k} | {key})
        alert = fire(session, rule, run_id, finding, now)
        await events.emit(session, workspace_id, events.ALERT_TRIGGERED, alert_data(alert), now)
        fired.append(alert)
    return fired


async def run_refused(
    session: AsyncSession,
    workspace_id: str,
    refused: caps.SpendingCapReached,
    *,
    trigger: str,
    run_id: str,
    now: datetime,
) -> list[Alert]:
    """A run refused (or skipped) by `caps.check_run`: the refusal's figures."""
    return await cap_reached(
        session,
        workspace_id,
        scope=refused.scope,
        scope_id=refused.scope_id,
        cap=refused.cap,
        spent=refused.spent,
        estimate=refused.estimate,
        trigger=trigger,
        run_id=run_id,
        now=now,
    )


async def run_stopped(session: AsyncSession, run: Run, now: datetime) -> list[Alert]:
    """A run that ended with the workers' `caps.stop_reason`: the cap and the month's cost
    as they are at its end (no estimate). Nothing for any other run."""
    scope = caps.stopped_scope(run.failure_reason)
    if scope is None:
        return []
    applying = await caps.caps_of(session, run.workspace_id)
    if scope == "workspace":
        scope_id, cap = run.workspace_id, applying.workspace_cap
    else:
        scope_id, cap = applying.organization_id, applying.organization_cap
    if cap is None:  # removed since: nothing to report
        return []
    spent = await ledger.scope_month_to_date(session, scope, scope_id, now)
    return await cap_reached(
        session,
        run.workspace_id,
        scope=scope,
        scope_id=scope_id,
        cap=cap,
        spent=spent,
        estimate=None,
        trigger=RUN_STOPPED,
        run_id=run.id,
        now=now,
    )
