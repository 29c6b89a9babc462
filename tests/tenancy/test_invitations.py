"""Invitations need the invitee's consent: through the server, as inviter and invitee see them.

AddMember and InviteOrganizationMember answer alike for registered and unknown emails (an
invitation, never a user id or name); nobody joins until they accept; only a verified email
claims; invitations expire.
"""

from __future__ import annotations

import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import grpc
import jwt
from sqlalchemy import update

from beacon.v1 import membership_service_pb2 as pb
from beacon.v1 import organization_service_pb2 as org_pb
from beacon.v1 import workspace_service_pb2 as ws_pb
from service.app import App
from service.auth.tokens import mint_dev_token
from service.clock import utcnow
from service.config import Settings
from service.db.models import WorkspaceInvitation
from tests.support import expect_error, unique
from tests.support.builders import add_member, all_members, create_organization, create_workspace

ADMIN = org_pb.ORGANIZATION_ROLE_ADMIN


def _metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def _my_invitations(stubs: SimpleNamespace, who: Any) -> list[pb.Invitation]:
    reply = await stubs.memberships.ListMyInvitations(
        pb.ListMyInvitationsRequest(page_size=100), metadata=who.metadata
    )
    return list(reply.invitations)


async def _accept(stubs: SimpleNamespace, who: Any, invitation_id: str) -> Any:
    return await stubs.memberships.AcceptInvitation(
        pb.AcceptInvitationRequest(invitation_id=invitation_id), metadata=who.metadata
    )


async def _invite_to_organization(
    stubs: SimpleNamespace, org_id: str, actor: Any, email: str
) -> pb.OrganizationMember:
    reply: pb.OrganizationMember = await stubs.memberships.InviteOrganizationMember(
        pb.InviteOrganizationMemberRequest(organization_id=org_id, email=email, role=ADMIN),
        metadata=actor.metadata,
    )
    return reply


def _shape(message: Any) -> list[str]:
    """The names of the fields a message sets (what a caller can tell apart)."""
    return sorted(field.name for field, _ in message.ListFields())


async def test_adding_a_registered_user_answers_as_for_an_unknown_email(
    stubs: SimpleNamespace, settings: Settings, new_user: Any
) -> None:
    owner = await new_user()
    registered = await new_user(name="Registered Person")
    workspace = await create_workspace(stubs, owner)
    org = await create_organization(stubs, owner)
    unknown = f"{unique('nobody')}@example.com"

    known = await add_member(stubs, workspace.id, owner, registered.email)
    stranger = await add_member(stubs, workspace.id, owner, unknown)
    org_known = await _invite_to_organization(stubs, org.id, owner, registered.email)
    org_stranger = await _invite_to_organization(stubs, org.id, owner, unknown)

    for reply in (known, stranger, org_known, org_stranger):
        assert reply.state == pb.MEMBER_STATE_INVITED
        assert (reply.user_id, reply.display_name) == ("", "")
        expires = reply.expire_time.ToDatetime() - reply.create_time.ToDatetime()
        assert expires == timedelta(hours=settings.invitation_ttl_hours) == timedelta(days=7)
    assert _shape(known) == _shape(stranger)
    assert _shape(org_known) == _shape(org_stranger)
    # Not a member until they accept: the workspace stays invisible to them.
    await expect_error(
        grpc.StatusCode.NOT_FOUND,
        stubs.workspaces.GetWorkspace(
            ws_pb.GetWorkspaceRequest(workspace_id=workspace.id), metadata=registered.metadata
        ),
    )
    listed = {m.email: m for m in await all_members(stubs, workspace.id, owner)}
    assert listed[registered.email].state == pb.MEMBER_STATE_INVITED
    assert listed[registered.email].user_id == ""


