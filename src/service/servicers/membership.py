"""MembershipService: workspace members, join codes, organization members and invitations.

Each handler converts the request, makes one call to `service.application.members` and
converts the result; the rules live in `service.domain.tenancy.workspace_members`,
`service.domain.tenancy.organization_members`, `service.domain.tenancy.invitations` and
`service.domain.tenancy.join_codes`.
"""

from __future__ import annotations

import grpc
from google.protobuf.empty_pb2 import Empty

from beacon.v1 import membership_service_pb2 as pb
from beacon.v1 import membership_service_pb2_grpc
from beacon.v1 import organization_service_pb2 as org_pb
from service.app import App
from service.auth.context import current_actor
from service.domain.tenancy.invitations import Invitation
from service.domain.tenancy.join_codes import JoinInfo
from service.domain.tenancy.members import Member
from service.servicers.convert import (
    ORGANIZATION_ROLE_FROM_PROTO,
    ORGANIZATION_ROLE_TO_PROTO,
    timestamp,
    workspace_to_proto,
)

WORKSPACE_ROLE_TO_PROTO = {"owner": pb.WORKSPACE_ROLE_OWNER, "member": pb.WORKSPACE_ROLE_MEMBER}
WORKSPACE_ROLE_FROM_PROTO = {v: k for k, v in WORKSPACE_ROLE_TO_PROTO.items()}
_INVALID_ROLE = "invalid"  # an enum number the contract does not define


class MembershipServicer(membership_service_pb2_grpc.MembershipServiceServicer):
    """Each handler converts the request, makes one call to `service.application.members`
    and converts the result."""

    def __init__(self, app: App) -> None:
        self.settings = app.settings
        self.members = app.services.members

    async def ListMembers(
        self, request: pb.ListMembersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMembersResponse:
        page = await self.members.list_members(
            request.workspace_id, page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListMembersResponse(
            members=[_workspace_member(m) for m in page.members],
            next_page_token=page.next_page_token,
        )

    async def AddMember(
        self, request: pb.AddMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.WorkspaceMember:
        member = await self.members.add_member(
            current_actor(),
            request.workspace_id,
            email=request.email,
            role=_workspace_role(request.role),
            request_id=request.request_id,
        )
        return _workspace_member(member)

    async def UpdateMemberRole(
        self, request: pb.UpdateMemberRoleRequest, context: grpc.aio.ServicerContext
    ) -> pb.WorkspaceMember:
        member = await self.members.update_member_role(
            current_actor(),
            request.workspace_id,
            user_id=request.user_id,
            role=_workspace_role(request.role),
        )
        return _workspace_member(member)

    async def RemoveMember(
        self, request: pb.RemoveMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveMemberResponse:
        await self.members.remove_member(
            current_actor(), request.workspace_id, user_id=request.user_id, email=request.email
        )
        return pb.RemoveMemberResponse(success=True)

    async def LeaveWorkspace(
        self, request: pb.LeaveWorkspaceRequest, context: grpc.aio.ServicerContext
    ) -> Empty:
        await self.members.leave_workspace(current_actor(), request.workspace_id)
        return Empty()

    async def GetJoinInfo(
        self, request: pb.GetJoinInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.JoinInfo:
        return _join_info(await self.members.join_info(request.workspace_id))

    async def RotateJoinCode(
        self, request: pb.RotateJoinCodeRequest, context: grpc.aio.ServicerContext
    ) -> pb.JoinInfo:
        ttl_seconds = None
        if request.HasField("ttl"):
            ttl_seconds = request.ttl.seconds + request.ttl.nanos / 1e9
        info = await self.members.rotate_join_code(
            current_actor(),
            request.workspace_id,
            ttl_seconds=ttl_seconds,
            request_id=request.request_id,
        )
        return _join_info(info)

    async def JoinWorkspaceByCode(
        self, request: pb.JoinWorkspaceByCodeRequest, context: grpc.aio.ServicerContext
    ) -> pb.JoinWorkspaceByCodeResponse:
        joined = await self.members.join_by_code(current_actor(), request.code)
        return pb.JoinWorkspaceByCodeResponse(
            workspace=workspace_to_proto(joined.workspace, self.settings),
            membership=_workspace_member(joined.member),
        )

    async def ListOrganizationMembers(
        self, request: pb.ListOrganizationMembersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListOrganizationMembersResponse:
        page = await self.members.list_organization_members(
            request.organization_id, page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListOrganizationMembersResponse(
            members=[_organization_member(m) for m in page.members],
            next_page_token=page.next_page_token,
        )

    async def InviteOrganizationMember(
        self, request: pb.InviteOrganizationMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.OrganizationMember:
        member = await self.members.invite_organization_member(
            current_actor(),
            request.organization_id,
            email=request.email,
            role=_organization_role(request.role),
            request_id=request.request_id,
        )
        return _organization_member(member)

    async def UpdateOrganizationMemberRole(
        self, request: pb.UpdateOrganizationMemberRoleRequest, context: grpc.aio.ServicerContext
    ) -> pb.OrganizationMember:
        member = await self.members.update_organization_member_role(
            current_actor(),
            request.organization_id,
            user_id=request.user_id,
            role=_organization_role(request.role),
        )
        return _organization_member(member)

    async def RemoveOrganizationMember(
        self, request: pb.RemoveOrganizationMemberRequest, context: grpc.aio.ServicerContext
    ) -> Empty:
        await self.members.remove_organization_member(
            current_actor(), request.organization_id, user_id=request.user_id, email=request.email
        )
        return Empty()

    async def ListMyInvitations(
        self, request: pb.ListMyInvitationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMyInvitationsResponse:
        page = await self.members.list_my_invitations(
            current_actor(), page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListMyInvitationsResponse(
            invitations=[_invitation(i) for i in page.invitations],
            next_page_token=page.next_page_token,
        )

    async def AcceptInvitation(
        self, request: pb.AcceptInvitationRequest, context: grpc.aio.ServicerContext
    ) -> pb.AcceptInvitationResponse:
        accepted = await self.members.accept_invitation(current_actor(), request.invitation_id)
        reply = pb.AcceptInvitationResponse()
        if accepted.workspace_member is not None:
            reply.workspace_member.CopyFrom(_workspace_member(accepted.workspace_member))
        if accepted.organization_member is not None:
            reply.organization_member.CopyFrom(_organization_member(accepted.organization_member))
        return reply

    async def DeclineInvitation(
        self, request: pb.DeclineInvitationRequest, context: grpc.aio.ServicerContext
    ) -> Empty:
        await self.members.decline_invitation(current_actor(), request.invitation_id)
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
