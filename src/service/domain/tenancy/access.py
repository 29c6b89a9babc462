"""Who may see what: effective roles on workspaces and organizations (SPEC section 3).

The effective workspace role is the higher of the explicit workspace membership and the
role implied by the organization membership. Deleted workspaces are invisible.

An access check is one statement whose shape depends only on the kind of id asked for, never
on whether the resource exists or whose it is: another tenant's resource and one that does
not exist cost the same queries and look the same (NOT_FOUND).
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import BindParameter, ColumnElement, Select, and_, bindparam, null, select

from service.db.database import Reader
from service.db.models import (
    Organization,
    OrganizationMember,
    Probe,
    Prompt,
    Run,
    Workspace,
    WorkspaceMember,
)
from service.domain.actor import Access
from service.domain.errors import NotFound, PermissionDenied

WORKSPACE_ROLE_RANK = {"member": 1, "owner": 2}
ORGANIZATION_ADMIN_ROLES = frozenset({"owner", "admin"})
BILLING_ROLES = frozenset({"owner", "billing_admin"})
# Models of the workspace-scoped ids, by id prefix.
WORKSPACE_SCOPED: dict[str, Any] = {"run": Run, "prm": Prompt, "rsp": Probe}
IMPLIED_WORKSPACE_ROLE: dict[str, str | None] = {
    "owner": "owner",
    "admin": "owner",
    "member": "member",
    "billing_admin": None,
}


def effective_workspace_role(org_role: str | None, workspace_role: str | None) -> str | None:
    """The higher of the explicit workspace role and the one the organization role implies."""
    implied = IMPLIED_WORKSPACE_ROLE.get(org_role) if org_role else None
    candidates = [r for r in (implied, workspace_role) if r]
    if not candidates:
        return None
    return max(candidates, key=WORKSPACE_ROLE_RANK.__getitem__)


async def organization_access(session: Reader, user_id: str, organization_id: str) -> Access:
    """The caller's organization role; NotFound when they are not a member."""
    role = await session.scalar(
        select(OrganizationMember.role).where(
            OrganizationMember.organization_id == organization_id,
            OrganizationMember.user_id == user_id,
        )
    )
    if role is None:
        raise NotFound("organization", organization_id)
    return Access(organization_id=organization_id, organization_role=role)


async def resource_workspace(session: Reader, resource_id: str) -> str:
    """The workspace a workspace-scoped resource id (ws_, run_, prm_, rsp_) belongs to."""
    prefix = resource_id.split("_", 1)[0]
    model = WORKSPACE_SCOPED.get(prefix)
    if prefix == "ws":
        return resource_id
    if model is None:
        raise NotFound("resource", resource_id)
    workspace_id = await session.scalar(select(model.workspace_id).where(model.id == resource_id))
    if workspace_id is None:
        raise NotFound(_RESOURCE_NAMES[prefix], resource_id)
    return str(workspace_id)


async def resource_organization(session: Reader, resource_id: str) -> str:
    """The organization an organization- or workspace-scoped id belongs to."""
    if resource_id.startswith("org_"):
        exists = await session.scalar(select(Organization.id).where(Organization.id == resource_id))
        if exists is None:
            raise NotFound("organization", resource_id)
        return resource_id
    workspace_id = await resource_workspace(session, resource_id)
    org_id = await session.scalar(
        select(Workspace.organization_id).where(
            Workspace.id == workspace_id, Workspace.delete_time.is_(None)
        )
    )
    if org_id is None:
        raise NotFound("workspace", workspace_id)
    return str(org_id)


async def belongs_to_any(session: Reader, user_id: str, organization_ids: frozenset[str]) -> bool:
    """Whether the user is a member of one of the organizations, or of one of their
    (undeleted) workspaces."""
    if not organization_ids:
        return False
    in_organization = select(OrganizationMember.user_id).where(
        OrganizationMember.user_id == user_id,
        OrganizationMember.organization_id.in_(sorted(organization_ids)),
    )
    in_workspace = (
        select(WorkspaceMember.user_id)
        .join(Workspace, Workspace.id == WorkspaceMember.workspace_id)
        .where(
            WorkspaceMember.user_id == user_id,
            Workspace.organization_id.in_(sorted(organization_ids)),
            Workspace.delete_time.is_(None),
        )
    )
    found = await session.scalar(in_organization.union_all(in_workspace).limit(1))
    return found is not None