async def test_the_invitee_sees_and_accepts_invitations(
    stubs: SimpleNamespace, new_user: Any
) -> None:
    owner = await new_user()
    invitee = await new_user(name="Invitee")
    workspace = await create_workspace(stubs, owner)
    org = await create_organization(stubs, owner)
    await add_member(stubs, workspace.id, owner, invitee.email.upper(), pb.WORKSPACE_ROLE_OWNER)
    await _invite_to_organization(stubs, org.id, owner, invitee.email)

    mine = {i.workspace_id or i.organization_id: i for i in await _my_invitations(stubs, invitee)}
    assert set(mine) == {workspace.id, org.id}
    to_workspace, to_org = mine[workspace.id], mine[org.id]
    assert (to_workspace.workspace_name, to_workspace.organization_id) == (
        workspace.name,
        workspace.organization_id,
    )
    assert to_workspace.workspace_role == pb.WORKSPACE_ROLE_OWNER
    assert to_workspace.email == invitee.email
    assert (to_org.organization_name, to_org.organization_role) == (org.name, ADMIN)
    assert to_org.workspace_id == ""

    joined = await _accept(stubs, invitee, to_workspace.id)
    assert joined.workspace_member.state == pb.MEMBER_STATE_ACTIVE
    assert joined.workspace_member.user_id == invitee.user_id
    assert joined.workspace_member.role == pb.WORKSPACE_ROLE_OWNER
    assert not joined.HasField("organization_member")
    seen = await stubs.workspaces.GetWorkspace(
        ws_pb.GetWorkspaceRequest(workspace_id=workspace.id), metadata=invitee.metadata
    )
    assert seen.id == workspace.id
    org_joined = await _accept(stubs, invitee, to_org.id)
    assert org_joined.organization_member.role == ADMIN
    assert org_joined.organization_member.user_id == invitee.user_id

    # Used up: gone from both lists, and a second accept finds nothing.
    assert await _my_invitations(stubs, invitee) == []
    states = {m.email: m.state for m in await all_members(stubs, workspace.id, owner)}
    assert states[invitee.email] == pb.MEMBER_STATE_ACTIVE
    await expect_error(grpc.StatusCode.NOT_FOUND, _accept(stubs, invitee, to_workspace.id))


async def test_declining_deletes_the_invitation_and_grants_nothing(
    stubs: SimpleNamespace, new_user: Any
) -> None:
    owner = await new_user()
    invitee = await new_user()
    workspace = await create_workspace(stubs, owner)
    await add_member(stubs, workspace.id, owner, invitee.email)
    (invitation,) = await _my_invitations(stubs, invitee)

    await stubs.memberships.DeclineInvitation(
        pb.DeclineInvitationRequest(invitation_id=invitation.id), metadata=invitee.metadata
    )

    assert await _my_invitations(stubs, invitee) == []
    assert invitee.email not in {m.email for m in await all_members(stubs, workspace.id, owner)}
    await expect_error(grpc.StatusCode.NOT_FOUND, _accept(stubs, invitee, invitation.id))


async def test_signing_in_joins_nothing(
    stubs: SimpleNamespace, settings: Settings, new_user: Any
) -> None:
    """An invitation to an email that has never called is not claimed by its first call."""
    owner = await new_user()
    workspace = await create_workspace(stubs, owner)
    email = f"{unique('later')}@example.com"
    await add_member(stubs, workspace.id, owner, email)

    newcomer = _metadata(mint_dev_token(settings, email=email, name="Later"))
    await expect_error(
        grpc.StatusCode.NOT_FOUND,
        stubs.memberships.ListMembers(
            pb.ListMembersRequest(workspace_id=workspace.id), metadata=newcomer
        ),
    )
    listed = await stubs.memberships.ListMyInvitations(
        pb.ListMyInvitationsRequest(), metadata=newcomer
    )
    assert [i.workspace_id for i in listed.invitations] == [workspace.id]


async def test_only_a_verified_email_sees_or_claims_its_invitations(
    stubs: SimpleNamespace, settings: Settings, new_user: Any
) -> None:
    owner = await new_user()
    workspace = await create_workspace(stubs, owner)
    email = f"{unique('victim')}@example.com"
    await add_member(stubs, workspace.id, owner, email)
    pending = {m.email: m for m in await all_members(stubs, workspace.id, owner)}[email]
    invitation_id = await _invitation_id(stubs, settings, email)
    now = int(time.time())
    unverified_tokens = [
        mint_dev_token(settings, email=email, subject=unique("dev|"), email_verified=False),
        # Some providers send the claim as a string: "false" is not verified.
        jwt.encode(
            {
                "iss": settings.auth_dev_issuer,
                "aud": "beacon",
                "sub": unique("dev|"),
                "email": email,
                "email_verified": "false",
                "iat": now,
                "exp": now + 600,
            },
            settings.auth_secret,
            algorithm="HS256",
        ),
    ]
    for token in unverified_tokens:
        impostor = _metadata(token)
        for call in (
            stubs.memberships.ListMyInvitations(pb.ListMyInvitationsRequest(), metadata=impostor),
            stubs.memberships.AcceptInvitation(
                pb.AcceptInvitationRequest(invitation_id=invitation_id), metadata=impostor
            ),
            stubs.memberships.DeclineInvitation(
                pb.DeclineInvitationRequest(invitation_id=invitation_id), metadata=impostor
            ),
        ):
            refused = await expect_error(grpc.StatusCode.FAILED_PRECONDITION, call)
            assert refused.details["ErrorInfo"].reason == "EMAIL_NOT_VERIFIED"
    still = {m.email: m for m in await all_members(stubs, workspace.id, owner)}[email]
    assert still == pending


