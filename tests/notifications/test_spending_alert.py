"""SPENDING_CAP_REACHED alert rules: a cap that refuses a StartRun, skips a scheduled run or
stops a run mid-run fires the workspace's rule once per cap scope and calendar month, with the
figures, and sends `alert.triggered`; a workspace without such a rule gets no alert."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from types import SimpleNamespace

import grpc
import pytest
from sqlalchemy import select, update

from beacon.v1 import run_service_pb2 as run_pb
from beacon.v1 import run_service_pb2_grpc
from beacon.v1 import webhook_service_pb2 as pb
from service.app import App
from service.clock import utcnow
from service.config import Settings
from service.db.models import Alert, AlertRule, Run, WebhookDelivery, Workspace
from service.domain.collection.run_lifecycle import RunStatus, end_run
from service.domain.money import caps
from service.domain.notifications import spending_alerts
from service.outbox import dispatch_pending_runs
from service.server import start_server
from tests.support import builders, expect_error
from tests.support import pipeline as fixtures
from tests.support.app import NewUser
from tests.support.app import TestUser as Caller
from tests.support.pipeline import StartWorker, drained, insert_run
from tests.support.webhook_builders import alerts_of

collection_db = fixtures.collection_db
fake_server = fixtures.fake_server
fake_provider = fixtures.fake_provider
worker_settings = fixtures.worker_settings
start_worker = fixtures.start_worker

URL = "https://hooks.example.com/caps"


@pytest.fixture(scope="session")
async def keyed_runs(
    app: App, settings: Settings
) -> AsyncIterator[run_service_pb2_grpc.RunServiceStub]:
    """RunService of a server whose OpenAI has a key (so StartRun gets as far as the caps)."""
    keyed = Settings.model_validate(
        {
            **settings.model_dump(),
            "openai_api_key": "test-key",
            "rate_limit_scale": 100.0,
            "rate_limit_key_prefix": f"{settings.rate_limit_key_prefix}-capalert",
        }
    )
    server = await start_server(App(settings=keyed, db=app.db), "127.0.0.1:0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield run_service_pb2_grpc.RunServiceStub(channel)
    await server.stop(grace=1.0)


async def capped_workspace(
    app: App, stubs: SimpleNamespace, owner: Caller, *, rule: bool = True
) -> builders.Tenant:
    """A workspace asking OpenAI one prompt, capped at 1 micro-dollar a month, with an
    endpoint and (`rule`) a SPENDING_CAP_REACHED rule created through the API."""
    tenant = await builders.make_workspace(app, owner.user_id, enabled=["openai"])
    await builders.insert_prompts(app, tenant.workspace_id, ["best crm"])
    await set_cap(app, tenant.workspace_id, 1)
    await stubs.webhooks.CreateWebhookEndpoint(
        pb.CreateWebhookEndpointRequest(workspace_id=tenant.workspace_id, url=URL),
        metadata=owner.metadata,
    )
    if rule:
        made = await stubs.webhooks.CreateAlertRule(
            pb.CreateAlertRuleRequest(
                workspace_id=tenant.workspace_id,
                # No min_sample nor trailing_runs: they do not apply to this kind.
                alert_rule=pb.AlertRule(kind=pb.ALERT_KIND_SPENDING_CAP_REACHED),
            ),
            metadata=owner.metadata,
        )
        assert made.kind == pb.ALERT_KIND_SPENDING_CAP_REACHED and made.min_sample == 0
    return tenant


async def set_cap(app: App, workspace_id: str, micros: int) -> None:
    async with app.db.transaction() as session:
        await session.execute(
            update(Workspace).where(Workspace.id == workspace_id).values(monthly_cap_micros=micros)
        )


async def refuse_start(runs: run_service_pb2_grpc.RunServiceStub, owner: Caller, ws: str) -> None:
    refused = await expect_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        runs.StartRun(run_pb.StartRunRequest(workspace_id=ws), metadata=owner.metadata),
    )
    assert refused.details["ErrorInfo"].reason == "SPENDING_CAP_REACHED"


async def alert_events(app: App, workspace_id: str) -> list[dict[str, object]]:
    async with app.db.transaction(write=False) as session:
        bodies = await session.scalars(
            select(WebhookDelivery.body)
            .where(
                WebhookDelivery.workspace_id == workspace_id,
                WebhookDelivery.event_type == "alert.triggered",
            )
            .order_by(WebhookDelivery.create_time)
        )
        return [json.loads(body)["data"] for body in bodies]


async def test_a_refused_start_run_fires_once_a_month_per_cap(
    app: App,
    stubs: SimpleNamespace,
    keyed_runs: run_service_pb2_grpc.RunServiceStub,
    new_user: NewUser,
) -> None:
    owner = await new_user()
    tenant = await capped_workspace(app, stubs, owner)
    ws = tenant.workspace_id
    await refuse_start(keyed_runs, owner, ws)
    await refuse_start(keyed_runs, owner, ws)  # the same cap, the same month: no second alert

    [alert] = await alerts_of(app, ws)
    assert (alert.kind, alert.subject, alert.run_id) == ("spending_cap_reached", "workspace", "")
    figures = alert.figures
    assert figures["scope_id"] == ws and figures["cap_micros"] == 1
    assert figures["month_to_date_micros"] == 0 and figures["trigger"] == "start_run"
    assert isinstance(figures["estimate_micros"], int) and figures["estimate_micros"] > 1
    assert figures["month"] == f"{utcnow():%Y-%m}"
    [event] = await alert_events(app, ws)
    assert event["alert_id"] == alert.id and event["figures"] == figures
    listed = await stubs.webhooks.ListAlerts(
        pb.ListAlertsRequest(workspace_id=ws), metadata=owner.metadata
    )
    assert [a.kind for a in listed.alerts] == [pb.ALERT_KIND_SPENDING_CAP_REACHED]

    # The cap raised, and reached again: a new alert.
    await set_cap(app, ws, 2)
    await refuse_start(keyed_runs, owner, ws)
    assert [a.figures["cap_micros"] for a in await alerts_of(app, ws)] == [1, 2]

    # Next month the same cap fires again (and last month's memory is dropped).
    next_month = (utcnow().replace(day=1) + timedelta(days=32)).replace(day=1)
    refusal = caps.SpendingCapReached("workspace", ws, 0, 5, 2)
    async with app.db.transaction() as session:
        fired = await spending_alerts.run_refused(
            session, ws, refusal, trigger="start_run", run_id="", now=next_month
        )
    assert len(fired) == 1
    async with app.db.transaction(write=False) as session:
        rule = await session.scalar(select(AlertRule).where(AlertRule.workspace_id == ws))
        assert rule is not None and rule.firing == [f"workspace:{next_month:%Y-%m}:2"]


async def test_a_skipped_scheduled_run_fires_in_the_skip_transaction(
    app: App,
    stubs: SimpleNamespace,
    new_user: NewUser,
    start_worker: StartWorker,
) -> None:
    owner = await new_user()
    ws = (await capped_workspace(app, stubs, owner)).workspace_id
    worker = start_worker(database_url=app.settings.database_url)
    run_id = await insert_run(app.db, ws, trigger="schedule")
    await dispatch_pending_runs(app.db, worker.broker, run_ids=[run_id])
    await drained(worker)

    [alert] = await alerts_of(app, ws)
    assert alert.run_id == run_id and alert.figures["trigger"] == "scheduled_run"
    assert alert.figures["cap_micros"] == 1 and alert.figures["estimate_micros"] > 1
    async with app.db.transaction(write=False) as session:
        run = await session.get(Run, run_id)
        assert run is not None and run.status == "failed"
        # The alert was written in the transaction that ended the run.
        assert alert.create_time == run.end_time
    assert [e["alert_id"] for e in await alert_events(app, ws)] == [alert.id]


async def test_a_run_stopped_by_the_cap_fires_when_it_ends_once_with_a_refusal(
    app: App,
    stubs: SimpleNamespace,
    keyed_runs: run_service_pb2_grpc.RunServiceStub,
    new_user: NewUser,
) -> None:
    owner = await new_user()
    ws = (await capped_workspace(app, stubs, owner)).workspace_id
    run_id = await insert_run(app.db, ws)
    async with app.db.transaction() as session:
        await session.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(status="running", failure_reason=caps.stop_reason("workspace", 3, 1))
        )
    async with app.db.transaction() as session:
        assert await end_run(session, run_id, RunStatus.FAILED, utcnow())
    [alert] = await alerts_of(app, ws)
    assert (alert.run_id, alert.figures["trigger"]) == (run_id, "run_stopped")
    assert alert.figures["estimate_micros"] is None and alert.figures["cap_micros"] == 1
    # The same cap refusing a StartRun the same month: already told.
    await refuse_start(keyed_runs, owner, ws)
    assert len(await alerts_of(app, ws)) == 1


async def test_no_rule_no_alert(
    app: App,
    stubs: SimpleNamespace,
    keyed_runs: run_service_pb2_grpc.RunServiceStub,
    new_user: NewUser,
) -> None:
    owner = await new_user()
    ws = (await capped_workspace(app, stubs, owner, rule=False)).workspace_id
    await stubs.webhooks.CreateAlertRule(  # another kind does not fire on a cap
        pb.CreateAlertRuleRequest(
            workspace_id=ws,
            alert_rule=pb.AlertRule(
                kind=pb.ALERT_KIND_DOMAIN_UNCITED, trailing_runs=1, min_sample=1
            ),
        ),
        metadata=owner.metadata,
    )
    await refuse_start(keyed_runs, owner, ws)
    assert await alerts_of(app, ws) == []
    assert await alert_events(app, ws) == []
    async with app.db.transaction(write=False) as session:
        assert (await session.scalars(select(Alert).where(Alert.workspace_id == ws))).all() == []
