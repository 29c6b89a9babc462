"""MembershipService: workspace members, join codes, organization members and invitations.

Each handler reads the request, calls one domain function in a unit of work and converts
the result; the rules live in `service.domain.tenancy.workspace_members`,
`service.domain.tenancy.organization_members`, `service.domain.tenancy.invitations` and
`service.domain.tenancy.join_codes`.
"""

from __future__ import annotations

from datetime import timedelta

import grpc
from google.protobuf.empty_pb2 import Empty

from beacon.v1 import membership_service_pb2 as pb
from beacon.v1 import membership_service_pb2_grpc
from beacon.v1 import organization_service_pb2 as org_pb
from service.app import App
from service.auth.context import current_actor
from service.clock import utcnow
from service.domain.tenancy import invitations, join_codes, organization_members, workspace_members
from service.domain.tenancy.invitations import Invitation
from service.domain.tenancy.join_codes import JoinInfo
from service.domain.tenancy.members import Member
from service.servicers.convert import (
    ORGANIZATION_ROLE_FROM_PROTO,
    ORGANIZATION_ROLE_TO_PROTO,
    timestamp,
    workspace_message,
)

WORKSPACE_ROLE_TO_PROTO = {"owner": pb.WORKSPACE_ROLE_OWNER, "member": pb.WORKSPACE_ROLE_MEMBER}
WORKSPACE_ROLE_FROM_PROTO = {v: k for k, v in WORKSPACE_ROLE_TO_PROTO.items()}
_INVALID_ROLE = "invalid"  # an enum number the contract does not define


