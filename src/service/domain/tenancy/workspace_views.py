"""The workspace read model: `WorkspaceView`, everything a Workspace message shows, read in
one query (organization and schedule joined), for one workspace, many, or the caller's list.

Live workspaces only, except `list_views(..., deleted=...)`, which adds the soft-deleted
workspaces the caller owns (AIP-164 `show_deleted`) with their delete and purge times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.database import Reader
from service.db.models import Organization, OrganizationMember, Schedule, Workspace, WorkspaceMember
from service.domain.errors import NotFound
from service.domain.inputs import require_id
from service.domain.paging import Page
from service.domain.tenancy.access import ORGANIZATION_ADMIN_ROLES
from service.domain.tenancy.visibility import accessible_workspaces, reachable_organizations
from service.domain.tenancy.workspace_fields import Competitor, competitors_from_json
from service.domain.tenancy.workspace_purge import DeletedSince


@dataclass(frozen=True, slots=True)
class WorkspaceView:
    """Everything a Workspace message shows, read in one query."""

    id: str
    organization_id: str
    organization_name: str
    organization_slug: str
    name: str
    slug: str
    domain: str
    icon_file_id: str
    brand_aliases: list[str]
    competitors: list[Competitor]
    enabled_providers: list[str]
    cron: str
    time_zone: str
    create_time: datetime
    update_time: datetime
    version: int
    delete_time: datetime | None = None  # set only on a soft-deleted workspace
    purge_time: datetime | None = None  # when a soft-deleted workspace is purged

    @property
    def etag(self) -> str:
        return str(self.version)


# Built once: the columns of a WorkspaceView, organization and schedule joined, any state.
_ANY_STATE: Select[Any] = (
    select(
        Workspace.id,
        Workspace.organization_id,
        Organization.name,
        Organization.slug,
        Workspace.name,
        Workspace.slug,
        Workspace.domain,
        Workspace.icon_file_id,
        Workspace.brand_aliases,
        Workspace.competitors,
        Workspace.enabled_providers,
        Schedule.cron,
        Schedule.time_zone,
        Workspace.create_time,
        Workspace.update_time,
        Workspace.version,
        Workspace.delete_time,
    )
    .join(Organization, Organization.id == Workspace.organization_id)
    .outerjoin(Schedule, Schedule.workspace_id == Workspace.id)
)
# The live workspaces' views.
VIEWS: Select[Any] = _ANY_STATE.where(Workspace.delete_time.is_(None))


def view_of(row: Any, deleted: DeletedSince | None = None) -> WorkspaceView:
    """The view of a row of VIEWS (extra columns after the view's are ignored); `deleted`
    gives a soft-deleted workspace its purge time."""
    delete_time = row[16]
    return WorkspaceView(
        id=row[0],
        organization_id=row[1],
        organization_name=row[2],
        organization_slug=row[3],
        name=row[4],
        slug=row[5],
        domain=row[6],
        icon_file_id=row[7] or "",
        brand_aliases=list(row[8] or ()),
        competitors=competitors_from_json(row[9] or ()),
        enabled_providers=list(row[10] or ()),
        cron=row[11] or "",
        time_zone=row[12] or "UTC",
        create_time=row[13],
        update_time=row[14],
        version=row[15],
        delete_time=delete_time,
        purge_time=deleted.purge_time(delete_time) if deleted and delete_time else None,
    )


async def load_views(session: Reader, workspace_ids: Sequence[str]) -> list[WorkspaceView]:
    """Views of the live workspaces among `workspace_ids`, in the order given (one query)."""
    if not workspace_ids:
        return []
    rows = await session.execute(VIEWS.where(Workspace.id.in_(set(workspace_ids))))
    by_id = {view.id: view for view in map(view_of, rows)}
    return [by_id[i] for i in workspace_ids if i in by_id]


async def load_view(session: Reader, workspace_id: str) -> WorkspaceView:
    """The view of one live workspace; NotFound when it is gone."""
    row = (await session.execute(VIEWS.where(Workspace.id == workspace_id))).first()
    if row is None:
        raise NotFound("workspace", workspace_id)
    return view_of(row)


def owned_deleted_workspaces(user_id: str, deleted: DeletedSince) -> ColumnElement[bool]:
    """True for the soft-deleted, not yet purged workspaces whose effective owner `user_id`
    is (an explicit owner, or an owner or admin of the organization)."""
    explicit_owner = exists().where(
        WorkspaceMember.workspace_id == Workspace.id,
        WorkspaceMember.user_id == user_id,
        WorkspaceMember.role == "owner",
    )
    organization_admin = exists().where(
        OrganizationMember.organization_id == Workspace.organization_id,
        OrganizationMember.user_id == user_id,
        OrganizationMember.role.in_(ORGANIZATION_ADMIN_ROLES),
    )
    return and_(deleted.condition(), or_(explicit_owner, organization_admin))


async def list_views(
    session: AsyncSession,
    user_id: str,
    organization_id: str,
    page: Page,
    *,
    deleted: DeletedSince | None = None,
) -> tuple[list[WorkspaceView], str]:
    """The workspaces `user_id` can access (of one organization when given), oldest first;
    with `deleted`, also the soft-deleted ones they own that are not purged yet.

    NotFound when `organization_id` names an organization the user does not reach.
    """
    shown = accessible_workspaces(user_id)
    if deleted is not None:
        shown = or_(shown, owned_deleted_workspaces(user_id, deleted))
    query = _ANY_STATE.where(shown, page.where(Workspace.create_time, Workspace.id))
    if organization_id:
        require_id("organization_id", organization_id)
        reachable = await session.scalar(
            select(Organization.id).where(
                Organization.id == organization_id, reachable_organizations(user_id)
            )
        )
        if reachable is None:
            raise NotFound("organization", organization_id)
        query = query.where(Workspace.organization_id == organization_id)
    rows = await session.execute(
        query.order_by(Workspace.create_time, Workspace.id).limit(page.size + 1)
    )
    views = [view_of(row, deleted) for row in rows]
    return views[: page.size], page.next_token(views)
