"""Workspaces: creation (in a new, an existing or the personal organization), reads,
updates with field masks and etags, soft deletion and purge, and enabled providers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, delete, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.clock import new_id, utcnow
from service.config import PROVIDERS
from service.db.database import Database, Reader
from service.db.models import (
    Organization,
    OrganizationMember,
    Schedule,
    User,
    Workspace,
    WorkspaceMember,
)
from service.domain import audit, files, inputs, join_codes
from service.domain.access import (
    ORGANIZATION_ADMIN_ROLES,
    effective_workspace_role,
    not_found,
    organization_access,
    with_caller_roles,
    workspace_of,
)
from service.domain.actor import Access, Actor
from service.domain.errors import InvalidArgument, NotFound, PermissionDenied
from service.domain.hostnames import normalize_hostname
from service.domain.inputs import masked_paths, require_id
from service.domain.names import clean_text, derive_slug, display_name, validate_slug
from service.domain.organizations import insert_organization
from service.domain.paging import Page
from service.domain.slugs import save_with_unique_slug
from service.domain.visibility import accessible_workspaces, reachable_organizations
from service.domain.workspace_locks import lock_live_workspace

MAX_BRAND_ALIASES = 20
MAX_COMPETITORS = 50
COMPETITOR_NAME_MAX = 80
DEFAULT_JOIN_CODE_TTL = timedelta(days=7)  # BEACON_JOIN_CODE_TTL_HOURS' default
UPDATABLE_FIELDS = ("name", "slug", "domain", "icon_file_id", "brand_aliases", "competitors")
PERSONAL_SUFFIX = "'s Organization"
PURGE_BATCH = 100


@dataclass(frozen=True, slots=True)
class Competitor:
    """A competitor: display name and optional normalized domain."""

    name: str
    domain: str = ""


@dataclass(frozen=True, slots=True)
class WorkspaceView:
    """Everything a Workspace message shows, read in one query."""

    id: str
    organization_id: str
    organization_name: str
    organization_slug: str
    name: str
    slug: str
    domain: str
    icon_file_id: str
    brand_aliases: list[str]
    competitors: list[Competitor]
    enabled_providers: list[str]
    cron: str
    time_zone: str
    create_time: datetime
    update_time: datetime
    version: int

    @property
    def etag(self) -> str:
        return str(self.version)


# Validation -------------------------------------------------------------------------------


def clean_brand_aliases(field_name: str, aliases: Sequence[str]) -> list[str]:
    """Trimmed aliases, 1-80 characters each, at most 20, case-insensitive duplicates dropped."""
    if len(aliases) > MAX_BRAND_ALIASES:
        raise InvalidArgument(field_name, f"at most {MAX_BRAND_ALIASES} aliases")
    seen: set[str] = set()
    result: list[str] = []
    for index, alias in enumerate(aliases):
        text = clean_text(f"{field_name}[{index}]", alias, minimum=1, maximum=COMPETITOR_NAME_MAX)
        if text.casefold() not in seen:
            seen.add(text.casefold())
            result.append(text)
    return result


def clean_competitors(field_name: str, competitors: Sequence[Competitor]) -> list[Competitor]:
    """Validated competitors: name 1-80 characters, optional domain normalized, at most 50,
    no two with the same name (case-insensitive)."""
    if len(competitors) > MAX_COMPETITORS:
        raise InvalidArgument(field_name, f"at most {MAX_COMPETITORS} competitors")
    seen: set[str] = set()
    result: list[Competitor] = []
    for index, competitor in enumerate(competitors):
        prefix = f"{field_name}[{index}]"
        name = clean_text(f"{prefix}.name", competitor.name, minimum=1, maximum=COMPETITOR_NAME_MAX)
        if name.casefold() in seen:
            raise InvalidArgument(f"{prefix}.name", f"duplicates another competitor ({name!r})")
        seen.add(name.casefold())
        result.append(Competitor(name, normalize_hostname(f"{prefix}.domain", competitor.domain)))
    return result


def _competitors_json(competitors: Iterable[Competitor]) -> list[dict[str, Any]]:
    return [{"name": c.name, "domain": c.domain} for c in competitors]


def _competitors_from_json(raw: Iterable[dict[str, Any]]) -> list[Competitor]:
    return [Competitor(str(c.get("name", "")), str(c.get("domain", ""))) for c in raw]


# Reads ------------------------------------------------------------------------------------


# Built once: the columns of a WorkspaceView, organization and schedule joined.
_VIEWS: Select[Any] = (
    select(
        Workspace.id,
        Workspace.organization_id,
        Organization.name,
        Organization.slug,
        Workspace.name,
        Workspace.slug,
        Workspace.domain,
        Workspace.icon_file_id,
        Workspace.brand_aliases,
        Workspace.competitors,
        Workspace.enabled_providers,
        Schedule.cron,
        Schedule.time_zone,
        Workspace.create_time,
        Workspace.update_time,
        Workspace.version,
    )
    .join(Organization, Organization.id == Workspace.organization_id)
    .outerjoin(Schedule, Schedule.workspace_id == Workspace.id)
    .where(Workspace.delete_time.is_(None))
)


def _view(row: Any) -> WorkspaceView:
    return WorkspaceView(
        id=row[0],
        organization_id=row[1],
        organization_name=row[2],
        organization_slug=row[3],
        name=row[4],
        slug=row[5],
        domain=row[6],
        icon_file_id=row[7] or "",
        brand_aliases=list(row[8] or ()),
        competitors=_competitors_from_json(row[9] or ()),
        enabled_providers=list(row[10] or ()),
        cron=row[11] or "",
        time_zone=row[12] or "UTC",
        create_time=row[13],
        update_time=row[14],
        version=row[15],
    )


async def load_views(session: Reader, workspace_ids: Sequence[str]) -> list[WorkspaceView]:
    """Views of the live workspaces among `workspace_ids`, in the order given (one query)."""
    if not workspace_ids:
        return []
    rows = await session.execute(_VIEWS.where(Workspace.id.in_(set(workspace_ids))))
    by_id = {view.id: view for view in map(_view, rows)}
    return [by_id[i] for i in workspace_ids if i in by_id]


def _authorized_view(resource_id: str) -> Select[Any]:
    return with_caller_roles(
        _VIEWS.add_columns(OrganizationMember.role, WorkspaceMember.role)
    ).where(Workspace.id == workspace_of(resource_id))


# Built once per kind of id: constructing the statement costs more than running it.
_AUTHORIZED_VIEWS: dict[str, Select[Any]] = {}


async def authorize_view(session: Reader, user_id: str, resource_id: str) -> Access:
    """The caller's access to the live workspace of `resource_id` (a workspace or a
    workspace-scoped id: run, prompt, response) together with its view, in one query.

    NotFound when the resource or its workspace is gone or the caller has no effective role
    on it; the query is the same whether or not the resource exists in another tenant. This
    is the auth interceptor's workspace check: handlers showing the workspace reuse the view.
    """
    prefix = resource_id.split("_", 1)[0]
    statement = _AUTHORIZED_VIEWS.get(prefix)
    if statement is None:
        statement = _AUTHORIZED_VIEWS[prefix] = _authorized_view(resource_id)
    params = {"user_id": user_id, "resource_id": resource_id}
    row = (await session.execute(statement, params)).first()
    role = effective_workspace_role(row[-2], row[-1]) if row else None
    if row is None or role is None:
        raise not_found(resource_id)
    view = _view(row)
    return Access(
        organization_id=view.organization_id,
        workspace_id=view.id,
        organization_role=row[-2],
        workspace_role=role,
        workspace=view,
    )


async def load_view(session: Reader, workspace_id: str) -> WorkspaceView:
    """The view of one live workspace; NotFound when it is gone."""
    row = (await session.execute(_VIEWS.where(Workspace.id == workspace_id))).first()
    if row is None:
        raise NotFound("workspace", workspace_id)
    return _view(row)


async def list_views(
    session: AsyncSession, user_id: str, organization_id: str, page: Page
) -> tuple[list[WorkspaceView], str]:
    """The workspaces `user_id` can access (of one organization when given), oldest first.

    NotFound when `organization_id` names an organization the user does not reach.
    """
    query = _VIEWS.where(
        accessible_workspaces(user_id), page.where(Workspace.create_time, Workspace.id)
    )
    if organization_id:
        require_id("organization_id", organization_id)
        reachable = await session.scalar(
            select(Organization.id).where(
                Organization.id == organization_id, reachable_organizations(user_id)
            )
        )
        if reachable is None:
            raise NotFound("organization", organization_id)
        query = query.where(Workspace.organization_id == organization_id)
    rows = await session.execute(
        query.order_by(Workspace.create_time, Workspace.id).limit(page.size + 1)
    )
    views = [_view(row) for row in rows]
    return views[: page.size], page.next_token(views)


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
    workspace_id: str
    organization: Organization
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
    call: Actor,
    request: NewWorkspace,
    *,
    join_code_ttl: timedelta = DEFAULT_JOIN_CODE_TTL,
) -> CreatedWorkspace:
    """Creates a workspace, with a join code valid for `join_code_ttl`; the caller becomes
    its owner.

    With `organization_name` a new organization is made (caller owner); with
    `organization_id` the caller must be an owner or admin of it; with neither, the
    caller's personal organization is used, created on first use.
    """
    user_id = call.require_user_id()
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
        org = await insert_organization(session, name=clean.organization_name, owner_id=user_id)
    else:
        org = await _personal_organization(session, call, user_id)
    if request.icon_file_id:
        await files.require_own_upload(session, user_id, "icon_file_id", request.icon_file_id)
    now = utcnow()
    join_code = await join_codes.unused_code(session)
    workspace = Workspace(
        id=new_id("ws"),
        organization_id=org.id,
        name=clean.name,
        domain=clean.domain,
        icon_file_id=request.icon_file_id or None,
        brand_aliases=clean.brand_aliases,
        competitors=_competitors_json(clean.competitors),
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
        call,
        organization_id=org.id,
        workspace_id=workspace.id,
        target_ids=[workspace.id, org.id],
    )
    await session.flush()
    return CreatedWorkspace(workspace.id, org, is_first)


def _live_in(organization_id: str) -> ColumnElement[bool]:
    return and_(Workspace.organization_id == organization_id, Workspace.delete_time.is_(None))


async def _personal_organization(session: AsyncSession, call: Actor, user_id: str) -> Organization:
    """The caller's personal organization, created on first use."""
    org = await session.scalar(
        select(Organization).where(Organization.personal_owner_id == user_id)
    )
    if org is None:
        user = await session.get(User, user_id)
        who = (user.name or user.email) if user else ""
        who = (who or call.email or "My").strip()
        name = who[: 80 - len(PERSONAL_SUFFIX)].strip() + PERSONAL_SUFFIX
        return await insert_organization(session, name=name, owner_id=user_id, personal=True)
    access = await organization_access(session, user_id, org.id)
    if access.organization_role not in ORGANIZATION_ADMIN_ROLES:
        raise PermissionDenied("you are no longer an owner of your personal organization")
    return org


