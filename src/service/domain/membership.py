"""Workspace and organization members and invitations (SPEC sections 3 and 4).

Consent: adding someone by email (AddMember, InviteOrganizationMember) only ever stores a
pending invitation, answered the same way whether or not the email belongs to a registered
user, so the answer tells nothing about who has an account; the invitee joins by accepting
it (`service.domain.invitations`). An invitation expires `invitation_ttl` after it was made
or renewed. The one exception is an email that already belongs to a member the caller can
see in the member list: its membership is returned (raised to a higher requested role).

The auth interceptor has already checked each RPC's level (workspace member or owner,
organization admin) and put the caller's roles in `call.access`; the rules finer than a
level live here: members may add members but only owners add or promote owners; in an
organization only owners grant, revoke or remove `owner`.

Last-owner rules, precisely:

* **Organization**: at least one member with role `owner` always remains. Demoting or
  removing the only owner fails with FAILED_PRECONDITION (violation type `LAST_OWNER`).
* **Workspace**: the workspace's explicit members — the people `ListMembers` shows — keep at
  least one whose *effective* role is owner: an explicit workspace owner, or an explicit
  member who is an owner or admin of the workspace's organization. A removal, demotion or
  departure that would leave none fails with `LAST_OWNER`. Organization owners and admins
  who are not explicit members are not counted: the organization always keeps an owner, who
  owns every workspace of it, so counting them would make the rule never apply; what the
  rule protects is that the member list always names someone who manages the workspace.
  A workspace whose explicit members never included an owner is not blocked by the rule.

Concurrency: every change that counts owners first locks the workspace (or organization)
row — `SELECT ... FOR UPDATE` on PostgreSQL; on SQLite the unit of work's write
transactions start with `BEGIN IMMEDIATE`, which serializes writers — so two owners
removing each other at the same time leave exactly one owner: the second change sees the
first and fails.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from service.clock import new_id, utcnow
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
from service.domain.access import (
    ORGANIZATION_ADMIN_ROLES,
    WORKSPACE_ROLE_RANK,
    effective_workspace_role,
)
from service.domain.actor import Actor
from service.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PreconditionViolation,
)
from service.domain.inputs import ID_PATTERN, normalize_email
from service.domain.paging import Page, parse_page
from service.domain.workspace_locks import lock_live_workspace

WORKSPACE_ROLES = ("owner", "member")
ORGANIZATION_ROLES = ("owner", "admin", "member", "billing_admin")
USER_ID_MAX_LENGTH = 40


@dataclass(frozen=True, slots=True)
class Member:
    """An explicit member, or a pending invitation, of a workspace or an organization."""

    scope_id: str  # the workspace or organization
    id: str  # the user id, or the invitation id while invited (the list cursor)
    user_id: str  # "" while invited
    email: str
    display_name: str
    role: str
    invited: bool
    create_time: datetime
    expire_time: datetime | None = None  # while invited


@dataclass(frozen=True, slots=True)
class MemberPage:
    """One page of members, oldest first, and the token of the next page ("" at the end)."""

    members: list[Member]
    next_page_token: str


# --- Workspace members ------------------------------------------------------------------


async def list_members(
    session: AsyncSession, workspace_id: str, *, page_size: int, page_token: str, now: datetime
) -> MemberPage:
    """The workspace's explicit members and unexpired invitations, oldest first."""
    page = parse_page(page_size, page_token, scope=f"workspace-members:{workspace_id}")
    return await _members_page(
        session, page, WorkspaceMember, WorkspaceInvitation, "workspace_id", workspace_id, now
    )


