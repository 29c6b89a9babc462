"""Audit events: one per successful mutation, written in the mutation's transaction."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from service.clock import new_id
from service.db.models import AuditEvent, Workspace
from service.domain.actor import Actor
from service.domain.errors import NotFound


def record(
    session: AsyncSession,
    actor: Actor,
    *,
    organization_id: str,
    workspace_id: str | None = None,
    target_ids: Iterable[str] = (),
    now: datetime,
) -> None:
    """Adds the audit event of the current call, made at `now`, to the session (never
    secrets: ids only).

    The actor is the user (acted for, when a service key acts as one) and the key is
    recorded beside it; the event is identified by the server's request id, and the
    client's `x-request-id` is kept as the correlation id.
    """
    session.add(
        AuditEvent(
            id=new_id("aud"),
            organization_id=organization_id,
            workspace_id=workspace_id,
            actor_id=actor.actor_id,
            service_key_id=actor.service_key_id,
            action=actor.action,
            target_ids=list(target_ids),
            request_id=actor.request_id,
            correlation_id=actor.correlation_id,
            create_time=now,
        )
    )


async def record_workspace_change(
    session: AsyncSession,
    actor: Actor,
    workspace_id: str,
    *,
    target_ids: Iterable[str],
    now: datetime,
) -> None:
    """Adds the audit event of a change in `workspace_id` (empty target ids are left out);
    its organization is the workspace's (the session's copy when it holds one)."""
    workspace = await session.get(Workspace, workspace_id)
    if workspace is None:
        raise NotFound("workspace", workspace_id)
    record_workspace(session, actor, workspace, now, target_ids=[t for t in target_ids if t])


def record_workspace(
    session: AsyncSession,
    actor: Actor,
    workspace: Workspace,
    now: datetime,
    *,
    target_ids: Iterable[str] | None = None,
) -> None:
    """Records the audit event of a change to `workspace` made at `now` (targets: the
    workspace, unless `target_ids` are given)."""
    record(
        session,
        actor,
        organization_id=workspace.organization_id,
        workspace_id=workspace.id,
        target_ids=[workspace.id] if target_ids is None else target_ids,
        now=now,
    )