# Update and delete ------------------------------------------------------------------------


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
            values["competitors"] = _competitors_json(clean_competitors(name, patch.competitors))
    return values


def check_etag(field_name: str, etag: str, version: int) -> None:
    """Aborted when `etag` is set and is not the current version's."""
    inputs.check_etag(field_name, etag, str(version), resource="workspace")


def audit_workspace(session: AsyncSession, call: Actor, workspace: Workspace) -> None:
    """Records the audit event of a change to `workspace` (target: the workspace)."""
    audit.record(
        session,
        call,
        organization_id=workspace.organization_id,
        workspace_id=workspace.id,
        target_ids=[workspace.id],
    )


async def update_workspace(
    session: AsyncSession,
    call: Actor,
    workspace_id: str,
    patch: WorkspacePatch,
    paths: Sequence[str],
    etag: str = "",
) -> None:
    """Applies the masked fields of `patch`; the version (etag) moves when anything changed."""
    values = _clean_patch(patch, update_paths(paths))
    workspace = await lock_live_workspace(session, workspace_id)
    check_etag("workspace.etag", etag, workspace.version)
    icon = values.get("icon_file_id")
    if icon and icon != workspace.icon_file_id:
        await files.require_own_upload(
            session, call.require_user_id(), "workspace.icon_file_id", icon
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
    audit_workspace(session, call, workspace)
    await session.flush()


async def delete_workspace(
    session: AsyncSession, call: Actor, workspace_id: str, etag: str = ""
) -> None:
    """Soft-deletes the workspace: it vanishes at once, its schedule stops, its slug and
    join code are freed; `purge_deleted_workspaces` removes it after the retention period."""
    workspace = await lock_live_workspace(session, workspace_id)
    check_etag("etag", etag, workspace.version)
    workspace.delete_time = utcnow()
    workspace.version += 1
    workspace.join_code = None
    workspace.join_code_expire_time = None
    await session.execute(delete(Schedule).where(Schedule.workspace_id == workspace_id))
    audit_workspace(session, call, workspace)
    await session.flush()


async def purge_deleted_workspaces(db: Database, now: datetime, *, retention_days: int = 30) -> int:
    """Removes workspaces soft-deleted more than `retention_days` before `now`, with all
    their data (prompts, runs, probes, members, invitations); returns how many.

    Callers pass `settings.workspace_retention_days`. Works in batches, one transaction each.
    """
    cutoff = now - timedelta(days=retention_days)
    purged = 0
    while True:
        async with db.transaction() as session:
            ids = list(
                await session.scalars(
                    select(Workspace.id)
                    .where(Workspace.delete_time.is_not(None), Workspace.delete_time < cutoff)
                    .limit(PURGE_BATCH)
                )
            )
            if ids:
                await session.execute(delete(Workspace).where(Workspace.id.in_(ids)))
        purged += len(ids)
        if len(ids) < PURGE_BATCH:
            return purged


# Providers --------------------------------------------------------------------------------


def clean_providers(field_name: str, providers: Sequence[str]) -> list[str]:
    """At least one known provider; duplicates dropped; stored in the canonical order."""
    if not providers:
        raise InvalidArgument(field_name, "enable at least one provider")
    for index, provider in enumerate(providers):
        if provider not in PROVIDERS:
            raise InvalidArgument(
                f"{field_name}[{index}]", f"must be one of {', '.join(PROVIDERS)}"
            )
    return [p for p in PROVIDERS if p in providers]


async def set_enabled_providers(
    session: AsyncSession, call: Actor, workspace_id: str, providers: Sequence[str]
) -> None:
    """Sets the providers runs ask (at least one)."""
    clean = clean_providers("providers", providers)
    workspace = await lock_live_workspace(session, workspace_id)
    if workspace.enabled_providers != clean:
        workspace.enabled_providers = clean
        workspace.version += 1
    audit_workspace(session, call, workspace)
    await session.flush()
