"""Workspace commands: creation (in a new, an existing or the personal organization),
updates with field masks and etags, soft deletion and undeletion, and enabled providers.

Every command takes the session, the `Actor`, its arguments and `now`, and records its own
audit event. Purge after the retention period is `service.domain.tenancy.workspace_purge`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.clock import new_id, random_slug_suffix
from service.config import PROVIDERS
from service.db.models import (
    Organization,
    OrganizationMember,
    Schedule,
    User,
    Workspace,
    WorkspaceMember,
)
from service.domain import audit, idempotency, inputs
from service.domain.actor import Actor
from service.domain.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PreconditionViolation,
)
from service.domain.hostnames import normalize_hostname
from service.domain.inputs import masked_paths, require_id
from service.domain.tenancy import files, join_codes, workspace_views
from service.domain.tenancy.access import (
    ORGANIZATION_ADMIN_ROLES,
    effective_workspace_role,
    not_found,
    organization_access,
    with_caller_roles,
)
from service.domain.tenancy.names import derive_slug, display_name, suffixed_slug, validate_slug
from service.domain.tenancy.organizations import (
    DEFAULT_CAPS,
    OrganizationView,
    TenantCaps,
    insert_organization,
)
from service.domain.tenancy.slugs import MAX_ATTEMPTS, save_with_unique_slug
from service.domain.tenancy.visibility import accessible_workspaces
from service.domain.tenancy.workspace_fields import (
    Competitor,
    clean_brand_aliases,
    clean_competitors,
    clean_providers,
    competitors_json,
)
from service.domain.tenancy.workspace_locks import lock_live_workspace
from service.domain.tenancy.workspace_purge import DeletedSince
from service.domain.tenancy.workspace_views import WorkspaceView

DEFAULT_JOIN_CODE_TTL = timedelta(days=7)  # BEACON_JOIN_CODE_TTL_HOURS' default
UPDATABLE_FIELDS = ("name", "slug", "domain", "icon_file_id", "brand_aliases", "competitors")
PERSONAL_SUFFIX = "'s Organization"


# Create -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewWorkspace:
    """A create request as the caller sent it (validated by `create_workspace`)."""

    name: str
    slug: str = ""
    domain: str = ""
    organization_id: str = ""
    organization_name: str = ""
    icon_file_id: str = ""
    brand_aliases: Sequence[str] = ()
    competitors: Sequence[Competitor] = ()


@dataclass(frozen=True, slots=True)
class CreatedWorkspace:
    """The new workspace, its organization, and whether it is the caller's first one."""

    workspace: WorkspaceView
    organization: OrganizationView
    is_first_workspace: bool


@dataclass(frozen=True, slots=True)
class _CleanWorkspace:
    name: str
    slug: str
    domain: str
    brand_aliases: list[str]
    competitors: list[Competitor]
    organization_name: str = ""


def _clean_new(request: NewWorkspace) -> _CleanWorkspace:
    if request.organization_id and request.organization_name:
        raise InvalidArgument(
            "organization_name", "give either organization_id or organization_name, not both"
        )
    return _CleanWorkspace(
        name=display_name("name", request.name),
        slug=validate_slug("slug", request.slug) if request.slug else "",
        domain=normalize_hostname("domain", request.domain),
        brand_aliases=clean_brand_aliases("brand_aliases", request.brand_aliases),
        competitors=clean_competitors("competitors", request.competitors),
        organization_name=(
            display_name("organization_name", request.organization_name)
            if request.organization_name
            else ""
        ),
    )


async def create_workspace(
    session: AsyncSession,
    actor: Actor,
    request: NewWorkspace,
    *,
    request_id: str = "",
    now: datetime,
    join_code_ttl: timedelta = DEFAULT_JOIN_CODE_TTL,
    caps: TenantCaps = DEFAULT_CAPS,
) -> CreatedWorkspace:
    """Creates a workspace, with a join code valid for `join_code_ttl`; the caller becomes
    its owner.

    With `organization_name` a new organization is made (caller owner); with
    `organization_id` the caller must be an owner or admin of it; with neither, the
    caller's personal organization is used, created on first use. FailedPrecondition
    when the organization holds the most live workspaces `caps` allows
    (WORKSPACE_LIMIT_REACHED) or a new organization would exceed the organizations the
    caller may own (ORGANIZATION_LIMIT_REACHED). A retry with the same `request_id` (for
    the same `organization_id`) returns the first result and creates nothing.
    """
    return await idempotency.once(
        session,
        actor,
        request_id,
        scope=request.organization_id,
        result_type=CreatedWorkspace,
        now=now,
        run=lambda: _create_workspace(session, actor, request, now, join_code_ttl, caps),
    )


