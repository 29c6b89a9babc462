"""The invitee's side of invitations: listing, accepting and declining them.

Nobody becomes a member without their own action. AddMember and InviteOrganizationMember
store a pending invitation to an email (`service.domain.tenancy.workspace_members`,
`service.domain.tenancy.organization_members`); signing in claims nothing. The invitee lists the
invitations to their email and accepts or declines each.

An invitation is the invitee's only when the caller's token carries its email *verified*
(`Principal.email_verified`, from the `email_verified` claim): an identity provider that
lets anyone type any address must not hand out someone else's invitations. A caller whose
email is not verified gets FAILED_PRECONDITION (EMAIL_NOT_VERIFIED) before any lookup, so
the answer says nothing about which invitations exist. An invitation that is expired, used,
addressed to another email or to a deleted workspace is NOT_FOUND, like one that never
existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import (
    Organization,
    OrganizationInvitation,
    OrganizationMember,
    User,
    Workspace,
    WorkspaceInvitation,
    WorkspaceMember,
)
from service.domain import audit
from service.domain.actor import Actor
from service.domain.errors import FailedPrecondition, NotFound, PreconditionViolation
from service.domain.inputs import fold_email, require_id
from service.domain.paging import parse_page
from service.domain.tenancy.access import WORKSPACE_ROLE_RANK
from service.domain.tenancy.members import Member, active_member
from service.domain.tenancy.organization_members import lock_organization
from service.domain.tenancy.workspace_locks import lock_live_workspace

INVITATION_ID_FIELD = "invitation_id"


@dataclass(frozen=True, slots=True)
class Invitation:
    """A pending invitation as its invitee sees it."""

    id: str
    email: str
    workspace_id: str  # "" for an invitation to an organization
    workspace_name: str
    organization_id: str
    organization_name: str
    role: str  # a workspace role, or an organization role for an organization invitation
    create_time: datetime
    expire_time: datetime


@dataclass(frozen=True, slots=True)
class InvitationPage:
    """One page of the caller's invitations, oldest first, and the next page's token."""

    invitations: list[Invitation]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class Accepted:
    """The membership an accepted invitation gave: exactly one of the two is set."""

    workspace_member: Member | None = None
    organization_member: Member | None = None


def verified_email(actor: Actor) -> str:
    """The caller's email when their token vouches for it; FailedPrecondition otherwise."""
    if not actor.email or not actor.email_verified:
        raise FailedPrecondition(
            "your email address is not verified: verify it with your identity provider to "
            "see and accept invitations",
            [PreconditionViolation("EMAIL_NOT_VERIFIED", "email", "the token's email_verified")],
            reason="EMAIL_NOT_VERIFIED",
        )
    return fold_email(actor.email)


async def list_my_invitations(
    session: AsyncSession, actor: Actor, *, page_size: int, page_token: str, now: datetime
) -> InvitationPage:
    """The unexpired invitations to the caller's verified email, oldest first."""
    email = verified_email(actor)
    page = parse_page(page_size, page_token, scope=f"my-invitations:{actor.require_user_id()}")
    to_workspaces = await session.execute(
        select(WorkspaceInvitation, Workspace.name, Organization.id, Organization.name)
        .join(Workspace, Workspace.id == WorkspaceInvitation.workspace_id)
        .join(Organization, Organization.id == Workspace.organization_id)
        .where(
            WorkspaceInvitation.email == email,
            WorkspaceInvitation.expire_time > now,
            Workspace.delete_time.is_(None),
            page.where(WorkspaceInvitation.create_time, WorkspaceInvitation.id),
        )
        .order_by(WorkspaceInvitation.create_time, WorkspaceInvitation.id)
        .limit(page.size + 1)
    )
    to_organizations = await session.execute(
        select(OrganizationInvitation, Organization.name)
        .join(Organization, Organization.id == OrganizationInvitation.organization_id)
        .where(
            OrganizationInvitation.email == email,
            OrganizationInvitation.expire_time > now,
            page.where(OrganizationInvitation.create_time, OrganizationInvitation.id),
        )
        .order_by(OrganizationInvitation.create_time, OrganizationInvitation.id)
        .limit(page.size + 1)
    )
    rows = [
        Invitation(
            i.id,
            i.email,
            i.workspace_id,
            ws_name,
            org_id,
            org_name,
            i.role,
            i.create_time,
            i.expire_time,
        )
        for i, ws_name, org_id, org_name in to_workspaces.all()
    ] + [
        Invitation(
            i.id,
            i.email,
            "",
            "",
            i.organization_id,
            org_name,
            i.role,
            i.create_time,
            i.expire_time,
        )
        for i, org_name in to_organizations.all()
    ]
    ordered = sorted(rows, key=lambda i: (i.create_time, i.id))[: page.size + 1]
    return InvitationPage(ordered[: page.size], page.next_token(ordered))


