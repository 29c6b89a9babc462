"""Audit events: one per successful mutation, written in the mutation's transaction."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from service.clock import new_id, utcnow
from service.db.models import AuditEvent
from service.domain.actor import Actor


def record(
    session: AsyncSession,
    call: Actor,
    *,
    organization_id: str,
    workspace_id: str | None = None,
    target_ids: Iterable[str] = (),
) -> None:
    """Adds the audit event of the current call to the session (never secrets: ids only).

    The actor is the user (acted for, when a service key acts as one) and the key is
    recorded beside it; the event is identified by the server's request id, and the
    client's `x-request-id` is kept as the correlation id.
    """
    session.add(
        AuditEvent(
            id=new_id("aud"),
            organization_id=organization_id,
            workspace_id=workspace_id,
            actor_id=call.actor_id,
            service_key_id=call.service_key_id,
            action=call.action,
            target_ids=list(target_ids),
            request_id=call.request_id,
            correlation_id=call.correlation_id,
            create_time=utcnow(),
        )
    )
