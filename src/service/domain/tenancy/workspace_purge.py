"""Retention of soft-deleted workspaces: when one is purged, which are still restorable,
and the purge itself (the ticker runs it with `settings.workspace_retention_days`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, select

from service.db.database import Database
from service.db.models import Workspace

PURGE_BATCH = 100
DEFAULT_RETENTION_DAYS = 30  # BEACON_WORKSPACE_RETENTION_DAYS' default


@dataclass(frozen=True, slots=True)
class DeletedSince:
    """The retention rule at `now`: a workspace soft-deleted at `t` is purged at
    `t + retention_days`, and is restorable (and shown to its owners) until then."""

    now: datetime
    retention_days: int = DEFAULT_RETENTION_DAYS

    @property
    def cutoff(self) -> datetime:
        """Workspaces deleted before this are due for purge."""
        return self.now - timedelta(days=self.retention_days)

    def purge_time(self, delete_time: datetime) -> datetime:
        return delete_time + timedelta(days=self.retention_days)

    def condition(self) -> ColumnElement[bool]:
        """True for the soft-deleted workspaces not yet due for purge."""
        return and_(Workspace.delete_time.is_not(None), Workspace.delete_time >= self.cutoff)

    def is_restorable(self, delete_time: datetime | None) -> bool:
        return delete_time is not None and delete_time >= self.cutoff


async def purge_deleted_workspaces(
    db: Database, now: datetime, *, retention_days: int = DEFAULT_RETENTION_DAYS
) -> int:
    """Removes workspaces soft-deleted more than `retention_days` before `now`, with all
    their data (prompts, runs, probes, members, invitations); returns how many.

    Callers pass `settings.workspace_retention_days`. Works in batches, one transaction each.
    """
    cutoff = DeletedSince(now, retention_days).cutoff
    purged = 0
    while True:
        async with db.transaction() as session:
            ids = list(
                await session.scalars(
                    select(Workspace.id)
                    .where(Workspace.delete_time.is_not(None), Workspace.delete_time < cutoff)
                    .limit(PURGE_BATCH)
                )
            )
            if ids:
                await session.execute(delete(Workspace).where(Workspace.id.in_(ids)))
        purged += len(ids)
        if len(ids) < PURGE_BATCH:
            return purged
