"""Organizations: create, read and rename them, navigation state, WorkOS links, audit log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from service.application.base import ServiceBase
from service.db.models import AuditEvent
from service.domain.actor import Actor
from service.domain.paging import parse_page
from service.domain.tenancy import organizations
from service.domain.tenancy.organizations import AuditFilter, NavigationState, OrganizationView


@dataclass(frozen=True, slots=True)
class AuditEventView:
    """One audit event: who did what to which resources, when."""

    id: str
    organization_id: str
    workspace_id: str
    actor_id: str
    service_key_id: str
    action: str
    target_ids: list[str]
    request_id: str
    correlation_id: str
    create_time: datetime

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventView:
        return cls(
            id=event.id,
            organization_id=event.organization_id,
            workspace_id=event.workspace_id or "",
            actor_id=event.actor_id,
            service_key_id=event.service_key_id or "",
            action=event.action,
            target_ids=list(event.target_ids),
            request_id=event.request_id,
            correlation_id=event.correlation_id,
            create_time=event.create_time,
        )


@dataclass(frozen=True, slots=True)
class OrganizationPage:
    """One page of organizations."""

    organizations: list[OrganizationView]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class AuditPage:
    """One page of audit events, newest first."""

    events: list[AuditEventView]
    next_page_token: str


class OrganizationService(ServiceBase):
    """Organizations and what their members see of them."""

    async def create(self, actor: Actor, name: str, *, request_id: str) -> OrganizationView:
        """A new organization owned by the caller."""
        async with self.db.transaction() as session:
            return await organizations.create_organization(
                session,
                actor,
                name,
                request_id=request_id,
                now=self.clock(),
                caps=organizations.TenantCaps.of(self.settings),
            )

    async def list_mine(self, user_id: str, *, page_size: int, page_token: str) -> OrganizationPage:
        """The organizations the user belongs to or reaches through a workspace."""
        page = parse_page(page_size, page_token, scope=f"orgs|{user_id}")
        async with self.db.transaction(write=False) as session:
            views, token = await organizations.list_my_organizations(session, user_id, page)
        return OrganizationPage(views, token)

    async def get(self, organization_id: str) -> OrganizationView:
        """One organization."""
        async with self.db.transaction(write=False) as session:
            return await organizations.get_organization(session, organization_id)

    async def update(
        self, actor: Actor, organization_id: str, *, name: str, paths: list[str], etag: str
    ) -> OrganizationView:
        """Renames the organization (the fields named by `paths`)."""
        async with self.db.transaction() as session:
            return await organizations.update_organization(
                session,
                actor,
                organization_id,
                name=name,
                paths=paths,
                etag=etag,
                now=self.clock(),
            )

    async def navigation_state(self, user_id: str) -> NavigationState:
        """The user's current organization and workspace, and what they can switch to."""
        async with self.db.transaction(write=False) as session:
            return await organizations.navigation_state(session, user_id)

    async def set_current_workspace(self, actor: Actor, workspace_id: str) -> NavigationState:
        """Makes `workspace_id` the caller's current workspace."""
        async with self.db.transaction() as session:
            return await organizations.set_current_workspace(
                session, actor, workspace_id, now=self.clock()
            )

    async def link_workos(
        self, actor: Actor, organization_id: str, workos_organization_id: str
    ) -> OrganizationView:
        """Links the organization to a WorkOS organization."""
        async with self.db.transaction() as session:
            return await organizations.link_workos_organization(
                session, actor, organization_id, workos_organization_id, now=self.clock()
            )

    async def unlink_workos(self, actor: Actor, organization_id: str) -> OrganizationView:
        """Removes the organization's WorkOS link."""
        async with self.db.transaction() as session:
            return await organizations.unlink_workos_organization(
                session, actor, organization_id, now=self.clock()
            )

    async def list_audit_events(
        self, organization_id: str, filters: AuditFilter, *, page_size: int, page_token: str
    ) -> AuditPage:
        """The organization's audit events, newest first, filtered and paged."""
        page = parse_page(page_size, page_token, scope=filters.scope(organization_id))
        async with self.db.transaction(write=False) as session:
            events, token = await organizations.list_audit_events(
                session, organization_id, filters, page
            )
            # Inside the transaction: its end expires the rows.
            return AuditPage([AuditEventView.of(event) for event in events], token)