async def add_member(
    session: AsyncSession,
    call: Actor,
    workspace_id: str,
    *,
    email: str,
    role: str,
    invitation_ttl: timedelta,
    now: datetime,
) -> Member:
    """Invites `email` to the workspace; the invitee joins by accepting (never at once).

    `role` "" means member. Members may invite members; only owners invite owners. The
    answer is the same whether or not a user has the email. An email already held by an
    explicit member returns that membership, raised to `role` when that is higher.
    Inviting a pending email again renews the invitation (and raises its role).
    """
    email = normalize_email(email)
    role = _workspace_role(role, required=False)
    access = call.require_access()
    if role == "owner" and access.workspace_role != "owner":
        raise PermissionDenied("only workspace owners may add owners")
    workspace = await lock_live_workspace(session, workspace_id)
    row = (
        await session.execute(
            select(WorkspaceMember, User)
            .join(User, User.id == WorkspaceMember.user_id)
            .where(WorkspaceMember.workspace_id == workspace_id, func.lower(User.email) == email)
            .order_by(WorkspaceMember.create_time, WorkspaceMember.user_id)
            .limit(1)
        )
    ).first()
    if row is None:
        return await _invite_to_workspace(
            session, call, workspace, email, role, expire_time=now + invitation_ttl, now=now
        )
    member, user = row[0], row[1]
    if WORKSPACE_ROLE_RANK[role] > WORKSPACE_ROLE_RANK[member.role]:
        member.role = role
        _audit(session, call, workspace, user.id)
        await session.flush()
    return active_member(workspace_id, member.role, member.create_time, user)


async def update_member_role(
    session: AsyncSession, call: Actor, workspace_id: str, *, user_id: str, role: str
) -> Member:
    """Changes an explicit member's role (owners only, by the RPC's level).

    Fails with LAST_OWNER when the demotion would leave no owner among the members.
    """
    role = _workspace_role(role, required=True)
    workspace = await lock_live_workspace(session, workspace_id)
    member, user = await _workspace_member(session, workspace_id, user_id)
    if role != member.role:
        await _keep_workspace_owner(session, workspace, user_id, new_role=role)
        member.role = role
        _audit(session, call, workspace, user_id)
        await session.flush()
    return active_member(workspace_id, member.role, member.create_time, user)


async def remove_member(
    session: AsyncSession, call: Actor, workspace_id: str, *, user_id: str, email: str
) -> None:
    """Removes an explicit member, or (with `user_id` empty) cancels the invitation of `email`.

    Fails with LAST_OWNER when the removal would leave no owner among the members.
    """
    if not user_id:
        if not email.strip():
            raise InvalidArgument("user_id", "is required (or email, to cancel an invitation)")
        email = normalize_email(email)
    workspace = await lock_live_workspace(session, workspace_id)
    if not user_id:
        await _cancel_workspace_invitation(session, call, workspace, email)
        return
    await _workspace_member(session, workspace_id, user_id)
    await _keep_workspace_owner(session, workspace, user_id, new_role=None)
    await _delete_workspace_member(session, call, workspace, user_id)


async def leave_workspace(session: AsyncSession, call: Actor, workspace_id: str) -> None:
    """Removes the caller's own explicit membership.

    Fails with LAST_OWNER when the caller is the members' last owner, and with
    IMPLIED_MEMBERSHIP when the caller's access comes only from their organization role
    (there is nothing to leave; an organization admin removes organization members).
    """
    user_id = call.require_user_id()
    workspace = await lock_live_workspace(session, workspace_id)
    member = await session.get(WorkspaceMember, (workspace_id, user_id))
    if member is None:
        raise FailedPrecondition(
            "you are not an explicit member of this workspace: your access comes from your "
            "organization role",
            [
                PreconditionViolation(
                    "IMPLIED_MEMBERSHIP",
                    workspace_id,
                    "access is implied by the organization membership",
                )
            ],
        )
    await _keep_workspace_owner(session, workspace, user_id, new_role=None)
    await _delete_workspace_member(session, call, workspace, user_id)


async def add_workspace_member_if_absent(
    session: AsyncSession, call: Actor, workspace: Workspace, user_id: str
) -> Member:
    """The user's explicit membership, created with role member when there is none.

    The caller must hold the workspace's row lock (see `lock_live_workspace`).
    """
    member = await session.get(WorkspaceMember, (workspace.id, user_id))
    if member is None:
        member = WorkspaceMember(
            workspace_id=workspace.id, user_id=user_id, role="member", create_time=utcnow()
        )
        session.add(member)
        _audit(session, call, workspace, user_id)
        await session.flush()
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("user", user_id)
    return active_member(workspace.id, member.role, member.create_time, user)


