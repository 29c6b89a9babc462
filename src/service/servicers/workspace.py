"""WorkspaceService: workspaces, icon uploads, enabled providers and account deletion.

Each handler reads the request, calls one domain function (`service.domain.
workspace_lifecycle`, `workspace_views`, `files`, `accounts`) in a unit of work and converts
the result with `convert`.
"""

from __future__ import annotations

from datetime import timedelta

import grpc
from google.protobuf.empty_pb2 import Empty

from beacon.v1 import workspace_service_pb2 as pb
from beacon.v1 import workspace_service_pb2_grpc
from service import access_cache
from service.app import App
from service.auth.context import current_actor, current_call
from service.clock import utcnow
from service.domain import read_views
from service.domain.paging import parse_page
from service.domain.tenancy import accounts, files, workspace_lifecycle, workspace_views
from service.domain.tenancy.organizations import TenantCaps
from service.domain.tenancy.workspace_fields import Competitor
from service.domain.tenancy.workspace_lifecycle import NewWorkspace, WorkspacePatch
from service.domain.tenancy.workspace_purge import DeletedSince
from service.servicers.convert import (
    PROVIDER_FROM_PROTO,
    PROVIDER_TO_PROTO,
    WorkspaceMessages,
    organization_to_proto,
    timestamp,
    workspace_message,
    workspace_to_proto,
)


def _competitors(messages: list[pb.Competitor]) -> list[Competitor]:
    return [Competitor(name=c.name, domain=c.domain) for c in messages]


