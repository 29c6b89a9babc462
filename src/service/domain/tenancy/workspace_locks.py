"""The one "lock the live workspace" query: a command that changes what a workspace holds
takes its row lock first, so that it serializes with the workspace's deletion and with other
such commands (SQLite's write transactions are serial anyway)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import Workspace
from service.domain.errors import NotFound


def live_workspace_for_update(*criteria: ColumnElement[Any]) -> Select[Workspace]:
    """The live (not deleted) workspace matching `criteria`, locked until the transaction
    ends, its attributes refreshed from the locked row."""
    return (
        select(Workspace)
        .where(*criteria, Workspace.delete_time.is_(None))
        .with_for_update()
        .execution_options(populate_existing=True)
    )


async def lock_live_workspace(session: AsyncSession, workspace_id: str) -> Workspace:
    """The live workspace, its row locked until the transaction ends; NotFound otherwise."""
    workspace = await session.scalar(live_workspace_for_update(Workspace.id == workspace_id))
    if workspace is None:
        raise NotFound("workspace", workspace_id)
    return workspace
