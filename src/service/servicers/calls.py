"""What servicers read from, and record for, the current call: shared by the service modules,
which do not import each other."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from service.auth.context import current_actor, current_call
from service.domain import audit


def record_workspace_change(
    session: AsyncSession, workspace_id: str, target_ids: Iterable[str]
) -> None:
    """Adds the audit event of the current call, a change in `workspace_id`, to the session."""
    call = current_actor()
    audit.record(
        session,
        call,
        organization_id=call.require_access().organization_id,
        workspace_id=workspace_id,
        target_ids=[t for t in target_ids if t],
    )


def resolved_workspace_id() -> str:
    """The workspace the auth check resolved from the request's resource."""
    workspace_id = current_call().require_access().workspace_id
    if workspace_id is None:
        raise RuntimeError("the auth rule did not resolve a workspace")
    return workspace_id
