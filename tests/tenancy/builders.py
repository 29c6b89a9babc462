"""Client-side helpers of the organization and workspace tests (no tests here)."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import httpx
from PIL import Image

from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.clock import utcnow
from service.db.models import OrganizationMember, WorkspaceMember
from tests.support import unique


def png_bytes(size: int = 8, color: str = "red") -> bytes:
    """A real PNG image."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, "PNG")
    return buffer.getvalue()


async def new_organization(
    stubs: SimpleNamespace, user: Any, name: str = ""
) -> org_pb.Organization:
    reply: org_pb.Organization = await stubs.organizations.CreateOrganization(
        org_pb.CreateOrganizationRequest(name=name or unique("Org ")), metadata=user.metadata
    )
    return reply


async def new_workspace(
    stubs: SimpleNamespace, user: Any, **fields: Any
) -> ws_pb.CreateWorkspaceResponse:
    """CreateWorkspace with a unique name unless given."""
    fields.setdefault("name", unique("Workspace "))
    reply: ws_pb.CreateWorkspaceResponse = await stubs.workspaces.CreateWorkspace(
        ws_pb.CreateWorkspaceRequest(**fields), metadata=user.metadata
    )
    return reply


async def upload_ticket(
    stubs: SimpleNamespace, user: Any
) -> ws_pb.GenerateWorkspaceIconUploadUrlResponse:
    reply: ws_pb.GenerateWorkspaceIconUploadUrlResponse = (
        await stubs.workspaces.GenerateWorkspaceIconUploadUrl(
            ws_pb.GenerateWorkspaceIconUploadUrlRequest(), metadata=user.metadata
        )
    )
    return reply


async def upload_icon(
    stubs: SimpleNamespace, http: httpx.AsyncClient, user: Any, data: bytes | None = None
) -> str:
    """Uploads an icon as the seed does (POST to the signed URL); returns the storage id."""
    ticket = await upload_ticket(stubs, user)
    response = await http.post(
        ticket.upload_url, content=data or png_bytes(), headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 201, response.text
    return ticket.storage_id


async def all_workspaces(
    stubs: SimpleNamespace,
    user: Any,
    organization_id: str = "",
    page_size: int = 0,
    *,
    show_deleted: bool = False,
) -> list[ws_pb.Workspace]:
    """Every workspace ListWorkspaces returns, following next_page_token to the end."""
    result: list[ws_pb.Workspace] = []
    token = ""
    while True:
        reply = await stubs.workspaces.ListWorkspaces(
            ws_pb.ListWorkspacesRequest(
                organization_id=organization_id,
                page_size=page_size,
                page_token=token,
                show_deleted=show_deleted,
            ),
            metadata=user.metadata,
        )
        result.extend(reply.workspaces)
        token = reply.next_page_token
        if not token:
            return result


async def grant_organization_role(app: App, organization_id: str, user_id: str, role: str) -> None:
    """Makes `user_id` a member of the organization with `role` (test setup, straight in SQL)."""
    async with app.db.transaction() as session:
        session.add(
            OrganizationMember(
                organization_id=organization_id, user_id=user_id, role=role, create_time=utcnow()
            )
        )


async def grant_workspace_role(app: App, workspace_id: str, user_id: str, role: str) -> None:
    """Makes `user_id` an explicit member of the workspace (a guest unless in the org)."""
    async with app.db.transaction() as session:
        session.add(
            WorkspaceMember(
                workspace_id=workspace_id, user_id=user_id, role=role, create_time=utcnow()
            )
        )
