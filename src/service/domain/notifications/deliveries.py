"""Deliveries: listed and resent by owners, claimed by the ticker, recorded by the workers.

A delivery's schedule lives in its row: `next_attempt_time` is when it is due. The ticker
claims due rows (`claim_due`: a fresh `lease_token`, and `next_attempt_time` pushed past the
attempt's time limit) and hands them to the workers; a worker records the attempt only while
it holds the lease (`record_attempt`). A worker killed mid-attempt records nothing: the lease
runs out, the row is due again and the next sweep sends it, with the same `webhook-id`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.clock import new_id
from service.config import Settings
from service.db.models import WebhookDelivery, WebhookEndpoint
from service.domain import audit
from service.domain.actor import Actor
from service.domain.errors import InvalidArgument, NotFound
from service.domain.inputs import require_id
from service.domain.notifications import events
from service.domain.notifications.endpoints import get_endpoint
from service.domain.paging import parse_page

PENDING: Final = events.PENDING
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
STATUSES: Final = (PENDING, SUCCEEDED, FAILED)
MAX_RESEND: Final = 1000
# A claimed attempt may take the HTTP time limit plus as much again (at most this) before
# its lease runs out.
MAX_LEASE_MARGIN_SECONDS: Final = 30.0
# Who disables an endpoint that fails for days (its audit event's actor and action).
SYSTEM = Actor(
    actor_id="beacon",
    user_id=None,
    service_key_id=None,
    request_id="",
    action="beacon.webhooks/DisableFailingEndpoint",
)


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    deliveries: list[WebhookDelivery]
    next_page_token: str


async def list_deliveries(
    session: AsyncSession,
    workspace_id: str,
    *,
    endpoint_id: str,
    status: str,
    page_size: int,
    page_token: str,
) -> DeliveryPage:
    """The workspace's deliveries, newest first (of one endpoint and status when given)."""
    page = parse_page(
        page_size, page_token, scope=f"webhook_deliveries|{workspace_id}|{endpoint_id}|{status}"
    )
    conditions = [WebhookDelivery.workspace_id == workspace_id]
    if endpoint_id:
        require_id("endpoint_id", endpoint_id)
        conditions.append(WebhookDelivery.endpoint_id == endpoint_id)
    if status:
        conditions.append(WebhookDelivery.status == status)
    rows = list(
        await session.scalars(
            select(WebhookDelivery)
            .where(
                *conditions,
                page.where(WebhookDelivery.create_time, WebhookDelivery.id, descending=True),
            )
            .order_by(WebhookDelivery.create_time.desc(), WebhookDelivery.id.desc())
            .limit(page.size + 1)
        )
    )
    return DeliveryPage(rows[: page.size], page.next_token(rows))


async def send_ping(
    session: AsyncSession, call: Actor, workspace_id: str, endpoint_id: str, now: datetime
) -> WebhookDelivery:
    """Queues a `ping` event to the endpoint (enabled or not)."""
    endpoint = await get_endpoint(session, workspace_id, endpoint_id)
    data = {"endpoint_id": endpoint.id, "workspace_id": workspace_id}
    (delivery,) = events.queue(session, [endpoint], events.PING, data, now)
    await audit.record_workspace_change(
        session, call, workspace_id, target_ids=[delivery.id], now=now
    )
    return delivery


async def resend(
    session: AsyncSession,
    call: Actor,
    workspace_id: str,
    *,
    delivery_id: str,
    failed_since: datetime | None,
    endpoint_id: str,
    now: datetime,
) -> list[WebhookDelivery]:
    """Queues deliveries again, due now with a fresh retry schedule and their webhook-id:
    one (`delivery_id`), or every FAILED one created at or after `failed_since`."""
    if bool(delivery_id) == (failed_since is not None):
        raise InvalidArgument("delivery_id", "give either delivery_id or failed_since")
    if delivery_id:
        require_id("delivery_id", delivery_id)
        found = await session.get(WebhookDelivery, delivery_id)
        if found is None or found.workspace_id != workspace_id:
            raise NotFound("webhook delivery", delivery_id)
        chosen = [found]
    else:
        conditions = [
            WebhookDelivery.workspace_id == workspace_id,
            WebhookDelivery.status == FAILED,
            WebhookDelivery.create_time >= failed_since,
        ]
        if endpoint_id:
            await get_endpoint(session, workspace_id, endpoint_id)
            conditions.append(WebhookDelivery.endpoint_id == endpoint_id)
        chosen = list(
            await session.scalars(
                select(WebhookDelivery)
                .where(*conditions)
                .order_by(WebhookDelivery.create_time, WebhookDelivery.id)
                .limit(MAX_RESEND)
            )
        )
    for delivery in chosen:
        delivery.status = PENDING
        delivery.next_attempt_time = now
        delivery.schedule_start_time = now
        delivery.lease_token = None
        delivery.complete_time = None
    if chosen:
        await audit.record_workspace_change(
            session, call, workspace_id, target_ids=[d.id for d in chosen], now=now
        )
    return chosen