class MembershipServicer(membership_service_pb2_grpc.MembershipServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    @property
    def _join_code_ttl(self) -> timedelta:
        return timedelta(hours=self.app.settings.join_code_ttl_hours)

    @property
    def _invitation_ttl(self) -> timedelta:
        return timedelta(hours=self.app.settings.invitation_ttl_hours)

    async def ListMembers(
        self, request: pb.ListMembersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMembersResponse:
        async with self.app.db.transaction(write=False) as session:
            page = await workspace_members.list_members(
                session,
                request.workspace_id,
                page_size=request.page_size,
                page_token=request.page_token,
                now=utcnow(),
            )
        return pb.ListMembersResponse(
            members=[_workspace_member(m) for m in page.members],
            next_page_token=page.next_page_token,
        )

    async def AddMember(
        self, request: pb.AddMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.WorkspaceMember:
        async with self.app.db.transaction() as session:
            member = await workspace_members.add_member(
                session,
                current_actor(),
                request.workspace_id,
                email=request.email,
                role=_workspace_role(request.role),
                invitation_ttl=self._invitation_ttl,
                request_id=request.request_id,
                now=utcnow(),
            )
        return _workspace_member(member)

    async def UpdateMemberRole(
        self, request: pb.UpdateMemberRoleRequest, context: grpc.aio.ServicerContext
    ) -> pb.WorkspaceMember:
        async with self.app.db.transaction() as session:
            member = await workspace_members.update_member_role(
                session,
                current_actor(),
                request.workspace_id,
                user_id=request.user_id,
                role=_workspace_role(request.role),
                now=utcnow(),
            )
        return _workspace_member(member)

    async def RemoveMember(
        self, request: pb.RemoveMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveMemberResponse:
        async with self.app.db.transaction() as session:
            await workspace_members.remove_member(
                session,
                current_actor(),
                request.workspace_id,
                user_id=request.user_id,
                email=request.email,
                now=utcnow(),
            )
        return pb.RemoveMemberResponse(success=True)

    async def LeaveWorkspace(
        self, request: pb.LeaveWorkspaceRequest, context: grpc.aio.ServicerContext
    ) -> Empty:
        async with self.app.db.transaction() as session:
            await workspace_members.leave_workspace(
                session, current_actor(), request.workspace_id, now=utcnow()
            )
        return Empty()

    async def GetJoinInfo(
        self, request: pb.GetJoinInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.JoinInfo:
        async with self.app.db.transaction(write=False) as session:
            info = await join_codes.get_join_info(session, request.workspace_id, now=utcnow())
        return _join_info(info)

    async def RotateJoinCode(
        self, request: pb.RotateJoinCodeRequest, context: grpc.aio.ServicerContext
    ) -> pb.JoinInfo:
        ttl_seconds = None
        if request.HasField("ttl"):
            ttl_seconds = request.ttl.seconds + request.ttl.nanos / 1e9
        async with self.app.db.transaction() as session:
            info = await join_codes.rotate_join_code(
                session,
                current_actor(),
                request.workspace_id,
                ttl_seconds=ttl_seconds,
                default_ttl=self._join_code_ttl,
                request_id=request.request_id,
                now=utcnow(),
            )
        return _join_info(info)

    async def JoinWorkspaceByCode(
        self, request: pb.JoinWorkspaceByCodeRequest, context: grpc.aio.ServicerContext
    ) -> pb.JoinWorkspaceByCodeResponse:
        async with self.app.db.transaction() as session:
            member = await join_codes.join_by_code(
                session, current_actor(), request.code, now=utcnow()
            )
            workspace = await workspace_message(session, self.app.settings, member.scope_id)
        return pb.JoinWorkspaceByCodeResponse(
            workspace=workspace, membership=_workspace_member(member)
        )

    async def ListOrganizationMembers(
        self, request: pb.ListOrganizationMembersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListOrganizationMembersResponse:
        async with self.app.db.transaction(write=False) as session:
            page = await organization_members.list_organization_members(
                session,
                request.organization_id,
                page_size=request.page_size,
                page_token=request.page_token,
                now=utcnow(),
            )
        return pb.ListOrganizationMembersResponse(
            members=[_organization_member(m) for m in page.members],
            next_page_token=page.next_page_token,
        )

    async def InviteOrganizationMember(
        self, request: pb.InviteOrganizationMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.OrganizationMember:
        async with self.app.db.transaction() as session:
            member = await organization_members.invite_organization_member(
                session,
                current_actor(),
                request.organization_id,
                email=request.email,
                role=_organization_role(request.role),
                invitation_ttl=self._invitation_ttl,
                request_id=request.request_id,
                now=utcnow(),
            )
        return _organization_member(member)

    async def UpdateOrganizationMemberRole(
        self, request: pb.UpdateOrganizationMemberRoleRequest, context: grpc.aio.ServicerContext
    ) -> pb.OrganizationMember:
        async with self.app.db.transaction() as session:
            member = await organization_members.update_organization_member_role(
                session,
                current_actor(),
                request.organization_id,
                user_id=request.user_id,
                role=_organization_role(request.role),
                now=utcnow(),
            )
        return _organization_member(member)

    async def RemoveOrganizationMember(
        self, request: pb.RemoveOrganizationMemberRequest, context: grpc.aio.ServicerContext
    ) -> Empty:
        async with self.app.db.transaction() as session:
            await organization_members.remove_organization_member(
                session,
                current_actor(),
                request.organization_id,
                user_id=request.user_id,
                email=request.email,
                now=utcnow(),
            )
        return Empty()

    async def ListMyInvitations(
        self, request: pb.ListMyInvitationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMyInvitationsResponse:
        async with self.app.db.transaction(write=False) as session:
            page = await invitations.list_my_invitations(
                session,
                current_actor(),
                page_size=request.page_size,
                page_token=request.page_token,
                now=utcnow(),
            )
        return pb.ListMyInvitationsResponse(
            invitations=[_invitation(i) for i in page.invitations],
            next_page_token=page.next_page_token,
        )

    async def AcceptInvitation(
        self, request: pb.AcceptInvitationRequest, context: grpc.aio.ServicerContext
    ) -> pb.AcceptInvitationResponse:
        async with self.app.db.transaction() as session:
            accepted = await invitations.accept_invitation(
                session, current_actor(), request.invitation_id, now=utcnow()
            )
        reply = pb.AcceptInvitationResponse()
        if accepted.workspace_member is not None:
            reply.workspace_member.CopyFrom(_workspace_member(accepted.workspace_member))
        if accepted.organization_member is not None:
            reply.organization_member.CopyFrom(_organization_member(accepted.organization_member))
        return reply

    async def DeclineInvitation(
        self, request: pb.DeclineInvitationRequest, context: grpc.aio.ServicerContext
    ) -> Empty:
        async with self.app.db.transaction() as session:
            await invitations.decline_invitation(
                session, current_actor(), request.invitation_id, now=utcnow()
            )
        return Empty()


def _workspace_role(value: pb.WorkspaceRole.ValueType) -> str:
    if value == pb.WORKSPACE_ROLE_UNSPECIFIED:
        return ""
    return WORKSPACE_ROLE_FROM_PROTO.get(value, _INVALID_ROLE)


def _organization_role(value: org_pb.OrganizationRole.ValueType) -> str:
    if value == org_pb.ORGANIZATION_ROLE_UNSPECIFIED:
        return ""
    role: str = ORGANIZATION_ROLE_FROM_PROTO.get(value, _INVALID_ROLE)
    return role


def _state(member: Member) -> pb.MemberState.ValueType:
    return pb.MEMBER_STATE_INVITED if member.invited else pb.MEMBER_STATE_ACTIVE


def _workspace_member(member: Member) -> pb.WorkspaceMember:
    return pb.WorkspaceMember(
        workspace_id=member.scope_id,
        user_id=member.user_id,
        email=member.email,
        display_name=member.display_name,
        role=WORKSPACE_ROLE_TO_PROTO[member.role],
        state=_state(member),
        create_time=timestamp(member.create_time),
        expire_time=timestamp(member.expire_time),
    )


def _organization_member(member: Member) -> pb.OrganizationMember:
    return pb.OrganizationMember(
        organization_id=member.scope_id,
        user_id=member.user_id,
        email=member.email,
        display_name=member.display_name,
        role=ORGANIZATION_ROLE_TO_PROTO[member.role],
        state=_state(member),
        create_time=timestamp(member.create_time),
        expire_time=timestamp(member.expire_time),
    )


def _invitation(invitation: Invitation) -> pb.Invitation:
    message = pb.Invitation(
        id=invitation.id,
        email=invitation.email,
        workspace_id=invitation.workspace_id,
        workspace_name=invitation.workspace_name,
        organization_id=invitation.organization_id,
        organization_name=invitation.organization_name,
        create_time=timestamp(invitation.create_time),
        expire_time=timestamp(invitation.expire_time),
    )
    if invitation.workspace_id:
        message.workspace_role = WORKSPACE_ROLE_TO_PROTO[invitation.role]
    else:
        message.organization_role = ORGANIZATION_ROLE_TO_PROTO[invitation.role]
    return message


def _join_info(info: JoinInfo) -> pb.JoinInfo:
    return pb.JoinInfo(
        workspace_id=info.workspace_id,
        code=info.code,
        expire_time=timestamp(info.expire_time),
    )


def add(server: grpc.aio.Server, app: App) -> str:
    membership_service_pb2_grpc.add_MembershipServiceServicer_to_server(
        MembershipServicer(app), server
    )
    return str(pb.DESCRIPTOR.services_by_name["MembershipService"].full_name)
