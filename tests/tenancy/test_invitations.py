"""Claiming invitations: directly against the database, and end to end through the server."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from beacon.v1 import membership_service_pb2 as pb
from beacon.v1 import organization_service_pb2 as org_pb
from service.app import App
from service.auth.tokens import mint_dev_token
from service.config import Settings
from service.db.models import (
    Organization,
    OrganizationInvitation,
    OrganizationMember,
    User,
    Workspace,
    WorkspaceInvitation,
    WorkspaceMember,
)
from service.domain.clock import new_id, utcnow
from service.domain.invitations import claim_invitations
from tests.support import unique
from tests.tenancy.test_membership_support import add_member, create_organization, create_workspace


async def _organization_with_workspace(session: AsyncSession) -> tuple[str, str]:
    org = Organization(id=new_id("org"), name="Claim Org", slug=unique("claim-"))
    session.add(org)
    await session.flush()
    workspace = Workspace(
        id=new_id("ws"), organization_id=org.id, name="Claim", slug="claim", version=1
    )
    session.add(workspace)
    await session.flush()
    return org.id, workspace.id


async def _user(session: AsyncSession, email: str, *, verified: bool) -> User:
    user = User(
        id=new_id("user"),
        issuer="test",
        subject=unique("sub"),
        email=email,
        email_verified=verified,
        name="Claimer",
    )
    session.add(user)
    await session.flush()
    return user


def _invitations(email: str, org_id: str, workspace_id: str, role: str) -> list[Any]:
    now = utcnow()
    return [
        WorkspaceInvitation(
            id=new_id("inv"), workspace_id=workspace_id, email=email, role=role, create_time=now
        ),
        OrganizationInvitation(
            id=new_id("inv"), organization_id=org_id, email=email, role="admin", create_time=now
        ),
    ]


async def _pending(session: AsyncSession, email: str) -> int:
    rows = list(
        await session.scalars(
            select(WorkspaceInvitation.id).where(WorkspaceInvitation.email == email)
        )
    )
    rows += await session.scalars(
        select(OrganizationInvitation.id).where(OrganizationInvitation.email == email)
    )
    return len(rows)


async def test_verified_user_claims_workspace_and_organization_invitations(app: App) -> None:
    email = f"{unique('claim')}@example.com"
    async with app.db.transaction() as session:
        org_id, workspace_id = await _organization_with_workspace(session)
        session.add_all(_invitations(email, org_id, workspace_id, "owner"))
    async with app.db.transaction() as session:
        user = await _user(session, email.upper(), verified=True)  # emails match in any case
        await claim_invitations(session, user)
    async with app.db.transaction(write=False) as session:
        workspace_member = await session.get(WorkspaceMember, (workspace_id, user.id))
        org_member = await session.get(OrganizationMember, (org_id, user.id))
        assert workspace_member is not None and workspace_member.role == "owner"
        assert org_member is not None and org_member.role == "admin"
        assert await _pending(session, email) == 0


async def test_unverified_email_claims_nothing(app: App) -> None:
    email = f"{unique('unverified')}@example.com"
    async with app.db.transaction() as session:
        org_id, workspace_id = await _organization_with_workspace(session)
        session.add_all(_invitations(email, org_id, workspace_id, "member"))
    async with app.db.transaction() as session:
        user = await _user(session, email, verified=False)
        await claim_invitations(session, user)
    async with app.db.transaction(write=False) as session:
        assert await session.get(WorkspaceMember, (workspace_id, user.id)) is None
        assert await session.get(OrganizationMember, (org_id, user.id)) is None
        assert await _pending(session, email) == 2


async def test_claim_keeps_the_higher_role_and_skips_deleted_workspaces(app: App) -> None:
    email = f"{unique('keep')}@example.com"
    async with app.db.transaction() as session:
        org_id, workspace_id = await _organization_with_workspace(session)
        _, deleted_id = await _organization_with_workspace(session)
        user = await _user(session, f"{unique('other')}@example.com", verified=True)
        session.add(
            WorkspaceMember(
                workspace_id=workspace_id, user_id=user.id, role="owner", create_time=utcnow()
            )
        )
        session.add_all(_invitations(email, org_id, workspace_id, "member"))
        session.add(
            WorkspaceInvitation(
                id=new_id("inv"),
                workspace_id=deleted_id,
                email=email,
                role="member",
                create_time=utcnow(),
            )
        )
        deleted = await session.get(Workspace, deleted_id)
        assert deleted is not None
        deleted.delete_time = utcnow()
    async with app.db.transaction() as session:
        changed = await session.get(User, user.id)
        assert changed is not None
        changed.email = email  # the user's email changed to the invited one
        await claim_invitations(session, changed)
    async with app.db.transaction(write=False) as session:
        kept = await session.get(WorkspaceMember, (workspace_id, user.id))
        assert kept is not None and kept.role == "owner"
        assert await session.get(WorkspaceMember, (deleted_id, user.id)) is None
        assert await _pending(session, email) == 0


async def test_invited_email_becomes_a_member_on_its_first_call(
    stubs: SimpleNamespace, settings: Settings, new_user: Any
) -> None:
    owner = await new_user()
    workspace = await create_workspace(stubs, owner)
    org = await create_organization(stubs, owner)
    email = f"{unique('later')}@Example.COM"
    invited = await add_member(stubs, workspace.id, owner, email)
    assert (invited.state, invited.user_id) == (pb.MEMBER_STATE_INVITED, "")
    org_invited = await stubs.memberships.InviteOrganizationMember(
        pb.InviteOrganizationMemberRequest(
            organization_id=org.id, email=email, role=org_pb.ORGANIZATION_ROLE_ADMIN
        ),
        metadata=owner.metadata,
    )
    assert org_invited.state == pb.MEMBER_STATE_INVITED

    token = mint_dev_token(settings, email=email, name="Later Person")
    newcomer = (("authorization", f"Bearer {token}"),)
    # The first call is allowed only because authentication claimed the invitation.
    listed = await stubs.memberships.ListMembers(
        pb.ListMembersRequest(workspace_id=workspace.id), metadata=newcomer
    )
    mine = [m for m in listed.members if m.email.lower() == email.lower()]
    assert len(mine) == 1
    assert mine[0].state == pb.MEMBER_STATE_ACTIVE and mine[0].user_id.startswith("user_")
    assert mine[0].display_name == "Later Person"
    org_members = await stubs.memberships.ListOrganizationMembers(
        pb.ListOrganizationMembersRequest(organization_id=org.id), metadata=newcomer
    )
    claimed = [m for m in org_members.members if m.user_id == mine[0].user_id]
    assert [m.role for m in claimed] == [org_pb.ORGANIZATION_ROLE_ADMIN]
    assert not [m for m in org_members.members if m.state == pb.MEMBER_STATE_INVITED]
