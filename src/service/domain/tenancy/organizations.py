"""Organizations: creation, naming, navigation state, WorkOS links and the audit log.

Commands take the session, the `Actor`, their arguments and `now`, record their own audit
event and return an `OrganizationView` (plain data, as the reads do).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, func, or_, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.clock import new_id
from service.config import Settings
from service.db.models import AuditEvent, Organization, OrganizationMember, User, Workspace
from service.domain import audit, idempotency
from service.domain.actor import Actor
from service.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from service.domain.inputs import check_etag, masked_paths, require_id
from service.domain.paging import Page
from service.domain.tenancy.access import BILLING_ROLES, ORGANIZATION_ADMIN_ROLES
from service.domain.tenancy.names import derive_slug, display_name
from service.domain.tenancy.slugs import save_with_unique_slug
from service.domain.tenancy.visibility import accessible_workspaces, reachable_organizations

WORKOS_ID = re.compile(r"^org_[A-Za-z0-9]{1,64}$")
ACTION = re.compile(r"^beacon\.v1\.[A-Za-z]{1,40}/[A-Za-z]{1,60}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _default(setting: str) -> int:
    default = Settings.model_fields[setting].default
    assert isinstance(default, int)
    return default


@dataclass(frozen=True, slots=True)
class TenantCaps:
    """Count limits that hold whatever a tenant spends: the live workspaces of an
    organization (BEACON_MAX_WORKSPACES_PER_ORGANIZATION) and the organizations a user owns
    (BEACON_MAX_ORGANIZATIONS_PER_USER). The defaults are the settings' defaults."""

    workspaces_per_organization: int = _default("max_workspaces_per_organization")
    organizations_per_user: int = _default("max_organizations_per_user")

    @classmethod
    def of(cls, settings: Settings) -> TenantCaps:
        return cls(settings.max_workspaces_per_organization, settings.max_organizations_per_user)


DEFAULT_CAPS = TenantCaps()


async def check_organization_cap(session: AsyncSession, user_id: str, caps: TenantCaps) -> None:
    """FailedPrecondition (ORGANIZATION_LIMIT_REACHED) when the user already owns
    `caps.organizations_per_user` organizations. Takes the user's row lock first, so that
    concurrent creates by one user are counted one after the other."""
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())
    owned = await session.scalar(
        select(func.count())
        .select_from(OrganizationMember)
        .where(OrganizationMember.user_id == user_id, OrganizationMember.role == "owner")
    )
    limit = caps.organizations_per_user
    if (owned or 0) >= limit:
        raise FailedPrecondition(
            f"you already own {owned} organizations, the most allowed"
            f" (BEACON_MAX_ORGANIZATIONS_PER_USER={limit}): create the workspace in one of"
            " them, or delete one",
            [
                PreconditionViolation(
                    "ORGANIZATION_LIMIT_REACHED",
                    user_id,
                    f"a user may own at most {limit} organizations",
                )
            ],
            reason="ORGANIZATION_LIMIT_REACHED",
            metadata={"limit": str(limit)},
        )


@dataclass(frozen=True, slots=True)
class OrganizationView:
    """Everything an Organization message shows."""

    id: str
    name: str
    slug: str
    workos_organization_id: str
    create_time: datetime
    update_time: datetime

    @classmethod
    def of(cls, org: Organization) -> OrganizationView:
        return cls(
            id=org.id,
            name=org.name,
            slug=org.slug,
            workos_organization_id=org.workos_organization_id or "",
            create_time=org.create_time,
            update_time=org.update_time,
        )

    @property
    def etag(self) -> str:
        return organization_etag(self.update_time)


