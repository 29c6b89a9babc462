"""Workspace members through the server: adding, roles, removal, leaving, last-owner rule,
concurrency and pagination."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from sqlalchemy import select

from beacon.v1 import membership_service_pb2 as pb
from service.app import App
from service.db.models import AuditEvent
from tests.support import RpcFailure, expect_error, unique
from tests.support.builders import (
    add_and_accept,
    add_member,
    all_members,
    create_workspace,
    roles_by_user,
)

OWNER, MEMBER = pb.WORKSPACE_ROLE_OWNER, pb.WORKSPACE_ROLE_MEMBER
_UNDEFINED = pb.WorkspaceRole.ValueType(9)  # a number the contract does not define


def _assert_last_owner(failure: RpcFailure, workspace_id: str) -> None:
    violations = failure.details["PreconditionFailure"].violations
    assert [(v.type, v.subject) for v in violations] == [("LAST_OWNER", workspace_id)]


async def _remove(stubs: SimpleNamespace, workspace_id: str, actor: Any, user_id: str) -> Any:
    return await stubs.memberships.RemoveMember(
        pb.RemoveMemberRequest(workspace_id=workspace_id, user_id=user_id), metadata=actor.metadata
    )


async def _set_role(
    stubs: SimpleNamespace, workspace_id: str, actor: Any, user_id: str, role: Any
) -> pb.WorkspaceMember:
    member: pb.WorkspaceMember = await stubs.memberships.UpdateMemberRole(
        pb.UpdateMemberRoleRequest(workspace_id=workspace_id, user_id=user_id, role=role),
        metadata=actor.metadata,
    )
    return member


async def _leave(stubs: SimpleNamespace, workspace_id: str, actor: Any) -> Any:
    return await stubs.memberships.LeaveWorkspace(
        pb.LeaveWorkspaceRequest(workspace_id=workspace_id), metadata=actor.metadata
    )


async def test_an_existing_user_becomes_a_member_once_they_accept(
    stubs: SimpleNamespace, new_user: Any, app: App
) -> None:
    owner = await new_user()
    workspace = await create_workspace(stubs, owner)
    colleague = await new_user(name="Ada Colleague")
    invited = await add_member(stubs, workspace.id, owner, colleague.email.upper())
    assert (invited.user_id, invited.state) == ("", pb.MEMBER_STATE_INVITED)
    added = await add_and_accept(stubs, workspace.id, owner, colleague)
    assert (added.user_id, added.state, added.role) == (
        colleague.user_id,
        pb.MEMBER_STATE_ACTIVE,
        MEMBER,
    )
    assert added.display_name == "Ada Colleague" and added.email == colleague.email
    # The colleague now sees the workspace's members.
    members = await all_members(stubs, workspace.id, colleague)
    assert roles_by_user(members) == {owner.user_id: OWNER, colleague.user_id: MEMBER}
    async with app.db.transaction(write=False) as session:
        actions = list(
            await session.scalars(
                select(AuditEvent.action).where(AuditEvent.workspace_id == workspace.id)
            )
        )
    assert "beacon.v1.MembershipService/AddMember" in actions
    assert "beacon.v1.MembershipService/AcceptInvitation" in actions
    # Adding an email a member already has returns the membership (the list shows it).
    again = await add_member(stubs, workspace.id, owner, colleague.email)
    assert (again.user_id, again.state) == (colleague.user_id, pb.MEMBER_STATE_ACTIVE)


async def test_adding_an_unknown_email_stores_an_invitation(
    stubs: SimpleNamespace, new_user: Any
) -> None:
    owner = await new_user()
    workspace = await create_workspace(stubs, owner)
    email = f"{unique('nobody')}@example.com"
    invited = await add_member(stubs, workspace.id, owner, f"  {email.upper()} ")
    assert (invited.user_id, invited.email, invited.state) == ("", email, pb.MEMBER_STATE_INVITED)
    listed = await all_members(stubs, workspace.id, owner)
    assert [(m.email, m.state) for m in listed if not m.user_id] == [
        (email, pb.MEMBER_STATE_INVITED)
    ]
    again = await add_member(stubs, workspace.id, owner, email, OWNER)
    assert (again.role, again.create_time) == (OWNER, invited.create_time)
    await stubs.memberships.RemoveMember(
        pb.RemoveMemberRequest(workspace_id=workspace.id, email=email), metadata=owner.metadata
    )
    assert [m for m in await all_members(stubs, workspace.id, owner) if not m.user_id] == []


async def test_members_add_members_but_only_owners_add_or_promote_owners(
    stubs: SimpleNamespace, new_user: Any
) -> None:
    owner = await new_user()
    workspace = await create_workspace(stubs, owner)
    member, newcomer, hopeful = await new_user(), await new_user(), await new_user()
    await add_and_accept(stubs, workspace.id, owner, member)
    assert (await add_and_accept(stubs, workspace.id, member, newcomer)).role == MEMBER
    await expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        add_and_accept(stubs, workspace.id, member, hopeful, OWNER),
    )
    await expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        _set_role(stubs, workspace.id, member, member.user_id, OWNER),
    )
    roles = roles_by_user(await all_members(stubs, workspace.id, owner))
    assert hopeful.user_id not in roles and roles[member.user_id] == MEMBER
    promoted = await _set_role(stubs, workspace.id, owner, member.user_id, OWNER)
    assert promoted.role == OWNER
    # Now an owner, the former member may add owners.
    assert (await add_and_accept(stubs, workspace.id, member, hopeful, OWNER)).role == OWNER


async def test_adding_again_never_lowers_a_role(stubs: SimpleNamespace, new_user: Any) -> None:
    owner = await new_user()
    workspace = await create_workspace(stubs, owner)
    colleague = await new_user()
    first = await add_and_accept(stubs, workspace.id, owner, colleague, OWNER)
    again = await add_member(stubs, workspace.id, owner, colleague.email, MEMBER)
    assert (again.role, again.create_time) == (OWNER, first.create_time)


async def test_last_owner_cannot_be_removed_demoted_or_leave(
    stubs: SimpleNamespace, new_user: Any
) -> None:
    creator, guest, member = await new_user(), await new_user(), await new_user()
    workspace = await create_workspace(stubs, creator)
    await add_and_accept(stubs, workspace.id, creator, guest, OWNER)
    await add_and_accept(stubs, workspace.id, creator, member)
    await _leave(stubs, workspace.id, creator)  # the guest is now the members' only owner
    refused = [
        _remove(stubs, workspace.id, guest, guest.user_id),
        _set_role(stubs, workspace.id, guest, guest.user_id, MEMBER),
        _leave(stubs, workspace.id, guest),
        _remove(stubs, workspace.id, creator, guest.user_id),
    ]
    for call in refused:
        failure = await expect_error(grpc.StatusCode.FAILED_PRECONDITION, call)
        _assert_last_owner(failure, workspace.id)
    await expect_error(
        grpc.StatusCode.PERMISSION_DENIED, _remove(stubs, workspace.id, member, guest.user_id)
    )
    assert roles_by_user(await all_members(stubs, workspace.id, guest)) == {
        guest.user_id: OWNER,
        member.user_id: MEMBER,
    }
    # With a second owner, the first may leave.
    await _set_role(stubs, workspace.id, guest, member.user_id, OWNER)
    await _leave(stubs, workspace.id, guest)
    assert roles_by_user(await all_members(stubs, workspace.id, member)) == {member.user_id: OWNER}


async def test_organization_owners_count_as_owners_while_they_are_members(
    stubs: SimpleNamespace, new_user: Any
) -> None:
    creator, member = await new_user(), await new_user()
    workspace = await create_workspace(stubs, creator)
    await add_and_accept(stubs, workspace.id, creator, member)
    # The creator owns the organization: demoted to member, they still manage the workspace.
    demoted = await _set_role(stubs, workspace.id, creator, creator.user_id, MEMBER)
    assert demoted.role == MEMBER
    await stubs.memberships.RotateJoinCode(
        pb.RotateJoinCodeRequest(workspace_id=workspace.id), metadata=creator.metadata
    )
    # ...and as the only member who manages it, they may not leave.
    failure = await expect_error(
        grpc.StatusCode.FAILED_PRECONDITION, _leave(stubs, workspace.id, creator)
    )
    _assert_last_owner(failure, workspace.id)


async def test_removed_member_loses_access(stubs: SimpleNamespace, new_user: Any) -> None:
    owner = await new_user()
    workspace = await create_workspace(stubs, owner)
    member = await new_user()
    await add_and_accept(stubs, workspace.id, owner, member)
    reply = await _remove(stubs, workspace.id, owner, member.user_id)
    assert reply.success
    await expect_error(grpc.StatusCode.NOT_FOUND, all_members(stubs, workspace.id, member))
    missing = await expect_error(
        grpc.StatusCode.NOT_FOUND, _remove(stubs, workspace.id, owner, member.user_id)
    )
    assert "member" in missing.message


async def _guest_owners(stubs: SimpleNamespace, new_user: Any) -> tuple[str, Any, Any, Any]:
    """A workspace whose only explicit members are two owners; its creator has left and
    keeps access as the organization's owner."""
    creator, first, second = await new_user(), await new_user(), await new_user()
    workspace = await create_workspace(stubs, creator)
    await add_and_accept(stubs, workspace.id, creator, first, OWNER)
    await add_and_accept(stubs, workspace.id, creator, second, OWNER)
    await _leave(stubs, workspace.id, creator)
    return workspace.id, creator, first, second


