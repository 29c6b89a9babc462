"""Deliveries by real `beacon worker` and `beacon ticker` processes to a real HTTP receiver on
127.0.0.1 that verifies every request with the `standardwebhooks` library: signatures verify,
a failed attempt is retried with the same webhook-id, HTTP 410 disables the endpoint, and a
worker killed (SIGKILL) in the middle of a delivery loses no event."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from service.app import App
from service.broker import broker_of
from service.clock import utcnow
from service.config import Settings
from service.db.models import AuditEvent, WebhookDelivery, WebhookEndpoint
from service.domain.notifications import events
from service.outbox import dispatch_pending_runs
from tests.support import pipeline as pipeline_fixtures
from tests.support.brokers import broker_url
from tests.support.fakes.provider_server import FakeProviderServer
from tests.support.pipeline import derive_settings, provider_settings
from tests.support.processes import Beacon, beacon_env, eventually
from tests.support.receiver import Receiver, running_receiver
from tests.support.webhook_builders import make_endpoint, make_workspace

pytestmark = pytest.mark.postgres_only  # worker processes share PostgreSQL and Redis
fake_server = pipeline_fixtures.fake_server
fake_provider = pipeline_fixtures.fake_provider


@contextlib.asynccontextmanager
async def fleet(
    settings: Settings, logs: Path, **over: object
) -> AsyncIterator[tuple[Settings, list[Beacon]]]:
    """A worker and a ticker on a broker namespace of their own; retries come fast."""
    async with broker_url("redis") as url:
        # Validated (not model_copy): the providers' flat names in `over` fill the nested model.
        fast = derive_settings(
            settings,
            **{
                **over,
                "broker_url": url,
                "webhook_allow_http": True,
                "webhook_allow_private": True,
                "webhook_timeout_seconds": 3.0,
                "webhook_backoff_seconds": 0.5,
                "ticker_interval_seconds": 0.2,
            },
        )
        env = beacon_env(fast)
        processes = [
            await Beacon.start("worker", env, logs / "worker-1.log"),
            await Beacon.start("ticker", env, logs / "ticker.log"),
        ]
        try:
            yield fast, processes
        finally:
            for process in processes:
                await process.kill()


async def emit(app: App, workspace_id: str, data: dict[str, object]) -> None:
    async with app.db.transaction() as session:
        await events.emit(session, workspace_id, events.RUN_COMPLETED, data, utcnow())


async def delivery_of(app: App, endpoint_id: str) -> WebhookDelivery:
    async with app.db.transaction(write=False) as session:
        return (
            await session.scalars(
                select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
            )
        ).one()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as started:
        yield started


async def test_a_500_then_200_receiver_gets_the_event_again_with_the_same_id(
    app: App, settings: Settings, receiver: Receiver, tmp_path: Path
) -> None:
    ws = await make_workspace(app)
    endpoint_id, secret = await make_endpoint(app, ws, receiver.url("flaky"))
    receiver.secrets["flaky"] = [secret]
    receiver.scripts["flaky"] = [500, 200]
    async with fleet(settings, tmp_path):
        await emit(app, ws, {"run_id": "run_x", "status": "succeeded"})
        first, second = await receiver.wait_for("flaky", 2)

        async def succeeded() -> WebhookDelivery | None:
            delivery = await delivery_of(app, endpoint_id)
            return delivery if delivery.status == "succeeded" else None

        delivery = await eventually(succeeded, "the delivery to succeed", within=30)
    assert first.verified and second.verified
    assert first.message_id == second.message_id == delivery.message_id
    assert first.body == second.body
    assert first.event["type"] == "run.completed"
    assert first.event["data"] == {"run_id": "run_x", "status": "succeeded"}
    assert (delivery.attempts, delivery.last_http_status) == (2, 200)
    assert len(receiver.of("flaky")) == 2  # once more, not again after the 200


async def test_http_410_disables_the_endpoint(
    app: App, settings: Settings, receiver: Receiver, tmp_path: Path
) -> None:
    ws = await make_workspace(app)
    endpoint_id, secret = await make_endpoint(app, ws, receiver.url("gone"))
    watcher_id, watcher_secret = await make_endpoint(
        app, ws, receiver.url("watcher"), event_types=["endpoint.disabled"]
    )
    receiver.secrets.update(gone=[secret], watcher=[watcher_secret])
    receiver.scripts["gone"] = [410]
    async with fleet(settings, tmp_path):
        await emit(app, ws, {"run_id": "run_y"})
        (notice,) = await receiver.wait_for("watcher", 1)
        await emit(app, ws, {"run_id": "run_z"})  # the disabled endpoint gets nothing more
        await asyncio.sleep(0)
    async with app.db.transaction(write=False) as session:
        endpoint = await session.get(WebhookEndpoint, endpoint_id)
        audits = (
            await session.scalars(select(AuditEvent).where(AuditEvent.workspace_id == ws))
        ).all()
        rows = (
            await session.scalars(
                select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
            )
        ).all()
    assert endpoint is not None and not endpoint.enabled
    assert "410" in endpoint.disabled_reason
    assert [(d.status, d.last_http_status) for d in rows] == [("failed", 410)]
    assert len(receiver.of("gone")) == 1
    assert notice.verified and notice.event["type"] == "endpoint.disabled"
    assert notice.event["data"]["endpoint_id"] == endpoint_id
    assert [a.target_ids for a in audits] == [[endpoint_id]]
    assert watcher_id != endpoint_id


async def test_a_worker_killed_mid_delivery_loses_no_event(
    app: App, settings: Settings, receiver: Receiver, tmp_path: Path
) -> None:
    ws = await make_workspace(app)
    endpoint_id, secret = await make_endpoint(app, ws, receiver.url("held"))
    receiver.secrets["held"] = [secret]
    receiver.holding["held"] = asyncio.Event()
    async with fleet(settings, tmp_path) as (fast, processes):
        await emit(app, ws, {"run_id": "run_k"})
        await receiver.wait_for("held", 1)
        await processes[0].kill()  # SIGKILL while the request is in flight
        receiver.holding.pop("held").set()
        processes.append(await Beacon.start("worker", beacon_env(fast), tmp_path / "w2.log"))
        first, again = await receiver.wait_for("held", 2, within=60)

        async def succeeded() -> WebhookDelivery | None:
            delivery = await delivery_of(app, endpoint_id)
            return delivery if delivery.status == "succeeded" else None

        delivery = await eventually(succeeded, "the delivery to succeed", within=30)
    assert first.message_id == again.message_id == delivery.message_id
    assert first.verified and again.verified
    assert delivery.attempts == 1  # the killed attempt recorded nothing


async def test_a_run_ended_by_a_worker_sends_run_completed(
    app: App,
    settings: Settings,
    receiver: Receiver,
    fake_provider: FakeProviderServer,
    tmp_path: Path,
) -> None:
    """The whole path: a worker asks the (fake) providers, ends the run, and the run's event,
    written in that transaction, reaches the receiver signed."""
    prompts = ["best crm for startups", "cheapest crm"]
    ws = await pipeline_fixtures.make_workspace(app.db, prompts=prompts)
    _, secret = await make_endpoint(app, ws, receiver.url("runs"), event_types=["run.completed"])
    receiver.secrets["runs"] = [secret]
    async with fleet(settings, tmp_path, **provider_settings(fake_provider)) as (fast, _):
        run_id = await pipeline_fixtures.insert_run(app.db, ws)
        broker = broker_of(fast)
        try:
            await dispatch_pending_runs(app.db, broker, run_ids=[run_id])
            (event,) = await receiver.wait_for("runs", 1, within=90)
        finally:
            broker.close()
    assert event.verified
    data = event.event["data"]
    assert event.event["type"] == "run.completed"
    assert (data["run_id"], data["status"]) == (run_id, "succeeded")
    assert data["counts"]["succeeded"] == len(prompts) * 2
    assert sorted(data["providers"]) == ["anthropic", "openai"]
    assert all(p["responses"] == len(prompts) for p in data["providers"].values())