async def accept_invitation(
    session: AsyncSession, actor: Actor, invitation_id: str, *, now: datetime
) -> Accepted:
    """Turns one of the caller's invitations into a membership and uses it up.

    A workspace invitation gives an explicit workspace membership (an existing one keeps
    the higher role); an organization invitation an organization membership (an existing
    one keeps its role). The workspace or organization row is locked first, as every
    membership change does, and the invitation is then deleted (DELETE ... RETURNING), so
    two concurrent accepts give one membership and one NOT_FOUND.
    """
    email = verified_email(actor)
    user_id = actor.require_user_id()
    found = await _find(session, email, invitation_id, now)
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("user", user_id)
    if isinstance(found, WorkspaceInvitation):
        try:
            workspace = await lock_live_workspace(session, found.workspace_id)
        except NotFound:
            raise NotFound("invitation", invitation_id) from None
        role = await _take(session, WorkspaceInvitation, email, invitation_id, now)
        member = await session.get(WorkspaceMember, (workspace.id, user_id))
        if member is None:
            member = WorkspaceMember(
                workspace_id=workspace.id, user_id=user_id, role=role, create_time=now
            )
            session.add(member)
        else:
            member.role = max(member.role, role, key=WORKSPACE_ROLE_RANK.__getitem__)
        audit.record_workspace(
            session, actor, workspace, now, target_ids=[workspace.id, invitation_id]
        )
        await session.flush()
        return Accepted(
            workspace_member=active_member(workspace.id, member.role, member.create_time, user)
        )
    organization_id = found.organization_id
    await lock_organization(session, organization_id)
    role = await _take(session, OrganizationInvitation, email, invitation_id, now)
    org_member = await session.get(OrganizationMember, (organization_id, user_id))
    if org_member is None:
        org_member = OrganizationMember(
            organization_id=organization_id, user_id=user_id, role=role, create_time=now
        )
        session.add(org_member)
    audit.record(
        session, actor, organization_id=organization_id, target_ids=[invitation_id], now=now
    )
    await session.flush()
    return Accepted(
        organization_member=active_member(
            organization_id, org_member.role, org_member.create_time, user
        )
    )


async def decline_invitation(
    session: AsyncSession, actor: Actor, invitation_id: str, *, now: datetime
) -> None:
    """Deletes one of the caller's invitations; it grants nothing."""
    email = verified_email(actor)
    found = await _find(session, email, invitation_id, now)
    if isinstance(found, WorkspaceInvitation):
        organization_id = await session.scalar(
            select(Workspace.organization_id).where(
                Workspace.id == found.workspace_id, Workspace.delete_time.is_(None)
            )
        )
        if organization_id is None:
            raise NotFound("invitation", invitation_id)
        await _take(session, WorkspaceInvitation, email, invitation_id, now)
        audit.record(
            session,
            actor,
            organization_id=organization_id,
            workspace_id=found.workspace_id,
            target_ids=[found.workspace_id, invitation_id],
            now=now,
        )
        return
    await _take(session, OrganizationInvitation, email, invitation_id, now)
    audit.record(
        session, actor, organization_id=found.organization_id, target_ids=[invitation_id], now=now
    )


async def _find(
    session: AsyncSession, email: str, invitation_id: str, now: datetime
) -> WorkspaceInvitation | OrganizationInvitation:
    """The caller's unexpired invitation with this id (of either kind); NotFound otherwise."""
    require_id(INVITATION_ID_FIELD, invitation_id)
    to_workspace = await session.scalar(
        select(WorkspaceInvitation).where(
            WorkspaceInvitation.id == invitation_id,
            WorkspaceInvitation.email == email,
            WorkspaceInvitation.expire_time > now,
        )
    )
    if to_workspace is not None:
        return to_workspace
    to_organization = await session.scalar(
        select(OrganizationInvitation).where(
            OrganizationInvitation.id == invitation_id,
            OrganizationInvitation.email == email,
            OrganizationInvitation.expire_time > now,
        )
    )
    if to_organization is None:
        raise NotFound("invitation", invitation_id)
    return to_organization


async def _take(
    session: AsyncSession,
    model: type[WorkspaceInvitation | OrganizationInvitation],
    email: str,
    invitation_id: str,
    now: datetime,
) -> str:
    """Deletes the invitation (if still pending) and returns its role; NotFound when a
    concurrent call used it first."""
    role = await session.scalar(
        delete(model)
        .where(model.id == invitation_id, model.email == email, model.expire_time > now)
        .returning(model.role)
    )
    if role is None:
        raise NotFound("invitation", invitation_id)
    return str(role)
