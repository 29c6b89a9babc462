"""The membership examples of seed 002 (the Workspace API), replayed as gRPC calls.

Each test quotes the seed's call and checks the result the seed documents. The seed's ids
("ws_abc123", "user_456") become real ones, and its email is a fresh address.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import grpc

from beacon.v1 import membership_service_pb2 as pb
from tests.support import expect_error
from tests.support.builders import accept_invitation_to, add_and_accept, create_workspace


async def test_list_members(stubs: SimpleNamespace, new_user: Any) -> None:
    """`trpc.workspace.listMembers.query({ workspaceId: "ws_abc123" })` → members: array of
    workspace members with user information."""
    owner = await new_user(name="Owner Person")
    workspace = await create_workspace(stubs, owner)
    colleague = await new_user(name="Colleague Person")
    await add_and_accept(stubs, workspace.id, owner, colleague)
    reply = await stubs.memberships.ListMembers(
        pb.ListMembersRequest(workspace_id=workspace.id), metadata=owner.metadata
    )
    assert [(m.user_id, m.email, m.display_name, m.role) for m in reply.members] == [
        (owner.user_id, owner.email, "Owner Person", pb.WORKSPACE_ROLE_OWNER),
        (colleague.user_id, colleague.email, "Colleague Person", pb.WORKSPACE_ROLE_MEMBER),
    ]
    assert reply.next_page_token == ""


async def test_add_member(stubs: SimpleNamespace, new_user: Any) -> None:
    """`trpc.workspace.addMember.mutate({ workspaceId, email, role: "member" })` → membership.

    Beacon asks for consent: the answer is a pending invitation (the same for a registered
    user as for an unknown email), which becomes the membership when the invitee accepts."""
    owner = await new_user()
    workspace = await create_workspace(stubs, owner)
    invitee = await new_user()
    invitation = await stubs.memberships.AddMember(
        pb.AddMemberRequest(
            workspace_id=workspace.id, email=invitee.email, role=pb.WORKSPACE_ROLE_MEMBER
        ),
        metadata=owner.metadata,
    )
    assert (invitation.workspace_id, invitation.email) == (workspace.id, invitee.email)
    assert (invitation.state, invitation.user_id) == (pb.MEMBER_STATE_INVITED, "")
    assert invitation.role == pb.WORKSPACE_ROLE_MEMBER
    membership = (await accept_invitation_to(stubs, invitee, workspace.id)).workspace_member
    assert membership.workspace_id == workspace.id
    assert membership.user_id == invitee.user_id
    assert membership.role == pb.WORKSPACE_ROLE_MEMBER
    assert membership.state == pb.MEMBER_STATE_ACTIVE
    # The seed's role defaults to "member": leaving it unspecified does the same.
    other = await new_user()
    defaulted = await stubs.memberships.AddMember(
        pb.AddMemberRequest(workspace_id=workspace.id, email=other.email), metadata=owner.metadata
    )
    assert defaulted.role == pb.WORKSPACE_ROLE_MEMBER


async def test_remove_member(stubs: SimpleNamespace, new_user: Any) -> None:
    """`trpc.workspace.removeMember.mutate({ workspaceId, userId: "user_456", role: "member" })`
    → success: true. Owner only. (The seed's `role` argument is not needed: the user id
    names the membership.)"""
    owner = await new_user()
    workspace = await create_workspace(stubs, owner)
    member = await new_user()
    await add_and_accept(stubs, workspace.id, owner, member)
    await expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        stubs.memberships.RemoveMember(
            pb.RemoveMemberRequest(workspace_id=workspace.id, user_id=owner.user_id),
            metadata=member.metadata,
        ),
    )
    result = await stubs.memberships.RemoveMember(
        pb.RemoveMemberRequest(workspace_id=workspace.id, user_id=member.user_id),
        metadata=owner.metadata,
    )
    assert result.success is True
    listed = await stubs.memberships.ListMembers(
        pb.ListMembersRequest(workspace_id=workspace.id), metadata=owner.metadata
    )
    assert [m.user_id for m in listed.members] == [owner.user_id]


async def test_join_by_code(stubs: SimpleNamespace, new_user: Any) -> None:
    """`trpc.workspace.joinByCode.mutate({ code: "ABC123XYZ" })` → { workspace, membership }.
    The seed's sample code is not a Beacon code (9 symbols, with a "1"), so it is refused
    as INVALID_ARGUMENT; the workspace's real code joins."""
    owner = await new_user()
    workspace = await create_workspace(stubs, owner)
    joiner = await new_user()
    refused = await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        stubs.memberships.JoinWorkspaceByCode(
            pb.JoinWorkspaceByCodeRequest(code="ABC123XYZ"), metadata=joiner.metadata
        ),
    )
    assert refused.details["BadRequest"].field_violations[0].field == "code"
    info = await stubs.memberships.GetJoinInfo(
        pb.GetJoinInfoRequest(workspace_id=workspace.id), metadata=owner.metadata
    )
    result = await stubs.memberships.JoinWorkspaceByCode(
        pb.JoinWorkspaceByCodeRequest(code=info.code), metadata=joiner.metadata
    )
    assert (result.workspace.id, result.workspace.name) == (workspace.id, workspace.name)
    assert (result.membership.workspace_id, result.membership.user_id) == (
        workspace.id,
        joiner.user_id,
    )
    assert result.membership.role == pb.WORKSPACE_ROLE_MEMBER


async def test_get_join_info(stubs: SimpleNamespace, new_user: Any) -> None:
    """`trpc.workspace.getJoinInfo.query({ workspaceId: "ws_abc123" })` → code, expiresAt."""
    owner = await new_user()
    workspace = await create_workspace(stubs, owner)
    info = await stubs.memberships.GetJoinInfo(
        pb.GetJoinInfoRequest(workspace_id=workspace.id), metadata=owner.metadata
    )
    assert info.workspace_id == workspace.id
    assert len(info.code) == len("XXXX-XXXX-XXXX") and info.code.count("-") == 2
    assert info.HasField("expire_time")
    assert info.expire_time.ToDatetime(UTC) > datetime.now(UTC)
