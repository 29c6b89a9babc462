"""Account deletion: the user, their memberships and uploads, and every organization in
which they are the only member — never data other members still use, and never what
belongs to others: invitations sent to the user's email belong to the organizations that
sent them and stay (they may cancel them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import (
    File,
    IdempotencyKey,
    Organization,
    OrganizationMember,
    User,
    Workspace,
    WorkspaceMember,
)
from service.domain import audit
from service.domain.actor import Actor
from service.domain.errors import (
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    PreconditionViolation,
)
from service.domain.tenancy.workspace_members import workspaces_left_without_owner


@dataclass(frozen=True, slots=True)
class DeletedAccount:
    """What `delete_account` removed; `file_ids` still have bytes in storage to delete."""

    user_id: str
    deleted_organization_ids: list[str]
    file_ids: list[str]


async def delete_account(session: AsyncSession, actor: Actor, *, now: datetime) -> DeletedAccount:
    """Deletes the caller's account at `now` (its audit events' time), or nothing at all.

    Only the user themself may: a service key acting as them is PermissionDenied. An
    organization whose only member (organization members and guests of its live
    workspaces) is the caller is deleted with all its data. FailedPrecondition, with
    nothing changed, names each blocker: an organization with other members whose sole
    owner is the caller (type SOLE_OWNER), and a surviving workspace whose explicit members
    would keep no owner (type LAST_OWNER, the rule of RemoveMember). Uploads still shown as
    the icon of a workspace that survives pass to an owner of that workspace's
    organization; the other uploads are deleted. Invitations to the caller's email stay.
    """
    if actor.acts_as_user:
        raise PermissionDenied(
            "an account can only be deleted by its user, not through act_as",
            reason="ACT_AS_NOT_ALLOWED",
        )
    user_id = actor.require_user_id()
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("user", user_id)
    rows = await session.execute(
        select(OrganizationMember.organization_id, OrganizationMember.role).where(
            OrganizationMember.user_id == user_id
        )
    )
    roles: dict[str, str] = {org_id: role for org_id, role in rows}
    shared = await _organizations_with_others(session, user_id, list(roles))
    other_owners = set(
        await session.scalars(
            select(OrganizationMember.organization_id).where(
                OrganizationMember.organization_id.in_(list(roles)),
                OrganizationMember.user_id != user_id,
                OrganizationMember.role == "owner",
            )
        )
    )
    blocking = sorted(
        org_id
        for org_id, role in roles.items()
        if role == "owner" and org_id in shared and org_id not in other_owners
    )
    doomed = sorted(org_id for org_id in roles if org_id not in shared)
    ownerless = await workspaces_left_without_owner(session, user_id, except_organizations=doomed)
    if blocking or ownerless:
        raise _blocked(blocking, ownerless)
    guest_orgs = set(
        await session.scalars(
            select(Workspace.organization_id)
            .join(WorkspaceMember, WorkspaceMember.workspace_id == Workspace.id)
            .where(WorkspaceMember.user_id == user_id)
        )
    )
    for org_id in sorted((set(roles) | guest_orgs) - set(doomed)):
        audit.record(session, actor, organization_id=org_id, target_ids=[user_id], now=now)
    if doomed:
        await session.execute(delete(Organization).where(Organization.id.in_(doomed)))
    file_ids = await _release_uploads(session, user_id)
    await session.execute(delete(IdempotencyKey).where(IdempotencyKey.principal_id == user_id))
    await session.execute(delete(WorkspaceMember).where(WorkspaceMember.user_id == user_id))
    await session.execute(delete(OrganizationMember).where(OrganizationMember.user_id == user_id))
    await session.execute(delete(User).where(User.id == user_id))
    return DeletedAccount(user_id, doomed, file_ids)


def _blocked(organization_ids: list[str], workspace_ids: list[str]) -> FailedPrecondition:
    """The refusal naming every organization (SOLE_OWNER) and workspace (LAST_OWNER) that
    deleting the account would leave without an owner."""
    parts = []
    if organization_ids:
        parts.append(
            f"you are the only owner of organizations that have other members "
            f"({', '.join(organization_ids)})"
        )
    if workspace_ids:
        parts.append(
            f"you are the last owner among the members of workspaces ({', '.join(workspace_ids)})"
        )
    violations = [
        PreconditionViolation(
            "SOLE_OWNER", org_id, "the caller is the only owner and others are members"
        )
        for org_id in organization_ids
    ] + [
        PreconditionViolation("LAST_OWNER", ws_id, "the caller is the members' last owner")
        for ws_id in workspace_ids
    ]
    return FailedPrecondition(
        "; ".join(parts) + ": make another member an owner or remove the members first",
        violations,
        reason="SOLE_OWNER" if organization_ids else "LAST_OWNER",
    )


async def _organizations_with_others(
    session: AsyncSession, user_id: str, organization_ids: list[str]
) -> set[str]:
    """Those of `organization_ids` with a member or workspace guest other than `user_id`."""
    with_members = await session.scalars(
        select(OrganizationMember.organization_id).where(
            OrganizationMember.organization_id.in_(organization_ids),
            OrganizationMember.user_id != user_id,
        )
    )
    with_guests = await session.scalars(
        select(Workspace.organization_id)
        .join(WorkspaceMember, WorkspaceMember.workspace_id == Workspace.id)
        .where(
            Workspace.organization_id.in_(organization_ids),
            Workspace.delete_time.is_(None),
            WorkspaceMember.user_id != user_id,
        )
    )
    return set(with_members) | set(with_guests)


async def _release_uploads(session: AsyncSession, user_id: str) -> list[str]:
    """Hands icons of surviving workspaces to an owner of their organization; deletes the
    user's other file rows and returns their ids (their bytes go after commit)."""
    in_use = await session.execute(
        select(File.id, Workspace.organization_id)
        .join(Workspace, Workspace.icon_file_id == File.id)
        .where(File.owner_id == user_id, Workspace.delete_time.is_(None))
    )
    kept: set[str] = set()
    for file_id, org_id in in_use:
        heir = await session.scalar(
            select(OrganizationMember.user_id)
            .where(
                OrganizationMember.organization_id == org_id,
                OrganizationMember.user_id != user_id,
                OrganizationMember.role == "owner",
            )
            .order_by(OrganizationMember.create_time)
            .limit(1)
        )
        if heir is not None and file_id not in kept:
            await session.execute(update(File).where(File.id == file_id).values(owner_id=heir))
            kept.add(file_id)
    doomed = [
        file_id
        for file_id in await session.scalars(select(File.id).where(File.owner_id == user_id))
        if file_id not in kept
    ]
    if doomed:
        await session.execute(delete(File).where(File.id.in_(doomed)))
    return doomed
