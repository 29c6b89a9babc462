"""Audit events: one per successful mutation, written in the mutation's transaction."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from service.auth.context import CallContext
from service.db.models import AuditEvent
from service.domain.clock import new_id, utcnow


def record(
    session: AsyncSession,
    call: CallContext,
    *,
    organization_id: str,
    workspace_id: str | None = None,
    target_ids: Iterable[str] = (),
) -> None:
    """Adds the audit event of the current call to the session (never secrets: ids only)."""
    session.add(
        AuditEvent(
            id=new_id("aud"),
            organization_id=organization_id,
            workspace_id=workspace_id,
            actor_id=call.principal.actor_id if call.principal else "anonymous",
            action=call.method,
            target_ids=list(target_ids),
            request_id=call.request_id,
            create_time=utcnow(),
        )
    )
