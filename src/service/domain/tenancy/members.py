"""What workspace and organization membership share (SPEC sections 3 and 4): the `Member`
answer (an explicit member or a pending invitation), pages of members merged with
invitations, and the LAST_OWNER failure.

The two halves mirror each other: `service.domain.tenancy.workspace_members` and
`service.domain.tenancy.organization_members`.

Consent: adding someone by email (AddMember, InviteOrganizationMember) only ever stores a
pending invitation, answered the same way whether or not the email belongs to a registered
user, so the answer tells nothing about who has an account; the invitee joins by accepting
it (`service.domain.tenancy.invitations`). An invitation expires `invitation_ttl` after it was made
or renewed. The one exception is an email that already belongs to a member the caller can
see in the member list: its membership is returned (raised to a higher requested role).

The auth interceptor has already checked each RPC's level (workspace member or owner,
organization admin) and put the caller's roles in `actor.access`; the rules finer than a
level live in the two halves.

Concurrency: every change that counts owners first locks the workspace (or organization)
row — `SELECT ... FOR UPDATE` on PostgreSQL; on SQLite the unit of work's write
transactions start with `BEGIN IMMEDIATE`, which serializes writers — so two owners
removing each other at the same time leave exactly one owner: the second change sees the
first and fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import (
    OrganizationInvitation,
    OrganizationMember,
    User,
    WorkspaceInvitation,
    WorkspaceMember,
)
from service.domain.errors import FailedPrecondition, NotFound, PreconditionViolation
from service.domain.inputs import ID_PATTERN
from service.domain.paging import Page

USER_ID_MAX_LENGTH = 40  # of a user id quoted back in NotFound
_Membership = TypeVar("_Membership", WorkspaceMember, OrganizationMember)


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


def last_owner(kind: str, scope_id: str) -> FailedPrecondition:
    """The failure of a change that would leave the workspace or organization no owner."""
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


def invited(scope_id: str, invitation: WorkspaceInvitation | OrganizationInvitation) -> Member:
    """The Member of a pending invitation."""
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


async def members_page(
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
    rows += [invited(scope_id, i) for i in invitations]
    ordered = sorted(rows, key=lambda m: (m.create_time, m.id))[: page.size + 1]
    return MemberPage(members=ordered[: page.size], next_page_token=page.next_token(ordered))


async def explicit_member(
    session: AsyncSession,
    member_model: type[_Membership],
    scope_column: str,
    scope_id: str,
    user_id: str,
) -> tuple[_Membership, User]:
    """The explicit membership of `user_id` in the workspace or organization, and its user;
    NotFound ("member") when there is none."""
    row = None
    if ID_PATTERN.fullmatch(user_id):  # a malformed id names nobody (PostgreSQL refuses NUL)
        row = (
            await session.execute(
                select(member_model, User)
                .join(User, User.id == member_model.user_id)
                .where(
                    getattr(member_model, scope_column) == scope_id,
                    member_model.user_id == user_id,
                )
            )
        ).first()
    if row is None:
        raise NotFound("member", user_id[:USER_ID_MAX_LENGTH])
    return row[0], row[1]


async def member_with_email(
    session: AsyncSession,
    member_model: type[_Membership],
    scope_column: str,
    scope_id: str,
    email: str,
) -> tuple[_Membership, User] | None:
    """The oldest explicit membership in the workspace or organization of a user with
    `email` (normalized), and that user; None when there is none."""
    row = (
        await session.execute(
            select(member_model, User)
            .join(User, User.id == member_model.user_id)
            .where(getattr(member_model, scope_column) == scope_id, func.lower(User.email) == email)
            .order_by(member_model.create_time, member_model.user_id)
            .limit(1)
        )
    ).first()
    return None if row is None else (row[0], row[1])