@pytest.mark.parametrize("change", ["remove", "demote", "leave"])
async def test_two_owners_removing_each_other_at_once_leave_one_owner(
    stubs: SimpleNamespace, new_user: Any, change: str
) -> None:
    workspace_id, creator, first, second = await _guest_owners(stubs, new_user)

    async def act(actor: Any, other: Any) -> Any:
        if change == "remove":
            return await _remove(stubs, workspace_id, actor, other.user_id)
        if change == "demote":
            return await _set_role(stubs, workspace_id, actor, other.user_id, MEMBER)
        return await _leave(stubs, workspace_id, actor)

    results = await asyncio.gather(act(first, second), act(second, first), return_exceptions=True)
    failures = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(failures) == 1, results
    # The loser is refused as the last owner, or, when the winner committed before its
    # access check, as a caller who is no longer an owner (or no longer a member).
    assert failures[0].code() in {
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
    }, results
    roles = roles_by_user(await all_members(stubs, workspace_id, creator))
    assert list(roles.values()).count(OWNER) == 1


async def test_leaving_without_an_explicit_membership_is_refused(
    stubs: SimpleNamespace, new_user: Any
) -> None:
    workspace_id, creator, _, _ = await _guest_owners(stubs, new_user)
    refused = await expect_error(
        grpc.StatusCode.FAILED_PRECONDITION, _leave(stubs, workspace_id, creator)
    )
    assert refused.details["PreconditionFailure"].violations[0].type == "IMPLIED_MEMBERSHIP"


