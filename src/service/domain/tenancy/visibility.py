"""Which workspaces and organizations a user reaches, as SQL conditions for lists.

These mirror `service.domain.tenancy.access` (one resource at a time) for queries over many rows:
a live workspace is accessible through an organization role that implies a workspace role
(owner, admin, member) or through an explicit workspace membership (a guest).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, exists, or_, select
from sqlalchemy.sql.elements import BindParameter

from service.db.models import Organization, OrganizationMember, Workspace, WorkspaceMember
from service.domain.tenancy.access import IMPLIED_WORKSPACE_ROLE

_ROLES_WITH_WORKSPACES = tuple(role for role, implied in IMPLIED_WORKSPACE_ROLE.items() if implied)
# A user id, or a bound parameter naming one in a statement built once (domain.read_views).
UserId = str | BindParameter[str]


def accessible_workspaces(user_id: UserId) -> ColumnElement[bool]:
    """True for the live workspaces `user_id` has an effective role on."""
    via_organization = exists().where(
        OrganizationMember.organization_id == Workspace.organization_id,
        OrganizationMember.user_id == user_id,
        OrganizationMember.role.in_(_ROLES_WITH_WORKSPACES),
    )
    via_membership = exists().where(
        WorkspaceMember.workspace_id == Workspace.id, WorkspaceMember.user_id == user_id
    )
    return and_(Workspace.delete_time.is_(None), or_(via_organization, via_membership))


def reachable_organizations(user_id: UserId) -> ColumnElement[bool]:
    """True for the organizations `user_id` belongs to or reaches through a workspace."""
    member_of = select(OrganizationMember.organization_id).where(
        OrganizationMember.user_id == user_id
    )
    through_workspace = select(Workspace.organization_id).where(accessible_workspaces(user_id))
    return or_(Organization.id.in_(member_of), Organization.id.in_(through_workspace))
