"""A purged workspace takes its webhook endpoints, deliveries, alert rules, alerts and digest
with it."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update

from service.app import App
from service.clock import new_id, utcnow
from service.db.models import Alert, AlertRule, Digest, WebhookDelivery, WebhookEndpoint, Workspace
from service.domain.notifications import events
from service.domain.tenancy.workspace_purge import purge_deleted_workspaces
from tests.support.webhook_builders import make_endpoint, make_workspace

TABLES = (WebhookEndpoint, WebhookDelivery, AlertRule, Alert, Digest)


async def rows_of(app: App, workspace_id: str) -> dict[str, int]:
    async with app.db.transaction(write=False) as session:
        return {
            table.__tablename__: int(
                await session.scalar(select(func.count()).where(table.workspace_id == workspace_id))
                or 0
            )
            for table in TABLES
        }


async def test_purging_a_workspace_removes_its_notifications(app: App) -> None:
    ws = await make_workspace(app)
    await make_endpoint(app, ws, "https://hooks.example.com/purge")
    now = utcnow()
    async with app.db.transaction() as session:
        await events.emit(session, ws, events.RUN_COMPLETED, {"run_id": "run_p"}, now)
        rule_id = new_id("alr")
        session.add(
            AlertRule(
                id=rule_id,
                workspace_id=ws,
                kind="domain_uncited",
                provider="",
                threshold=0.0,
                trailing_runs=3,
                min_sample=1,
                firing=[],
                create_time=now,
            )
        )
        session.add(
            Alert(
                id=new_id("alrt"),
                workspace_id=ws,
                alert_rule_id=rule_id,
                kind="domain_uncited",
                run_id="run_p",
                subject="openai",
                figures={},
                create_time=now,
            )
        )
        session.add(
            Digest(
                workspace_id=ws,
                frequency="daily",
                hour=8,
                weekday=1,
                time_zone="UTC",
                next_send_time=now + timedelta(days=1),
            )
        )
    assert set((await rows_of(app, ws)).values()) == {1}
    async with app.db.transaction() as session:
        await session.execute(
            update(Workspace).where(Workspace.id == ws).values(delete_time=now - timedelta(days=40))
        )

    assert await purge_deleted_workspaces(app.db, now, retention_days=30) >= 1

    assert set((await rows_of(app, ws)).values()) == {0}