async def check_workspace_cap(
    session: AsyncSession, organization_id: str, caps: TenantCaps
) -> None:
    """FailedPrecondition (WORKSPACE_LIMIT_REACHED) when the organization already holds
    `caps.workspaces_per_organization` live workspaces. Takes the organization's row lock
    first, so that concurrent creates (and undeletes) in it are counted one after the other."""
    await session.execute(
        select(Organization.id).where(Organization.id == organization_id).with_for_update()
    )
    live = await session.scalar(
        select(func.count()).select_from(Workspace).where(_live_in(organization_id))
    )
    limit = caps.workspaces_per_organization
    if (live or 0) >= limit:
        raise FailedPrecondition(
            f"the organization already holds {live} workspaces, the most allowed"
            f" (BEACON_MAX_WORKSPACES_PER_ORGANIZATION={limit}): delete one first",
            [
                PreconditionViolation(
                    "WORKSPACE_LIMIT_REACHED",
                    organization_id,
                    f"an organization may hold at most {limit} live workspaces",
                )
            ],
            reason="WORKSPACE_LIMIT_REACHED",
            metadata={"limit": str(limit)},
        )


async def _create_workspace(
    session: AsyncSession,
    actor: Actor,
    request: NewWorkspace,
    now: datetime,
    join_code_ttl: timedelta,
    caps: TenantCaps,
) -> CreatedWorkspace:
    user_id = actor.require_user_id()
    clean = _clean_new(request)
    is_first = not await session.scalar(
        select(exists().where(accessible_workspaces(user_id)).select_from(Workspace))
    )
    if request.organization_id:
        require_id("organization_id", request.organization_id)
        access = await organization_access(session, user_id, request.organization_id)
        if access.organization_role not in ORGANIZATION_ADMIN_ROLES:
            raise PermissionDenied(
                "only organization owners and admins may create workspaces in it"
            )
        org = await session.get(Organization, request.organization_id)
        if org is None:
            raise NotFound("organization", request.organization_id)
    elif clean.organization_name:
        org = await insert_organization(
            session, name=clean.organization_name, owner_id=user_id, now=now, caps=caps
        )
    else:
        org = await _personal_organization(session, actor, user_id, now, caps)
    await check_workspace_cap(session, org.id, caps)
    if request.icon_file_id:
        await files.require_own_upload(session, user_id, "icon_file_id", request.icon_file_id)
    join_code = await join_codes.unused_code(session)
    workspace = Workspace(
        id=new_id("ws"),
        organization_id=org.id,
        name=clean.name,
        domain=clean.domain,
        icon_file_id=request.icon_file_id or None,
        brand_aliases=clean.brand_aliases,
        competitors=competitors_json(clean.competitors),
        enabled_providers=list(PROVIDERS),
        version=1,
        create_time=now,
        update_time=now,
        # Made here so that GetJoinInfo only reads (a new one comes from RotateJoinCode).
        join_code=join_code,
        join_code_expire_time=now + join_code_ttl,
    )
    await save_with_unique_slug(
        session,
        workspace,
        column=Workspace.slug,
        scope=lambda: _live_in(org.id),
        base=clean.slug or derive_slug(clean.name, fallback="workspace"),
        explicit=bool(clean.slug),
        taken_message=f"slug {clean.slug!r} is already used in this organization",
    )
    session.add(
        WorkspaceMember(workspace_id=workspace.id, user_id=user_id, role="owner", create_time=now)
    )
    audit.record(
        session,
        actor,
        organization_id=org.id,
        workspace_id=workspace.id,
        target_ids=[workspace.id, org.id],
        now=now,
    )
    await session.flush()
    return CreatedWorkspace(
        await workspace_views.load_view(session, workspace.id), OrganizationView.of(org), is_first
    )


def _live_in(organization_id: str) -> ColumnElement[bool]:
    return and_(Workspace.organization_id == organization_id, Workspace.delete_time.is_(None))


