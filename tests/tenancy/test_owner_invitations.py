"""Invitations to become an organization owner belong to owners: only they issue one, and
only they cancel one."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import grpc

from beacon.v1 import membership_service_pb2 as pb
from beacon.v1 import organization_service_pb2 as org_pb
from tests.support import unique
from tests.support.assertions import expect_refusal
from tests.support.builders import create_organization, invite_and_accept

OWNER, ADMIN = org_pb.ORGANIZATION_ROLE_OWNER, org_pb.ORGANIZATION_ROLE_ADMIN
MEMBER = org_pb.ORGANIZATION_ROLE_MEMBER


async def _invite(stubs: SimpleNamespace, org_id: str, actor: Any, email: str, role: Any) -> None:
    await stubs.memberships.InviteOrganizationMember(
        pb.InviteOrganizationMemberRequest(organization_id=org_id, email=email, role=role),
        metadata=actor.metadata,
    )


def _cancel(stubs: SimpleNamespace, org_id: str, actor: Any, email: str) -> Any:
    return stubs.memberships.RemoveOrganizationMember(
        pb.RemoveOrganizationMemberRequest(organization_id=org_id, email=email),
        metadata=actor.metadata,
    )


async def _pending(stubs: SimpleNamespace, org_id: str, actor: Any) -> dict[str, int]:
    reply = await stubs.memberships.ListOrganizationMembers(
        pb.ListOrganizationMembersRequest(organization_id=org_id, page_size=100),
        metadata=actor.metadata,
    )
    return {m.email: m.role for m in reply.members if m.state == pb.MEMBER_STATE_INVITED}


async def test_only_owners_cancel_an_owner_invitation(
    stubs: SimpleNamespace, new_user: Any
) -> None:
    owner, admin = await new_user(), await new_user()
    org = await create_organization(stubs, owner)
    await invite_and_accept(stubs, org.id, owner, admin, ADMIN)
    future_owner, future_member = f"{unique('boss')}@example.com", f"{unique('m')}@example.com"
    await _invite(stubs, org.id, owner, future_owner, OWNER)
    await _invite(stubs, org.id, owner, future_member, MEMBER)

    refused = await expect_refusal(
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        _cancel(stubs, org.id, admin, future_owner.upper()),
    )
    assert "owner" in refused.message
    assert await _pending(stubs, org.id, owner) == {future_owner: OWNER, future_member: MEMBER}

    # An admin still cancels the invitations they could have issued; the owner cancels any.
    await _cancel(stubs, org.id, admin, future_member)
    await _cancel(stubs, org.id, owner, future_owner)
    assert await _pending(stubs, org.id, owner) == {}