async def _invite_to_workspace(
    session: AsyncSession,
    call: Actor,
    workspace: Workspace,
    email: str,
    role: str,
    *,
    expire_time: datetime,
    now: datetime,
) -> Member:
    workspace_id = workspace.id
    invitation = await session.scalar(
        select(WorkspaceInvitation).where(
            WorkspaceInvitation.workspace_id == workspace_id, WorkspaceInvitation.email == email
        )
    )
    if invitation is None:
        invitation = WorkspaceInvitation(
            id=new_id("inv"),
            workspace_id=workspace_id,
            email=email,
            role=role,
            invited_by=call.user_id,
            create_time=now,
            expire_time=expire_time,
        )
        session.add(invitation)
    else:
        if invitation.expire_time <= now:  # an expired invitation starts over
            invitation.role, invitation.create_time = role, now
        invitation.role = max(invitation.role, role, key=WORKSPACE_ROLE_RANK.__getitem__)
        invitation.expire_time = expire_time
    _audit(session, call, workspace, invitation.id)
    await session.flush()
    return _invited(workspace_id, invitation)


async def _cancel_workspace_invitation(
    session: AsyncSession, call: Actor, workspace: Workspace, email: str
) -> None:
    invitation_id = await session.scalar(
        delete(WorkspaceInvitation)
        .where(WorkspaceInvitation.workspace_id == workspace.id, WorkspaceInvitation.email == email)
        .returning(WorkspaceInvitation.id)
    )
    if invitation_id is None:
        raise NotFound("invitation", email)
    _audit(session, call, workspace, invitation_id)


async def _workspace_member(
    session: AsyncSession, workspace_id: str, user_id: str
) -> tuple[WorkspaceMember, User]:
    row = None
    if ID_PATTERN.fullmatch(user_id):  # a malformed id names nobody (PostgreSQL refuses NUL)
        row = (
            await session.execute(
                select(WorkspaceMember, User)
                .join(User, User.id == WorkspaceMember.user_id)
                .where(
                    WorkspaceMember.workspace_id == workspace_id, WorkspaceMember.user_id == user_id
                )
            )
        ).first()
    if row is None:
        raise NotFound("member", user_id[:USER_ID_MAX_LENGTH])
    return row[0], row[1]


async def _keep_workspace_owner(
    session: AsyncSession, workspace: Workspace, user_id: str, *, new_role: str | None
) -> None:
    """Raises LAST_OWNER when the change (a removal when `new_role` is None) would leave
    no explicit member whose effective role is owner."""
    if await _leaves_no_owner(session, workspace.id, workspace.organization_id, user_id, new_role):
        raise _last_owner("workspace", workspace.id)


async def workspaces_left_without_owner(
    session: AsyncSession, user_id: str, *, except_organizations: Collection[str]
) -> list[str]:
    """The live workspaces (outside `except_organizations`) whose other explicit members
    would keep no owner without `user_id` — the last-owner rule of RemoveMember — sorted.

    For account deletion, which also ends the user's organization roles (other members'
    organization roles still count). A workspace of which the user is the only explicit
    member is not listed: its member list empties and the organization's owners, of whom
    one always remains, manage it — as for a workspace whose members never included an
    owner.
    """
    others = aliased(WorkspaceMember)
    rows = await session.execute(
        select(Workspace.id, Workspace.organization_id)
        .join(WorkspaceMember, WorkspaceMember.workspace_id == Workspace.id)
        .where(
            WorkspaceMember.user_id == user_id,
            Workspace.delete_time.is_(None),
            Workspace.organization_id.not_in(list(except_organizations)),
            exists().where(others.workspace_id == Workspace.id, others.user_id != user_id),
        )
        .order_by(Workspace.id)
    )
    return [
        workspace_id
        for workspace_id, organization_id in rows.all()
        if await _leaves_no_owner(session, workspace_id, organization_id, user_id, None)
    ]


async def _leaves_no_owner(
    session: AsyncSession,
    workspace_id: str,
    organization_id: str,
    user_id: str,
    new_role: str | None,
) -> bool:
    org_role_of = and_(
        OrganizationMember.organization_id == organization_id,
        OrganizationMember.user_id == WorkspaceMember.user_id,
    )
    target = (
        await session.execute(
            select(WorkspaceMember.role, OrganizationMember.role)
            .outerjoin(OrganizationMember, org_role_of)
            .where(WorkspaceMember.workspace_id == workspace_id, WorkspaceMember.user_id == user_id)
        )
    ).first()
    if target is None:
        return False
    workspace_role, org_role = target
    after = effective_workspace_role(org_role, new_role) if new_role else None
    if effective_workspace_role(org_role, workspace_role) != "owner" or after == "owner":
        return False
    other = await session.scalar(
        select(WorkspaceMember.user_id)
        .outerjoin(OrganizationMember, org_role_of)
        .where(
            WorkspaceMember.workspace_id == workspace_id,
            WorkspaceMember.user_id != user_id,
            or_(
                WorkspaceMember.role == "owner",
                OrganizationMember.role.in_(ORGANIZATION_ADMIN_ROLES),
            ),
        )
        .limit(1)
    )
    return other is None


