"""OrganizationService: organizations, navigation state, access, WorkOS links, audit log.

Each handler reads the request, calls one domain function (`service.domain.tenancy.organizations`)
in a unit of work and converts the result.
"""

from __future__ import annotations

import grpc

from beacon.v1 import organization_service_pb2 as pb
from beacon.v1 import organization_service_pb2_grpc
from service.app import App
from service.auth.context import current_actor, current_call
from service.clock import utcnow
from service.domain.paging import parse_page
from service.domain.tenancy import organizations
from service.domain.tenancy.organizations import AuditFilter, NavigationState
from service.servicers.convert import (
    ORGANIZATION_ROLE_TO_PROTO,
    organization_to_proto,
    timestamp,
)


class OrganizationServicer(organization_service_pb2_grpc.OrganizationServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    async def CreateOrganization(
        self, request: pb.CreateOrganizationRequest, context: grpc.aio.ServicerContext
    ) -> pb.Organization:
        async with self.app.db.transaction() as session:
            org = await organizations.create_organization(
                session,
                current_actor(),
                request.name,
                request_id=request.request_id,
                now=utcnow(),
                caps=organizations.TenantCaps.of(self.app.settings),
            )
        return organization_to_proto(org)

    async def ListMyOrganizations(
        self, request: pb.ListMyOrganizationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMyOrganizationsResponse:
        user_id = current_call().require_user_id()
        page = parse_page(request.page_size, request.page_token, scope=f"orgs|{user_id}")
        async with self.app.db.transaction(write=False) as session:
            rows, token = await organizations.list_my_organizations(session, user_id, page)
            return pb.ListMyOrganizationsResponse(
                organizations=[organization_to_proto(org) for org in rows], next_page_token=token
            )

    async def GetOrganization(
        self, request: pb.GetOrganizationRequest, context: grpc.aio.ServicerContext
    ) -> pb.Organization:
        organization_id = current_call().require_access().organization_id
        async with self.app.db.transaction(write=False) as session:
            org = await organizations.get_organization(session, organization_id)
            return organization_to_proto(org)

    async def UpdateOrganization(
        self, request: pb.UpdateOrganizationRequest, context: grpc.aio.ServicerContext
    ) -> pb.Organization:
        call = current_actor()
        async with self.app.db.transaction() as session:
            org = await organizations.update_organization(
                session,
                call,
                call.require_access().organization_id,
                name=request.organization.name,
                paths=list(request.update_mask.paths),
                etag=request.organization.etag,
                now=utcnow(),
            )
            return organization_to_proto(org)

    async def GetNavigationState(
        self, request: pb.GetNavigationStateRequest, context: grpc.aio.ServicerContext
    ) -> pb.NavigationState:
        user_id = current_call().require_user_id()
        async with self.app.db.transaction(write=False) as session:
            state = await organizations.navigation_state(session, user_id)
            return _navigation_state(state)

    async def SetCurrentWorkspace(
        self, request: pb.SetCurrentWorkspaceRequest, context: grpc.aio.ServicerContext
    ) -> pb.NavigationState:
        call = current_actor()
        async with self.app.db.transaction() as session:
            state = await organizations.set_current_workspace(
                session,
                call,
                call.require_access().workspace_id or request.workspace_id,
                now=utcnow(),
            )
            return _navigation_state(state)

    async def GetOrganizationAccess(
        self, request: pb.GetOrganizationAccessRequest, context: grpc.aio.ServicerContext
    ) -> pb.OrganizationAccess:
        access = current_call().require_access()
        summary = organizations.access_summary(
            access.organization_id, access.organization_role or ""
        )
        return pb.OrganizationAccess(
            organization_id=summary.organization_id,
            role=ORGANIZATION_ROLE_TO_PROTO.get(summary.role, pb.ORGANIZATION_ROLE_UNSPECIFIED),
            is_admin=summary.is_admin,
            can_manage_billing=summary.can_manage_billing,
        )

    async def ResolveWorkosOrganizationId(
        self, request: pb.ResolveWorkosOrganizationIdRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResolveWorkosOrganizationIdResponse:
        organization_id = current_call().require_access().organization_id
        async with self.app.db.transaction(write=False) as session:
            org = await organizations.get_organization(session, organization_id)
            return pb.ResolveWorkosOrganizationIdResponse(
                organization_id=org.id, workos_organization_id=org.workos_organization_id or ""
            )

    async def LinkWorkosOrganization(
        self, request: pb.LinkWorkosOrganizationRequest, context: grpc.aio.ServicerContext
    ) -> pb.Organization:
        call = current_actor()
        async with self.app.db.transaction() as session:
            org = await organizations.link_workos_organization(
                session,
                call,
                call.require_access().organization_id,
                request.workos_organization_id,
                now=utcnow(),
            )
            return organization_to_proto(org)

    async def UnlinkWorkosOrganization(
        self, request: pb.UnlinkWorkosOrganizationRequest, context: grpc.aio.ServicerContext
    ) -> pb.Organization:
        call = current_actor()
        async with self.app.db.transaction() as session:
            org = await organizations.unlink_workos_organization(
                session, call, call.require_access().organization_id, now=utcnow()
            )
            return organization_to_proto(org)

    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAuditEventsResponse:
        organization_id = current_call().require_access().organization_id
        filters = AuditFilter(
            workspace_id=request.workspace_id, actor_id=request.actor_id, action=request.action
        )
        page = parse_page(
            request.page_size, request.page_token, scope=filters.scope(organization_id)
        )
        async with self.app.db.transaction(write=False) as session:
            events, token = await organizations.list_audit_events(
                session, organization_id, filters, page
            )
            return pb.ListAuditEventsResponse(
                audit_events=[
                    pb.AuditEvent(
                        id=event.id,
                        organization_id=event.organization_id,
                        workspace_id=event.workspace_id or "",
                        actor_id=event.actor_id,
                        action=event.action,
                        target_ids=event.target_ids,
                        request_id=event.request_id,
                        create_time=timestamp(event.create_time),
                        service_key_id=event.service_key_id or "",
                        correlation_id=event.correlation_id,
                    )
                    for event in events
                ],
                next_page_token=token,
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
