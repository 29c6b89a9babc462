"""Organization members and invitations (SPEC sections 3 and 4); what they share with
workspace members is `service.domain.tenancy.members`.

Only owners grant, revoke or remove `owner` (the RPC level has already checked that the
caller is an organization admin, and put their role in `actor.access`).

Last-owner rule: at least one member with role `owner` always remains. Demoting or removing
the only owner fails with FAILED_PRECONDITION (violation type `LAST_OWNER`). Every change
that counts owners first locks the organization row (`lock_organization`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.clock import new_id
from service.db.models import (
    Organization,
    OrganizationInvitation,
    OrganizationMember,
    Workspace,
    WorkspaceMember,
)
from service.domain import audit, idempotency
from service.domain.actor import Actor
from service.domain.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from service.domain.inputs import fold_email, normalize_email
from service.domain.paging import parse_page
from service.domain.tenancy.members import (
    Member,
    MemberPage,
    active_member,
    explicit_member,
    invited,
    last_owner,
    member_with_email,
    members_page,
)

ORGANIZATION_ROLES = ("owner", "admin", "member", "billing_admin")


async def list_organization_members(
    session: AsyncSession,
    organization_id: str,
    *,
    page_size: int,
    page_token: str,
    now: datetime,
) -> MemberPage:
    """The organization's members and unexpired invitations, oldest first."""
    page = parse_page(page_size, page_token, scope=f"organization-members:{organization_id}")
    return await members_page(
        session,
        page,
        OrganizationMember,
        OrganizationInvitation,
        "organization_id",
        organization_id,
        now,
    )


async def invite_organization_member(
    session: AsyncSession,
    actor: Actor,
    organization_id: str,
    *,
    email: str,
    role: str,
    invitation_ttl: timedelta,
    request_id: str = "",
    now: datetime,
) -> Member:
    """Invites `email` to the organization; the invitee joins by accepting (never at once).

    `role` "" means member; only owners grant owner. The answer is the same whether or not
    a user has the email. An email already held by a member returns that membership when
    the role is the same, and is ALREADY_EXISTS otherwise (use UpdateOrganizationMemberRole).
    Inviting a pending email again renews the invitation with the new role. A retry with
    the same `request_id` returns the first answer and changes nothing.
    """

    async def invite() -> Member:
        clean_email = normalize_email(email)
        clean_role = _organization_role(role, required=False)
        if clean_role == "owner":
            _require_organization_owner(actor, "only organization owners may grant owner")
        await lock_organization(session, organization_id)
        row = await member_with_email(
            session, OrganizationMember, "organization_id", organization_id, clean_email
        )
        if row is None:
            expire_time = now + invitation_ttl
            return await _invite_to_organization(
                session,
                actor,
                organization_id,
                clean_email,
                clean_role,
                expire_time=expire_time,
                now=now,
            )
        member, user = row[0], row[1]
        if member.role != clean_role:
            raise AlreadyExists(
                f"{clean_email} is already a member with role {member.role}; "
                "change it with UpdateOrganizationMemberRole"
            )
        return active_member(organization_id, member.role, member.create_time, user)

    return await idempotency.once(
        session, actor, request_id, scope=organization_id, result_type=Member, now=now, run=invite
    )


async def update_organization_member_role(
    session: AsyncSession,
    actor: Actor,
    organization_id: str,
    *,
    user_id: str,
    role: str,
    now: datetime,
) -> Member:
    """Changes a member's organization role; only owners grant or revoke owner; the last
    owner cannot be demoted (LAST_OWNER)."""
    role = _organization_role(role, required=True)
    await lock_organization(session, organization_id)
    member, user = await explicit_member(
        session, OrganizationMember, "organization_id", organization_id, user_id
    )
    if role != member.role:
        if "owner" in (role, member.role):
            _require_organization_owner(actor, "only organization owners may grant or revoke owner")
        if member.role == "owner":
            await _keep_organization_owner(session, organization_id, user_id)
        member.role = role
        audit.record(session, actor, organization_id=organization_id, target_ids=[user_id], now=now)
        await session.flush()
    return active_member(organization_id, member.role, member.create_time, user)