async def _personal_organization(
    session: AsyncSession, actor: Actor, user_id: str, now: datetime, caps: TenantCaps
) -> Organization:
    """The caller's personal organization, created on first use."""
    org = await session.scalar(
        select(Organization).where(Organization.personal_owner_id == user_id)
    )
    if org is None:
        user = await session.get(User, user_id)
        who = (user.name or user.email) if user else ""
        who = (who or actor.email or "My").strip()
        name = who[: 80 - len(PERSONAL_SUFFIX)].strip() + PERSONAL_SUFFIX
        return await insert_organization(
            session, name=name, owner_id=user_id, personal=True, now=now, caps=caps
        )
    access = await organization_access(session, user_id, org.id)
    if access.organization_role not in ORGANIZATION_ADMIN_ROLES:
        raise PermissionDenied("you are no longer an owner of your personal organization")
    return org


# Update -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkspacePatch:
    """New values of an update; only the fields named in the mask are read."""

    name: str = ""
    slug: str = ""
    domain: str = ""
    icon_file_id: str = ""
    brand_aliases: Sequence[str] = ()
    competitors: Sequence[Competitor] = ()


def update_paths(paths: Sequence[str]) -> list[str]:
    """The validated field-mask paths (`*` means every updatable field; empty is invalid)."""
    return masked_paths(paths, UPDATABLE_FIELDS)


def _clean_patch(patch: WorkspacePatch, paths: Sequence[str]) -> dict[str, Any]:
    """The new column values for the masked fields, validated."""
    values: dict[str, Any] = {}
    for path in paths:
        name = f"workspace.{path}"
        if path == "name":
            values["name"] = display_name(name, patch.name)
        elif path == "slug":
            values["slug"] = validate_slug(name, patch.slug)
        elif path == "domain":
            values["domain"] = normalize_hostname(name, patch.domain)
        elif path == "icon_file_id":
            values["icon_file_id"] = patch.icon_file_id or None
        elif path == "brand_aliases":
            values["brand_aliases"] = clean_brand_aliases(name, patch.brand_aliases)
        elif path == "competitors":
            values["competitors"] = competitors_json(clean_competitors(name, patch.competitors))
    return values


def check_etag(field_name: str, etag: str, version: int) -> None:
    """Aborted when `etag` is set and is not the current version's."""
    inputs.check_etag(field_name, etag, str(version), resource="workspace")


async def update_workspace(
    session: AsyncSession,
    actor: Actor,
    workspace_id: str,
    patch: WorkspacePatch,
    paths: Sequence[str],
    etag: str = "",
    *,
    now: datetime,
) -> None:
    """Applies the masked fields of `patch`; the version (etag) moves when anything changed."""
    values = _clean_patch(patch, update_paths(paths))
    workspace = await lock_live_workspace(session, workspace_id)
    check_etag("workspace.etag", etag, workspace.version)
    icon = values.get("icon_file_id")
    if icon and icon != workspace.icon_file_id:
        await files.require_own_upload(
            session, actor.require_user_id(), "workspace.icon_file_id", icon
        )
    changed = {k: v for k, v in values.items() if getattr(workspace, k) != v}
    new_slug = changed.pop("slug", None)
    for key, value in changed.items():
        setattr(workspace, key, value)
    if new_slug is not None:
        await save_with_unique_slug(
            session,
            workspace,
            column=Workspace.slug,
            scope=lambda: _live_in(workspace.organization_id),
            base=new_slug,
            explicit=True,
            taken_message=f"slug {new_slug!r} is already used in this organization",
        )
    if changed or new_slug is not None:
        workspace.version += 1
        workspace.update_time = now
    audit.record_workspace(session, actor, workspace, now)
    await session.flush()


# Delete and undelete ----------------------------------------------------------------------


async def delete_workspace(
    session: AsyncSession, actor: Actor, workspace_id: str, etag: str = "", *, now: datetime
) -> None:
    """Soft-deletes the workspace: it vanishes at once, its schedule stops, its slug and
    join code are freed; its owners see it with ListWorkspaces' show_deleted and may
    restore it with `undelete_workspace` until `service.domain.tenancy.workspace_purge` removes it
    after the retention period."""
    workspace = await lock_live_workspace(session, workspace_id)
    check_etag("etag", etag, workspace.version)
    workspace.delete_time = now
    workspace.update_time = now
    workspace.version += 1
    workspace.join_code = None
    workspace.join_code_expire_time = None
    await session.execute(delete(Schedule).where(Schedule.workspace_id == workspace_id))
    audit.record_workspace(session, actor, workspace, now)
    await session.flush()


