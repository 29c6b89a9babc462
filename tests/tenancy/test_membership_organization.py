"""Organization members through the server: invitations, role changes and their guards."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import grpc

from beacon.v1 import membership_service_pb2 as pb
from beacon.v1 import organization_service_pb2 as org_pb
from tests.support import expect_error, unique
from tests.support.builders import (
    add_and_accept,
    all_members,
    create_organization,
    create_workspace,
    invite_and_accept,
)

OWNER, ADMIN = org_pb.ORGANIZATION_ROLE_OWNER, org_pb.ORGANIZATION_ROLE_ADMIN
MEMBER, BILLING = org_pb.ORGANIZATION_ROLE_MEMBER, org_pb.ORGANIZATION_ROLE_BILLING_ADMIN


async def _invite(
    stubs: SimpleNamespace, org_id: str, actor: Any, email: str, role: Any = MEMBER
) -> pb.OrganizationMember:
    member: pb.OrganizationMember = await stubs.memberships.InviteOrganizationMember(
        pb.InviteOrganizationMemberRequest(organization_id=org_id, email=email, role=role),
        metadata=actor.metadata,
    )
    return member


async def _set_role(
    stubs: SimpleNamespace, org_id: str, actor: Any, user_id: str, role: Any
) -> pb.OrganizationMember:
    member: pb.OrganizationMember = await stubs.memberships.UpdateOrganizationMemberRole(
        pb.UpdateOrganizationMemberRoleRequest(organization_id=org_id, user_id=user_id, role=role),
        metadata=actor.metadata,
    )
    return member


async def _remove(stubs: SimpleNamespace, org_id: str, actor: Any, user_id: str) -> Any:
    return await stubs.memberships.RemoveOrganizationMember(
        pb.RemoveOrganizationMemberRequest(organization_id=org_id, user_id=user_id),
        metadata=actor.metadata,
    )


async def _roles(stubs: SimpleNamespace, org_id: str, actor: Any) -> dict[str, int]:
    reply = await stubs.memberships.ListOrganizationMembers(
        pb.ListOrganizationMembersRequest(organization_id=org_id, page_size=100),
        metadata=actor.metadata,
    )
    return {m.user_id or m.email: m.role for m in reply.members}


async def test_invited_users_join_by_accepting_and_unknown_emails_stay_invited(
    stubs: SimpleNamespace, new_user: Any
) -> None:
    owner, colleague = await new_user(), await new_user(name="Grace Colleague")
    org = await create_organization(stubs, owner)
    workspace = await create_workspace(stubs, owner, organization_id=org.id)
    invited_user = await _invite(stubs, org.id, owner, colleague.email.upper())
    assert (invited_user.user_id, invited_user.state) == ("", pb.MEMBER_STATE_INVITED)
    added = await invite_and_accept(stubs, org.id, owner, colleague)
    assert (added.user_id, added.state, added.role) == (
        colleague.user_id,
        pb.MEMBER_STATE_ACTIVE,
        MEMBER,
    )
    assert added.display_name == "Grace Colleague"
    # An organization member is an implied member of its workspaces.
    await all_members(stubs, workspace.id, colleague)
    email = f"{unique('pending')}@example.com"
    invited = await _invite(stubs, org.id, owner, email, BILLING)
    assert (invited.user_id, invited.state, invited.role) == ("", pb.MEMBER_STATE_INVITED, BILLING)
    assert await _roles(stubs, org.id, owner) == {
        owner.user_id: OWNER,
        colleague.user_id: MEMBER,
        email: BILLING,
    }
    # Inviting again with the same role is harmless; another role needs a role change.
    assert (await _invite(stubs, org.id, owner, colleague.email)).create_time == added.create_time
    await expect_error(
        grpc.StatusCode.ALREADY_EXISTS, _invite(stubs, org.id, owner, colleague.email, ADMIN)
    )
    await stubs.memberships.RemoveOrganizationMember(
        pb.RemoveOrganizationMemberRequest(organization_id=org.id, email=email.upper()),
        metadata=owner.metadata,
    )
    assert email not in await _roles(stubs, org.id, owner)


async def test_only_owners_grant_revoke_or_remove_owner(
    stubs: SimpleNamespace, new_user: Any
) -> None:
    owner, admin, member = await new_user(), await new_user(), await new_user()
    org = await create_organization(stubs, owner)
    await invite_and_accept(stubs, org.id, owner, admin, ADMIN)
    await invite_and_accept(stubs, org.id, admin, member)  # admins manage members
    denied = [
        _invite(stubs, org.id, admin, f"{unique('boss')}@example.com", OWNER),
        _set_role(stubs, org.id, admin, member.user_id, OWNER),
        _set_role(stubs, org.id, admin, owner.user_id, ADMIN),
        _remove(stubs, org.id, admin, owner.user_id),
    ]
    for call in denied:
        await expect_error(grpc.StatusCode.PERMISSION_DENIED, call)
    await expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        stubs.memberships.ListOrganizationMembers(
            pb.ListOrganizationMembersRequest(organization_id=org.id), metadata=member.metadata
        ),
    )
    assert await _roles(stubs, org.id, owner) == {
        owner.user_id: OWNER,
        admin.user_id: ADMIN,
        member.user_id: MEMBER,
    }
    assert (await _set_role(stubs, org.id, admin, member.user_id, BILLING)).role == BILLING
    assert (await _set_role(stubs, org.id, owner, admin.user_id, OWNER)).role == OWNER


async def test_the_last_owner_stays(stubs: SimpleNamespace, new_user: Any) -> None:
    owner, admin = await new_user(), await new_user()
    org = await create_organization(stubs, owner)
    await invite_and_accept(stubs, org.id, owner, admin, ADMIN)
    for call in (
        _set_role(stubs, org.id, owner, owner.user_id, ADMIN),
        _remove(stubs, org.id, owner, owner.user_id),
    ):
        refused = await expect_error(grpc.StatusCode.FAILED_PRECONDITION, call)
        violations = refused.details["PreconditionFailure"].violations
        assert [(v.type, v.subject) for v in violations] == [("LAST_OWNER", org.id)]
    assert (await _roles(stubs, org.id, owner))[owner.user_id] == OWNER


async def test_two_owners_demoting_each_other_at_once_leave_one_owner(
    stubs: SimpleNamespace, new_user: Any
) -> None:
    first, second = await new_user(), await new_user()
    org = await create_organization(stubs, first)
    await invite_and_accept(stubs, org.id, first, second, OWNER)
    results = await asyncio.gather(
        _set_role(stubs, org.id, first, second.user_id, ADMIN),
        _set_role(stubs, org.id, second, first.user_id, ADMIN),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    # The loser either finds itself the last owner (FAILED_PRECONDITION) or, when the winner
    # committed first, no longer an owner at all (PERMISSION_DENIED): never both succeed.
    assert len(failures) == 1, results
    assert failures[0].code() in {
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
    }, results
    roles = await _roles(stubs, org.id, first)
    assert sorted(roles.values()) == [OWNER, ADMIN]


async def test_a_removed_member_loses_the_organizations_workspaces(
    stubs: SimpleNamespace, new_user: Any
) -> None:
    owner, member = await new_user(), await new_user()
    org = await create_organization(stubs, owner)
    workspace = await create_workspace(stubs, owner, organization_id=org.id)
    await invite_and_accept(stubs, org.id, owner, member)
    await add_and_accept(stubs, workspace.id, owner, member)  # an explicit membership too
    await all_members(stubs, workspace.id, member)
    await _remove(stubs, org.id, owner, member.user_id)
    await expect_error(grpc.StatusCode.NOT_FOUND, all_members(stubs, workspace.id, member))
    assert member.user_id not in await _roles(stubs, org.id, owner)
    await expect_error(grpc.StatusCode.NOT_FOUND, _remove(stubs, org.id, owner, member.user_id))


async def test_organization_members_are_paged_oldest_first(
    stubs: SimpleNamespace, new_user: Any
) -> None:
    owner = await new_user()
    org = await create_organization(stubs, owner)
    emails = [f"{unique(f'p{i}-')}@example.com" for i in range(4)]
    for email in emails:
        await _invite(stubs, org.id, owner, email)
    seen: list[str] = []
    token = ""
    while True:
        reply = await stubs.memberships.ListOrganizationMembers(
            pb.ListOrganizationMembersRequest(
                organization_id=org.id, page_size=2, page_token=token
            ),
            metadata=owner.metadata,
        )
        assert len(reply.members) <= 2
        seen.extend(m.email for m in reply.members)
        token = reply.next_page_token
        if not token:
            break
    assert seen == [owner.email, *emails]