async def remove_organization_member(
    session: AsyncSession,
    actor: Actor,
    organization_id: str,
    *,
    user_id: str,
    email: str,
    now: datetime,
) -> None:
    """Removes a member (and their explicit memberships of the organization's workspaces),
    or with `user_id` empty cancels the invitation of `email`.

    Only owners remove owners, or cancel an invitation to become one (as only they issue
    it); the last owner cannot be removed (LAST_OWNER).
    """
    if not user_id:
        if not email.strip():
            raise InvalidArgument("user_id", "is required (or email, to cancel an invitation)")
        await lock_organization(session, organization_id)  # the role read stays true
        invitation = (
            await session.execute(
                select(OrganizationInvitation.id, OrganizationInvitation.role).where(
                    OrganizationInvitation.organization_id == organization_id,
                    OrganizationInvitation.email == normalize_email(email),
                )
            )
        ).first()
        if invitation is None:
            raise NotFound("invitation", fold_email(email)[:254])
        invitation_id, role = invitation
        if role == "owner":
            _require_organization_owner(
                actor, "only organization owners may cancel an owner invitation"
            )
        await session.execute(
            delete(OrganizationInvitation).where(OrganizationInvitation.id == invitation_id)
        )
        audit.record(
            session, actor, organization_id=organization_id, target_ids=[invitation_id], now=now
        )
        return
    await lock_organization(session, organization_id)
    member, _ = await explicit_member(
        session, OrganizationMember, "organization_id", organization_id, user_id
    )
    if member.role == "owner":
        _require_organization_owner(actor, "only organization owners may remove owners")
        await _keep_organization_owner(session, organization_id, user_id)
    await session.delete(member)
    # Leaving the organization also ends explicit access to its workspaces.
    await session.execute(
        delete(WorkspaceMember).where(
            WorkspaceMember.user_id == user_id,
            WorkspaceMember.workspace_id.in_(
                select(Workspace.id).where(Workspace.organization_id == organization_id)
            ),
        )
    )
    audit.record(session, actor, organization_id=organization_id, target_ids=[user_id], now=now)
    await session.flush()


async def lock_organization(session: AsyncSession, organization_id: str) -> None:
    """Locks the organization's row until the transaction ends; NotFound when it is gone."""
    found = await session.scalar(
        select(Organization.id).where(Organization.id == organization_id).with_for_update()
    )
    if found is None:
        raise NotFound("organization", organization_id)


async def _invite_to_organization(
    session: AsyncSession,
    actor: Actor,
    organization_id: str,
    email: str,
    role: str,
    *,
    expire_time: datetime,
    now: datetime,
) -> Member:
    invitation = await session.scalar(
        select(OrganizationInvitation).where(
            OrganizationInvitation.organization_id == organization_id,
            OrganizationInvitation.email == email,
        )
    )
    if invitation is None:
        invitation = OrganizationInvitation(
            id=new_id("inv"),
            organization_id=organization_id,
            email=email,
            role=role,
            invited_by=actor.user_id,
            create_time=now,
            expire_time=expire_time,
        )
        session.add(invitation)
    else:
        if invitation.role == "owner" and role != "owner":
            _require_organization_owner(actor, "only organization owners may revoke owner")
        if invitation.expire_time <= now:  # an expired invitation starts over
            invitation.create_time = now
        invitation.role, invitation.expire_time = role, expire_time
    audit.record(
        session, actor, organization_id=organization_id, target_ids=[invitation.id], now=now
    )
    await session.flush()
    return invited(organization_id, invitation)


async def _keep_organization_owner(
    session: AsyncSession, organization_id: str, user_id: str
) -> None:
    other = await session.scalar(
        select(OrganizationMember.user_id)
        .where(
            OrganizationMember.organization_id == organization_id,
            OrganizationMember.role == "owner",
            OrganizationMember.user_id != user_id,
        )
        .limit(1)
    )
    if other is None:
        raise last_owner("organization", organization_id)


def _require_organization_owner(actor: Actor, message: str) -> None:
    if actor.require_access().organization_role != "owner":
        raise PermissionDenied(message)


def _organization_role(role: str, *, required: bool) -> str:
    if not role and not required:
        return "member"
    if role not in ORGANIZATION_ROLES:
        raise InvalidArgument(
            "role",
            "must be ORGANIZATION_ROLE_OWNER, _ADMIN, _MEMBER or _BILLING_ADMIN",
        )
    return role
