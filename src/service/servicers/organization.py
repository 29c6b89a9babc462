"""OrganizationService: organizations, navigation state, access, WorkOS links, audit log.

Each handler converts the request, makes one call to `service.application.organizations`
and converts the result.
"""

from __future__ import annotations

import grpc

from beacon.v1 import organization_service_pb2 as pb
from beacon.v1 import organization_service_pb2_grpc
from service.app import App
from service.auth.context import current_actor, current_call
from service.domain.actor import Access
from service.domain.tenancy import organizations
from service.domain.tenancy.organizations import AuditFilter, NavigationState
from service.pipeline.base import takes_access
from service.servicers.convert import (
    ORGANIZATION_ROLE_TO_PROTO,
    organization_to_proto,
    timestamp,
)


class OrganizationServicer(organization_service_pb2_grpc.OrganizationServiceServicer):
    """Each handler converts the request, makes one call to
    `service.application.organizations` and converts the result; the organization is the
    one the access check resolved (handed over by the pipeline, `takes_access`)."""

    def __init__(self, app: App) -> None:
        self.organizations = app.services.organizations

    async def CreateOrganization(
        self, request: pb.CreateOrganizationRequest, context: grpc.aio.ServicerContext
    ) -> pb.Organization:
        org = await self.organizations.create(
            current_actor(), request.name, request_id=request.request_id
        )
        return organization_to_proto(org)

    async def ListMyOrganizations(
        self, request: pb.ListMyOrganizationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMyOrganizationsResponse:
        page = await self.organizations.list_mine(
            current_call().require_user_id(),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListMyOrganizationsResponse(
            organizations=[organization_to_proto(org) for org in page.organizations],
            next_page_token=page.next_page_token,
        )

    @takes_access
    async def GetOrganization(
        self, request: pb.GetOrganizationRequest, context: grpc.aio.ServicerContext, access: Access
    ) -> pb.Organization:
        return organization_to_proto(await self.organizations.get(access.organization_id))

    @takes_access
    async def UpdateOrganization(
        self,
        request: pb.UpdateOrganizationRequest,
        context: grpc.aio.ServicerContext,
        access: Access,
    ) -> pb.Organization:
        org = await self.organizations.update(
            current_actor(),
            access.organization_id,
            name=request.organization.name,
            paths=list(request.update_mask.paths),
            etag=request.organization.etag,
        )
        return organization_to_proto(org)

    async def GetNavigationState(
        self, request: pb.GetNavigationStateRequest, context: grpc.aio.ServicerContext
    ) -> pb.NavigationState:
        state = await self.organizations.navigation_state(current_call().require_user_id())
        return _navigation_state(state)

    @takes_access
    async def SetCurrentWorkspace(
        self,
        request: pb.SetCurrentWorkspaceRequest,
        context: grpc.aio.ServicerContext,
        access: Access,
    ) -> pb.NavigationState:
        state = await self.organizations.set_current_workspace(
            current_actor(), access.workspace_id or request.workspace_id
        )
        return _navigation_state(state)

    @takes_access
    async def GetOrganizationAccess(
        self,
        request: pb.GetOrganizationAccessRequest,
        context: grpc.aio.ServicerContext,
        access: Access,
    ) -> pb.OrganizationAccess:
        summary = organizations.access_summary(
            access.organization_id, access.organization_role or ""
        )
        return pb.OrganizationAccess(
            organization_id=summary.organization_id,
            role=ORGANIZATION_ROLE_TO_PROTO.get(summary.role, pb.ORGANIZATION_ROLE_UNSPECIFIED),
            is_admin=summary.is_admin,
            can_manage_billing=summary.can_manage_billing,
        )

    @takes_access
    async def ResolveWorkosOrganizationId(
        self,
        request: pb.ResolveWorkosOrganizationIdRequest,
        context: grpc.aio.ServicerContext,
        access: Access,
    ) -> pb.ResolveWorkosOrganizationIdResponse:
        org = await self.organizations.get(access.organization_id)
        return pb.ResolveWorkosOrganizationIdResponse(
            organization_id=org.id, workos_organization_id=org.workos_organization_id or ""
        )

    @takes_access
    async def LinkWorkosOrganization(
        self,
        request: pb.LinkWorkosOrganizationRequest,
        context: grpc.aio.ServicerContext,
        access: Access,
    ) -> pb.Organization:
        org = await self.organizations.link_workos(
            current_actor(), access.organization_id, request.workos_organization_id
        )
        return organization_to_proto(org)

    @takes_access
    async def UnlinkWorkosOrganization(
        self,
        request: pb.UnlinkWorkosOrganizationRequest,
        context: grpc.aio.ServicerContext,
        access: Access,
    ) -> pb.Organization:
        org = await self.organizations.unlink_workos(current_actor(), access.organization_id)
        return organization_to_proto(org)

    @takes_access
    async def ListAuditEvents(
        self,
        request: pb.ListAuditEventsRequest,
        context: grpc.aio.ServicerContext,
        access: Access,
    ) -> pb.ListAuditEventsResponse:
        filters = AuditFilter(
            workspace_id=request.workspace_id, actor_id=request.actor_id, action=request.action
        )
        page = await self.organizations.list_audit_events(
            access.organization_id,
            filters,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListAuditEventsResponse(
            audit_events=[
                pb.AuditEvent(
                    id=event.id,
                    organization_id=event.organization_id,
                    workspace_id=event.workspace_id,
                    actor_id=event.actor_id,
                    action=event.action,
                    target_ids=event.target_ids,
                    request_id=event.request_id,
                    create_time=timestamp(event.create_time),
                    service_key_id=event.service_key_id,
                    correlation_id=event.correlation_id,
                )
                for event in page.events
            ],
            next_page_token=page.next_page_token,
        )


def _navigation_state(state: NavigationState) -> pb.NavigationState:
    return pb.NavigationState(
        current_organization_id=state.current_organization_id,
        current_workspace_id=state.current_workspace_id,
        organizations=[organization_to_proto(org) for org in state.organizations],
        workspaces=[
            pb.NavigationWorkspace(
                id=w.id, organization_id=w.organization_id, name=w.name, slug=w.slug
            )
            for w in state.workspaces
        ],
    )


def add(server: grpc.aio.Server, app: App) -> str:
    organization_service_pb2_grpc.add_OrganizationServiceServicer_to_server(
        OrganizationServicer(app), server
    )
    return str(pb.DESCRIPTOR.services_by_name["OrganizationService"].full_name)
