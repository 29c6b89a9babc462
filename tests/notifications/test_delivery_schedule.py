"""The schedule of attempts kept in the deliveries table: backoff with jitter over the retry
window, FAILED when it ends, and an endpoint failing for days disabled with an audit event and
an `endpoint.disabled` event (attempts recorded as a worker records them)."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta

from sqlalchemy import select, update

from service.app import App
from service.clock import utcnow
from service.db.models import AuditEvent, WebhookDelivery, WebhookEndpoint
from service.domain.notifications import deliveries, events
from service.domain.notifications.deliveries import Attempt
from tests.support.webhook_builders import make_endpoint, make_workspace

FAILED_500 = Attempt(http_status=500, error="HTTP 500", latency_ms=3)


def test_delays_double_up_to_the_cap_with_jitter(app: App) -> None:
    settings = app.settings
    rng = random.Random(7)
    delays = [deliveries.retry_delay(n, settings, rng).total_seconds() for n in range(1, 16)]
    for n, delay in enumerate(delays, start=1):
        ceiling = min(settings.webhook_backoff_max_seconds, 5 * 2 ** (n - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 3) for d in delays[-3:]}) == 3  # capped, yet jittered apart


async def claim_and_fail(app: App, endpoint_id: str, at: datetime) -> str | None:
    """Claims the due deliveries as the ticker does and fails the endpoint's ones (HTTP 500)."""
    async with app.db.transaction() as session:
        claims = await deliveries.claim_due(session, at, lease=timedelta(seconds=30), limit=100)
        ids = set(
            await session.scalars(
                select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == endpoint_id)
            )
        )
    mine = [claim for claim in claims if claim[0] in ids]
    status = None
    for delivery_id, token in mine:
        async with app.db.transaction() as session:
            status = await deliveries.record_attempt(
                session,
                delivery_id,
                token,
                FAILED_500,
                settings=app.settings,
                now=at,
                rng=random.Random(1),
            )
    return status


async def test_retries_stop_after_the_window_and_a_failing_endpoint_is_disabled(
    app: App,
) -> None:
    ws = await make_workspace(app)
    endpoint_id, _ = await make_endpoint(app, ws, "https://hooks.example.com/down")
    watcher_id, _ = await make_endpoint(app, ws, "https://hooks.example.com/watch")
    start = utcnow()
    async with app.db.transaction() as session:
        await events.emit(session, ws, events.RUN_COMPLETED, {"run_id": "run_d"}, start)
    moment, statuses = start, []
    while moment < start + timedelta(hours=100):
        async with app.db.transaction(write=False) as session:
            row = (
                await session.scalars(
                    select(WebhookDelivery).where(
                        WebhookDelivery.endpoint_id == endpoint_id,
                        WebhookDelivery.event_type == events.RUN_COMPLETED,
                    )
                )
            ).one()
        if row.status != "pending" or row.next_attempt_time is None:
            break
        moment = max(moment, row.next_attempt_time)
        statuses.append(await claim_and_fail(app, endpoint_id, moment))
    assert statuses[-1] == "failed" and set(statuses[:-1]) == {"pending"}
    assert 10 <= row.attempts + 1 <= 40
    assert start + timedelta(hours=60) < moment <= start + timedelta(hours=72)
    async with app.db.transaction(write=False) as session:
        endpoint = await session.get(WebhookEndpoint, endpoint_id)
    assert endpoint is not None and endpoint.enabled  # 72 h of failures: not yet 96

    # Another event keeps failing until the endpoint has failed for 96 hours.
    async with app.db.transaction() as session:
        await events.emit(session, ws, events.RUN_COMPLETED, {"run_id": "run_e"}, moment)
        await session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id)
            .values(failing_since=moment - timedelta(hours=96))
        )
    await claim_and_fail(app, endpoint_id, moment + timedelta(seconds=1))
    async with app.db.transaction(write=False) as session:
        endpoint = await session.get(WebhookEndpoint, endpoint_id)
        audits = (
            await session.scalars(select(AuditEvent).where(AuditEvent.workspace_id == ws))
        ).all()
        notices = (
            await session.scalars(
                select(WebhookDelivery).where(
                    WebhookDelivery.endpoint_id == watcher_id,
                    WebhookDelivery.event_type == events.ENDPOINT_DISABLED,
                )
            )
        ).all()
    assert endpoint is not None and not endpoint.enabled
    assert "every attempt failed since" in endpoint.disabled_reason
    assert [(a.action, a.actor_id, a.target_ids) for a in audits] == [
        ("beacon.webhooks/DisableFailingEndpoint", "beacon", [endpoint_id])
    ]
    (notice,) = notices
    assert json.loads(notice.body)["data"]["endpoint_id"] == endpoint_id
