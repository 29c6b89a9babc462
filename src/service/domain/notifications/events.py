"""Webhook events and the outbox: an event becomes one delivery row per endpoint that wants it,
in the transaction of what it reports, so it is sent if and only if that commits."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.clock import new_id
from service.db.models import WebhookDelivery, WebhookEndpoint

RUN_COMPLETED: Final = "run.completed"
RUN_FAILED: Final = "run.failed"
ALERT_TRIGGERED: Final = "alert.triggered"
DIGEST: Final = "digest"
ENDPOINT_DISABLED: Final = "endpoint.disabled"
PING: Final = "ping"
# Types an endpoint may ask for (`ping` reaches it on demand whatever it asked for).
EVENT_TYPES: Final = (RUN_COMPLETED, RUN_FAILED, ALERT_TRIGGERED, DIGEST, ENDPOINT_DISABLED)
PENDING: Final = "pending"


def rfc3339(moment: datetime) -> str:
    """`2026-12-08T01:12:56.123Z`: the timestamps of payloads."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_body(event_type: str, data: Mapping[str, Any], now: datetime) -> str:
    """The JSON body every attempt sends: `{type, timestamp, data}`."""
    return json.dumps(
        {"type": event_type, "timestamp": rfc3339(now), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def wants(endpoint: WebhookEndpoint, event_type: str) -> bool:
    return endpoint.enabled and (not endpoint.event_types or event_type in endpoint.event_types)


async def emit(
    session: AsyncSession,
    workspace_id: str,
    event_type: str,
    data: Mapping[str, Any],
    now: datetime,
    *,
    exclude: Collection[str] = (),
) -> list[WebhookDelivery]:
    """Queues the event for every enabled endpoint of the workspace that wants its type (but
    those in `exclude`), due now; one `webhook-id` for all of them. Returns the deliveries."""
    endpoints = (
        await session.scalars(
            select(WebhookEndpoint).where(
                WebhookEndpoint.workspace_id == workspace_id, WebhookEndpoint.enabled.is_(True)
            )
        )
    ).all()
    targets = [e for e in endpoints if wants(e, event_type) and e.id not in exclude]
    return queue(session, targets, event_type, data, now)


def queue(
    session: AsyncSession,
    endpoints: Collection[WebhookEndpoint],
    event_type: str,
    data: Mapping[str, Any],
    now: datetime,
) -> list[WebhookDelivery]:
    """Adds one pending delivery of the event per endpoint to the session."""
    if not endpoints:
        return []
    message_id = new_id("msg")
    body = event_body(event_type, data, now)
    deliveries = [
        WebhookDelivery(
            id=new_id("dlv"),
            workspace_id=endpoint.workspace_id,
            endpoint_id=endpoint.id,
            message_id=message_id,
            event_type=event_type,
            body=body,
            status=PENDING,
            attempts=0,
            next_attempt_time=now,
            last_http_status=0,
            last_error="",
            last_latency_ms=0,
            schedule_start_time=now,
            create_time=now,
        )
        for endpoint in endpoints
    ]
    session.add_all(deliveries)
    return deliveries
