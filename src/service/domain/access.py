"""Who may see what: effective roles on workspaces and organizations (SPEC section 3).

The effective workspace role is the higher of the explicit workspace membership and the
role implied by the organization membership. Deleted workspaces are invisible.
"""

from __future__ import annotations

from sqlalchemy import select

from service.auth.context import Access
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
from service.domain.errors import NotFound

WORKSPACE_ROLE_RANK = {"member": 1, "owner": 2}
ORGANIZATION_ADMIN_ROLES = frozenset({"owner", "admin"})
BILLING_ROLES = frozenset({"owner", "billing_admin"})
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
    model = {"run": Run, "prm": Prompt, "rsp": Probe}.get(prefix)
    if prefix == "ws":
        return resource_id
    if model is None:
        raise NotFound("resource", resource_id)
    workspace_id = await session.scalar(
        select(model.workspace_id).where(model.id == resource_id)  # type: ignore[attr-defined]
    )
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


def not_found(resource_id: str) -> NotFound:
    """NotFound for the resource a caller named, by its id's prefix; never the workspace or
    organization it belongs to, which would confirm that it exists."""
    prefix = resource_id.split("_", 1)[0]
    names = {"org": "organization", "ws": "workspace", **_RESOURCE_NAMES}
    return NotFound(names.get(prefix, "resource"), resource_id)


_RESOURCE_NAMES = {"run": "run", "prm": "prompt", "rsp": "response"}
