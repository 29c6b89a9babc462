"""Helpers shared by the membership, join-code and invitation tests (no tests here).

They talk to the server through the public RPCs, as a client would.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from beacon.v1 import membership_service_pb2 as pb
from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from tests.support import unique


async def create_workspace(stubs: SimpleNamespace, owner: Any, **fields: Any) -> ws_pb.Workspace:
    """A new workspace (in the owner's personal organization unless fields say otherwise)."""
    request = ws_pb.CreateWorkspaceRequest(name=unique("Team "), **fields)
    reply: ws_pb.CreateWorkspaceResponse = await stubs.workspaces.CreateWorkspace(
        request, metadata=owner.metadata
    )
    return reply.workspace


async def create_organization(stubs: SimpleNamespace, owner: Any) -> org_pb.Organization:
    request = org_pb.CreateOrganizationRequest(name=unique("Org "))
    reply: org_pb.Organization = await stubs.organizations.CreateOrganization(
        request, metadata=owner.metadata
    )
    return reply


async def add_member(
    stubs: SimpleNamespace,
    workspace_id: str,
    actor: Any,
    email: str,
    role: pb.WorkspaceRole.ValueType = pb.WORKSPACE_ROLE_MEMBER,
) -> pb.WorkspaceMember:
    request = pb.AddMemberRequest(workspace_id=workspace_id, email=email, role=role)
    member: pb.WorkspaceMember = await stubs.memberships.AddMember(request, metadata=actor.metadata)
    return member


async def accept_invitation_to(
    stubs: SimpleNamespace, invitee: Any, scope_id: str
) -> pb.AcceptInvitationResponse:
    """The invitee accepts their pending invitation to the workspace or organization."""
    request = pb.ListMyInvitationsRequest(page_size=100)
    listed = await stubs.memberships.ListMyInvitations(request, metadata=invitee.metadata)
    (invitation,) = [
        i
        for i in listed.invitations
        if scope_id in (i.workspace_id, i.id)
        or (not i.workspace_id and i.organization_id == scope_id)
    ]
    reply: pb.AcceptInvitationResponse = await stubs.memberships.AcceptInvitation(
        pb.AcceptInvitationRequest(invitation_id=invitation.id), metadata=invitee.metadata
    )
    return reply


async def add_and_accept(
    stubs: SimpleNamespace,
    workspace_id: str,
    actor: Any,
    invitee: Any,
    role: pb.WorkspaceRole.ValueType = pb.WORKSPACE_ROLE_MEMBER,
) -> pb.WorkspaceMember:
    """AddMember of the invitee's email, then the invitee accepts: their active membership."""
    await add_member(stubs, workspace_id, actor, invitee.email, role)
    return (await accept_invitation_to(stubs, invitee, workspace_id)).workspace_member


async def invite_and_accept(
    stubs: SimpleNamespace,
    organization_id: str,
    actor: Any,
    invitee: Any,
    role: org_pb.OrganizationRole.ValueType = org_pb.ORGANIZATION_ROLE_MEMBER,
) -> pb.OrganizationMember:
    """InviteOrganizationMember of the invitee's email, then the invitee accepts."""
    await stubs.memberships.InviteOrganizationMember(
        pb.InviteOrganizationMemberRequest(
            organization_id=organization_id, email=invitee.email, role=role
        ),
        metadata=actor.metadata,
    )
    return (await accept_invitation_to(stubs, invitee, organization_id)).organization_member


async def all_members(
    stubs: SimpleNamespace, workspace_id: str, actor: Any, page_size: int = 0
) -> list[pb.WorkspaceMember]:
    """Every member and invitation, following next_page_token to the end."""
    members: list[pb.WorkspaceMember] = []
    token = ""
    while True:
        request = pb.ListMembersRequest(
            workspace_id=workspace_id, page_size=page_size, page_token=token
        )
        reply = await stubs.memberships.ListMembers(request, metadata=actor.metadata)
        members.extend(reply.members)
        token = reply.next_page_token
        if not token:
            return members


def roles_by_user(members: list[pb.WorkspaceMember]) -> dict[str, int]:
    """user_id → role of the active members."""
    return {m.user_id: m.role for m in members if m.state == pb.MEMBER_STATE_ACTIVE}