async def _delete_workspace_member(
    session: AsyncSession, call: Actor, workspace: Workspace, user_id: str
) -> None:
    await session.execute(
        delete(WorkspaceMember).where(
            WorkspaceMember.workspace_id == workspace.id, WorkspaceMember.user_id == user_id
        )
    )
    _audit(session, call, workspace, user_id)


def _audit(session: AsyncSession, call: Actor, workspace: Workspace, target_id: str) -> None:
    audit.record(
        session,
        call,
        organization_id=workspace.organization_id,
        workspace_id=workspace.id,
        target_ids=[workspace.id, target_id],
    )


def _workspace_role(role: str, *, required: bool) -> str:
    if not role and not required:
        return "member"
    if role not in WORKSPACE_ROLES:
        raise InvalidArgument("role", "must be WORKSPACE_ROLE_OWNER or WORKSPACE_ROLE_MEMBER")
    return role


# --- Organization members ---------------------------------------------------------------


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
    return await _members_page(
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
    call: Actor,
    organization_id: str,
    *,
    email: str,
    role: str,
    invitation_ttl: timedelta,
    now: datetime,
) -> Member:
    """Invites `email` to the organization; the invitee joins by accepting (never at once).

    `role` "" means member; only owners grant owner. The answer is the same whether or not
    a user has the email. An email already held by a member returns that membership when
    the role is the same, and is ALREADY_EXISTS otherwise (use UpdateOrganizationMemberRole).
    Inviting a pending email again renews the invitation with the new role.
    """
    email = normalize_email(email)
    role = _organization_role(role, required=False)
    if role == "owner":
        _require_organization_owner(call, "only organization owners may grant owner")
    await lock_organization(session, organization_id)
    row = (
        await session.execute(
            select(OrganizationMember, User)
            .join(User, User.id == OrganizationMember.user_id)
            .where(
                OrganizationMember.organization_id == organization_id,
                func.lower(User.email) == email,
            )
            .order_by(OrganizationMember.create_time, OrganizationMember.user_id)
            .limit(1)
        )
    ).first()
    if row is None:
        return await _invite_to_organization(
            session, call, organization_id, email, role, expire_time=now + invitation_ttl, now=now
        )
    member, user = row[0], row[1]
    if member.role != role:
        raise AlreadyExists(
            f"{email} is already a member with role {member.role}; "
            "change it with UpdateOrganizationMemberRole"
        )
    return active_member(organization_id, member.role, member.create_time, user)


async def update_organization_member_role(
    session: AsyncSession, call: Actor, organization_id: str, *, user_id: str, role: str
) -> Member:
    """Changes a member's organization role; only owners grant or revoke owner; the last
    owner cannot be demoted (LAST_OWNER)."""
    role = _organization_role(role, required=True)
    await lock_organization(session, organization_id)
    member, user = await _organization_member(session, organization_id, user_id)
    if role != member.role:
        if "owner" in (role, member.role):
            _require_organization_owner(call, "only organization owners may grant or revoke owner")
        if member.role == "owner":
            await _keep_organization_owner(session, organization_id, user_id)
        member.role = role
        audit.record(session, call, organization_id=organization_id, target_ids=[user_id])
        await session.flush()
    return active_member(organization_id, member.role, member.create_time, user)