async def test_bad_input_is_invalid_argument_naming_the_field(
    stubs: SimpleNamespace, new_user: Any
) -> None:
    owner = await new_user()
    workspace = await create_workspace(stubs, owner)
    cases = [
        (pb.AddMemberRequest(workspace_id=workspace.id, email="not-an-email"), "email"),
        (pb.AddMemberRequest(workspace_id=workspace.id, email=""), "email"),
        (pb.AddMemberRequest(workspace_id=workspace.id, email="a\x00b@example.com"), "email"),
        (pb.AddMemberRequest(workspace_id=workspace.id, email="x" * 250 + "@example.com"), "email"),
        (
            pb.AddMemberRequest(workspace_id=workspace.id, email="a@example.com", role=_UNDEFINED),
            "role",
        ),
    ]
    for request, field in cases:
        bad = await expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            stubs.memberships.AddMember(request, metadata=owner.metadata),
        )
        assert bad.details["BadRequest"].field_violations[0].field == field
    for role in (pb.WORKSPACE_ROLE_UNSPECIFIED, _UNDEFINED):
        bad = await expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            _set_role(stubs, workspace.id, owner, owner.user_id, role),
        )
        assert bad.details["BadRequest"].field_violations[0].field == "role"
    await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        stubs.memberships.RemoveMember(
            pb.RemoveMemberRequest(workspace_id=workspace.id), metadata=owner.metadata
        ),
    )
    # A NUL is refused before any query, naming the field.
    nul = await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        _remove(stubs, workspace.id, owner, "user_\x00" + "z" * 500),
    )
    assert [v.field for v in nul.details["BadRequest"].field_violations] == ["user_id"]
    assert len(await all_members(stubs, workspace.id, owner)) == 1  # nothing was written


async def test_members_are_listed_oldest_first_across_pages(
    stubs: SimpleNamespace, new_user: Any
) -> None:
    owner = await new_user()
    workspace = await create_workspace(stubs, owner)
    for index in range(6):
        if index % 2:
            await add_member(stubs, workspace.id, owner, (await new_user()).email)
        else:
            await add_member(stubs, workspace.id, owner, f"{unique('p')}@example.com")
    everyone = await all_members(stubs, workspace.id, owner)
    assert len(everyone) == 7
    assert [m.create_time.ToDatetime() for m in everyone] == sorted(
        m.create_time.ToDatetime() for m in everyone
    )
    first = await stubs.memberships.ListMembers(
        pb.ListMembersRequest(workspace_id=workspace.id, page_size=3), metadata=owner.metadata
    )
    assert len(first.members) == 3 and first.next_page_token
    # A member added between pages appears at the end, without shifting the pages.
    late = await add_member(stubs, workspace.id, owner, f"{unique('late')}@example.com")
    rest = await all_members(stubs, workspace.id, owner, page_size=3)
    paged = [*first.members]
    token = first.next_page_token
    while token:
        reply = await stubs.memberships.ListMembers(
            pb.ListMembersRequest(workspace_id=workspace.id, page_size=3, page_token=token),
            metadata=owner.metadata,
        )
        paged.extend(reply.members)
        token = reply.next_page_token
    assert (
        [m.email for m in paged]
        == [m.email for m in rest]
        == [
            *(m.email for m in everyone),
            late.email,
        ]
    )
    await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        stubs.memberships.ListMembers(
            pb.ListMembersRequest(workspace_id=workspace.id, page_token="garbage"),
            metadata=owner.metadata,
        ),
    )