async def undelete_workspace(
    session: AsyncSession,
    actor: Actor,
    workspace_id: str,
    etag: str = "",
    *,
    now: datetime,
    retention_days: int,
    join_code_ttl: timedelta = DEFAULT_JOIN_CODE_TTL,
    caps: TenantCaps = DEFAULT_CAPS,
) -> None:
    """Restores a soft-deleted workspace before its purge (AIP-164), for its effective
    owners only: everyone else, and every workspace not restorable (unknown, purged or due
    for purge), gets the NotFound of a workspace that does not exist, from a query of the
    same shape. A live workspace is AlreadyExists for its owners.

    The workspace comes back with its members, prompts and history, its slug (suffixed
    when a live workspace took it meanwhile) and a new join code valid for
    `join_code_ttl`; its schedule, removed on deletion, stays unset. An organization that
    holds the most live workspaces `caps` allows restores none (WORKSPACE_LIMIT_REACHED).
    """
    user_id = actor.require_user_id()
    require_id("workspace_id", workspace_id)
    # The organization's row is locked before the workspace's, in the order creates take.
    organization_id = await session.scalar(
        select(Workspace.organization_id).where(Workspace.id == workspace_id)
    )
    if organization_id is not None:
        await session.execute(
            select(Organization.id).where(Organization.id == organization_id).with_for_update()
        )
    row = (
        await session.execute(
            with_caller_roles(
                select(Workspace, OrganizationMember.role, WorkspaceMember.role)
                .where(Workspace.id == workspace_id)
                .with_for_update(of=Workspace)
                .execution_options(populate_existing=True)
            ),
            {"user_id": user_id},
        )
    ).first()
    if row is None or effective_workspace_role(row[1], row[2]) != "owner":
        raise not_found(workspace_id)
    workspace: Workspace = row[0]
    if workspace.delete_time is None:
        raise AlreadyExists("the workspace is not deleted", reason="WORKSPACE_NOT_DELETED")
    if not DeletedSince(now, retention_days).is_restorable(workspace.delete_time):
        raise not_found(workspace_id)
    check_etag("etag", etag, workspace.version)
    await check_workspace_cap(session, workspace.organization_id, caps)
    await _restore(session, workspace, now=now, join_code_expire_time=now + join_code_ttl)
    audit.record_workspace(session, actor, workspace, now)
    await session.flush()


async def _restore(
    session: AsyncSession, workspace: Workspace, *, now: datetime, join_code_expire_time: datetime
) -> None:
    """Makes the (locked, soft-deleted) workspace live again under its slug, or a suffixed
    one when a live workspace of the organization holds it; the partial unique index on
    live slugs settles a concurrent create, as in `service.domain.tenancy.slugs`."""
    base, version, organization_id = workspace.slug, workspace.version, workspace.organization_id
    join_code = await join_codes.unused_code(session)
    taken = False
    for _ in range(MAX_ATTEMPTS):
        if not taken:
            taken = (
                await session.scalar(
                    select(Workspace.id).where(_live_in(organization_id), Workspace.slug == base)
                )
                is not None
            )
        candidate = suffixed_slug(base, random_slug_suffix()) if taken else base
        try:
            async with session.begin_nested():
                workspace.slug = candidate
                workspace.delete_time = None
                workspace.update_time = now
                workspace.version = version + 1
                workspace.join_code = join_code
                workspace.join_code_expire_time = join_code_expire_time
        except IntegrityError:
            taken = True
            continue
        await session.refresh(workspace)
        return
    raise Aborted("too many concurrent creates with this workspace's slug; retry")


# Providers --------------------------------------------------------------------------------


async def set_enabled_providers(
    session: AsyncSession,
    actor: Actor,
    workspace_id: str,
    providers: Sequence[str],
    *,
    now: datetime,
) -> None:
    """Sets the providers runs ask (at least one)."""
    clean = clean_providers("providers", providers)
    workspace = await lock_live_workspace(session, workspace_id)
    if workspace.enabled_providers != clean:
        workspace.enabled_providers = clean
        workspace.version += 1
        workspace.update_time = now
    audit.record_workspace(session, actor, workspace, now)
    await session.flush()