async def claim_due(
    session: AsyncSession, now: datetime, *, lease: timedelta, limit: int
) -> list[tuple[str, str]]:
    """Claims up to `limit` due deliveries for one attempt each: (delivery id, lease token).

    Concurrent tickers take disjoint rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite's
    write transaction is exclusive). A claim is due again after `lease`.
    """
    ids = list(
        await session.scalars(
            select(WebhookDelivery.id)
            .where(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_time <= now)
            .order_by(WebhookDelivery.next_attempt_time)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    claims = [(delivery_id, new_id("lease")) for delivery_id in ids]
    for delivery_id, token in claims:
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)
            .values(lease_token=token, next_attempt_time=now + lease)
        )
    return claims


def lease_for(settings: Settings) -> timedelta:
    """How long a claimed attempt may take before it is due again."""
    limit = settings.webhook_timeout_seconds
    return timedelta(seconds=limit + min(limit, MAX_LEASE_MARGIN_SECONDS))


async def claimed(
    session: AsyncSession, delivery_id: str, token: str, *, lock: bool = False
) -> tuple[WebhookDelivery, WebhookEndpoint] | None:
    """The delivery and its endpoint while `token` holds its lease; None otherwise (another
    claim took it over, it was resent, deleted or recorded). `lock` holds both rows until the
    transaction ends (a resend or an update cannot slip in before the outcome is written)."""
    query = (
        select(WebhookDelivery, WebhookEndpoint)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.lease_token == token,
            WebhookDelivery.status == PENDING,
        )
    )
    row = (await session.execute(query.with_for_update() if lock else query)).one_or_none()
    return None if row is None else (row[0], row[1])


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt found: the HTTP status (0: no answer), why it failed, its time, and
    whether no retry can help (the URL's address is refused, the endpoint is disabled)."""

    http_status: int
    error: str
    latency_ms: int
    final: bool = False

    @property
    def succeeded(self) -> bool:
        return 200 <= self.http_status < 300


def retry_delay(attempts: int, settings: Settings, rng: random.Random) -> timedelta:
    """The wait after failed attempt number `attempts`: exponential (base, doubling, capped)
    with equal jitter (between half and all of it), so that endpoints that failed together do
    not come back together."""
    ceiling = min(
        settings.webhook_backoff_max_seconds,
        settings.webhook_backoff_seconds * 2 ** min(attempts - 1, 40),
    )
    return timedelta(seconds=ceiling / 2 + rng.uniform(0, ceiling / 2))


async def record_attempt(
    session: AsyncSession,
    delivery_id: str,
    token: str,
    attempt: Attempt,
    *,
    settings: Settings,
    now: datetime,
    rng: random.Random,
) -> str | None:
    """Records the attempt if `token` still holds the lease; returns the delivery's status
    (None when the lease was lost: the outcome belongs to a later claim). A 410 disables the
    endpoint; an endpoint failing for `webhook_disable_after_hours` is disabled as well."""
    found = await claimed(session, delivery_id, token, lock=True)
    if found is None:
        return None
    delivery, endpoint = found
    delivery.attempts += 1
    delivery.last_http_status = attempt.http_status
    delivery.last_error = attempt.error[:500]
    delivery.last_latency_ms = attempt.latency_ms
    delivery.lease_token = None
    if attempt.succeeded:
        delivery.status = SUCCEEDED
        delivery.next_attempt_time = None
        delivery.complete_time = now
        endpoint.failing_since = None
        return SUCCEEDED
    retry_at = now + retry_delay(delivery.attempts, settings, rng)
    deadline = delivery.schedule_start_time + timedelta(hours=settings.webhook_retry_hours)
    if attempt.final or attempt.http_status == 410 or retry_at > deadline:
        delivery.status = FAILED
        delivery.next_attempt_time = None
        delivery.complete_time = now
    else:
        delivery.next_attempt_time = retry_at
    if delivery.event_type == events.PING:
        return delivery.status
    if endpoint.failing_since is None:
        endpoint.failing_since = now
    if attempt.http_status == 410:
        await disable(session, endpoint, "the endpoint answered HTTP 410 Gone", now)
    elif endpoint.enabled and now - endpoint.failing_since >= timedelta(
        hours=settings.webhook_disable_after_hours
    ):
        await disable(
            session,
            endpoint,
            f"every attempt failed since {events.rfc3339(endpoint.failing_since)}",
            now,
        )
    return delivery.status


async def disable(
    session: AsyncSession, endpoint: WebhookEndpoint, reason: str, now: datetime
) -> None:
    """Disables the endpoint: its pending deliveries fail, an audit event records it, and
    the workspace's other endpoints get `endpoint.disabled`."""
    if not endpoint.enabled:
        return
    endpoint.enabled = False
    endpoint.disabled_reason = reason
    await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.status == PENDING)
        .values(
            status=FAILED,
            next_attempt_time=None,
            lease_token=None,
            complete_time=now,
            last_error="the endpoint was disabled",
        )
    )
    await audit.record_workspace_change(
        session, SYSTEM, endpoint.workspace_id, target_ids=[endpoint.id], now=now
    )
    await events.emit(
        session,
        endpoint.workspace_id,
        events.ENDPOINT_DISABLED,
        {"endpoint_id": endpoint.id, "url": endpoint.url, "reason": reason},
        now,
        exclude=[endpoint.id],
    )


def refused(reason: str) -> Attempt:
    """An attempt that was not made: no retry can help."""
    return Attempt(http_status=0, error=reason, latency_ms=0, final=True)
