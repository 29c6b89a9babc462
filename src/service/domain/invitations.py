"""Invitations by email: their address format, and turning them into memberships.

A workspace or organization invitation names an email that no (verified) user had when it
was made. When a user with that email authenticates — first sight, or a changed email — the
auth path calls `claim_invitations`, which converts every pending invitation for the email
into a membership. Only verified emails claim: an identity provider that lets anyone type any
address must not hand out someone else's invitations. Development tokens are recorded as
verified by the auth path.
"""

from __future__ import annotations

import re

from sqlalchemy import delete, func, select
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
from service.domain.access import WORKSPACE_ROLE_RANK
from service.domain.clock import utcnow
from service.domain.errors import InvalidArgument

EMAIL_MAX_LENGTH = 254
_EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")


def normalize_email(raw: str, *, field: str = "email") -> str:
    """The email trimmed and lowercased; InvalidArgument(field) unless it looks like one."""
    email = raw.strip().lower()
    if not email:
        raise InvalidArgument(field, "is required")
    if len(email) > EMAIL_MAX_LENGTH:
        raise InvalidArgument(field, f"must be at most {EMAIL_MAX_LENGTH} characters")
    if not email.isprintable() or _EMAIL_SHAPE.fullmatch(email) is None:
        raise InvalidArgument(field, "must be an email address such as name@example.com")
    return email


async def find_verified_user(session: AsyncSession, email: str) -> User | None:
    """The oldest user whose verified email is `email` (normalized), matched case-insensitively."""
    return await session.scalar(
        select(User)
        .where(func.lower(User.email) == email, User.email_verified.is_(True))
        .order_by(User.create_time, User.id)
        .limit(1)
    )


async def claim_invitations(session: AsyncSession, user: User) -> None:
    """Turns every pending invitation for the user's email into a membership.

    Does nothing unless the user's email is verified. Workspace invitations become explicit
    workspace memberships (an existing membership keeps the higher of the two roles);
    organization invitations become organization memberships (an existing membership keeps
    its role). Claimed invitations are deleted; invitations to deleted workspaces are
    dropped. Safe under concurrency: deleting the invitations first (DELETE ... RETURNING)
    lets only one transaction claim each one, and the workspace rows are locked before
    memberships are read (as every membership change does), so a concurrent join by code or
    invitation cannot collide with the insert.
    """
    if not user.email_verified or not user.email:
        return
    email = user.email.strip().lower()
    now = utcnow()

    workspace_roles = await _take_invitations(session, WorkspaceInvitation, "workspace_id", email)
    if workspace_roles:
        live = await session.scalars(
            select(Workspace.id)
            .where(Workspace.id.in_(workspace_roles), Workspace.delete_time.is_(None))
            .order_by(Workspace.id)
            .with_for_update()
        )
        live_ids = list(live)
        existing = {
            m.workspace_id: m
            for m in await session.scalars(
                select(WorkspaceMember).where(
                    WorkspaceMember.user_id == user.id, WorkspaceMember.workspace_id.in_(live_ids)
                )
            )
        }
        for workspace_id in live_ids:
            role = workspace_roles[workspace_id]
            member = existing.get(workspace_id)
            if member is None:
                session.add(
                    WorkspaceMember(
                        workspace_id=workspace_id, user_id=user.id, role=role, create_time=now
                    )
                )
            elif WORKSPACE_ROLE_RANK[role] > WORKSPACE_ROLE_RANK[member.role]:
                member.role = role

    organization_roles = await _take_invitations(
        session, OrganizationInvitation, "organization_id", email
    )
    if organization_roles:
        await session.execute(
            select(Organization.id)
            .where(Organization.id.in_(organization_roles))
            .order_by(Organization.id)
            .with_for_update()
        )
        already = set(
            await session.scalars(
                select(OrganizationMember.organization_id).where(
                    OrganizationMember.user_id == user.id,
                    OrganizationMember.organization_id.in_(organization_roles),
                )
            )
        )
        for organization_id, role in organization_roles.items():
            if organization_id not in already:
                session.add(
                    OrganizationMember(
                        organization_id=organization_id, user_id=user.id, role=role, create_time=now
                    )
                )
    await session.flush()


async def _take_invitations(
    session: AsyncSession,
    model: type[WorkspaceInvitation | OrganizationInvitation],
    scope_column: str,
    email: str,
) -> dict[str, str]:
    """Deletes the email's invitations of one kind; returns workspace/organization id → role."""
    rows = await session.execute(
        delete(model)
        .where(model.email == email)
        .returning(getattr(model, scope_column), model.role)
    )
    return {scope_id: role for scope_id, role in rows}