class WorkspaceServicer(workspace_service_pb2_grpc.WorkspaceServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app
        self.storage = files.storage_for(app.settings)
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
        async with self.app.db.transaction() as session:
            created = await workspace_lifecycle.create_workspace(
                session,
                current_actor(),
                new,
                request_id=request.request_id,
                now=utcnow(),
                join_code_ttl=timedelta(hours=self.app.settings.join_code_ttl_hours),
                caps=TenantCaps.of(self.app.settings),
            )
        return pb.CreateWorkspaceResponse(
            workspace=workspace_to_proto(created.workspace, self.app.settings),
            organization=organization_to_proto(created.organization),
            is_first_workspace=created.is_first_workspace,
        )

    async def ListWorkspaces(
        self, request: pb.ListWorkspacesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWorkspacesResponse:
        if request.show_deleted:
            return await self._list_with_deleted(request)
        user_id = current_call().require_user_id()
        page = parse_page(
            request.page_size,
            request.page_token,
            scope=f"workspaces|{user_id}|{request.organization_id}",
        )
        async with self.app.db.read() as reader:
            views, token = await read_views.list_workspaces(
                reader, user_id, request.organization_id, page
            )
        return pb.ListWorkspacesResponse(
            workspaces=[workspace_to_proto(v, self.app.settings) for v in views],
            next_page_token=token,
        )

    async def _list_with_deleted(
        self, request: pb.ListWorkspacesRequest
    ) -> pb.ListWorkspacesResponse:
        """ListWorkspaces with show_deleted: the caller's soft-deleted workspaces too."""
        user_id = current_call().require_user_id()
        page = parse_page(
            request.page_size,
            request.page_token,
            scope=f"workspaces-with-deleted|{user_id}|{request.organization_id}",
        )
        deleted = DeletedSince(utcnow(), self.app.settings.workspace_retention_days)
        async with self.app.db.transaction(write=False) as session:
            views, token = await workspace_views.list_views(
                session, user_id, request.organization_id, page, deleted=deleted
            )
        return pb.ListWorkspacesResponse(
            workspaces=[workspace_to_proto(v, self.app.settings) for v in views],
            next_page_token=token,
        )

    async def GetWorkspace(
        self, request: pb.GetWorkspaceRequest, context: grpc.aio.ServicerContext
    ) -> pb.Workspace:
        view = current_call().require_access().workspace  # read by the access check
        assert view is not None
        return self.messages.get(view)

    async def UpdateWorkspace(
        self, request: pb.UpdateWorkspaceRequest, context: grpc.aio.ServicerContext
    ) -> pb.Workspace:
        call = current_actor()
        given = request.workspace
        patch = WorkspacePatch(
            name=given.name,
            slug=given.slug,
            domain=given.domain,
            icon_file_id=given.icon_file_id,
            brand_aliases=list(given.brand_aliases),
            competitors=_competitors(list(given.competitors)),
        )
        async with self.app.db.transaction() as session:
            await workspace_lifecycle.update_workspace(
                session,
                call,
                given.id,
                patch,
                list(request.update_mask.paths),
                given.etag,
                now=utcnow(),
            )
            return await workspace_message(session, self.app.settings, given.id)

    async def DeleteWorkspace(
        self, request: pb.DeleteWorkspaceRequest, context: grpc.aio.ServicerContext
    ) -> Empty:
        async with self.app.db.transaction() as session:
            await workspace_lifecycle.delete_workspace(
                session, current_actor(), request.workspace_id, request.etag, now=utcnow()
            )
        return Empty()

    async def UndeleteWorkspace(
        self, request: pb.UndeleteWorkspaceRequest, context: grpc.aio.ServicerContext
    ) -> pb.Workspace:
        settings = self.app.settings
        async with self.app.db.transaction() as session:
            await workspace_lifecycle.undelete_workspace(
                session,
                current_actor(),
                request.workspace_id,
                request.etag,
                now=utcnow(),
                retention_days=settings.workspace_retention_days,
                join_code_ttl=timedelta(hours=settings.join_code_ttl_hours),
                caps=TenantCaps.of(settings),
            )
            return await workspace_message(session, settings, request.workspace_id)

    async def GenerateWorkspaceIconUploadUrl(
        self,
        request: pb.GenerateWorkspaceIconUploadUrlRequest,
        context: grpc.aio.ServicerContext,
    ) -> pb.GenerateWorkspaceIconUploadUrlResponse:
        user_id = current_call().require_user_id()
        async with self.app.db.transaction() as session:
            ticket = await files.create_upload(session, self.app.settings, user_id, now=utcnow())
        return pb.GenerateWorkspaceIconUploadUrlResponse(
            upload_url=ticket.url,
            storage_id=ticket.file_id,
            expire_time=timestamp(ticket.expire_time),
            max_bytes=ticket.max_bytes,
        )

    async def GetEnabledProviders(
        self, request: pb.GetEnabledProvidersRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetEnabledProvidersResponse:
        view = current_call().require_access().workspace  # read by the access check
        return pb.GetEnabledProvidersResponse(
            providers=[PROVIDER_TO_PROTO[p] for p in view.enabled_providers]
        )

    async def SetEnabledProviders(
        self, request: pb.SetEnabledProvidersRequest, context: grpc.aio.ServicerContext
    ) -> pb.Workspace:
        names = [PROVIDER_FROM_PROTO.get(p, "") for p in request.providers]
        async with self.app.db.transaction() as session:
            await workspace_lifecycle.set_enabled_providers(
                session, current_actor(), request.workspace_id, names, now=utcnow()
            )
            return await workspace_message(session, self.app.settings, request.workspace_id)

    async def DeleteAccount(
        self, request: pb.DeleteAccountRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteAccountResponse:
        async with self.app.db.transaction() as session:
            deleted = await accounts.delete_account(session, current_actor(), now=utcnow())
        await files.delete_bytes(self.storage, deleted.file_ids)
        return pb.DeleteAccountResponse(
            user_id=deleted.user_id, deleted_organization_ids=deleted.deleted_organization_ids
        )


def add(server: grpc.aio.Server, app: App) -> str:
    workspace_service_pb2_grpc.add_WorkspaceServiceServicer_to_server(
        WorkspaceServicer(app), server
    )
    return str(pb.DESCRIPTOR.services_by_name["WorkspaceService"].full_name)
