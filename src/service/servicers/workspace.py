"""WorkspaceService: workspaces, icon uploads, enabled providers and account deletion.

Each handler converts the request, makes one call to `service.application.workspaces` (or
`files`) and converts the result; GetWorkspace and GetEnabledProviders answer from the view
the access check read, handed to them by the pipeline (`takes_access`).
"""

from __future__ import annotations

import grpc
from google.protobuf.empty_pb2 import Empty

from beacon.v1 import workspace_service_pb2 as pb
from beacon.v1 import workspace_service_pb2_grpc
from service import access_cache
from service.app import App
from service.auth.context import current_actor, current_call
from service.domain.actor import Access
from service.domain.tenancy.workspace_fields import Competitor
from service.domain.tenancy.workspace_lifecycle import NewWorkspace, WorkspacePatch
from service.domain.tenancy.workspace_views import WorkspaceView
from service.pipeline.base import takes_access
from service.servicers.convert import (
    PROVIDER_FROM_PROTO,
    PROVIDER_TO_PROTO,
    WorkspaceMessages,
    organization_to_proto,
    timestamp,
    workspace_to_proto,
)


def _competitors(messages: list[pb.Competitor]) -> list[Competitor]:
    return [Competitor(name=c.name, domain=c.domain) for c in messages]


class WorkspaceServicer(workspace_service_pb2_grpc.WorkspaceServiceServicer):
    def __init__(self, app: App) -> None:
        self.settings = app.settings
        self.workspaces = app.services.workspaces
        self.files = app.services.files
        self.messages = WorkspaceMessages(app.settings, max_age=access_cache.TTL_SECONDS)

    async def CreateWorkspace(
        self, request: pb.CreateWorkspaceRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateWorkspaceResponse:
        new = NewWorkspace(
            name=request.name,
            slug=request.slug,
            domain=request.domain,
            organization_id=request.organization_id,
            organization_name=request.organization_name,
            icon_file_id=request.icon_file_id,
            brand_aliases=list(request.brand_aliases),
            competitors=_competitors(list(request.competitors)),
        )
        created = await self.workspaces.create(current_actor(), new, request_id=request.request_id)
        return pb.CreateWorkspaceResponse(
            workspace=workspace_to_proto(created.workspace, self.settings),
            organization=organization_to_proto(created.organization),
            is_first_workspace=created.is_first_workspace,
        )

    async def ListWorkspaces(
        self, request: pb.ListWorkspacesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWorkspacesResponse:
        page = await self.workspaces.list_workspaces(
            current_call().require_user_id(),
            request.organization_id,
            page_size=request.page_size,
            page_token=request.page_token,
            show_deleted=request.show_deleted,
        )
        return pb.ListWorkspacesResponse(
            workspaces=[workspace_to_proto(v, self.settings) for v in page.workspaces],
            next_page_token=page.next_page_token,
        )

    @takes_access
    async def GetWorkspace(
        self, request: pb.GetWorkspaceRequest, context: grpc.aio.ServicerContext, access: Access
    ) -> pb.Workspace:
        # The view the access check read (service.access_cache may have served it): the
        # hot read path makes no query of its own.
        return self.messages.get(_checked_view(access))

    async def UpdateWorkspace(
        self, request: pb.UpdateWorkspaceRequest, context: grpc.aio.ServicerContext
    ) -> pb.Workspace:
        given = request.workspace
        patch = WorkspacePatch(
            name=given.name,
            slug=given.slug,
            domain=given.domain,
            icon_file_id=given.icon_file_id,
            brand_aliases=list(given.brand_aliases),
            competitors=_competitors(list(given.competitors)),
        )
        view = await self.workspaces.update(
            current_actor(), given.id, patch, list(request.update_mask.paths), given.etag
        )
        return workspace_to_proto(view, self.settings)

    async def DeleteWorkspace(
        self, request: pb.DeleteWorkspaceRequest, context: grpc.aio.ServicerContext
    ) -> Empty:
        await self.workspaces.delete(current_actor(), request.workspace_id, request.etag)
        return Empty()

    async def UndeleteWorkspace(
        self, request: pb.UndeleteWorkspaceRequest, context: grpc.aio.ServicerContext
    ) -> pb.Workspace:
        view = await self.workspaces.undelete(current_actor(), request.workspace_id, request.etag)
        return workspace_to_proto(view, self.settings)

    async def GenerateWorkspaceIconUploadUrl(
        self,
        request: pb.GenerateWorkspaceIconUploadUrlRequest,
        context: grpc.aio.ServicerContext,
    ) -> pb.GenerateWorkspaceIconUploadUrlResponse:
        ticket = await self.files.create_upload(current_call().require_user_id())
        return pb.GenerateWorkspaceIconUploadUrlResponse(
            upload_url=ticket.url,
            storage_id=ticket.file_id,
            expire_time=timestamp(ticket.expire_time),
            max_bytes=ticket.max_bytes,
        )

    @takes_access
    async def GetEnabledProviders(
        self,
        request: pb.GetEnabledProvidersRequest,
        context: grpc.aio.ServicerContext,
        access: Access,
    ) -> pb.GetEnabledProvidersResponse:
        return pb.GetEnabledProvidersResponse(
            providers=[PROVIDER_TO_PROTO[p] for p in _checked_view(access).enabled_providers]
        )

    async def SetEnabledProviders(
        self, request: pb.SetEnabledProvidersRequest, context: grpc.aio.ServicerContext
    ) -> pb.Workspace:
        names = [PROVIDER_FROM_PROTO.get(p, "") for p in request.providers]
        view = await self.workspaces.set_enabled_providers(
            current_actor(), request.workspace_id, names
        )
        return workspace_to_proto(view, self.settings)

    async def DeleteAccount(
        self, request: pb.DeleteAccountRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteAccountResponse:
        deleted = await self.workspaces.delete_account(current_actor())
        return pb.DeleteAccountResponse(
            user_id=deleted.user_id, deleted_organization_ids=deleted.deleted_organization_ids
        )


def _checked_view(access: Access) -> WorkspaceView:
    """The workspace view the access check read (a workspace-level rule always reads one)."""
    view: WorkspaceView | None = access.workspace
    if view is None:
        raise RuntimeError("the auth rule did not read the workspace")
    return view


def add(server: grpc.aio.Server, app: App) -> str:
    workspace_service_pb2_grpc.add_WorkspaceServiceServicer_to_server(
        WorkspaceServicer(app), server
    )
    return str(pb.DESCRIPTOR.services_by_name["WorkspaceService"].full_name)