async def remove_organization_member(
    session: AsyncSession, call: Actor, organization_id: str, *, user_id: str, email: str
) -> None:
    """Removes a member (and their explicit memberships of the organization's workspaces),
    or with `user_id` empty cancels the invitation of `email`.

    Only owners remove owners; the last owner cannot be removed (LAST_OWNER).
    """
    if not user_id:
        if not email.strip():
            raise InvalidArgument("user_id", "is required (or email, to cancel an invitation)")
        invitation_id = await session.scalar(
            delete(OrganizationInvitation)
            .where(
                OrganizationInvitation.organization_id == organization_id,
                OrganizationInvitation.email == normalize_email(email),
            )
            .returning(OrganizationInvitation.id)
        )
        if invitation_id is None:
            raise NotFound("invitation", email.strip().lower()[:254])
        audit.record(session, call, organization_id=organization_id, target_ids=[invitation_id])
        return
    await lock_organization(session, organization_id)
    member, _ = await _organization_member(session, organization_id, user_id)
    if member.role == "owner":
        _require_organization_owner(call, "only organization owners may remove owners")
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
    audit.record(session, call, organization_id=organization_id, target_ids=[user_id])
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
    call: Actor,
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
            invited_by=call.user_id,
            create_time=now,
            expire_time=expire_time,
        )
        session.add(invitation)
    else:
        if invitation.role == "owner" and role != "owner":
            _require_organization_owner(call, "only organization owners may revoke owner")
        if invitation.expire_time <= now:  # an expired invitation starts over
            invitation.create_time = now
        invitation.role, invitation.expire_time = role, expire_time
    audit.record(session, call, organization_id=organization_id, target_ids=[invitation.id])
    await session.flush()
    return _invited(organization_id, invitation)


async def _organization_member(
    session: AsyncSession, organization_id: str, user_id: str
) -> tuple[OrganizationMember, User]:
    row = None
    if ID_PATTERN.fullmatch(user_id):  # a malformed id names nobody (PostgreSQL refuses NUL)
        row = (
            await session.execute(
                select(OrganizationMember, User)
                .join(User, User.id == OrganizationMember.user_id)
                .where(
                    OrganizationMember.organization_id == organization_id,
                    OrganizationMember.user_id == user_id,
                )
            )
        ).first()
    if row is None:
        raise NotFound("member", user_id[:USER_ID_MAX_LENGTH])
    return row[0], row[1]


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
        raise _last_owner("organization", organization_id)


def _require_organization_owner(call: Actor, message: str) -> None:
    if call.require_access().organization_role != "owner":
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


# --- Shared -----------------------------------------------------------------------------


def _last_owner(kind: str, scope_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"the {kind} must keep at least one owner: make another member owner first",
        [PreconditionViolation("LAST_OWNER", scope_id, f"this is the {kind}'s last owner")],
    )


def active_member(scope_id: str, role: str, create_time: datetime, user: User) -> Member:
    """The Member of an explicit membership of `user`."""
    return Member(
        scope_id=scope_id,
        id=user.id,
        user_id=user.id,
        email=user.email,
        display_name=user.name,
        role=role,
        invited=False,
        create_time=create_time,
    )


def _invited(scope_id: str, invitation: WorkspaceInvitation | OrganizationInvitation) -> Member:
    return Member(
        scope_id=scope_id,
        id=invitation.id,
        user_id="",
        email=invitation.email,
        display_name="",
        role=invitation.role,
        invited=True,
        create_time=invitation.create_time,
        expire_time=invitation.expire_time,
    )


async def _members_page(
    session: AsyncSession,
    page: Page,
    member_model: type[WorkspaceMember | OrganizationMember],
    invitation_model: type[WorkspaceInvitation | OrganizationInvitation],
    scope_column: str,
    scope_id: str,
    now: datetime,
) -> MemberPage:
    """One page of the members and unexpired invitations of a workspace or organization,
    merged in (create_time, id) order: each table gives the `size + 1` rows after the
    cursor."""
    members: list[Any] = list(
        await session.execute(
            select(member_model, User)
            .join(User, User.id == member_model.user_id)
            .where(
                getattr(member_model, scope_column) == scope_id,
                page.where(member_model.create_time, member_model.user_id),
            )
            .order_by(member_model.create_time, member_model.user_id)
            .limit(page.size + 1)
        )
    )
    invitations: list[Any] = list(
        await session.scalars(
            select(invitation_model)
            .where(
                getattr(invitation_model, scope_column) == scope_id,
                invitation_model.expire_time > now,
                page.where(invitation_model.create_time, invitation_model.id),
            )
            .order_by(invitation_model.create_time, invitation_model.id)
            .limit(page.size + 1)
        )
    )
    rows = [active_member(scope_id, m.role, m.create_time, u) for m, u in members]
    rows += [_invited(scope_id, i) for i in invitations]
    ordered = sorted(rows, key=lambda m: (m.create_time, m.id))[: page.size + 1]
    return MemberPage(members=ordered[: page.size], next_page_token=page.next_token(ordered))
