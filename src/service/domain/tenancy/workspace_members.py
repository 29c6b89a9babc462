"""Workspace members and invitations (SPEC sections 3 and 4); what they share with
organization members is `service.domain.tenancy.members`.

Members may add members but only owners add or promote owners (the RPC level has already
checked the caller is a member or an owner, and put their roles in `actor.access`).

Last-owner rule: the workspace's explicit members — the people `ListMembers` shows — keep
at least one whose *effective* role is owner: an explicit workspace owner, or an explicit
member who is an owner or admin of the workspace's organization. A removal, demotion or
departure that would leave none fails with FAILED_PRECONDITION (violation type
`LAST_OWNER`). Organization owners and admins who are not explicit members are not counted:
the organization always keeps an owner, who owns every workspace of it, so counting them
would make the rule never apply; what the rule protects is that the member list always
names someone who manages the workspace. A workspace whose explicit members never included
an owner is not blocked by the rule. Every change that counts owners first locks the
workspace row (`lock_live_workspace`).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from service.clock import new_id
from service.db.models import (
    OrganizationMember,
    User,
    Workspace,
    WorkspaceInvitation,
    WorkspaceMember,
)
from service.domain import audit, idempotency
from service.domain.actor import Actor
from service.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PreconditionViolation,
)
from service.domain.inputs import normalize_email
from service.domain.paging import parse_page
from service.domain.tenancy.access import (
    ORGANIZATION_ADMIN_ROLES,
    WORKSPACE_ROLE_RANK,
    effective_workspace_role,
)
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
from service.domain.tenancy.workspace_locks import lock_live_workspace

WORKSPACE_ROLES = ("owner", "member")


async def list_members(
    session: AsyncSession, workspace_id: str, *, page_size: int, page_token: str, now: datetime
) -> MemberPage:
    """The workspace's explicit members and unexpired invitations, oldest first."""
    page = parse_page(page_size, page_token, scope=f"workspace-members:{workspace_id}")
    return await members_page(
        session, page, WorkspaceMember, WorkspaceInvitation, "workspace_id", workspace_id, now
    )


async def add_member(
    session: AsyncSession,
    actor: Actor,
    workspace_id: str,
    *,
    email: str,
    role: str,
    invitation_ttl: timedelta,
    request_id: str = "",
    now: datetime,
) -> Member:
    """Invites `email` to the workspace; the invitee joins by accepting (never at once).

    `role` "" means member. Members may invite members; only owners invite owners. The
    answer is the same whether or not a user has the email. An email already held by an
    explicit member returns that membership, raised to `role` when that is higher.
    Inviting a pending email again renews the invitation (and raises its role). A retry
    with the same `request_id` returns the first answer and changes nothing.
    """

    async def add() -> Member:
        clean_email = normalize_email(email)
        clean_role = _workspace_role(role, required=False)
        access = actor.require_access()
        if clean_role == "owner" and access.workspace_role != "owner":
            raise PermissionDenied("only workspace owners may add owners")
        workspace = await lock_live_workspace(session, workspace_id)
        row = await member_with_email(
            session, WorkspaceMember, "workspace_id", workspace_id, clean_email
        )
        if row is None:
            expire_time = now + invitation_ttl
            return await _invite_to_workspace(
                session, actor, workspace, clean_email, clean_role, expire_time=expire_time, now=now
            )
        member, user = row[0], row[1]
        if WORKSPACE_ROLE_RANK[clean_role] > WORKSPACE_ROLE_RANK[member.role]:
            member.role = clean_role
            audit.record_workspace(
                session, actor, workspace, now, target_ids=[workspace.id, user.id]
            )
            await session.flush()
        return active_member(workspace_id, member.role, member.create_time, user)

    return await idempotency.once(
        session, actor, request_id, scope=workspace_id, result_type=Member, now=now, run=add
    )


async def update_member_role(
    session: AsyncSession,
    actor: Actor,
    workspace_id: str,
    *,
    user_id: str,
    role: str,
    now: datetime,
) -> Member:
    """Changes an explicit member's role (owners only, by the RPC's level).

    Fails with LAST_OWNER when the demotion would leave no owner among the members.
    """
    role = _workspace_role(role, required=True)
    workspace = await lock_live_workspace(session, workspace_id)
    member, user = await explicit_member(
        session, WorkspaceMember, "workspace_id", workspace_id, user_id
    )
    if role != member.role:
        await _keep_workspace_owner(session, workspace, user_id, new_role=role)
        member.role = role
        audit.record_workspace(session, actor, workspace, now, target_ids=[workspace.id, user_id])
        await session.flush()
    return active_member(workspace_id, member.role, member.create_time, user)


