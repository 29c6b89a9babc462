"""Page tokens are signed with a key derived from BEACON_SIGNING_SECRET and bound to the list,
its filters and the caller: a token works only where it was issued; anything else is
INVALID_ARGUMENT on `page_token`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from types import SimpleNamespace

import grpc

from beacon.v1 import membership_service_pb2 as mem_pb
from beacon.v1 import organization_service_pb2 as org_pb
from service.app import App
from tests.support import expect_error
from tests.support.app import NewUser
from tests.support.builders import seed_organization

OLD_PUBLIC_KEY = b"beacon-page-token"  # the constant page tokens were signed with before


def old_style_token(scope: str, payload: bytes) -> str:
    mac = hmac.new(OLD_PUBLIC_KEY, scope.encode() + b"|" + payload, hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(mac + payload).decode().rstrip("=")


async def refused_on_page_token(call: object) -> None:
    got = await expect_error(grpc.StatusCode.INVALID_ARGUMENT, call)
    assert [v.field for v in got.details["BadRequest"].field_violations] == ["page_token"]


async def test_a_page_token_works_only_for_its_list_and_its_caller(
    stubs: SimpleNamespace, app: App, new_user: NewUser
) -> None:
    owner, admin, member = await new_user(), await new_user(), await new_user()
    org_id = await seed_organization(
        app, owner.user_id, member.user_id, roles={admin.user_id: "admin"}
    )

    def members(token: str, size: int = 1) -> mem_pb.ListOrganizationMembersRequest:
        return mem_pb.ListOrganizationMembersRequest(
            organization_id=org_id, page_size=size, page_token=token
        )

    first = await stubs.memberships.ListOrganizationMembers(members(""), metadata=owner.metadata)
    token = first.next_page_token
    assert token
    second = await stubs.memberships.ListOrganizationMembers(
        members(token), metadata=owner.metadata
    )
    assert second.members and second.members[0].user_id != first.members[0].user_id

    # Another user who may see the same list, another list, edits and truncations.
    await refused_on_page_token(
        stubs.memberships.ListOrganizationMembers(members(token), metadata=admin.metadata)
    )
    await refused_on_page_token(
        stubs.organizations.ListMyOrganizations(
            org_pb.ListMyOrganizationsRequest(page_token=token), metadata=owner.metadata
        )
    )
    edited = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
    for bad in (token[:-3], token[:10], edited, token + "AAAA"):
        await refused_on_page_token(
            stubs.memberships.ListOrganizationMembers(members(bad), metadata=owner.metadata)
        )


async def test_tokens_signed_with_the_old_public_constant_are_refused(
    stubs: SimpleNamespace, new_user: NewUser
) -> None:
    """Anyone could sign page tokens with the old constant key: a valid-looking cursor and
    a broken payload (which used to be INTERNAL) are both INVALID_ARGUMENT now."""
    user = await new_user()
    scope = f"orgs|{user.user_id}"
    cursor = json.dumps(["2026-01-01T00:00:00+00:00", "org_aaaaaaaaaaaaaaaa"]).encode()
    for payload in (cursor, b"garbage", b'{"a": 1}', b"[1, 2, 3]"):
        await refused_on_page_token(
            stubs.organizations.ListMyOrganizations(
                org_pb.ListMyOrganizationsRequest(page_token=old_style_token(scope, payload)),
                metadata=user.metadata,
            )
        )
