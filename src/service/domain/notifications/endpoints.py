"""Webhook endpoints of a workspace: commands of its effective owners.

A secret is returned only by the command that makes it (creation, rotation) and stored
encrypted (`secrets.SecretBox`); it is never logged, listed or audited (audit events hold ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.clock import new_id
from service.config import Settings
from service.db.models import WebhookEndpoint
from service.domain import audit
from service.domain.actor import Actor
from service.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from service.domain.inputs import require_id
from service.domain.notifications.events import EVENT_TYPES
from service.domain.notifications.secrets import SecretBox, new_secret
from service.domain.notifications.targets import parse_endpoint_url
from service.domain.paging import parse_page

MAX_ENDPOINTS_PER_WORKSPACE = 10
MAX_DESCRIPTION_LENGTH = 200
UPDATABLE = ("url", "event_types", "enabled", "description")


@dataclass(frozen=True, slots=True)
class EndpointWithSecret:
    """An endpoint and the secret just made for it (shown once)."""

    endpoint: WebhookEndpoint
    secret: str


def clean_event_types(field: str, event_types: Sequence[str]) -> list[str]:
    unknown = [t for t in event_types if t not in EVENT_TYPES]
    if unknown:
        raise InvalidArgument(
            field, f"{unknown[0]!r} is not an event type (one of {', '.join(EVENT_TYPES)})"
        )
    return sorted(set(event_types), key=EVENT_TYPES.index)


def clean_description(field: str, description: str) -> str:
    description = description.strip()
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise InvalidArgument(field, f"must be at most {MAX_DESCRIPTION_LENGTH} characters")
    if any(ord(c) < 0x20 for c in description):
        raise InvalidArgument(field, "must not contain control characters")
    return description


async def create_endpoint(
    session: AsyncSession,
    call: Actor,
    workspace_id: str,
    *,
    url: str,
    event_types: Sequence[str],
    description: str,
    settings: Settings,
    now: datetime,
) -> EndpointWithSecret:
    """Adds an endpoint with a new secret (returned once); at most 10 per workspace."""
    box = SecretBox.from_settings(settings)
    endpoint = WebhookEndpoint(
        id=new_id("whk"),
        workspace_id=workspace_id,
        url=parse_endpoint_url(url, allow_http=settings.webhook_allow_http),
        event_types=clean_event_types("event_types", event_types),
        enabled=True,
        description=clean_description("description", description),
        disabled_reason="",
        secret_create_time=now,
        create_time=now,
    )
    count = await session.scalar(
        select(func.count()).where(WebhookEndpoint.workspace_id == workspace_id)
    )
    if (count or 0) >= MAX_ENDPOINTS_PER_WORKSPACE:
        raise FailedPrecondition(
            f"the workspace has {MAX_ENDPOINTS_PER_WORKSPACE} webhook endpoints already",
            reason="WEBHOOK_ENDPOINT_LIMIT_REACHED",
        )
    secret = new_secret()
    endpoint.secret_ciphertext = box.encrypt(secret, endpoint.id)
    session.add(endpoint)
    await audit.record_workspace_change(
        session, call, workspace_id, target_ids=[endpoint.id], now=now
    )
    return EndpointWithSecret(endpoint, secret)


async def list_endpoints(
    session: AsyncSession, workspace_id: str, *, page_size: int = 0, page_token: str = ""
) -> tuple[list[WebhookEndpoint], str]:
    """A page of the workspace's endpoints, oldest first, and the next page's token."""
    page = parse_page(page_size, page_token, scope=f"webhook_endpoints|{workspace_id}")
    rows = list(
        await session.scalars(
            select(WebhookEndpoint)
            .where(
                WebhookEndpoint.workspace_id == workspace_id,
                page.where(WebhookEndpoint.create_time, WebhookEndpoint.id),
            )
            .order_by(WebhookEndpoint.create_time, WebhookEndpoint.id)
            .limit(page.size + 1)
        )
    )
    return rows[: page.size], page.next_token(rows)


async def get_endpoint(
    session: AsyncSession, workspace_id: str, endpoint_id: str, *, field: str = "endpoint_id"
) -> WebhookEndpoint:
    """The workspace's endpoint; NotFound when it has none of that id."""
    require_id(field, endpoint_id)
    endpoint = await session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or endpoint.workspace_id != workspace_id:
        raise NotFound("webhook endpoint", endpoint_id)
    return endpoint


async def update_endpoint(
    session: AsyncSession,
    call: Actor,
    workspace_id: str,
    endpoint_id: str,
    paths: Sequence[str],
    *,
    url: str,
    event_types: Sequence[str],
    enabled: bool,
    description: str,
    allow_http: bool,
    now: datetime,
) -> WebhookEndpoint:
    """Applies the fields named in `paths` (see UPDATABLE)."""
    if not paths:
        raise InvalidArgument("update_mask", "names no field")
    for path in paths:
        if path not in UPDATABLE:
            raise InvalidArgument("update_mask", f"{path!r} cannot be updated")
    endpoint = await get_endpoint(session, workspace_id, endpoint_id, field="endpoint.id")
    if "url" in paths:
        endpoint.url = parse_endpoint_url(url, allow_http=allow_http, field="endpoint.url")
    if "event_types" in paths:
        endpoint.event_types = clean_event_types("endpoint.event_types", event_types)
    if "description" in paths:
        endpoint.description = clean_description("endpoint.description", description)
    if "enabled" in paths:
        if enabled and not endpoint.enabled:
            endpoint.disabled_reason = ""
            endpoint.failing_since = None
        endpoint.enabled = enabled
    await audit.record_workspace_change(
        session, call, workspace_id, target_ids=[endpoint.id], now=now
    )
    return endpoint


async def delete_endpoint(
    session: AsyncSession, call: Actor, workspace_id: str, endpoint_id: str, now: datetime
) -> None:
    """Removes the endpoint and its deliveries."""
    endpoint = await get_endpoint(session, workspace_id, endpoint_id)
    await session.delete(endpoint)
    await audit.record_workspace_change(
        session, call, workspace_id, target_ids=[endpoint_id], now=now
    )


async def rotate_secret(
    session: AsyncSession,
    call: Actor,
    workspace_id: str,
    endpoint_id: str,
    *,
    settings: Settings,
    now: datetime,
) -> EndpointWithSecret:
    """Makes a new secret (returned once); the current one keeps signing beside it for
    `webhook_rotation_hours`."""
    box = SecretBox.from_settings(settings)
    endpoint = await get_endpoint(session, workspace_id, endpoint_id)
    secret = new_secret()
    endpoint.previous_secret_ciphertext = endpoint.secret_ciphertext
    endpoint.previous_secret_expire_time = now + timedelta(hours=settings.webhook_rotation_hours)
    endpoint.secret_ciphertext = box.encrypt(secret, endpoint.id)
    endpoint.secret_create_time = now
    await audit.record_workspace_change(
        session, call, workspace_id, target_ids=[endpoint.id], now=now
    )
    return EndpointWithSecret(endpoint, secret)


def signing_secrets(endpoint: WebhookEndpoint, box: SecretBox, now: datetime) -> list[str]:
    """The secrets that sign a delivery at `now`: the current one, and the previous one
    while its rotation window lasts."""
    found = [box.decrypt(endpoint.secret_ciphertext, endpoint.id)]
    expire = endpoint.previous_secret_expire_time
    if endpoint.previous_secret_ciphertext and expire is not None and now < expire:
        found.append(box.decrypt(endpoint.previous_secret_ciphertext, endpoint.id))
    return found