async def remove_member(
    session: AsyncSession,
    actor: Actor,
    workspace_id: str,
    *,
    user_id: str,
    email: str,
    now: datetime,
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
        await _cancel_workspace_invitation(session, actor, workspace, email, now)
        return
    await explicit_member(session, WorkspaceMember, "workspace_id", workspace_id, user_id)
    await _keep_workspace_owner(session, workspace, user_id, new_role=None)
    await _delete_workspace_member(session, actor, workspace, user_id, now)


async def leave_workspace(
    session: AsyncSession, actor: Actor, workspace_id: str, *, now: datetime
) -> None:
    """Removes the caller's own explicit membership.

    Fails with LAST_OWNER when the caller is the members' last owner, and with
    IMPLIED_MEMBERSHIP when the caller's access comes only from their organization role
    (there is nothing to leave; an organization admin removes organization members).
    """
    user_id = actor.require_user_id()
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
    await _delete_workspace_member(session, actor, workspace, user_id, now)


async def add_workspace_member_if_absent(
    session: AsyncSession,
    actor: Actor,
    workspace: Workspace,
    user_id: str,
    *,
    now: datetime,
) -> Member:
    """The user's explicit membership, created (at `now`) with role member when there is none.

    The caller must hold the workspace's row lock (see `lock_live_workspace`).
    """
    member = await session.get(WorkspaceMember, (workspace.id, user_id))
    if member is None:
        member = WorkspaceMember(
            workspace_id=workspace.id, user_id=user_id, role="member", create_time=now
        )
        session.add(member)
        audit.record_workspace(session, actor, workspace, now, target_ids=[workspace.id, user_id])
        await session.flush()
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("user", user_id)
    return active_member(workspace.id, member.role, member.create_time, user)


async def _invite_to_workspace(
    session: AsyncSession,
    actor: Actor,
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
            invited_by=actor.user_id,
            create_time=now,
            expire_time=expire_time,
        )
        session.add(invitation)
    else:
        if invitation.expire_time <= now:  # an expired invitation starts over
            invitation.role, invitation.create_time = role, now
        invitation.role = max(invitation.role, role, key=WORKSPACE_ROLE_RANK.__getitem__)
        invitation.expire_time = expire_time
    audit.record_workspace(session, actor, workspace, now, target_ids=[workspace.id, invitation.id])
    await session.flush()
    return invited(workspace_id, invitation)


async def _cancel_workspace_invitation(
    session: AsyncSession, actor: Actor, workspace: Workspace, email: str, now: datetime
) -> None:
    invitation_id = await session.scalar(
        delete(WorkspaceInvitation)
        .where(WorkspaceInvitation.workspace_id == workspace.id, WorkspaceInvitation.email == email)
        .returning(WorkspaceInvitation.id)
    )
    if invitation_id is None:
        raise NotFound("invitation", email)
    audit.record_workspace(session, actor, workspace, now, target_ids=[workspace.id, invitation_id])


async def _keep_workspace_owner(
    session: AsyncSession, workspace: Workspace, user_id: str, *, new_role: str | None
) -> None:
    """Raises LAST_OWNER when the change (a removal when `new_role` is None) would leave
    no explicit member whose effective role is owner."""
    if await _leaves_no_owner(session, workspace.id, workspace.organization_id, user_id, new_role):
        raise last_owner("workspace", workspace.id)


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
    session: AsyncSession, actor: Actor, workspace: Workspace, user_id: str, now: datetime
) -> None:
    await session.execute(
        delete(WorkspaceMember).where(
            WorkspaceMember.workspace_id == workspace.id, WorkspaceMember.user_id == user_id
        )
    )
    audit.record_workspace(session, actor, workspace, now, target_ids=[workspace.id, user_id])


def _workspace_role(role: str, *, required: bool) -> str:
    if not role and not required:
        return "member"
    if role not in WORKSPACE_ROLES:
        raise InvalidArgument("role", "must be WORKSPACE_ROLE_OWNER or WORKSPACE_ROLE_MEMBER")
    return role
