"""The auth interceptor's workspace check: the caller's access to the live workspace of a
workspace-scoped id, read together with the workspace's view in one query."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select

from service.db.database import Reader
from service.db.models import OrganizationMember, Workspace, WorkspaceMember
from service.domain.actor import Access
from service.domain.tenancy.access import (
    effective_workspace_role,
    not_found,
    with_caller_roles,
    workspace_of,
)
from service.domain.tenancy.workspace_views import VIEWS, view_of


def _authorized_view(resource_id: str) -> Select[Any]:
    return with_caller_roles(
        VIEWS.add_columns(OrganizationMember.role, WorkspaceMember.role)
    ).where(Workspace.id == workspace_of(resource_id))


# Built once per kind of id: constructing the statement costs more than running it.
_AUTHORIZED_VIEWS: dict[str, Select[Any]] = {}


async def authorize_view(session: Reader, user_id: str, resource_id: str) -> Access:
    """The caller's access to the live workspace of `resource_id` (a workspace or a
    workspace-scoped id: run, prompt, response) together with its view, in one query.

    NotFound when the resource or its workspace is gone or the caller has no effective role
    on it; the query is the same whether or not the resource exists in another tenant. This
    is the auth interceptor's workspace check: handlers showing the workspace reuse the view.
    """
    prefix = resource_id.split("_", 1)[0]
    statement = _AUTHORIZED_VIEWS.get(prefix)
    if statement is None:
        statement = _AUTHORIZED_VIEWS[prefix] = _authorized_view(resource_id)
    params = {"user_id": user_id, "resource_id": resource_id}
    row = (await session.execute(statement, params)).first()
    role = effective_workspace_role(row[-2], row[-1]) if row else None
    if row is None or role is None:
        raise not_found(resource_id)
    view = view_of(row)
    return Access(
        organization_id=view.organization_id,
        workspace_id=view.id,
        organization_role=row[-2],
        workspace_role=role,
        workspace=view,
    )