async def _invitation_id(stubs: SimpleNamespace, settings: Settings, email: str) -> str:
    """The id the invitee sees (read with a verified token for the email)."""
    invitee = _metadata(mint_dev_token(settings, email=email, subject=unique("dev|")))
    reply = await stubs.memberships.ListMyInvitations(
        pb.ListMyInvitationsRequest(), metadata=invitee
    )
    (invitation,) = reply.invitations
    return str(invitation.id)


async def test_an_invitation_is_claimable_only_by_its_email(
    stubs: SimpleNamespace, settings: Settings, new_user: Any
) -> None:
    owner = await new_user()
    invitee = await new_user()
    other = await new_user()
    workspace = await create_workspace(stubs, owner)
    await add_member(stubs, workspace.id, owner, invitee.email)
    (invitation,) = await _my_invitations(stubs, invitee)

    assert await _my_invitations(stubs, other) == []
    missing = await expect_error(grpc.StatusCode.NOT_FOUND, _accept(stubs, other, invitation.id))
    absent = await expect_error(
        grpc.StatusCode.NOT_FOUND, _accept(stubs, other, "inv_aaaaaaaaaaaaaaaa")
    )
    assert missing.message.replace(invitation.id, "<id>") == absent.message.replace(
        "inv_aaaaaaaaaaaaaaaa", "<id>"
    )
    await expect_error(
        grpc.StatusCode.NOT_FOUND,
        stubs.memberships.DeclineInvitation(
            pb.DeclineInvitationRequest(invitation_id=invitation.id), metadata=other.metadata
        ),
    )
    bad = await expect_error(grpc.StatusCode.INVALID_ARGUMENT, _accept(stubs, other, "nope"))
    assert bad.details["BadRequest"].field_violations[0].field == "invitation_id"
    assert [i.id for i in await _my_invitations(stubs, invitee)] == [invitation.id]


async def test_expired_invitations_are_gone_until_renewed(
    app: App, stubs: SimpleNamespace, new_user: Any
) -> None:
    owner = await new_user()
    invitee = await new_user()
    workspace = await create_workspace(stubs, owner)
    await add_member(stubs, workspace.id, owner, invitee.email)
    (invitation,) = await _my_invitations(stubs, invitee)
    async with app.db.transaction() as session:
        await session.execute(
            update(WorkspaceInvitation)
            .where(WorkspaceInvitation.id == invitation.id)
            .values(expire_time=utcnow() - timedelta(seconds=1))
        )

    assert await _my_invitations(stubs, invitee) == []
    assert invitee.email not in {m.email for m in await all_members(stubs, workspace.id, owner)}
    await expect_error(grpc.StatusCode.NOT_FOUND, _accept(stubs, invitee, invitation.id))

    renewed = await add_member(stubs, workspace.id, owner, invitee.email)
    assert renewed.expire_time.ToDatetime() > utcnow().replace(tzinfo=None) + timedelta(days=6)
    joined = await _accept(stubs, invitee, invitation.id)
    assert joined.workspace_member.user_id == invitee.user_id


async def test_a_service_key_acting_as_the_invitee_accepts_for_them(
    app: App, stubs: SimpleNamespace, new_user: Any
) -> None:
    """The platform's own front end accepts on the user's behalf; the stored user's
    verified email is what counts."""
    owner = await new_user()
    invitee = await new_user()
    workspace = await create_workspace(stubs, owner)
    await add_member(stubs, workspace.id, owner, invitee.email)
    (invitation,) = await _my_invitations(stubs, invitee)
    secret, info = await app.services.service_keys.create(
        "front end", ["act_as"], all_organizations=True
    )
    try:
        acting = (("authorization", f"Bearer {secret}"), ("x-beacon-act-as", invitee.user_id))
        joined = await stubs.memberships.AcceptInvitation(
            pb.AcceptInvitationRequest(invitation_id=invitation.id), metadata=acting
        )
    finally:
        await app.services.service_keys.revoke(info.id)
    assert joined.workspace_member.user_id == invitee.user_id