_Query = TypeVar("_Query", bound="Select[*tuple[Any, ...]]")

# The id an access statement looks up, bound at execution.
RESOURCE_ID: BindParameter[str] = bindparam("resource_id")


def workspace_of(resource_id: str) -> ColumnElement[Any]:
    """SQL for the workspace a ws_, run_, prm_ or rsp_ id belongs to, reading RESOURCE_ID.

    NotFound (without a query) for an id of another kind.
    """
    prefix = resource_id.split("_", 1)[0]
    if prefix == "ws":
        return RESOURCE_ID
    model = WORKSPACE_SCOPED.get(prefix)
    if model is None:
        raise NotFound("resource", resource_id)
    owner: ColumnElement[Any] = (
        select(model.workspace_id).where(model.id == RESOURCE_ID).scalar_subquery()
    )
    return owner


def _organization_role_statement(resource_id: str) -> Select[str, str | None, str | None]:
    """(organization id, the caller's organization role, the caller's explicit workspace
    role) of `resource_id`, reading RESOURCE_ID and `user_id`."""
    member = and_(
        OrganizationMember.organization_id == Organization.id,
        OrganizationMember.user_id == bindparam("user_id"),
    )
    if resource_id.startswith("org_"):
        return (
            select(Organization.id, OrganizationMember.role, null())
            .where(Organization.id == RESOURCE_ID)
            .outerjoin(OrganizationMember, member)
        )
    return with_caller_roles(
        select(Workspace.organization_id, OrganizationMember.role, WorkspaceMember.role).where(
            Workspace.id == workspace_of(resource_id), Workspace.delete_time.is_(None)
        )
    )


def with_caller_roles(query: _Query) -> _Query:
    """`query` over Workspace, outer-joined to the caller's (`user_id`, bound at execution)
    membership of the workspace's organization and of the workspace itself, so that it can
    select `OrganizationMember.role` and `WorkspaceMember.role`."""
    return query.outerjoin(
        OrganizationMember,
        and_(
            OrganizationMember.organization_id == Workspace.organization_id,
            OrganizationMember.user_id == bindparam("user_id"),
        ),
    ).outerjoin(
        WorkspaceMember,
        and_(
            WorkspaceMember.workspace_id == Workspace.id,
            WorkspaceMember.user_id == bindparam("user_id"),
        ),
    )


_ORGANIZATION_ROLE_STATEMENTS: dict[str, Select[str, str | None, str | None]] = {}


async def organization_access_of(session: Reader, user_id: str, resource_id: str) -> Access:
    """The caller's role on the organization of `resource_id` (an organization, a workspace
    or a workspace-scoped id), in one query of the same shape whether the resource is
    missing or another tenant's: NotFound then; PermissionDenied for a workspace guest
    without an organization role."""
    prefix = resource_id.split("_", 1)[0]
    statement = _ORGANIZATION_ROLE_STATEMENTS.get(prefix)
    if statement is None:
        statement = _ORGANIZATION_ROLE_STATEMENTS[prefix] = _organization_role_statement(
            resource_id
        )
    row = (
        await session.execute(statement, {"user_id": user_id, "resource_id": resource_id})
    ).first()
    if row is None or (row[1] is None and row[2] is None):
        raise not_found(resource_id)
    if row[1] is None:
        # A guest sees the workspace: NOT_FOUND would only mislead them.
        raise PermissionDenied(
            "requires a role in the workspace's organization: workspace members who are not "
            "organization members cannot manage it",
            reason="NOT_ORGANIZATION_MEMBER",
        )
    return Access(organization_id=row[0], organization_role=row[1])


def not_found(resource_id: str) -> NotFound:
    """NotFound for the resource a caller named, by its id's prefix; never the workspace or
    organization it belongs to, which would confirm that it exists."""
    prefix = resource_id.split("_", 1)[0]
    names = {"org": "organization", "ws": "workspace", **_RESOURCE_NAMES}
    return NotFound(names.get(prefix, "resource"), resource_id)


_RESOURCE_NAMES = {"run": "run", "prm": "prompt", "rsp": "response"}