def organization_etag(update_time: datetime) -> str:
    """An organization's version tag: its update time in microseconds, which every change
    (rename, WorkOS link or unlink) moves and a no-op leaves as it is."""
    if update_time.tzinfo is None:
        update_time = update_time.replace(tzinfo=UTC)
    return str((update_time - _EPOCH) // timedelta(microseconds=1))


async def insert_organization(
    session: AsyncSession,
    *,
    name: str,
    owner_id: str,
    now: datetime,
    caps: TenantCaps,
    personal: bool = False,
) -> Organization:
    """A new organization named `name` (already validated) with `owner_id` as its owner,
    unless they own the most organizations `caps` allows (`check_organization_cap`).

    The slug is derived from the name and suffixed when taken. `personal` marks the
    owner's personal organization (at most one per user).
    """
    await check_organization_cap(session, owner_id, caps)
    org = Organization(
        id=new_id("org"),
        name=name,
        personal_owner_id=owner_id if personal else None,
        create_time=now,
        update_time=now,
    )
    await save_with_unique_slug(
        session,
        org,
        column=Organization.slug,
        scope=true,
        base=derive_slug(name, fallback="organization"),
        explicit=False,
        taken_message="",
    )
    session.add(
        OrganizationMember(organization_id=org.id, user_id=owner_id, role="owner", create_time=now)
    )
    await session.flush()
    return org


async def _recorded(
    session: AsyncSession, actor: Actor, org: Organization, now: datetime
) -> OrganizationView:
    """The view of `org` after writing the audit event of the change made to it at `now`."""
    audit.record(session, actor, organization_id=org.id, target_ids=[org.id], now=now)
    await session.flush()
    return OrganizationView.of(org)


async def create_organization(
    session: AsyncSession,
    actor: Actor,
    name: str,
    *,
    request_id: str = "",
    now: datetime,
    caps: TenantCaps = DEFAULT_CAPS,
) -> OrganizationView:
    """Creates an organization owned by the caller; FailedPrecondition
    (ORGANIZATION_LIMIT_REACHED) when they own the most `caps` allows. A retry with the
    same `request_id` returns the first organization and creates nothing."""

    async def create() -> OrganizationView:
        clean = display_name("name", name)
        org = await insert_organization(
            session, name=clean, owner_id=actor.require_user_id(), now=now, caps=caps
        )
        return await _recorded(session, actor, org, now)

    return await idempotency.once(
        session, actor, request_id, scope="", result_type=OrganizationView, now=now, run=create
    )


async def list_my_organizations(
    session: AsyncSession, user_id: str, page: Page
) -> tuple[list[OrganizationView], str]:
    """The caller's organizations, oldest first, and the next page token."""
    rows = list(
        await session.scalars(
            select(Organization)
            .join(OrganizationMember, OrganizationMember.organization_id == Organization.id)
            .where(
                OrganizationMember.user_id == user_id,
                page.where(Organization.create_time, Organization.id),
            )
            .order_by(Organization.create_time, Organization.id)
            .limit(page.size + 1)
        )
    )
    return [OrganizationView.of(org) for org in rows[: page.size]], page.next_token(rows)


async def get_organization(session: AsyncSession, organization_id: str) -> OrganizationView:
    """The organization; NotFound when it does not exist."""
    return OrganizationView.of(await _organization(session, organization_id))


async def _organization(session: AsyncSession, organization_id: str) -> Organization:
    org = await session.get(Organization, organization_id)
    if org is None:
        raise NotFound("organization", organization_id)
    return org


UPDATABLE_ORGANIZATION_FIELDS = ("name",)


async def update_organization(
    session: AsyncSession,
    actor: Actor,
    organization_id: str,
    *,
    name: str,
    paths: Sequence[str],
    etag: str = "",
    now: datetime,
) -> OrganizationView:
    """Renames the organization. The mask follows UpdateWorkspace's rule: it names the
    fields to change (`name`, the only updatable one, or `*`), and an empty mask is
    InvalidArgument naming `update_mask`; `etag`, when set, must be the current one. A
    rename to the current name changes nothing (the etag stays)."""
    masked = masked_paths(paths, UPDATABLE_ORGANIZATION_FIELDS)
    clean = display_name("organization.name", name) if "name" in masked else ""
    org = await session.get(Organization, organization_id, with_for_update=True)
    if org is None:
        raise NotFound("organization", organization_id)
    check_etag(
        "organization.etag", etag, organization_etag(org.update_time), resource="organization"
    )
    if "name" in masked and org.name != clean:
        org.name = clean
        org.update_time = now
    return await _recorded(session, actor, org, now)


# Navigation -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NavigationWorkspace:
    id: str
    organization_id: str
    name: str
    slug: str


@dataclass(frozen=True, slots=True)
class NavigationState:
    """Where the user is (current workspace and its organization) and what they reach."""

    current_organization_id: str
    current_workspace_id: str
    organizations: list[OrganizationView]
    workspaces: list[NavigationWorkspace]


async def navigation_state(session: AsyncSession, user_id: str) -> NavigationState:
    """The user's navigation state.

    The current workspace is the one stored with `set_current_workspace` while it is still
    accessible, else the first accessible workspace by creation. The current organization
    is that of the current workspace, else the first organization the user reaches.
    """
    stored = await session.scalar(select(User.current_workspace_id).where(User.id == user_id))
    workspaces = [
        NavigationWorkspace(*row)
        for row in await session.execute(
            select(Workspace.id, Workspace.organization_id, Workspace.name, Workspace.slug)
            .where(accessible_workspaces(user_id))
            .order_by(Workspace.create_time, Workspace.id)
        )
    ]
    organizations = [
        OrganizationView.of(org)
        for org in await session.scalars(
            select(Organization)
            .where(reachable_organizations(user_id))
            .order_by(Organization.create_time, Organization.id)
        )
    ]
    current = next((w for w in workspaces if w.id == stored), None)
    if current is None and workspaces:
        current = workspaces[0]
    if current is not None:
        current_org = current.organization_id
    else:
        current_org = organizations[0].id if organizations else ""
    return NavigationState(
        current_organization_id=current_org,
        current_workspace_id=current.id if current else "",
        organizations=organizations,
        workspaces=workspaces,
    )


async def set_current_workspace(
    session: AsyncSession, actor: Actor, workspace_id: str, *, now: datetime
) -> NavigationState:
    """Stores the caller's current workspace (access already checked) and returns the state."""
    user_id = actor.require_user_id()
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("user", user_id)
    user.current_workspace_id = workspace_id
    access = actor.require_access()
    audit.record(
        session,
        actor,
        organization_id=access.organization_id,
        workspace_id=workspace_id,
        target_ids=[user_id],
        now=now,
    )
    await session.flush()
    return await navigation_state(session, user_id)


# Access -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrganizationAccessSummary:
    organization_id: str
    role: str
    is_admin: bool
    can_manage_billing: bool


def access_summary(organization_id: str, role: str) -> OrganizationAccessSummary:
    """What an organization role allows: admin (owner, admin), billing (owner, billing_admin)."""
    return OrganizationAccessSummary(
        organization_id=organization_id,
        role=role,
        is_admin=role in ORGANIZATION_ADMIN_ROLES,
        can_manage_billing=role in BILLING_ROLES,
    )


# WorkOS -----------------------------------------------------------------------------------


async def link_workos_organization(
    session: AsyncSession,
    actor: Actor,
    organization_id: str,
    workos_organization_id: str,
    *,
    now: datetime,
) -> OrganizationView:
    """Links a WorkOS organization id; AlreadyExists when another organization holds it."""
    workos_id = workos_organization_id.strip()
    if not WORKOS_ID.fullmatch(workos_id):
        raise InvalidArgument(
            "workos_organization_id", "must be 'org_' followed by 1-64 letters or digits"
        )
    org = await _organization(session, organization_id)
    if org.workos_organization_id != workos_id:
        holder = await session.scalar(
            select(Organization.id).where(Organization.workos_organization_id == workos_id)
        )
        if holder is not None:
            raise AlreadyExists("this WorkOS organization is linked to another organization")
        org.workos_organization_id = workos_id
        org.update_time = now
        try:
            async with session.begin_nested():
                await session.flush()
        except IntegrityError:
            raise AlreadyExists(
                "this WorkOS organization is linked to another organization"
            ) from None
    return await _recorded(session, actor, org, now)


async def unlink_workos_organization(
    session: AsyncSession, actor: Actor, organization_id: str, *, now: datetime
) -> OrganizationView:
    """Removes the organization's WorkOS link (harmless when there is none)."""
    org = await _organization(session, organization_id)
    if org.workos_organization_id is not None:
        org.workos_organization_id = None
        org.update_time = now
    return await _recorded(session, actor, org, now)


# Audit log --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditFilter:
    workspace_id: str = ""
    actor_id: str = ""
    action: str = ""

    def validate(self) -> None:
        """InvalidArgument for a filter that cannot match anything."""
        if self.workspace_id:
            require_id("workspace_id", self.workspace_id)
        if self.actor_id:
            require_id("actor_id", self.actor_id)
        if self.action and not ACTION.fullmatch(self.action):
            raise InvalidArgument(
                "action", "must be an RPC full name such as beacon.v1.WorkspaceService/GetWorkspace"
            )

    def scope(self, organization_id: str) -> str:
        return f"audit|{organization_id}|{self.workspace_id}|{self.actor_id}|{self.action}"


async def list_audit_events(
    session: AsyncSession, organization_id: str, filters: AuditFilter, page: Page
) -> tuple[list[AuditEvent], str]:
    """The organization's audit events matching `filters`, newest first."""
    filters.validate()
    conditions = [AuditEvent.organization_id == organization_id]
    if filters.workspace_id:
        conditions.append(AuditEvent.workspace_id == filters.workspace_id)
    if filters.actor_id.startswith("key_"):
        conditions.append(
            or_(
                AuditEvent.actor_id == filters.actor_id,
                AuditEvent.service_key_id == filters.actor_id,
            )
        )
    elif filters.actor_id:
        conditions.append(AuditEvent.actor_id == filters.actor_id)
    if filters.action:
        conditions.append(AuditEvent.action == filters.action)
    rows = list(
        await session.scalars(
            select(AuditEvent)
            .where(
                and_(*conditions),
                page.where(AuditEvent.create_time, AuditEvent.id, descending=True),
            )
            .order_by(AuditEvent.create_time.desc(), AuditEvent.id.desc())
            .limit(page.size + 1)
        )
    )
    return rows[: page.size], page.next_token(rows)
